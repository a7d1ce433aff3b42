//! A record of the dead-letter topic as read back: a dead letter, with its origin and
//! why it was rejected, or the marker a redrive leaves behind it.

use std::collections::BTreeMap;

use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::Serialize;

use crate::consume::dead_letter as dl;

/// On a redrive's marker: the position (`PARTITION:OFFSET`) of the letter it redrove.
pub const HEADER_REDRIVE_OF: &str = "policy_push.redrive_of";
/// On a redrive's marker: where the letter went (`TOPIC/PARTITION@OFFSET`).
pub const HEADER_REDRIVEN_TO: &str = "policy_push.redriven_to";

/// One dead letter as read back.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub partition_in_dlq: i32,
    pub offset_in_dlq: i64,
    pub integration: String,
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub error: String,
    pub class: String,
    pub stage: String,
    pub dead_lettered_ms: Option<i64>,
    /// The original record's timestamp.
    pub timestamp_ms: Option<i64>,
    pub value_omitted: Option<String>,
    /// The last redrive of this letter, if any (its marker).
    pub redriven: Option<Redrive>,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    /// The original record's headers (not the ones policy-push added).
    #[serde(skip)]
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A redrive's marker: which letter went where, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redrive {
    #[serde(skip)]
    pub of: (i32, i64),
    pub at_ms: Option<i64>,
    pub to: String,
}

/// What a record of the dead-letter topic is.
pub enum Entry {
    Letter(Box<Letter>),
    /// A redrive's marker, at its own position.
    Marker((i32, i64), Redrive),
}

impl Entry {
    pub fn from_message(m: &BorrowedMessage<'_>) -> Entry {
        let mut own = BTreeMap::new();
        let mut headers = Vec::new();
        for h in m.headers().into_iter().flat_map(|h| h.iter()) {
            if dl::is_own_header(h.key) {
                let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                own.insert(h.key.to_string(), text.unwrap_or_default());
            } else {
                headers.push((h.key.to_string(), h.value.map(<[u8]>::to_vec)));
            }
        }
        let text = |k: &str| own.get(k).cloned().unwrap_or_default();
        let number = |k: &str| own.get(k).and_then(|v| v.parse().ok());
        if let Some(of) = own.get(HEADER_REDRIVE_OF).and_then(|p| position(p)) {
            let redrive = Redrive {
                of,
                at_ms: m.timestamp().to_millis(),
                to: text(HEADER_REDRIVEN_TO),
            };
            return Entry::Marker((m.partition(), m.offset()), redrive);
        }
        Entry::Letter(Box::new(Letter {
            partition_in_dlq: m.partition(),
            offset_in_dlq: m.offset(),
            integration: text(dl::HEADER_INTEGRATION),
            topic: text(dl::HEADER_TOPIC),
            partition: number(dl::HEADER_PARTITION).and_then(|p: i64| i32::try_from(p).ok()),
            offset: number(dl::HEADER_OFFSET),
            error: text(dl::HEADER_ERROR),
            class: text(dl::HEADER_CLASS),
            stage: text(dl::HEADER_STAGE),
            dead_lettered_ms: number(dl::HEADER_DEAD_LETTERED_AT),
            timestamp_ms: m.timestamp().to_millis(),
            value_omitted: own.get(dl::HEADER_VALUE_OMITTED).cloned(),
            redriven: None,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }))
    }
}

/// `PARTITION:OFFSET`, as `list` prints a letter's place in the dead-letter topic.
pub fn position(s: &str) -> Option<(i32, i64)> {
    let (p, o) = s.split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}
