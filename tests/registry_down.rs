//! SIGTERM while the Schema Registry is unreachable: a record that needs it waits (it is
//! retried with backoff, never dead-lettered for it), and the wait between attempts ends
//! at the stop, so the pipeline exits within `batch.shutdown_timeout_ms`.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_on_time_while_the_schema_registry_is_unreachable() {
    let broker = Broker::mock();
    let (_db, mut config) = setup(&broker, 1, "registry").await;
    // Nothing listens there: every lookup is refused, a transient failure.
    config.schema_registry.url = Some(format!("http://127.0.0.1:{}", free_tcp_port()));
    config.batch.shutdown_timeout = Duration::from_secs(3);
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");

    // Confluent framing: magic byte 0, then schema id 1 (big-endian), then the datum.
    let framed = [0u8, 0, 0, 0, 1, 2, b'u'];
    let producer: FutureProducer = policy_push::pipeline::kafka_config(&config)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&config.topics.profiles)
                .key("u")
                .payload(&framed[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let running = start(&config);
    // Seven failed lookups: the backoff between attempts is seconds long by now.
    wait_for(
        "the record retried for the registry",
        Duration::from_secs(90),
        || async {
            let h = health_json(port).await;
            h["integrations"]["registry"]["consecutive_failures"]
                .as_u64()
                .is_some_and(|n| n >= 7)
        },
    )
    .await;
    let stopped = stop_on_time(running, &config).await;
    stopped.unwrap();
}
