use std::collections::BTreeMap;
use std::io::{Read, Write};

use apache_avro::types::Value;
use apache_avro::Schema;

use super::{
    encode_confluent, encode_single_object, fast, read_datum, to_avro, value, CheckedProfile,
    Codec, CodecError, Registry,
};
use crate::error::{Class, Classify};
use crate::event::*;

pub(crate) fn sample_profile() -> Event {
    Event::Profile(UserProfile {
        user: "alice".into(),
        version: 7,
        groups: vec!["analysts".into()],
        attributes: BTreeMap::from([("region".into(), vec!["eu".into(), "us".into()])]),
        current_project: Some(Project {
            id: "p1".into(),
            purposes: vec!["fraud".into()],
        }),
        acknowledged_purposes: vec!["fraud".into()],
        data_sources: vec!["ds1".into()],
    })
}

fn sample_policy() -> Event {
    Event::Policy(Policy {
        id: "pol1".into(),
        version: 3,
        status: Status::Active,
        target: Target {
            data_source_ids: vec!["ds1".into()],
            tags: vec!["pii".into()],
        },
        rule: Rule::Mask(Mask {
            column_tag: "email".into(),
            method: MaskMethod::Constant,
            constant: Some("***".into()),
        }),
        exceptions: Exceptions {
            groups: vec!["admins".into()],
            purposes: vec![],
        },
    })
}

#[test]
fn single_object_round_trip_for_every_kind() {
    let codec = Codec::embedded().unwrap();
    let ds = Event::DataSource(DataSource {
        id: "ds1".into(),
        version: 1,
        host: "h".into(),
        database: "db".into(),
        schema: "public".into(),
        table: "t".into(),
        view_name: "v".into(),
        columns: vec![Column {
            name: "a".into(),
            data_type: "text".into(),
            tags: vec!["x".into()],
        }],
        tags: vec![],
        status: Status::Disabled,
    });
    let imp = Event::Impersonation(Impersonation {
        user: "bob".into(),
        version: 2,
        allowed: true,
    });
    for event in [sample_profile(), ds, sample_policy(), imp] {
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(codec.decode(event.kind(), &bytes).unwrap(), event);
    }
}

#[test]
fn row_filter_union_branch_round_trips() {
    let codec = Codec::embedded().unwrap();
    let Event::Policy(mut p) = sample_policy() else {
        unreachable!()
    };
    p.rule = Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MemberOfGroup,
        column_tag: None,
        attribute: None,
        group: Some("g".into()),
    });
    let event = Event::Policy(p);
    assert_eq!(
        codec
            .decode(Kind::Policy, &codec.encode(&event).unwrap())
            .unwrap(),
        event
    );
}

/// The reader schema with one more field that has a default: a newer producer.
fn evolved_impersonation_schema() -> String {
    include_str!("../../schemas/Impersonation.avsc").replace(
        r#"{"name": "allowed", "type": "boolean"}"#,
        r#"{"name": "allowed", "type": "boolean"}, {"name": "reason", "type": "string", "default": ""}"#,
    )
}

#[test]
fn newer_writer_with_extra_defaulted_field_still_decodes() {
    let mut codec = Codec::embedded().unwrap();
    let json = evolved_impersonation_schema();
    assert!(json.contains("reason"), "test schema edit did not apply");
    codec.add_writer_schema(&json).unwrap();
    let writer = Schema::parse_str(&json).unwrap();
    let value = Value::Record(vec![
        ("user".into(), Value::String("bob".into())),
        ("version".into(), Value::Long(4)),
        ("allowed".into(), Value::Boolean(false)),
        ("reason".into(), Value::String("left the team".into())),
    ]);
    let bytes = encode_single_object(&writer, value).unwrap();
    let decoded = codec.decode(Kind::Impersonation, &bytes).unwrap();
    assert_eq!(
        decoded,
        Event::Impersonation(Impersonation {
            user: "bob".into(),
            version: 4,
            allowed: false
        })
    );
}

#[test]
fn garbage_and_truncation_are_poison_errors() {
    let codec = Codec::embedded().unwrap();
    let good = codec.encode(&sample_profile()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"hello world".to_vec()),
        ("header only", good[..5].to_vec()),
        ("truncated datum", good[..good.len() - 3].to_vec()),
        ("trailing bytes", [good.clone(), vec![1, 2, 3]].concat()),
        (
            "unknown fingerprint",
            [vec![0xC3, 0x01], vec![9; 8], good[10..].to_vec()].concat(),
        ),
        (
            "confluent without registry",
            [vec![0], 7u32.to_be_bytes().to_vec(), good[10..].to_vec()].concat(),
        ),
    ];
    for (name, bytes) in cases {
        let err = codec.decode(Kind::Profile, &bytes).expect_err(name);
        assert_eq!(err.class(), Class::Poison, "{name}: {err}");
    }
}

#[test]
fn record_of_the_wrong_kind_is_rejected() {
    let codec = Codec::embedded().unwrap();
    let bytes = codec.encode(&sample_policy()).unwrap();
    assert!(matches!(
        codec.decode(Kind::Profile, &bytes),
        Err(CodecError::WrongRecord { .. })
    ));
}

/// Serves `answers` (status line + body) to successive connections on a loopback port.
fn one_shot_http(answers: Vec<(u16, String)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn confluent_wire_format_resolves_ids_through_the_registry_once() {
    let writer_json = evolved_impersonation_schema();
    let body = serde_json::json!({ "schema": writer_json }).to_string();
    // One answer only: a second lookup of the same id must come from the cache.
    let url = one_shot_http(vec![(200, body)]);
    let codec = Codec::embedded()
        .unwrap()
        .with_registry(Some(Registry::new(&url)));
    let writer = Schema::parse_str(&writer_json).unwrap();
    let value = |v: i64| {
        Value::Record(vec![
            ("user".into(), Value::String("carol".into())),
            ("version".into(), Value::Long(v)),
            ("allowed".into(), Value::Boolean(true)),
            ("reason".into(), Value::String("on call".into())),
        ])
    };
    for v in [1, 2] {
        let bytes = encode_confluent(&writer, 42, value(v)).unwrap();
        let got = codec.decode(Kind::Impersonation, &bytes).unwrap();
        assert_eq!(
            got,
            Event::Impersonation(Impersonation {
                user: "carol".into(),
                version: v,
                allowed: true
            })
        );
    }
}

/// A profile written with the current schema under a registry id takes the direct reader;
/// damaged or trailing bytes must still be rejected as on the generic path.
#[test]
fn confluent_profile_with_the_current_schema_decodes_like_single_object() {
    let codec = Codec::embedded()
        .unwrap()
        .with_registry(Some(Registry::new("http://127.0.0.1:9")));
    let schema = codec.reader_schema(Kind::Profile).clone();
    codec.registry.as_ref().unwrap().preload(7, schema.clone());
    let event = sample_profile();
    let bytes = encode_confluent(&schema, 7, to_avro(&event)).unwrap();
    assert_eq!(codec.decode(Kind::Profile, &bytes).unwrap(), event);
    let single = codec.encode(&event).unwrap();
    assert_eq!(codec.decode(Kind::Profile, &single).unwrap(), event);

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        codec.decode(Kind::Profile, &trailing).unwrap_err().class(),
        Class::Poison
    );
    let truncated = &bytes[..bytes.len() - 3];
    assert_eq!(
        codec.decode(Kind::Profile, truncated).unwrap_err().class(),
        Class::Poison
    );
}

#[test]
fn registry_404_is_poison_and_unreachable_is_retryable() {
    let url = one_shot_http(vec![(404, "{}".into())]);
    let codec = Codec::embedded()
        .unwrap()
        .with_registry(Some(Registry::new(&url)));
    let bytes = [vec![0], 9u32.to_be_bytes().to_vec(), vec![0]].concat();
    assert_eq!(
        codec.decode(Kind::Profile, &bytes).unwrap_err().class(),
        Class::Poison
    );

    let dead = Codec::embedded()
        .unwrap()
        .with_registry(Some(Registry::new("http://127.0.0.1:9")));
    assert_eq!(
        dead.decode(Kind::Profile, &bytes).unwrap_err().class(),
        Class::Retryable
    );
}

pub(crate) mod fast_reader {
    use proptest::prelude::*;

    use super::*;

    fn generic(codec: &Codec, datum: &[u8]) -> Result<Event, CodecError> {
        let schema = codec.reader_schema(Kind::Profile);
        value::event(Kind::Profile, read_datum(schema, datum, None)?)
    }

    fn strings() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("\\PC{0,6}", 0..4)
    }

    /// User names: mostly valid ones (upper case folds), some arbitrary text.
    fn users() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9_.@+$-]{1,12}", "\\PC{0,12}"]
    }

    pub(crate) fn profiles() -> impl Strategy<Value = UserProfile> {
        (
            (users(), any::<i64>(), strings()),
            prop::collection::btree_map("\\PC{0,6}", strings(), 0..4),
            prop::option::of(("\\PC{0,6}", strings())),
            (strings(), strings()),
        )
            .prop_map(
                |((user, version, groups), attributes, project, (ack, ds))| UserProfile {
                    user,
                    version,
                    groups,
                    attributes,
                    current_project: project.map(|(id, purposes)| Project { id, purposes }),
                    acknowledged_purposes: ack,
                    data_sources: ds,
                },
            )
    }

    #[test]
    fn reads_the_fields_of_the_current_schema_in_order() {
        let codec = Codec::embedded().unwrap();
        let Schema::Record(r) = codec.reader_schema(Kind::Profile) else {
            panic!("UserProfile is a record");
        };
        let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, fast::FIELDS);
    }

    /// The consumer's path: check without decoding, check the key, decode when applied.
    fn checked(codec: &Codec, bytes: &[u8], key: &str) -> Result<UserProfile, String> {
        match codec.check_profile(bytes).expect("current schema") {
            CheckedProfile::Damaged(e) => Err(format!("damaged: {e}")),
            CheckedProfile::Invalid(e) => Err(e.to_string()),
            CheckedProfile::Valid { user, datum } => {
                check_key(Kind::Profile, key, &user).map_err(|e| e.to_string())?;
                let p = datum.decode().map_err(|e| format!("checked, then: {e}"))?;
                assert_eq!(p.user, user);
                assert_eq!(p.version, datum.version);
                Ok(p)
            }
        }
    }

    /// Decode, then validate: what every other writer schema goes through.
    fn decoded(codec: &Codec, bytes: &[u8], key: &str) -> Result<UserProfile, String> {
        let event = codec
            .decode(Kind::Profile, bytes)
            .map_err(|e| format!("damaged: {e}"))?;
        match validate(
            event,
            key,
            &Scope {
                database: "db",
                view_schema: "immuta",
            },
        ) {
            Ok(Event::Profile(p)) => Ok(p),
            Ok(other) => Err(format!("not a profile: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    proptest! {
        /// Checking without decoding accepts exactly what decoding and validating
        /// accepts, and the datum kept decodes to the same profile. (The reasons can
        /// differ when several values are invalid: the check meets attributes in wire
        /// order, validation in sorted order.)
        #[test]
        fn checking_agrees_with_decoding_and_validating(p in profiles(), shout in any::<bool>()) {
            let codec = Codec::embedded().unwrap();
            let key = if shout { p.user.to_uppercase() } else { p.user.clone() };
            let bytes = codec.encode(&Event::Profile(p)).unwrap();
            match (checked(&codec, &bytes, &key), decoded(&codec, &bytes, &key)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "check {:?}, decode and validate {:?}", a, b),
            }
        }

        /// On damaged input the check is never more lenient than decoding and validating.
        #[test]
        fn checking_damaged_input_is_never_more_lenient(p in profiles(), cut in any::<prop::sample::Index>(),
                                                        flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let codec = Codec::embedded().unwrap();
            let key = p.user.clone();
            let bytes = codec.encode(&Event::Profile(p)).unwrap();
            let mut flipped = bytes.clone();
            let at = 10 + flip.index(flipped.len() - 10);
            flipped[at] = byte;
            let truncated = &bytes[..10 + cut.index(bytes.len() - 9)];
            for damaged in [truncated, &flipped[..]] {
                if let Ok(p) = checked(&codec, damaged, &key) {
                    prop_assert_eq!(Ok(p), decoded(&codec, damaged, &key));
                }
            }
        }

        #[test]
        fn agrees_with_the_generic_reader(p in profiles()) {
            let codec = Codec::embedded().unwrap();
            let bytes = codec.encode(&Event::Profile(p.clone())).unwrap();
            prop_assert_eq!(fast::user_profile(&bytes[10..]).unwrap(), p);
        }

        /// Damaged datums: the fast reader accepts exactly what the generic one accepts,
        /// and reads the same thing from it.
        #[test]
        fn agrees_on_damaged_input(p in profiles(), cut in any::<prop::sample::Index>(),
                                   flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let codec = Codec::embedded().unwrap();
            let bytes = codec.encode(&Event::Profile(p)).unwrap();
            let datum = &bytes[10..];
            let mut flipped = datum.to_vec();
            if !flipped.is_empty() {
                let at = flip.index(flipped.len());
                flipped[at] = byte;
            }
            let truncated = &datum[..cut.index(datum.len() + 1)];
            for damaged in [truncated, &flipped[..]] {
                let fast = fast::user_profile(damaged).map(Event::Profile);
                let slow = generic(&codec, damaged);
                prop_assert_eq!(fast.is_ok(), slow.is_ok(), "fast {:?} generic {:?}", fast, slow);
                if let (Ok(a), Ok(b)) = (fast, slow) {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn blocks_with_byte_sizes_and_hostile_lengths() {
        // groups written as one block with a negative count and a byte size, as Java
        // writers may do; then lengths that point past the end.
        let mut datum = vec![0x0a];
        datum.extend_from_slice(b"alice");
        datum.push(0x02); // version 1
        datum.extend_from_slice(&[0x03, 0x0c, 0x04]); // count -2, size 6, length 2
        datum.extend_from_slice(b"ab");
        datum.extend_from_slice(&[0x04]);
        datum.extend_from_slice(b"cd");
        datum.push(0x00); // end of groups
        datum.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // empty map, null project, two empty arrays
        let p = fast::user_profile(&datum).unwrap();
        assert_eq!(p.groups, ["ab", "cd"]);
        assert_eq!(
            Event::Profile(p),
            generic(&Codec::embedded().unwrap(), &datum).unwrap()
        );
        for hostile in [
            vec![0xfe, 0xff, 0xff, 0xff, 0x0f], // huge string length
            vec![0x00, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f], // huge block count
            vec![0xff; 11],                     // a varint longer than 10 bytes
        ] {
            assert!(fast::user_profile(&hostile).is_err(), "{hostile:?}");
        }
    }
}
