use proptest::prelude::*;
use serde_json::json;

use crate::codec::tests::{fast_reader::profiles, sample_profile};
use crate::codec::{Codec, CodecError};
use crate::error::{Class, Classify};
use crate::event::*;

fn codec() -> Codec {
    Codec::embedded().unwrap()
}

fn decode(kind: Kind, bytes: &[u8]) -> Result<Event, CodecError> {
    codec().decode(kind, bytes)
}

fn refused(kind: Kind, bytes: &[u8]) -> String {
    let e = decode(kind, bytes).expect_err("refused");
    assert_eq!(e.class(), Class::Poison, "{e}");
    crate::error::chain(&e)
}

/// JsonConverter's compact output (Jackson's default: no whitespace, only `"`, `\` and
/// control characters escaped).
fn compact(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn samples() -> Vec<Event> {
    vec![
        sample_profile(),
        Event::DataSource(DataSource {
            id: "ds1".into(),
            version: 2,
            host: "h".into(),
            database: "db".into(),
            schema: "raw".into(),
            table: "t".into(),
            view_name: "v".into(),
            columns: vec![Column {
                name: "email".into(),
                data_type: "text".into(),
                tags: vec!["pii".into()],
            }],
            tags: vec![],
            status: Status::Active,
        }),
        Event::Policy(Policy {
            id: "pol".into(),
            version: 3,
            status: Status::Disabled,
            target: Target::default(),
            rule: Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MatchingAttribute,
                column_tag: Some("region".into()),
                attribute: Some("region".into()),
                group: None,
            }),
            exceptions: Exceptions::default(),
        }),
        Event::Impersonation(Impersonation {
            user: "bob".into(),
            version: 9,
            allowed: true,
        }),
    ]
}

#[test]
fn every_form_reads_back_every_record() {
    for event in samples() {
        let doc = super::to_json(&event);
        let text = doc.to_string();
        let forms = [
            ("document", compact(&doc)),
            ("string", compact(&json!(text))),
            (
                "envelope",
                compact(&json!({"schema": {"type": "struct"}, "payload": doc})),
            ),
            (
                "envelope of a string",
                compact(
                    &json!({"schema": {"type": "string", "optional": false, "name": "io.debezium.data.Json", "version": 1}, "payload": text}),
                ),
            ),
            (
                "payload first",
                compact(&json!({"payload": doc, "schema": null})),
            ),
            (
                "with whitespace",
                format!("\n  {}\r\n", serde_json::to_string_pretty(&doc).unwrap()).into_bytes(),
            ),
        ];
        for (form, bytes) in forms {
            assert_eq!(decode(event.kind(), &bytes).unwrap(), event, "{form}");
        }
    }
}

#[test]
fn a_field_with_a_default_may_be_left_out_and_unknown_fields_are_skipped() {
    let p = decode(
        Kind::Profile,
        br#"{"user":"Alice","version":1,"extra":{"deep":[[{"x":[1,2.5,null,true]}]]}}"#,
    )
    .unwrap();
    let Event::Profile(p) = p else { panic!() };
    assert_eq!((p.user.as_str(), p.version), ("Alice", 1));
    assert!(p.groups.is_empty() && p.attributes.is_empty() && p.current_project.is_none());
    let e = refused(Kind::Profile, br#"{"user":"alice"}"#);
    assert!(e.contains("missing field `version`"), "{e}");
}

#[test]
fn a_mask_and_a_filter_are_told_apart_by_their_fields() {
    let mask = br#"{"id":"p","version":1,"status":"ACTIVE","target":{},"exceptions":{},
        "rule":{"column_tag":"email","method":"CONSTANT","constant":"x"}}"#;
    let Event::Policy(p) = decode(Kind::Policy, mask).unwrap() else {
        panic!()
    };
    assert!(matches!(
        p.rule,
        Rule::Mask(Mask {
            method: MaskMethod::Constant,
            ..
        })
    ));
    for (rule, says) in [
        (
            r#"{"kind":"MEMBER_OF_GROUP","method":"HASH","column_tag":"t"}"#,
            "mixes",
        ),
        (r#"{"kind":"MEMBER_OF_GROUP","constant":"x"}"#, "mixes"),
        (r#"{"method":"HASH","column_tag":"t","group":"g"}"#, "mixes"),
        (r#"{"column_tag":"t"}"#, "neither kind"),
        (r#"{"method":"HASH"}"#, "missing field `column_tag`"),
        (
            r#"{"method":"BLUR","column_tag":"t"}"#,
            "unknown symbol \"BLUR\", expected one of HASH, NULLIFY, CONSTANT",
        ),
        (
            r#"{"method":{"HASH":null},"column_tag":"t"}"#,
            "invalid type: map, expected a string",
        ),
        (
            r#"[null,"HASH","t",null,null,null]"#,
            "invalid type: sequence, expected a JSON object",
        ),
    ] {
        let doc = format!(
            r#"{{"id":"p","version":1,"status":"ACTIVE","target":{{}},"exceptions":{{}},"rule":{rule}}}"#
        );
        let e = refused(Kind::Policy, doc.as_bytes());
        assert!(e.contains(says), "{rule}: {e}");
    }
}

#[test]
fn hostile_documents_are_refused_with_a_reason() {
    let long = "x".repeat(MAX_VALUE_LEN + 1);
    let deep = format!(
        r#"{{"user":"a","version":1,"x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let cases: Vec<(Kind, Vec<u8>, &str)> = vec![
        (
            Kind::Profile,
            br#"{"user":"a","user":"root","version":1}"#.to_vec(),
            "duplicate field `user`",
        ),
        (
            Kind::Profile,
            br#"{"user":"a","version":1,"attributes":{"r":["eu"],"r":["us"]}}"#.to_vec(),
            "attribute \"r\" is named twice",
        ),
        (
            Kind::Profile,
            format!(r#"{{"user":"a","version":1,"groups":["{long}"]}}"#).into_bytes(),
            "a string of 1025 bytes",
        ),
        (Kind::Profile, deep.into_bytes(), "deeper than 32 levels"),
        (
            Kind::Profile,
            br#"{"user":"a","version":1.0}"#.to_vec(),
            "invalid type: floating point",
        ),
        (
            Kind::Profile,
            br#"{"user":"a","version":"1"}"#.to_vec(),
            "invalid type: string",
        ),
        (
            Kind::Profile,
            br#"{"user":"a","version":9223372036854775808}"#.to_vec(),
            "invalid value: integer",
        ),
        (
            Kind::Profile,
            br#"{"user":"a","version":1} {}"#.to_vec(),
            "trailing characters",
        ),
        (
            Kind::Profile,
            br#"{"user":"a","version":1,"groups":"g"}"#.to_vec(),
            "invalid type: string",
        ),
        (
            Kind::Profile,
            br#"{"user":"\ud800","version":1}"#.to_vec(),
            "end of hex escape",
        ),
        (
            Kind::Profile,
            b"{\"user\":\"\xff\",\"version\":1}".to_vec(),
            "invalid unicode",
        ),
        (
            Kind::Profile,
            br#""\"{\\\"user\\\":\\\"a\\\",\\\"version\\\":1}\"""#.to_vec(),
            "invalid type: string",
        ),
        (
            Kind::Profile,
            br#"{"schema":{},"payload":null}"#.to_vec(),
            "payload is null",
        ),
        (
            Kind::Profile,
            br#"{"schema":{},"payload":[1]}"#.to_vec(),
            "invalid type: sequence",
        ),
        (
            Kind::Profile,
            br#"[{"user":"a","version":1}]"#.to_vec(),
            "is an array, not a UserProfile document",
        ),
        (
            Kind::Profile,
            b" null".to_vec(),
            "is null (a delete is a tombstone",
        ),
        (
            Kind::Impersonation,
            br#"{"user":"a","version":1,"allowed":"yes"}"#.to_vec(),
            "invalid type: string",
        ),
        (
            Kind::DataSource,
            br#"{"id":"d","version":1,"status":"ACTIVE"}"#.to_vec(),
            "missing field `host`",
        ),
    ];
    for (kind, bytes, says) in cases {
        let e = refused(kind, &bytes);
        assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn what_serde_would_let_through_and_avro_would_not_is_refused() {
    let policy = |target: &str| {
        format!(
            r#"{{"id":"p","version":2,"status":"ACTIVE",{target}"exceptions":{{}},"rule":{{"method":"HASH","column_tag":"t"}}}}"#
        )
    };
    let long_list = format!(
        r#"{{"user":"a","version":1,"groups":[{}]}}"#,
        vec![r#""g""#; 100_001].join(",")
    );
    let cases: Vec<(Kind, Vec<u8>, &str)> = vec![
        // A policy without its target would lift its rule from every view it covered.
        (Kind::Policy, policy("").into_bytes(), "missing field `target`"),
        (Kind::Policy, policy(r#""targets":{"tags":["t"]},"#).into_bytes(), "missing field `target`"),
        (Kind::Policy, policy(r#""target":[["ds"],[]],"#).into_bytes(), "expected a JSON object"),
        (Kind::Policy, br#"{"id":"p","version":1,"status":{"ACTIVE":null}}"#.to_vec(), "expected a string"),
        (Kind::Profile, br#""[\"alice\",5]""#.to_vec(), "expected a JSON object"),
        (Kind::Profile, br#"{"user":"a","version":1,"current_project":["p",[]]}"#.to_vec(), "expected a JSON object"),
        (Kind::Profile, br#"{"schema":{},"payload":{"user":"a","version":1},"payload":{"user":"root","version":2}}"#.to_vec(), "duplicate field `payload`"),
        (Kind::Profile, br#"{"schema":{},"schema":{},"payload":{"user":"a","version":1}}"#.to_vec(), "duplicate field `schema`"),
        (Kind::Profile, br#"{"user":"bob","version":9,"allowed":true}"#.to_vec(), "belongs to an Impersonation"),
        (Kind::Profile, long_list.into_bytes(), "more than 100000 values"),
    ];
    for (kind, bytes, says) in cases {
        let e = refused(kind, &bytes);
        assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(&bytes));
    }
    // Present but empty is what the control plane wrote: a policy that targets nothing.
    let Event::Policy(p) = decode(Kind::Policy, policy(r#""target":{},"#).as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!(p.target, Target::default());
}

#[test]
fn a_byte_order_mark_is_not_json() {
    let e = decode(Kind::Profile, b"\xef\xbb\xbf{}").unwrap_err();
    assert!(matches!(e, CodecError::UnknownEncoding(0xef)), "{e}");
}

proptest! {
    #[test]
    fn any_profile_reads_back_from_its_document(p in profiles()) {
        let event = Event::Profile(p);
        let bytes = compact(&super::to_json(&event));
        prop_assert_eq!(decode(Kind::Profile, &bytes).unwrap(), event);
    }
}
