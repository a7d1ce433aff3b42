//! Turns a Kafka message into a batch item: decode, validate, and route by host.

use std::time::Duration;

use crate::codec::{CheckedProfile, Codec};
use crate::config::Topics;
use crate::error::{chain, Chain, Class, Classify};
use crate::event::{self, Event, Kind, Scope};
use crate::record::{Body, Raw};
use crate::retry::{self, Backoff};

/// The longest wait between two attempts to decode while the Schema Registry is
/// unreachable; a stop ends any wait at once.
const MAX_DECODE_BACKOFF: Duration = Duration::from_secs(10);

pub struct Router {
    pub codec: std::sync::Arc<Codec>,
    pub topics: Topics,
    /// The integration's host (DataSource.host is matched case-insensitively).
    pub host: String,
    /// The integration's database, lower case.
    pub database: String,
    /// The integration's view schema, lower case.
    pub view_schema: String,
    /// Told each time a record waits for a failing dependency (the Schema Registry), so
    /// that it shows on /health; the record is retried, never dead-lettered for it.
    pub on_wait: Waiting,
}

/// What a [`Router`] tells while a record waits (see `on_wait`).
pub type Waiting = std::sync::Arc<dyn Fn(&crate::codec::CodecError) + Send + Sync>;

fn poison(reason: impl Into<String>, key: Option<&[u8]>, value: Option<&[u8]>) -> Body {
    Body::Poison {
        reason: reason.into(),
        raw: Raw {
            key: key.map(Box::from),
            value: value.map(Box::from),
            meta: None,
        },
    }
}

/// A key that is a JSON string or envelope, as Kafka Connect's JsonConverter writes keys
/// when it is the key converter too. Such a record is refused, tombstones included: read
/// as a raw id it names no entity, and a delete of nothing would pass in silence while
/// the entity it meant stays. So no entity's id may begin and end with a quote.
fn looks_json_encoded(key: &[u8]) -> bool {
    (key.len() >= 2 && key.starts_with(b"\"") && key.ends_with(b"\""))
        || key.starts_with(br#"{"schema""#)
}

/// A profile checked without decoding (`Codec::check_profile`); the same outcomes, and
/// the same reasons, as `Router::classify` gives for a decoded one.
fn profile(checked: CheckedProfile, key_str: &str, key: Option<&[u8]>, bytes: &[u8]) -> Body {
    let name = Kind::Profile.record_name();
    match checked {
        CheckedProfile::Damaged(e) => poison(
            format!("cannot decode {name}: {}", Chain(&e)),
            key,
            Some(bytes),
        ),
        CheckedProfile::Invalid(e) => poison(chain(&e), key, Some(bytes)),
        CheckedProfile::Valid { user, datum } => {
            match event::check_key(Kind::Profile, key_str, &user) {
                Ok(()) => Body::Profile { user, datum },
                Err(e) => poison(chain(&e), key, Some(bytes)),
            }
        }
    }
}

impl Router {
    /// Routes one message. A transient failure (the Schema Registry is unreachable) is
    /// retried here with backoff until it succeeds or `stop` says to give up, in which
    /// case None is returned and the message is not handed on (it will be read again).
    pub fn route(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        stop: &dyn Fn() -> bool,
    ) -> Option<Body> {
        let Some(kind) = self.topics.kind_of(topic) else {
            return Some(poison(
                format!("topic {topic} is not an input topic"),
                key,
                value,
            ));
        };
        let Some(key_str) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return Some(poison("record key is missing or not UTF-8", key, value));
        };
        if looks_json_encoded(key_str.as_bytes()) {
            let reason = format!(
                "record key {} looks JSON-encoded: a Kafka Connect source must write keys with key.converter=org.apache.kafka.connect.storage.StringConverter",
                event::quote_capped(key_str)
            );
            return Some(poison(reason, key, value));
        }
        let Some(bytes) = value else {
            return Some(match event::entity_key(kind, key_str) {
                Ok(k) => Body::Delete {
                    kind,
                    key: k,
                    raw: Raw {
                        key: key.map(Box::from),
                        value: None,
                        meta: None,
                    },
                },
                Err(e) => poison(format!("tombstone: {}", Chain(&e)), key, None),
            });
        };
        if kind == Kind::Profile {
            if let Some(checked) = self.codec.check_profile(bytes) {
                return Some(profile(checked, key_str, key, bytes));
            }
        }
        let mut backoff = Backoff::new(MAX_DECODE_BACKOFF);
        let decoded = loop {
            match self.codec.decode(kind, bytes) {
                Err(e) if e.class() == Class::Retryable => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %Chain(&e), attempt = backoff.attempts(), ?delay, "decode failed transiently; retrying");
                    (self.on_wait)(&e);
                    if retry::sleep_unless(stop, delay) {
                        return None;
                    }
                }
                other => break other,
            }
        };
        Some(self.classify(kind, key_str, key, bytes, decoded))
    }

    fn classify(
        &self,
        kind: Kind,
        key_str: &str,
        key: Option<&[u8]>,
        bytes: &[u8],
        decoded: Result<Event, crate::codec::CodecError>,
    ) -> Body {
        let event = match decoded {
            Ok(e) => e,
            Err(e) => {
                return poison(
                    format!("cannot decode {}: {}", kind.record_name(), Chain(&e)),
                    key,
                    Some(bytes),
                )
            }
        };
        if let Event::DataSource(ds) = &event {
            if !ds.host.eq_ignore_ascii_case(&self.host) {
                return match event::entity_key(kind, key_str) {
                    Ok(id) if id == ds.id => Body::ForeignDataSource {
                        id,
                        version: ds.version,
                    },
                    Ok(_) | Err(_) => poison(
                        format!(
                            "record key {} does not match the entity id {}",
                            event::quote_capped(key_str),
                            event::quote_capped(&ds.id)
                        ),
                        key,
                        Some(bytes),
                    ),
                };
            }
        }
        match event::validate(
            event,
            key_str,
            &Scope {
                database: &self.database,
                view_schema: &self.view_schema,
            },
        ) {
            Ok(event) => {
                // Profiles are never refused one by one by the warehouse, so their bytes
                // need not be kept for a later dead letter.
                let raw = match event.kind() {
                    Kind::Profile => Raw::default(),
                    _ => Raw {
                        key: key.map(Box::from),
                        value: Some(Box::from(bytes)),
                        meta: None,
                    },
                };
                Body::Upsert(event, raw)
            }
            Err(e) => poison(chain(&e), key, Some(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    const HOSTILE: &str = "x\"; drop table t; --";

    fn router() -> Router {
        Router {
            codec: std::sync::Arc::new(Codec::embedded().unwrap()),
            topics: Topics::default(),
            host: "h".into(),
            database: "db".into(),
            view_schema: "immuta".into(),
            on_wait: std::sync::Arc::new(|_| {}),
        }
    }

    #[test]
    fn a_record_waits_for_an_unreachable_registry_and_says_so() {
        let waits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = waits.clone();
        let codec = Codec::embedded()
            .unwrap()
            .with_registry(Some(crate::codec::Registry::new("http://127.0.0.1:9")));
        let r = Router {
            codec: std::sync::Arc::new(codec),
            on_wait: std::sync::Arc::new(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
            ..router()
        };
        let confluent = [vec![0], 7u32.to_be_bytes().to_vec(), vec![0]].concat();
        let topic = r.topics.profiles.clone();
        // Stopped once the third attempt failed: the wait after it ends at once.
        let stop = || waits.load(std::sync::atomic::Ordering::SeqCst) >= 3;
        // Not a dead letter: nothing is handed on, and the record is read again.
        assert!(r
            .route(&topic, Some(b"u"), Some(&confluent), &stop)
            .is_none());
        assert_eq!(waits.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn a_refused_record_with_a_json_encoded_key_names_the_key_converter() {
        let r = router();
        let doc = br#"{"user":"alice","version":1}"#;
        let reason =
            |key: &[u8]| match r.route(&r.topics.profiles.clone(), Some(key), Some(doc), &|| false)
            {
                Some(Body::Poison { reason, .. }) => reason,
                _ => String::new(),
            };
        for key in [
            &br#""alice""#[..],
            br#"{"schema":{"type":"string"},"payload":"alice"}"#,
        ] {
            assert!(
                reason(key)
                    .contains("key.converter=org.apache.kafka.connect.storage.StringConverter"),
                "{}",
                reason(key)
            );
        }
        assert!(
            !reason(b"bob").contains("key.converter"),
            "{}",
            reason(b"bob")
        );
        let tombstone = r.route(
            &r.topics.data_sources.clone(),
            Some(br#""ds1""#),
            None,
            &|| false,
        );
        assert!(
            matches!(&tombstone, Some(Body::Poison { reason, .. }) if reason.contains("key.converter")),
            "a delete of nothing must not pass in silence: {tombstone:?}"
        );
        assert!(matches!(
            r.route(
                &r.topics.profiles.clone(),
                Some(b"alice"),
                Some(doc),
                &|| false
            ),
            Some(Body::Upsert(Event::Profile(_), _))
        ));
    }

    #[test]
    fn data_sources_over_own_catalog_or_view_schemas_are_dead_lettered() {
        let r = router();
        for schema in [
            "immuta_system",
            "immuta_functions",
            "immuta_procedures",
            "IMMUTA",
            "pg_catalog",
            "information_schema",
            "pg_toast",
            "pg_temp_3",
        ] {
            let mut d = ds();
            d.schema = schema.into();
            match route(&r, &Event::DataSource(d), "ds") {
                Body::Poison { reason, .. } => assert!(
                    reason.contains("cannot back a policy view"),
                    "{schema}: {reason}"
                ),
                other => panic!("{schema}: {other:?}"),
            }
        }
        let mut d = ds();
        d.schema = "pgx".into();
        assert!(matches!(
            route(&r, &Event::DataSource(d), "ds"),
            Body::Upsert(..)
        ));
    }

    fn ds() -> DataSource {
        DataSource {
            id: "ds".into(),
            version: 1,
            host: "H".into(),
            database: "DB".into(),
            schema: "s".into(),
            table: "t".into(),
            view_name: "v".into(),
            columns: vec![Column {
                name: "c".into(),
                data_type: "text".into(),
                tags: vec![],
            }],
            tags: vec![],
            status: Status::Active,
        }
    }

    fn route(r: &Router, event: &Event, key: &str) -> Body {
        let topic = r.topics.topic(event.kind()).to_string();
        let bytes = r.codec.encode(event).unwrap();
        r.route(&topic, Some(key.as_bytes()), Some(&bytes), &|| false)
            .unwrap()
    }

    #[test]
    fn hostile_names_in_every_identifier_field_are_dead_lettered_with_the_field_named() {
        let r = router();
        let mut cases: Vec<(String, Event, String)> = Vec::new();
        let mut p = test_profile("u", 1);
        p.user = HOSTILE.into();
        cases.push(("UserProfile.user".into(), Event::Profile(p), HOSTILE.into()));
        cases.push((
            "Impersonation.user".into(),
            Event::Impersonation(Impersonation {
                user: HOSTILE.into(),
                version: 1,
                allowed: true,
            }),
            HOSTILE.into(),
        ));
        for field in ["database", "schema", "table", "view_name", "columns.name"] {
            let mut d = ds();
            match field {
                "database" => d.database = HOSTILE.into(),
                "schema" => d.schema = HOSTILE.into(),
                "table" => d.table = HOSTILE.into(),
                "view_name" => d.view_name = HOSTILE.into(),
                _ => d.columns[0].name = HOSTILE.into(),
            }
            cases.push((
                format!("DataSource.{field}"),
                Event::DataSource(d),
                "ds".into(),
            ));
        }
        for (field, event, key) in cases {
            match route(&r, &event, &key) {
                Body::Poison { reason, raw } => {
                    assert!(reason.contains(&field), "{field}: {reason}");
                    assert!(
                        raw.value.is_some() && raw.key.as_deref() == Some(key.as_bytes()),
                        "original bytes kept"
                    );
                }
                other => panic!("{field}: not dead-lettered: {other:?}"),
            }
        }
    }

    #[test]
    fn names_are_folded_and_hosts_matched_case_insensitively() {
        let r = router();
        match route(&r, &Event::DataSource(ds()), "ds") {
            Body::Upsert(Event::DataSource(d), _) => assert_eq!(d.database, "db"),
            other => panic!("{other:?}"),
        }
        let mut foreign = ds();
        foreign.host = "elsewhere".into();
        foreign.view_name = HOSTILE.into();
        assert!(matches!(
            route(&r, &Event::DataSource(foreign), "ds"),
            Body::ForeignDataSource { version: 1, .. }
        ));
    }

    #[test]
    fn tombstones_and_bad_keys() {
        let r = router();
        let t = r.topics.profiles.clone();
        assert!(
            matches!(r.route(&t, Some(b"Alice"), None, &|| false), Some(Body::Delete { kind: Kind::Profile, ref key, .. }) if key == "alice")
        );
        assert!(matches!(
            r.route(&t, None, None, &|| false),
            Some(Body::Poison { .. })
        ));
        assert!(matches!(
            r.route(&t, Some(&[0xff, 0xfe]), Some(b"x"), &|| false),
            Some(Body::Poison { .. })
        ));
        assert!(matches!(
            r.route("other.topic", Some(b"k"), Some(b"x"), &|| false),
            Some(Body::Poison { .. })
        ));
    }
}
