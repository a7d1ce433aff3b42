//! `check-config --connect`: tries every Kafka broker, the Schema Registry and every
//! warehouse connection with the configuration's own settings (TLS, SASL, credentials),
//! and prints one line per target: `ok`, or `FAIL` and the error.

use crate::error::chain;
use std::time::Duration;

use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Prints one line per target; true when every one answered.
pub async fn report(config: &Config) -> bool {
    let mut all_ok = true;
    let mut line = |target: String, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {target}{detail}"),
        Err(e) => {
            all_ok = false;
            println!("FAIL  {target}: {e}");
        }
    };
    let servers = config
        .kafka
        .get("bootstrap.servers")
        .cloned()
        .unwrap_or_default();
    let mut answered_once = false;
    for broker in servers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let answer = kafka(config, broker).await;
        answered_once |= answer.is_ok();
        line(format!("kafka broker {broker}"), answer);
    }
    if answered_once {
        for (target, found) in super::reach_topics::check(config).await {
            line(target, found);
        }
    }
    if config.schema_registry.url.is_some() {
        let url =
            crate::config::redact_registry_url(config.schema_registry.url.as_deref().unwrap_or(""));
        line(format!("schema registry {url}"), registry(config).await);
    }
    for i in &config.integrations {
        let system = crate::apply::connect::system_client(i).await;
        line(
            format!("warehouse {} (url)", i.name),
            answered(system).await,
        );
        if i.setup_url.is_some() {
            let setup = crate::apply::connect::setup_client(i).await;
            line(
                format!("warehouse {} (setup_url)", i.name),
                answered(setup).await,
            );
        }
    }
    all_ok
}

/// Keeps librdkafka's last error or warning: a failed metadata request only says that
/// the transport failed, the reason (a refused certificate, failed authentication) comes
/// as a log line.
#[derive(Default)]
struct LastError(Mutex<Option<String>>);

impl LastError {
    fn keep(&self, text: String) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(text);
        }
    }
}

impl ClientContext for LastError {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, _fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel::{Alert, Critical, Emerg, Error, Warning};
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            self.keep(message.to_string());
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        let generic = matches!(
            &error,
            KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                    | rdkafka::types::RDKafkaErrorCode::AllBrokersDown
            )
        );
        let kept = self.0.lock().ok().is_some_and(|l| l.is_some());
        // A transport failure after a logged reason says less than the reason.
        if !(generic && kept) {
            self.keep(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for LastError {}

async fn kafka(config: &Config, broker: &str) -> Result<String, String> {
    let mut cfg = crate::pipeline::kafka_config(config);
    cfg.set("bootstrap.servers", broker);
    let consumer: BaseConsumer<LastError> = cfg
        .create_with_context(LastError::default())
        .map_err(|e| chain(&e))?;
    let metadata = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(None, TIMEOUT).map_err(|e| {
            // Errors and log lines reach the context only when the client is polled.
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(50));
            }
            match consumer.context().0.lock().ok().and_then(|l| l.clone()) {
                Some(reason) => format!("{e} ({reason})"),
                None => e.to_string(),
            }
        })
    })
    .await
    .map_err(|e| chain(&e))??;
    Ok(format!(
        " ({} brokers, {} topics)",
        metadata.brokers().len(),
        metadata.topics().len()
    ))
}

async fn registry(config: &Config) -> Result<String, String> {
    let registry = crate::codec::Registry::from_settings(&config.schema_registry)
        .map_err(|e| chain(&e))?
        .ok_or("no url")?;
    tokio::task::spawn_blocking(move || registry.ping())
        .await
        .map_err(|e| chain(&e))?
        .map(|_| String::new())
        .map_err(|e| chain(&e))
}

async fn answered(
    client: Result<tokio_postgres::Client, crate::apply::connect::ConnectError>,
) -> Result<String, String> {
    let client = client.map_err(|e| chain(&e))?;
    let row = client
        .query_one("SELECT current_user::text, version()", &[])
        .await
        .map_err(|e| chain(&e))?;
    let user: String = row.try_get(0).map_err(|e| chain(&e))?;
    let version: String = row.try_get(1).map_err(|e| chain(&e))?;
    let server = version.split(" on ").next().unwrap_or(&version).to_string();
    Ok(format!(" (as {user}, {server})"))
}
