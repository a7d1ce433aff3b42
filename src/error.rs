//! How every module's errors are triaged and shown. Each module keeps its own `thiserror`
//! enum and says, through [`Classify`], which of three things the pipeline must do about
//! it; every place that shows an error to a person (logs, /health, dead-letter reasons,
//! the command line) shows its [`Chain`].
//!
//! The convention, which every error of this crate keeps: a variant with a cause returns
//! it as `source()` and does not print it in its own message. Some crates print their
//! cause *and* return it (tokio-postgres, rdkafka, deadpool, OpenSSL's `ssl::Error`, most
//! of apache-avro's); [`Chain`] knows them by type, prints them whole and ends the walk
//! there, so no text appears twice.

use std::error::Error;
use std::fmt;

/// What the pipeline does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient (network, warehouse down, broker hiccup): retry with backoff, report
    /// the integration unhealthy meanwhile, never skip the record.
    Retryable,
    /// The record itself is bad: dead-letter it, advance past it, carry on.
    Poison,
    /// Misconfiguration or a broken invariant: stop and tell the operator.
    Fatal,
}

pub trait Classify {
    fn class(&self) -> Class;
}

/// An error and its sources in one line, joined by ": ".
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

/// Displays an error and its sources in one line (`error = %Chain(&e)` in a log).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut next = Some(self.0);
        let mut separator = "";
        while let Some(e) = next {
            f.write_str(separator)?;
            separator = ": ";
            next = match printed_whole(e) {
                Some(text) => {
                    f.write_str(&text)?;
                    None
                }
                None => {
                    write!(f, "{e}")?;
                    e.source()
                }
            };
        }
        Ok(())
    }
}

/// The text of an error from a crate that prints its cause in its own message: the walk
/// ends with it. A warehouse error is shown as PostgreSQL or Redshift gave it
/// ([`describe_sql`]).
fn printed_whole(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        return Some(describe_sql(pg));
    }
    if let Some(pool) = e.downcast_ref::<deadpool_postgres::PoolError>() {
        return Some(match pool {
            deadpool_postgres::PoolError::Backend(pg) => describe_sql(pg),
            other => other.to_string(),
        });
    }
    if let Some(avro) = e.downcast_ref::<apache_avro::Error>() {
        use apache_avro::error::Details;
        // These four name their cause only as their source.
        return match avro.details() {
            Details::ParseSchemaJson(_)
            | Details::ReadSchemaFromReader(_)
            | Details::ConvertToUtf8(_)
            | Details::ConvertToUtf8Error(_) => None,
            _ => Some(avro.to_string()),
        };
    }
    if let Some(kafka) = e.downcast_ref::<rdkafka::error::KafkaError>() {
        return Some(match kafka {
            // librdkafka's own text repeats the value, which may be a secret.
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => format!(
                "the Kafka client configuration is refused: {key}: {}",
                without_value(desc, value)
            ),
            other => other.to_string(),
        });
    }
    e.is::<openssl::ssl::Error>().then(|| e.to_string())
}

/// librdkafka's refusal of a property (`desc`) without the property's value, which its
/// text repeats and which may be a secret pasted into the wrong key.
pub fn without_value(desc: &str, value: &str) -> String {
    match value.is_empty() {
        true => desc.to_string(),
        false => desc.replace(value, "<redacted>"),
    }
}

/// A warehouse error as PostgreSQL or Redshift gave it: severity, SQLSTATE, message,
/// detail and hint on one line (tokio-postgres's own text is "db error" and then the
/// message, detail and hint on lines of their own, without the SQLSTATE); or the transport
/// error with its cause (a closed connection, a reset, a TLS failure).
pub fn describe_sql(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        text += &format!(" (detail: {detail})");
    }
    if let Some(hint) = db.hint() {
        text += &format!(" (hint: {hint})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the schema")]
    struct Outer(#[source] apache_avro::Error);

    #[test]
    fn each_cause_is_shown_once() {
        let toml = toml::from_str::<toml::Table>("[a").unwrap_err();
        let detail = toml.to_string();
        let e = anyhow::Error::new(crate::config::ConfigError::Parse(toml)).context("loading");
        let text = chain(e.as_ref());
        assert_eq!(text, format!("loading: invalid configuration: {detail}"));
    }

    #[test]
    fn a_crate_that_prints_its_cause_is_not_walked_further() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
        let avro = apache_avro::Error::new(apache_avro::error::Details::ReadBytes(io));
        let text = chain(&Outer(avro));
        assert_eq!(text.matches("short read").count(), 1, "{text}");
        assert!(text.starts_with("reading the schema: "), "{text}");
    }

    #[test]
    fn a_crate_that_only_returns_its_cause_is_walked() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let detail = json.to_string();
        let avro = apache_avro::Error::new(apache_avro::error::Details::ParseSchemaJson(json));
        let text = chain(&Outer(avro));
        assert!(text.ends_with(&format!(": {detail}")), "{text}");
        assert_eq!(text.matches(detail.as_str()).count(), 1, "{text}");
    }

    #[test]
    fn a_refused_kafka_property_is_shown_without_its_value() {
        let e = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"compression.type\"".into(),
            "compression.type".into(),
            "hunter2".into(),
        );
        let text = chain(&crate::consume::ConsumeError::Kafka(e));
        assert!(text.contains("compression.type"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_kafka_error_is_shown_once() {
        let kafka = rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        );
        let code = rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure.to_string();
        let text = chain(&crate::consume::ConsumeError::Kafka(kafka));
        assert_eq!(text.matches(code.as_str()).count(), 1, "{text}");
    }
}
