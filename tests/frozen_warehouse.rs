//! SIGTERM within `batch.shutdown_timeout_ms` on every path: a warehouse frozen
//! (`SIGSTOP` of its postmaster and backends) in the middle of a cold start's drain holds
//! batches, the policy barrier's watch, pool waits and connection attempts; none of them
//! may keep the pipeline past its deadline.

mod common;

use std::time::Duration;

use common::server::Server;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_on_time_with_the_warehouse_frozen_mid_drain() {
    let server = Server::start(|_| (String::new(), None));
    server
        .admin("postgres")
        .await
        .batch_execute("CREATE DATABASE frozen")
        .await
        .unwrap();
    let broker = Broker::mock();
    let topics = random_topics();
    broker.create_topics(&topics, 4).await;
    let port = server.port;
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{}\"\n[consumer]\ngroup_prefix = \"{}\"\n\
         [batch]\nmax_records = 500\nshutdown_timeout_ms = 3000\n[http]\nlisten = \"\"\n\
         [[integration]]\nname = \"frozen\"\nhost = \"{HOST}\"\n\
         url = \"postgres://postgres@127.0.0.1:{port}/frozen\"\n",
        broker.bootstrap(),
        unique("g"),
    );
    let mut config = policy_push::Config::from_toml(&text, Vec::new()).unwrap();
    config.topics = topics;
    bootstrap(&config).await;
    let records: Vec<_> = (0..20_000)
        .map(|i| profile(&format!("u{i:05}"), 1, &["g"], &[("a", &["v"])], &["ds"]))
        .collect();
    publish(&config, &records).await;
    let running = start(&config);
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    let client = server.admin("frozen").await;
    wait_for("the drain under way", Duration::from_secs(60), || async {
        stored_total(&client, &group).await > 0
    })
    .await;
    server.signal("-STOP");
    let stopped = stop_on_time(running, &config).await;
    server.signal("-CONT");
    stopped.unwrap();
}
