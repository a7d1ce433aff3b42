//! A feed from a transactional outbox: the control plane writes each event's document into
//! a `jsonb` payload column, and Debezium's outbox event router publishes it through Kafka
//! Connect. Every form those tools write reaches the analysts as the Avro records would;
//! hostile JSON is dead-lettered byte for byte, and the version guard holds across the two
//! encodings.
//!
//! The bytes are made as the tools make them (docs/outbox.md has the sources):
//! - the payload text is PostgreSQL's own rendering of the `jsonb` column, which is what
//!   Debezium reads from the replication stream (`jsonb_text`);
//! - JsonConverter writes with a default Jackson ObjectMapper: compact, keys in insertion
//!   order, strings escaped by [`jackson_string`];
//! - a payload expanded by the router (`table.expand.json.payload=true`) keeps the
//!   document's key order and drops nulls and empty arrays ([`expanded`]; Debezium 2.x
//!   with the default `table.json.payload.null.behavior=ignore`).

mod common;

use common::*;
use policy_push::codec::json::to_json;
use policy_push::event::{Event, Kind, MaskMethod};
use policy_push::simulate::Record;

const RAW: &str = "CREATE SCHEMA raw;
CREATE TABLE raw.t (id int, email text, region text);
INSERT INTO raw.t VALUES (1, 'a@x.io', 'eu'), (2, 'b@x.io', 'us');";

/// The schema JsonConverter writes for a string column Debezium reads as `json`/`jsonb`.
const JSON_STRING_SCHEMA: &str =
    r#"{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1}"#;

/// A string as Jackson writes it: `"` and `\` escaped, the five short control escapes,
/// other control characters as upper-case `\u00XX`, everything else (non-ASCII and `/`
/// included) as it is.
fn jackson_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Inserts the event's document into the outbox table and reads the payload back as
/// PostgreSQL renders it.
async fn jsonb_text(db: &Database, record: &Record) -> String {
    let event = record.value.as_ref().expect("an event");
    let client = db.client().await;
    let row = client
        .query_one(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
             VALUES ($1, $2, 'upsert', $3::text::jsonb) RETURNING payload::text",
            &[
                &aggregate_type(event.kind()),
                &record.key,
                &to_json(event).to_string(),
            ],
        )
        .await
        .expect("outbox insert");
    row.get(0)
}

fn aggregate_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Profile => "profiles",
        Kind::DataSource => "data_sources",
        Kind::Policy => "policies",
        Kind::Impersonation => "impersonation",
    }
}

/// JsonConverter's compact rendering of a `jsonb` text: the same tokens without the
/// spaces PostgreSQL puts after `:` and `,`.
fn compact(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == ' ' {
            continue;
        } else {
            in_string = c == '"';
        }
        out.push(c);
    }
    out
}

/// What Debezium's outbox event router does to a payload it expands
/// (`table.expand.json.payload=true`, `table.json.payload.null.behavior=ignore`): object
/// members whose value is null or an empty array are dropped, the rest keep their order.
/// `json` is compact and well-formed (from [`compact`]).
fn expanded(json: &str) -> String {
    fn string(b: &[u8], i: &mut usize) -> String {
        let (start, mut escaped) = (*i, false);
        *i += 1;
        while escaped || b[*i] != b'"' {
            escaped = !escaped && b[*i] == b'\\';
            *i += 1;
        }
        *i += 1;
        String::from_utf8_lossy(&b[start..*i]).into_owned()
    }
    fn value(b: &[u8], i: &mut usize) -> String {
        let (open, close) = match b[*i] {
            b'"' => return string(b, i),
            b'{' => (b'{', b'}'),
            b'[' => (b'[', b']'),
            _ => {
                let start = *i;
                while !matches!(b[*i], b',' | b'}' | b']') {
                    *i += 1;
                }
                return String::from_utf8_lossy(&b[start..*i]).into_owned();
            }
        };
        *i += 1;
        let mut parts = Vec::new();
        while b[*i] != close {
            if open == b'{' {
                let key = string(b, i);
                *i += 1;
                let v = value(b, i);
                if v != "null" && v != "[]" {
                    parts.push(format!("{key}:{v}"));
                }
            } else {
                parts.push(value(b, i));
            }
            if b[*i] == b',' {
                *i += 1;
            }
        }
        *i += 1;
        format!("{}{}{}", open as char, parts.join(","), close as char)
    }
    value(json.as_bytes(), &mut 0)
}

fn envelope(schema: &str, payload: &str) -> Vec<u8> {
    format!(r#"{{"schema":{schema},"payload":{payload}}}"#).into_bytes()
}

struct Published {
    kind: Kind,
    key: String,
    value: Vec<u8>,
}

fn raw(kind: Kind, key: &str, value: impl Into<Vec<u8>>) -> Published {
    Published {
        kind,
        key: key.into(),
        value: value.into(),
    }
}

/// Records hostile to a JSON reader, each with what its dead letter must say.
fn hostile(ana: &str) -> Vec<(Published, &'static str)> {
    let deep = format!(
        r#"{{"id":"deep","version":1,"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let long = format!(
        r#"{{"user":"{ana}","version":50,"groups":["{}"]}}"#,
        "g".repeat(100_000)
    );
    let doc = format!(r#"{{"user":"{ana}","version":50,"data_sources":["ds"]}}"#);
    // Larger than any JSON value read, and than the dead-letter producer's
    // message.max.bytes: its letter carries the reason, not the value.
    let huge = format!(
        r#"{{"user":"{ana}","version":60,"x":"{}"}}"#,
        "a".repeat(policy_push::codec::json::MAX_JSON_BYTES)
    );
    vec![
        (
            raw(Kind::Profile, ana, huge),
            "of JSON, more than the 4194304 read",
        ),
        (
            raw(Kind::Policy, "deep", deep),
            "nests deeper than 32 levels",
        ),
        (raw(Kind::Profile, ana, long), "a string of 100000 bytes"),
        (
            raw(
                Kind::Profile,
                ana,
                format!(r#"{{"user":"{ana}","user":"root","version":50}}"#),
            ),
            "duplicate field `user`",
        ),
        (
            raw(
                Kind::Profile,
                ana,
                format!(
                    r#"{{"user":"{ana}","version":50,"attributes":{{"region":["none"],"region":["us"]}}}}"#
                ),
            ),
            "attribute \"region\" is named twice",
        ),
        (
            raw(
                Kind::Policy,
                "mixed",
                r#"{"id":"mixed","version":1,"status":"ACTIVE","target":{"tags":["pii"]},"exceptions":{},"rule":{"kind":"MEMBER_OF_GROUP","group":"g","method":"NULLIFY","column_tag":"pii"}}"#,
            ),
            "rule mixes",
        ),
        (
            raw(Kind::Policy, "gone", envelope(JSON_STRING_SCHEMA, "null")),
            "payload is null",
        ),
        (
            raw(Kind::Policy, "gone", "null"),
            "route.tombstone.on.empty.payload",
        ),
        (
            raw(Kind::Profile, &jackson_string(ana), doc.clone()),
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
        ),
        (
            raw(Kind::Profile, ana, jackson_string(&jackson_string(&doc))),
            "invalid type: string",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbox_form_reaches_the_analysts_and_hostile_json_is_dead_lettered() {
    let broker = Broker::mock();
    let (mut db, config) = setup(&broker, 1, "outbox").await;
    db.client()
        .await
        .batch_execute(&format!(
            "{RAW}
             CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
               aggregatetype text NOT NULL, aggregateid text NOT NULL, type text NOT NULL,
               payload jsonb);"
        ))
        .await
        .expect("raw table and outbox");
    let ana = db.role("ana", true).await;
    let cid = db.role("cid", true).await;

    // Cid's newer profile arrives as Avro; the older one from the outbox must not undo it.
    publish(&config, &[profile(&cid, 5, &[], &[], &[])]).await;

    let source = raw_t(
        &db,
        1,
        &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
        &[],
    );
    let filter = policy("by-region", 1, matching("geo", "region"), &[], &["ds"], &[]);
    let masked = policy(
        "hide-email",
        1,
        mask("pii", MaskMethod::Constant, Some("***")),
        &[],
        &["ds"],
        &[],
    );
    let stale = profile(&cid, 4, &[], &[("region", &["eu", "us"])], &["ds"]);
    let mut good = Vec::new();
    // Value converter StringConverter: the payload text itself.
    good.push(raw(Kind::DataSource, "ds", jsonb_text(&db, &source).await));
    // JsonConverter without schemas, payload expanded: a policy whose empty arrays
    // (target tags, both exceptions) and null rule fields are dropped, its objects kept.
    let text = jsonb_text(&db, &filter).await;
    assert_eq!(
        expanded(&compact(&text)),
        r#"{"id":"by-region","rule":{"kind":"MATCHING_ATTRIBUTE","attribute":"region","column_tag":"geo"},"status":"ACTIVE","target":{"data_source_ids":["ds"]},"version":1,"exceptions":{}}"#,
    );
    good.push(raw(Kind::Policy, "by-region", expanded(&compact(&text))));
    // JsonConverter with schemas, payload not expanded: the envelope of a string.
    let text = jsonb_text(&db, &masked).await;
    good.push(raw(
        Kind::Policy,
        "hide-email",
        envelope(JSON_STRING_SCHEMA, &jackson_string(&text)),
    ));
    // The stale profile: JsonConverter without schemas, payload not expanded, a JSON
    // string.
    good.push(raw(
        Kind::Profile,
        &cid,
        jackson_string(&jsonb_text(&db, &stale).await),
    ));
    // Payload expanded, with and without schemas: the document without its nulls and
    // empty arrays (current_project, acknowledged_purposes), in jsonb's key order.
    let ana_doc = profile(&ana, 3, &["analysts"], &[("region", &["eu"])], &["ds"]);
    let text = jsonb_text(&db, &ana_doc).await;
    let ana_expanded = expanded(&compact(&text));
    assert_eq!(
        ana_expanded,
        format!(
            r#"{{"user":"{ana}","groups":["analysts"],"version":3,"attributes":{{"region":["eu"]}},"data_sources":["ds"]}}"#
        ),
        "jsonb's key order, as the router keeps it"
    );
    let strings = r#"{"type":"array","items":{"type":"string","optional":true},"optional":true"#;
    let schema = format!(
        r#"{{"type":"struct","fields":[{{"type":"string","optional":true,"field":"user"}},{strings},"field":"groups"}},{{"type":"int32","optional":true,"field":"version"}},{{"type":"struct","fields":[{strings},"field":"region"}}],"optional":true,"name":"payload.attributes","field":"attributes"}},{strings},"field":"data_sources"}}],"optional":true,"name":"payload"}}"#
    );
    good.push(raw(Kind::Profile, &ana, envelope(&schema, &ana_expanded)));
    let ana_v2 = ana_expanded.replace(r#""version":3"#, r#""version":2"#);
    good.push(raw(Kind::Profile, &ana, ana_v2));
    let bad = hostile(&ana);
    let mut all: Vec<Published> = good;
    all.extend(
        bad.iter()
            .map(|(p, _)| raw(p.kind, &p.key, p.value.clone())),
    );
    send_raw(
        &config,
        all.iter()
            .map(|r| (r.kind, r.key.as_str(), r.value.as_slice())),
    )
    .await;

    let running = start(&config);
    wait_applied(&db, &config, all.len() + 1).await;
    running.stop().await;

    let view = "SELECT id, email, region FROM immuta.t ORDER BY id";
    assert_eq!(
        db.rows_as(&ana, view).await.unwrap(),
        vec![row(&[Some("1"), Some("***"), Some("eu")])],
        "the JSON data source, filter, mask and profile together"
    );
    assert!(
        db.rows_as(&cid, view).await.unwrap().is_empty(),
        "the stale JSON profile was applied"
    );
    let versions = rows(
        &db.client().await,
        &format!("SELECT user_name, version FROM immuta_system.profile WHERE user_name IN ('{ana}', '{cid}') ORDER BY version"),
    )
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![row(&[Some(&ana), Some("3")]), row(&[Some(&cid), Some("5")])]
    );

    let letters = read_dead_letters(&config, bad.len()).await;
    for (published, says) in &bad {
        let letter = letters
            .iter()
            .find(|l| match &l.value {
                Some(value) => value == &published.value,
                None => l.reason.contains(says),
            })
            .unwrap_or_else(|| panic!("no dead letter holds the record that should say {says:?}"));
        assert!(
            letter.reason.contains(says),
            "{says:?} not in {:?}",
            letter.reason
        );
    }
    assert_eq!(
        letters.len(),
        bad.len(),
        "only the hostile records are dead letters"
    );
}

#[test]
fn compact_drops_only_the_spaces_between_tokens() {
    assert_eq!(
        compact(r#"{"a": "x, \" y", "b": [1, 2]}"#),
        r#"{"a":"x, \" y","b":[1,2]}"#
    );
    assert_eq!(jackson_string("a\"/\u{1}é\n"), "\"a\\\"/\\u0001é\\n\"");
}

/// Keeps the helpers honest: a document from `Event` reads back as itself.
#[test]
fn documents_round_trip() {
    let p = profile("u", 1, &["g"], &[("k", &["v"])], &["ds"]);
    let event: &Event = p.value.as_ref().unwrap();
    let codec = policy_push::codec::Codec::embedded().unwrap();
    assert_eq!(
        &codec
            .decode(Kind::Profile, to_json(event).to_string().as_bytes())
            .unwrap(),
        event
    );
}
