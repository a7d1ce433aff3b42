//! A broker restarted on the same address with its topics recreated, under a running
//! instance. The mock cluster cannot restart, so the "broker" is a TCP proxy that each of
//! two librdkafka mock clusters advertises as its only broker's address: the restart cuts
//! every connection and sends the next ones to the second cluster, where the group is
//! unknown and the topics are new (new topic ids, fewer records than stored). Tansu, which
//! can restart, makes librdkafka 2.12 crash instead (README, "Known limitations").

mod common;

use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use policy_push::simulate::Record;
use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One single-broker mock cluster, advertising `advertised` as its broker's address. It
/// lives as long as the producer handle that owns it.
struct Cluster {
    owner: BaseProducer,
    listens: SocketAddr,
}

impl Cluster {
    fn new(advertised: SocketAddr) -> Self {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .expect("mock cluster");
        let listens = bootstraps(raw(&owner))
            .parse()
            .expect("mock broker address");
        let host = CString::new(advertised.ip().to_string()).unwrap();
        // SAFETY: the cluster is owned by `owner`, alive for this call, which copies the
        // host string.
        unsafe {
            rd::rd_kafka_mock_broker_set_host_port(
                raw(&owner),
                1,
                host.as_ptr(),
                advertised.port().into(),
            )
        };
        Self { owner, listens }
    }

    fn create_topics(&self, topics: &policy_push::config::Topics) {
        for name in topics.inputs().iter().chain([&topics.dead_letter.as_str()]) {
            let name = CString::new(*name).unwrap();
            // SAFETY: as above; the name is copied by the call.
            let err =
                unsafe { rd::rd_kafka_mock_topic_create(raw(&self.owner), name.as_ptr(), 1, 1) };
            assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
}

fn raw(owner: &BaseProducer) -> *mut rd::rd_kafka_mock_cluster_t {
    // SAFETY: a live handle; the answer is null only for a handle without a cluster.
    let raw = unsafe { rd::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
    assert!(!raw.is_null(), "the handle owns a mock cluster");
    raw
}

/// The broker's address as the cluster advertises it ("host:port").
fn bootstraps(cluster: *mut rd::rd_kafka_mock_cluster_t) -> String {
    // SAFETY: the string is owned by the cluster, which `raw` found alive.
    unsafe { CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(cluster)) }
        .to_string_lossy()
        .into_owned()
}

/// The address clients know the broker by: forwards each connection to the current
/// cluster; `switch` drops every open connection and forwards the next ones elsewhere.
struct Proxy {
    address: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(address));
        let open: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (to, conns) = (target.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let dest = *to.lock().unwrap();
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(dest).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(forward);
            }
        });
        Self {
            address,
            target,
            open,
            accept,
        }
    }

    fn switch(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
        for conn in self.open.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.switch(self.address);
    }
}

/// Whichever finding comes first: the lag refresh sees the stored offset past the new
/// end while the instance still owns the partition; a new assignment, the topic id.
fn names_the_change(error: &str) -> bool {
    error.contains("deleted and created again") || error.contains("past the partition's end")
}

const HELD: &str = "policy_push_records_held_total{integration=\"restarted\"}";

fn profiles(prefix: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| profile(&format!("{prefix}{i:02}"), 1, &[], &[], &[]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_with_its_topics_recreated_is_failing_within_a_minute() {
    restart_with_topics_recreated(Ids::Stored).await;
}

/// As a host bootstrapped before topic ids were stored (or a broker without them): only
/// the watermarks see it, and once the new topic has grown past the stored offset they
/// look healthy. The hold kept in the warehouse still stops the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_topic_ids_the_hold_outlives_a_restart_and_a_grown_topic() {
    restart_with_topics_recreated(Ids::Forgotten).await;
}

#[derive(PartialEq)]
enum Ids {
    Stored,
    Forgotten,
}

async fn restart_with_topics_recreated(ids: Ids) {
    let proxy = Proxy::start().await;
    let before = Cluster::new(proxy.address);
    proxy.switch(before.listens);
    let broker = Broker::External(proxy.address.to_string());
    let mut db = Database::create().await;
    let topics = random_topics();
    before.create_topics(&topics);
    let mut config = config(&broker, &topics, &mut db, "restarted", HOST);
    bootstrap(&config).await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.lag_refresh = Duration::from_millis(300);
    config.http.failing_after = Duration::from_secs(3);
    publish(&config, &profiles("u", 20)).await;
    let running = start(&config);
    wait_applied(&db, &config, 20).await;
    wait_for("healthy", Duration::from_secs(30), || async {
        health_state(port, "restarted").await == "healthy"
    })
    .await;

    if ids == Ids::Forgotten {
        db.client()
            .await
            .batch_execute("DELETE FROM immuta_system.topic_ids")
            .await
            .unwrap();
    }

    // The broker comes back empty; its topics are created again a little later, and
    // records are published to them, fewer than the stored offsets.
    let after = Cluster::new(proxy.address);
    proxy.switch(after.listens);
    drop(before);
    tokio::time::sleep(Duration::from_secs(2)).await;
    after.create_topics(&config.topics);
    publish(&config, &profiles("n", 5)).await;
    let restarted = Instant::now();

    let subject = format!("partition {}/0", config.topics.profiles);
    wait_for(
        "the recreated partition is stopped and reported",
        Duration::from_secs(60) + config.http.failing_after,
        || async {
            let h = health_json(port).await;
            let c = &h["integrations"]["restarted"]["conditions"][&subject];
            h["integrations"]["restarted"]["state"] == "failing"
                && c["error"].as_str().is_some_and(names_the_change)
        },
    )
    .await;
    eprintln!("reported {:?} after the restart", restarted.elapsed());
    wait_for(
        "the lag is unknown, not zero",
        Duration::from_secs(10),
        || async {
            let h = health_json(port).await;
            h["integrations"]["restarted"]["lag"].is_null()
                && h["integrations"]["restarted"]["lag_unknown"].is_string()
        },
    )
    .await;

    // The new topic grows past the stored offset: records are read and held, none
    // applied (where the consumer reads from depends on when the group is joined again:
    // the start of the new log, or the stored offset).
    publish(&config, &profiles("m", 30)).await;
    wait_for(
        "records of the new topic read and held",
        Duration::from_secs(60),
        || async { metric_sum(port, HELD).await >= 15.0 },
    )
    .await;
    assert_eq!(stored_offset(&db, &config.topics.profiles).await, 20);
    assert_eq!(health_state(port, "restarted").await, "failing");
    let held = metric_sum(port, HELD).await;
    running.stop().await;

    // Restarted, the instance finds the topic id it stored and watermarks that look
    // fine (35 records, stored offset 20): the hold kept in the warehouse stops it. (The
    // group may wait for the last member's session to time out before it assigns.)
    let running = start(&config);
    wait_for(
        "the held partition is reported again",
        Duration::from_secs(90),
        || async {
            let h = health_json(port).await;
            h["integrations"]["restarted"]["conditions"][&subject]["error"]
                .as_str()
                .is_some_and(names_the_change)
        },
    )
    .await;
    publish(&config, &profiles("k", 5)).await;
    // The process's counter goes on: offsets 20 to 34 again, then the 5 new.
    wait_for(
        "the new records are read and held",
        Duration::from_secs(30),
        || async { metric_sum(port, HELD).await >= held + 20.0 },
    )
    .await;
    assert_eq!(stored_offset(&db, &config.topics.profiles).await, 20);

    // The operator accepts the topic as it is: applying goes on from the stored offset.
    let expected = match ids {
        Ids::Stored => "recreated",
        // The new topic's id was stored at the assignment that found it; its watermarks
        // look fine: only the hold remains.
        Ids::Forgotten => "held",
    };
    assert_eq!(
        accept_the_flagged_partition(&config, "restarted").await,
        expected
    );
    wait_for(
        "the accepted partition applies on",
        Duration::from_secs(30),
        || async { stored_offset(&db, &config.topics.profiles).await == 40 },
    )
    .await;
    running.stop().await;
}
