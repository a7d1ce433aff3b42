//! The applier's state machine driven through fakes of the warehouse and of Kafka: commit,
//! fence, revoke during an apply and during a retry, shutdown during an apply, a
//! warehouse that hangs (the apply and the offsets read), a fatal error, and lanes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use tokio::sync::{oneshot, Notify};

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Applier;
use crate::apply::{Applied, ApplyError};
use crate::batch::{Batch, Item, Limits};
use crate::consume::dead_letter::DeadLetterProducer;
use crate::consume::partitions::Rewind;
use crate::consume::Tag;
use crate::consume::STOPPED;
use crate::consume::{Control, Partitions};
use crate::event::{Event, Impersonation};
use crate::pipeline::seam::{Committer, Store};
use crate::record::{Body, Raw, TopicPartition};
use crate::telemetry::Health;
use crate::telemetry::State;

/// What the fake warehouse does with the next apply.
enum Step {
    Fail(fn() -> ApplyError),
    /// Never answers.
    Hang,
    /// Answers once the gate is opened.
    Gate(Arc<Notify>),
}

#[derive(Default)]
struct FakeStore {
    script: Mutex<VecDeque<Step>>,
    /// Failure repeated once the script is empty (None: succeed).
    then: Mutex<Option<fn() -> ApplyError>>,
    attempts: AtomicUsize,
    committed: Mutex<Vec<usize>>,
    stored: Mutex<crate::consume::StoredOffsets>,
    load_hangs: std::sync::atomic::AtomicBool,
    fences: AtomicUsize,
}

impl FakeStore {
    fn scripted(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(FakeStore {
            script: Mutex::new(steps.into()),
            ..Default::default()
        })
    }

    fn committed(&self) -> usize {
        self.committed.lock().unwrap().len()
    }
}

impl Store for FakeStore {
    fn apply<'a>(
        &'a self,
        _group: &'a str,
        batch: &'a Batch,
        _dlq: &'a DeadLetterProducer,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let step = self.script.lock().unwrap().pop_front();
        let then = *self.then.lock().unwrap();
        Box::pin(async move {
            match step {
                Some(Step::Fail(e)) => return Err(e()),
                Some(Step::Hang) => futures::future::pending::<()>().await,
                Some(Step::Gate(gate)) => gate.notified().await,
                None => {
                    if let Some(e) = then {
                        return Err(e());
                    }
                }
            }
            self.committed.lock().unwrap().push(batch.len());
            Ok(Applied::default())
        })
    }

    fn load_offsets<'a>(&'a self, _group: &'a str) -> super::super::seam::Loading<'a> {
        Box::pin(async move {
            if self.load_hangs.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            Ok(self.stored.lock().unwrap().clone())
        })
    }

    fn fenced(&self) {
        self.fences.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct FakeKafka(AtomicUsize);

impl Committer for FakeKafka {
    fn commit(&self, _offsets: &TopicPartitionList) -> Result<(), KafkaError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn tp() -> TopicPartition {
    TopicPartition {
        topic: "t".into(),
        partition: 0,
    }
}

fn retryable() -> ApplyError {
    ApplyError::Pool {
        detail: None,
        source: Some("connection refused".into()),
    }
}

struct Rig {
    store: Arc<FakeStore>,
    kafka: Arc<FakeKafka>,
    partitions: Partitions,
    health: Health,
    data: mpsc::Sender<Item>,
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
    stop_integration: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy)]
struct Timing {
    apply: Duration,
    shutdown: Duration,
    linger: Duration,
    backlog_wait: Duration,
}

const FAST: Timing = Timing {
    apply: Duration::from_millis(200),
    shutdown: Duration::from_millis(300),
    linger: Duration::from_millis(10),
    backlog_wait: Duration::from_millis(10),
};

fn applier(
    store: Arc<FakeStore>,
    health: Health,
    lane: usize,
    timing: Timing,
) -> (Applier, Arc<FakeKafka>) {
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set("bootstrap.servers", "127.0.0.1:9");
    let kafka = Arc::new(FakeKafka::default());
    let applier = Applier {
        name: "i".into(),
        lane,
        group: "g".into(),
        warehouse: store,
        partitions: Partitions::default(),
        consumer: kafka.clone(),
        dlq: Arc::new(DeadLetterProducer::new(&cfg, "dlq", "i").unwrap()),
        events: crate::telemetry::Events::new("i", health.clone()),
        health,
        limits: Limits {
            max_records: 3,
            max_bytes: 1 << 20,
            max_definitions: 100,
            linger: timing.linger,
            backlog_entries: 100,
            backlog_wait: timing.backlog_wait,
        },
        max_backoff: Duration::from_millis(40),
        shutdown_timeout: timing.shutdown,
        apply_timeout: timing.apply,
        stop_by: std::sync::OnceLock::new(),
        stop_integration: CancellationToken::new(),
    };
    (applier, kafka)
}

fn start(store: Arc<FakeStore>, health: Health, lane: usize, timing: Timing) -> Rig {
    let (mut a, kafka) = applier(store.clone(), health.clone(), lane, timing);
    let partitions = a.partitions.clone();
    partitions.assign(tp(), Some(0));
    // As in `IntegrationPipeline::start`: the lane stops on SIGTERM (the parent) or on
    // its own integration's fatal error (the child).
    let shutdown = CancellationToken::new();
    let stop_integration = shutdown.child_token();
    a.stop_integration = stop_integration.clone();
    let (data, mut data_rx) = mpsc::channel(100);
    let (control, mut control_rx) = mpsc::channel(4);
    let lane_stop = stop_integration.clone();
    let task = tokio::spawn(async move {
        a.run(&mut data_rx, &mut control_rx, &lane_stop).await;
    });
    Rig {
        store,
        kafka,
        partitions,
        health,
        data,
        control,
        shutdown,
        stop_integration,
        task,
    }
}

impl Rig {
    /// Sends records at `offsets`, tagged as the consumer thread tags them, each of its
    /// own user.
    async fn send(&self, offsets: std::ops::Range<i64>) {
        self.send_of(offsets, i64::MAX).await
    }

    /// Sends records at `offsets` for `users` users, in turn.
    async fn send_of(&self, offsets: std::ops::Range<i64>, users: i64) {
        for offset in offsets {
            let Tag::Current(generation) = self.partitions.tag(&tp(), offset) else {
                panic!("offset {offset} not current");
            };
            let item = Item {
                tp: tp(),
                generation,
                offset,
                timestamp_ms: None,
                size: 10,
                body: Body::Upsert(
                    Event::Impersonation(Impersonation {
                        user: format!("u{}", offset % users),
                        version: 1,
                        allowed: true,
                    }),
                    Raw::default(),
                ),
            };
            self.data.send(item).await.unwrap();
        }
    }

    async fn revoke(&self) -> oneshot::Receiver<()> {
        let (done, answered) = oneshot::channel();
        let revoke = Control::Revoke {
            partitions: vec![tp()],
            done,
        };
        self.control.send(revoke).await.unwrap();
        answered
    }

    fn attempts(&self) -> usize {
        self.store.attempts.load(Ordering::SeqCst)
    }

    fn expected(&self) -> Option<i64> {
        self.partitions
            .owned()
            .into_iter()
            .find(|o| o.tp == tp())
            .and_then(|o| o.expected)
    }
}

/// A lane whose first batch (three records) is being applied, held until the gate opens.
async fn gated(timing: Timing) -> (Arc<Notify>, Rig) {
    let gate = Arc::new(Notify::new());
    let store = FakeStore::scripted(vec![Step::Gate(gate.clone())]);
    let rig = start(store, Health::default(), 0, timing);
    rig.send(0..3).await;
    until("the first apply", || rig.attempts() == 1).await;
    (gate, rig)
}

/// Waits for `what` with a deadline.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_batch_is_committed_and_its_offsets_remembered() {
    let rig = start(FakeStore::scripted(vec![]), Health::default(), 0, FAST);
    rig.send(0..3).await;
    until("a commit", || rig.store.committed() == 1).await;
    assert_eq!(*rig.store.committed.lock().unwrap(), vec![3]);
    until("the offsets", || rig.expected() == Some(3)).await;
    assert_eq!(rig.kafka.0.load(Ordering::SeqCst), 1, "Kafka is told too");
    assert_eq!(rig.health.snapshot()["i"].state, State::Healthy);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

/// No batch in flight and nothing more ready: the batch goes at once, whatever the
/// linger (60 s here; `until` gives up after 5).
#[tokio::test]
async fn a_lone_record_does_not_wait_for_the_linger() {
    let store = FakeStore::scripted(vec![Step::Hang]);
    let timing = Timing {
        apply: Duration::from_secs(60),
        linger: Duration::from_secs(60),
        ..FAST
    };
    let rig = start(store, Health::default(), 0, timing);
    rig.send(0..1).await;
    until("the apply", || rig.attempts() == 1).await;
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

/// A backlog already waiting: the batch goes on past `max_records` (3) while more is
/// ready, and 60 changes of 5 users are one transaction of 5 rows, not 20 of 3.
#[tokio::test]
async fn a_backlog_past_max_records_is_taken_in_by_one_batch() {
    let timing = Timing {
        backlog_wait: Duration::from_secs(60),
        ..FAST
    };
    let rig = start(FakeStore::scripted(vec![]), Health::default(), 0, timing);
    rig.send_of(0..60, 5).await;
    until("a commit", || rig.store.committed() == 1).await;
    until("the offsets", || rig.expected() == Some(60)).await;
    assert_eq!(*rig.store.committed.lock().unwrap(), vec![60]);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

/// The batch that filled during an apply is full (100 entities) when that apply commits:
/// it goes at once, not when its `backlog_wait` (60 s) runs out.
#[tokio::test]
async fn a_full_batch_behind_an_apply_goes_as_soon_as_it_commits() {
    let timing = Timing {
        backlog_wait: Duration::from_secs(60),
        ..FAST
    };
    let (gate, rig) = gated(timing).await;
    rig.send(3..150).await;
    until("the channel to hold the rest", || rig.data.capacity() == 53).await;
    gate.notify_one();
    until("the full batch to be applied", || {
        rig.store.committed() >= 2
    })
    .await;
    assert_eq!(rig.store.committed.lock().unwrap()[..2], [3, 100]);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_fenced_batch_rewinds_to_the_offsets_stored_now() {
    let store = FakeStore::scripted(vec![Step::Fail(|| ApplyError::Fenced(vec![tp()]))]);
    store.stored.lock().unwrap().insert(tp(), 42);
    let rig = start(store, Health::default(), 0, FAST);
    rig.send(0..3).await;
    until("the fence", || rig.store.fences.load(Ordering::SeqCst) == 1).await;
    until("the rewind", || rig.expected() == Some(42)).await;
    assert_eq!(
        rig.partitions.take_rewinds(),
        vec![Rewind {
            tp: tp(),
            to: Some(42)
        }]
    );
    assert_eq!(rig.store.committed(), 0);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_hanging_offsets_read_after_a_fence_is_bounded() {
    let store = FakeStore::scripted(vec![Step::Fail(|| ApplyError::Fenced(vec![tp()]))]);
    store.load_hangs.store(true, Ordering::SeqCst);
    let rig = start(store, Health::default(), 0, FAST);
    rig.send(0..3).await;
    // Unable to learn the new offsets, it re-reads from the ones it knew.
    let rewound = || rig.partitions.take_rewinds();
    let mut seen = Vec::new();
    until("the rewind", || {
        seen.extend(rewound());
        !seen.is_empty()
    })
    .await;
    assert_eq!(
        seen,
        vec![Rewind {
            tp: tp(),
            to: Some(0)
        }]
    );
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_revoke_while_retrying_drops_the_batch_and_is_answered() {
    let store = FakeStore::scripted(vec![]);
    *store.then.lock().unwrap() = Some(retryable);
    let rig = start(store, Health::default(), 0, FAST);
    rig.send(0..3).await;
    until("a failed attempt", || rig.attempts() >= 1).await;
    until("the failure on /health", || {
        rig.health.snapshot()["i"].failing_since_unix_ms.is_some()
    })
    .await;
    let answered = rig.revoke().await;
    tokio::time::timeout(Duration::from_secs(2), answered)
        .await
        .expect("the revoke is answered")
        .unwrap();
    assert_eq!(
        rig.partitions.take_rewinds(),
        vec![Rewind {
            tp: tp(),
            to: Some(0)
        }],
        "the next owner, or this one, reads the batch again"
    );
    assert_eq!(rig.store.committed(), 0);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_revoke_during_an_apply_waits_for_it_and_keeps_the_commit() {
    // An apply timeout far beyond the wait below: FAST's 200 ms would abandon the apply
    // and answer the revoke from the retry instead.
    let timing = Timing {
        apply: Duration::from_secs(60),
        ..FAST
    };
    let (gate, rig) = gated(timing).await;
    let mut answered = rig.revoke().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut answered)
            .await
            .is_err(),
        "not answered while the batch may still commit"
    );
    gate.notify_one();
    tokio::time::timeout(Duration::from_secs(2), answered)
        .await
        .expect("answered once the apply ends")
        .unwrap();
    assert_eq!(rig.store.committed(), 1);
    assert!(
        rig.partitions.take_rewinds().is_empty(),
        "nothing is re-read"
    );
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_during_a_hanging_apply_ends_within_the_shutdown_timeout() {
    let timing = Timing {
        apply: Duration::from_secs(60),
        shutdown: Duration::from_millis(300),
        ..FAST
    };
    let rig = start(
        FakeStore::scripted(vec![Step::Hang]),
        Health::default(),
        0,
        timing,
    );
    rig.send(0..3).await;
    until("the apply to start", || rig.attempts() == 1).await;
    let asked = Instant::now();
    rig.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), rig.task)
        .await
        .expect("the applier stops although the warehouse hangs")
        .unwrap();
    assert!(asked.elapsed() < timing.shutdown + Duration::from_secs(1));
    assert_eq!(rig.store.committed(), 0);
}

#[tokio::test]
async fn a_hanging_apply_is_abandoned_after_apply_timeout_and_retried() {
    let timing = Timing {
        apply: Duration::from_millis(100),
        shutdown: Duration::from_secs(5),
        ..FAST
    };
    let rig = start(
        FakeStore::scripted(vec![Step::Hang]),
        Health::default(),
        0,
        timing,
    );
    rig.send(0..3).await;
    until("the retry to commit", || rig.store.committed() == 1).await;
    assert_eq!(rig.attempts(), 2);
    assert_eq!(rig.expected(), Some(3));
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_fatal_error_stops_the_integration_without_retrying() {
    let store = FakeStore::scripted(vec![Step::Fail(|| {
        ApplyError::Refused("enable_case_sensitive_identifier is off".into())
    })]);
    let rig = start(store, Health::default(), 0, FAST);
    rig.send(0..3).await;
    tokio::time::timeout(Duration::from_secs(5), rig.task)
        .await
        .expect("the lane stops")
        .unwrap();
    assert!(rig.stop_integration.is_cancelled());
    assert!(!rig.shutdown.is_cancelled(), "only this integration");
    assert_eq!(rig.store.attempts.load(Ordering::SeqCst), 1, "not retried");
    let h = &rig.health.snapshot()["i"];
    assert_eq!(h.state, State::Failing);
    assert!(h.conditions[STOPPED].error.contains("case_sensitive"));
    assert_eq!(rig.store.committed(), 0);
}

#[tokio::test]
async fn a_committing_lane_does_not_make_a_failing_one_healthy() {
    let health = Health::new(Duration::ZERO);
    let failing = FakeStore::scripted(vec![]);
    *failing.then.lock().unwrap() = Some(retryable);
    let a = start(failing, health.clone(), 0, FAST);
    let b = start(FakeStore::scripted(vec![]), health.clone(), 1, FAST);
    a.send(0..3).await;
    until("lane 0 to fail", || a.attempts() >= 1).await;
    let since = || health.snapshot()["i"].failing_since_unix_ms;
    until("the failure to be recorded", || since().is_some()).await;
    let first = since();
    b.send(0..3).await;
    until("lane 1 to commit", || b.store.committed() == 1).await;
    until("lane 0 to fail again", || a.attempts() >= 2).await;
    assert_eq!(health.snapshot()["i"].state, State::Failing);
    assert_eq!(
        since(),
        first,
        "lane 1's commit did not end lane 0's failure"
    );
    for rig in [a, b] {
        rig.shutdown.cancel();
        rig.task.await.unwrap();
    }
}
