//! One integration's lag, refreshed on a timer, also when idle, and each owned
//! partition checked against its stored offset on every refresh (`consume::identity`).
//!
//! Lag is reported for the partitions this instance owns, from the offsets its applier
//! has committed, so it needs no warehouse query and stays right while the warehouse is
//! down. Partitions owned elsewhere are reported by their owner; gauges this instance
//! stops refreshing disappear after `telemetry::GAUGE_IDLE`. A partition whose end cannot
//! be read, or whose stored offset does not belong to it, has an unknown lag: its gauge is
//! NaN and `policy_push_consumer_lag_unknown` is 1, never a 0 that looks like caught up.
//! An instance that owns no partition (its assignment waits for a warehouse that is down,
//! or another instance has them all) reports the lag Kafka knows: the end offsets minus
//! the group's offsets committed to Kafka after each warehouse commit.

use crate::error::{chain, Chain};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::partition_lag;
use crate::consume::identity::{self, Anomaly, Checker};
use crate::consume::partitions::{Owned, Stop};
use crate::consume::{OffsetStore, Partitions};
use crate::record::TopicPartition;
use crate::telemetry::{names, Health};

pub struct LagWatch {
    pub integration: String,
    pub group: String,
    /// The input topics, for the lag Kafka knows when this instance owns nothing.
    pub topics: Vec<String>,
    pub partitions: Partitions,
    pub checker: Checker,
    pub store: Arc<dyn OffsetStore>,
    /// A client of the group that never commits: reads the offsets committed to Kafka.
    pub group_client: Arc<Mutex<Option<BaseConsumer>>>,
    pub kafka: ClientConfig,
    pub health: Health,
    pub paused: Arc<AtomicBool>,
    pub every: Duration,
    /// While this instance owns no partition: the group's committed offsets (summed) and
    /// since when they have not moved.
    pub idle: Arc<Mutex<Option<(i64, std::time::Instant)>>>,
}

/// The `/health` subject of an instance that holds no partition while the group
/// applies nothing.
const NO_PARTITION: &str = "no partition";

/// How long a refresh waits for the warehouse.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's lag, as a refresh finds it.
enum Lag {
    Known(i64),
    Unknown(String),
    Anomaly(Anomaly),
}

impl LagWatch {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            // A refresh waits for the broker and the warehouse; stopping does not.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.refresh() => {}
            }
        }
    }

    async fn refresh(&self) {
        let owned = self.partitions.owned();
        let mut generations = std::collections::HashMap::new();
        let lags = if owned.is_empty() {
            self.kafka_lag().await.map(|(lags, committed)| {
                self.report_idle_group(&lags, committed);
                lags
            })
        } else {
            *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.health.clear_condition(&self.integration, NO_PARTITION);
            self.review_stopped(&owned).await;
            let owned = self.partitions.owned();
            generations.extend(owned.iter().map(|o| (o.tp.clone(), o.generation)));
            Ok(self.owned_lag(owned).await)
        };
        let lags = match lags {
            Ok(lags) => lags,
            Err(why) => {
                self.health.set_lag(&self.integration, Err(why));
                self.health.touch(&self.integration);
                return;
            }
        };
        let mut total = Ok(0);
        for (tp, lag) in lags {
            let labels = [
                ("integration", self.integration.clone()),
                ("topic", tp.topic.to_string()),
                ("partition", tp.partition.to_string()),
            ];
            let known = match lag {
                Lag::Known(l) => Ok(l),
                Lag::Unknown(why) => Err(format!("{tp}: {why}")),
                Lag::Anomaly(a) => {
                    if let Some(generation) = generations.get(&tp) {
                        self.stop(&tp, *generation, &a);
                    }
                    Err(format!("{tp}: {}", a.describe(&tp)))
                }
            };
            let (value, unknown) = match &known {
                Ok(l) => (*l as f64, 0.0),
                Err(_) => (f64::NAN, 1.0),
            };
            metrics::gauge!(names::CONSUMER_LAG, &labels).set(value);
            metrics::gauge!(names::CONSUMER_LAG_UNKNOWN, &labels).set(unknown);
            total = match (total, known) {
                (Ok(sum), Ok(l)) => Ok(sum + l),
                (Err(why), _) | (Ok(_), Err(why)) => Err(why),
            };
        }
        // A partition this refresh stopped is held in the warehouse at once (and one whose
        // hold could not be kept before, again).
        self.keep_holds(&self.partitions.owned().iter().collect::<Vec<_>>())
            .await;
        self.health.set_lag(&self.integration, total);
        self.health.touch(&self.integration);
        let paused = if self.paused.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(names::CONSUMER_PAUSED, "integration" => self.integration.clone())
            .set(paused);
    }

    /// The owned partitions' lag, each checked against its stored offset.
    async fn owned_lag(&self, owned: Vec<Owned>) -> Vec<(TopicPartition, Lag)> {
        let checker = self.checker.clone();
        let tps: Vec<TopicPartition> = owned.iter().map(|o| o.tp.clone()).collect();
        let check = move || {
            owned
                .into_iter()
                .map(|o| {
                    let lag = lag_of(&checker, &o);
                    (o.tp, lag)
                })
                .collect()
        };
        // A check that did not end is no lag of zero: every partition's is unknown.
        tokio::task::spawn_blocking(check)
            .await
            .unwrap_or_else(|e| {
                tps.into_iter()
                    .map(|tp| (tp, Lag::Unknown(format!("the check failed: {}", Chain(&e)))))
                    .collect()
            })
    }

    /// Stopped partitions: a hold not kept in the warehouse yet is kept; one that could
    /// not be verified, or whose hold the operator released (`offsets --accept`, a
    /// replay's reset), is checked again and goes on if its stored offset belongs to it.
    /// A hold is never lifted here otherwise: a recreated topic that has grown past the
    /// stored offset looks healthy to the watermarks.
    async fn review_stopped(&self, owned: &[Owned]) {
        let stopped: Vec<&Owned> = owned.iter().filter(|o| o.stopped.is_some()).collect();
        if stopped.is_empty() {
            return;
        }
        let read = async {
            let holds = self.store.load_holds(&self.group).await?;
            let stored = self.store.load_offsets(&self.group).await?;
            Ok::<_, crate::consume::StoreError>((holds, stored))
        };
        let Ok(Ok((holds, stored))) = tokio::time::timeout(STORE_TIMEOUT, read).await else {
            return;
        };
        let mut again = Vec::new();
        for o in stopped {
            match (&o.stopped, holds.get(&o.tp)) {
                (Some(Stop::Unverified), Some(observed)) => {
                    let held = Anomaly::Held {
                        observed: observed.clone(),
                    };
                    self.stop(&o.tp, o.generation, &held);
                }
                (Some(Stop::Unverified), None)
                | (
                    Some(Stop::Held {
                        persisted: true, ..
                    }),
                    None,
                ) => again.push((o.tp.clone(), o.generation)),
                _ => {}
            }
        }
        if again.is_empty() {
            return;
        }
        let generations: std::collections::HashMap<_, _> = again.iter().cloned().collect();
        let tps = again.into_iter().map(|(tp, _)| tp).collect();
        for (tp, found) in self.check_again(tps, stored).await {
            let Some(&generation) = generations.get(&tp) else {
                continue;
            };
            match found {
                Ok(at) => {
                    // Not if the partition changed hands or state during the check.
                    if self.partitions.resume_if(&tp, generation, at) {
                        tracing::info!(integration = %self.integration, %tp, stored = ?at, "the partition belongs to its stored offset; resuming");
                        self.health
                            .clear_condition(&self.integration, &identity::subject(&tp));
                    }
                }
                Err(anomaly) => self.stop(&tp, generation, &anomaly),
            }
        }
    }

    /// Each of `tps` checked as at an assignment: where to go on from, or what is wrong.
    /// One whose watermarks cannot be read is left out (it stays stopped).
    async fn check_again(
        &self,
        tps: Vec<TopicPartition>,
        stored: crate::consume::StoredOffsets,
    ) -> Vec<(TopicPartition, Result<Option<i64>, Anomaly>)> {
        let (checker, store, group) =
            (self.checker.clone(), self.store.clone(), self.group.clone());
        let runtime = tokio::runtime::Handle::current();
        let check = move || {
            let mut recreated = checker.recreated(&*store, &runtime, &group, &tps, &stored, true);
            tps.into_iter()
                .filter_map(|tp| {
                    if let Some(found) = recreated.remove(&tp) {
                        return Some((tp, Err(found)));
                    }
                    let at = stored.get(&tp).copied();
                    let marks = checker.watermarks(&tp).ok()?;
                    let found = checker.against(&tp, at, marks);
                    Some((tp, found.map_or(Ok(at), Err)))
                })
                .collect::<Vec<_>>()
        };
        tokio::task::spawn_blocking(check).await.unwrap_or_default()
    }

    /// Stops `tp` for `anomaly` and says so, unless it changed generation since it was
    /// looked at (the finding may be stale); `refresh` then keeps the hold.
    fn stop(&self, tp: &TopicPartition, generation: u64, anomaly: &Anomaly) {
        if self.partitions.stop_if(tp, generation, anomaly.stop(tp)) {
            identity::report(&self.health, &self.integration, tp, anomaly);
        }
    }

    /// Keeps in the warehouse each hold not kept yet (its first attempt failed).
    async fn keep_holds(&self, stopped: &[&Owned]) {
        for o in stopped {
            let Some(Stop::Held {
                observed,
                persisted: false,
            }) = &o.stopped
            else {
                continue;
            };
            let hold = self.store.hold(&self.group, &o.tp, observed);
            match tokio::time::timeout(STORE_TIMEOUT, hold).await {
                Ok(Ok(())) => self.partitions.persisted(&o.tp),
                Ok(Err(e)) => {
                    tracing::warn!(integration = %self.integration, tp = %o.tp, error = %Chain(&e), "cannot keep the partition's hold; retried at the next refresh")
                }
                Err(_) => {
                    tracing::warn!(integration = %self.integration, tp = %o.tp, "keeping the partition's hold timed out; retried at the next refresh")
                }
            }
        }
    }

    /// Failing while this instance holds no partition and the group's offsets committed
    /// to Kafka have not moved for `http.failing_after_ms` with records waiting: no
    /// instance of the group applies them (after the broker came back, the group may hold
    /// no partition of a recreated topic until the topic metadata is refreshed).
    fn report_idle_group(&self, lags: &[(TopicPartition, Lag)], committed: i64) {
        let waiting: i64 = lags
            .iter()
            .map(|(_, l)| if let Lag::Known(l) = l { *l } else { 0 })
            .sum();
        let started = self.health.started(&self.integration);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (since, stalled) = idle_group(
            *idle,
            committed,
            waiting,
            started,
            now,
            self.health.failing_after(),
        );
        *idle = Some(since);
        let Some(for_how_long) = stalled else {
            self.health.clear_condition(&self.integration, NO_PARTITION);
            return;
        };
        let condition = crate::telemetry::Condition {
            severity: crate::telemetry::State::Failing,
            error: format!(
                "this instance holds no partition, and the group {} has applied none of the {waiting} records waiting for {}s (its offsets committed to Kafka have not moved)",
                self.group,
                for_how_long.as_secs()
            ),
            hint: format!("check the group's members and assignment (kafka-consumer-groups --describe --group {}): a member that holds partitions and applies nothing, or no member holding them", self.group),
        };
        self.health
            .set_condition(&self.integration, NO_PARTITION, condition);
    }

    /// The lag Kafka knows, for when this instance owns no partition, and the group's
    /// committed offsets summed (to see whether they move).
    async fn kafka_lag(&self) -> Result<(Vec<(TopicPartition, Lag)>, i64), String> {
        let (topics, checker) = (self.topics.clone(), self.checker.clone());
        let (client, kafka, group) = (
            self.group_client.clone(),
            self.kafka.clone(),
            self.group.clone(),
        );
        let read = move || -> Result<(Vec<(TopicPartition, Lag)>, i64), String> {
            let marks = super::watermarks(
                &checker.metadata,
                &topics.iter().map(String::as_str).collect::<Vec<_>>(),
                Duration::from_secs(5),
            )
            .map_err(|e| format!("the end offsets cannot be read: {}", Chain(&e)))?;
            let mut slot = client.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(crate::consume::assign_only(&kafka, &group).map_err(|e| chain(&e))?);
            }
            let client = slot.as_ref().ok_or("no client")?;
            let mut tpl = TopicPartitionList::new();
            for tp in marks.keys() {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            let committed = client
                .committed_offsets(tpl, Duration::from_secs(5))
                .map_err(|e| {
                    format!(
                        "the offsets committed to Kafka cannot be read: {}",
                        Chain(&e)
                    )
                })?;
            let mut sum = 0;
            let lags = marks
                .iter()
                .map(|(tp, (low, high))| {
                    let at =
                        committed
                            .find_partition(&tp.topic, tp.partition)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            });
                    sum += at.unwrap_or(0);
                    (tp.clone(), Lag::Known(partition_lag(*low, *high, at)))
                })
                .collect();
            Ok((lags, sum))
        };
        tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|e| Err(chain(&e)))
    }
}

/// The rule of `report_idle_group`: the group's committed offsets (`committed`, summed)
/// as last seen and since when (`seen`); returns what to remember, and how long the
/// group has applied nothing while `waiting` records wait, once that is `after` or more
/// on a started integration.
fn idle_group(
    seen: Option<(i64, std::time::Instant)>,
    committed: i64,
    waiting: i64,
    started: bool,
    now: std::time::Instant,
    after: Duration,
) -> ((i64, std::time::Instant), Option<Duration>) {
    let since = match seen {
        Some((sum, since)) if sum == committed => since,
        _ => now,
    };
    let idle = now.duration_since(since);
    let stalled = (waiting > 0 && started && idle >= after).then_some(idle);
    ((committed, since), stalled)
}

/// One owned partition's lag. Blocking.
fn lag_of(checker: &Checker, o: &Owned) -> Lag {
    if o.stopped.is_some() {
        return Lag::Unknown("nothing is applied from it (see its condition)".into());
    }
    match checker.watermarks(&o.tp) {
        Err(e) => Lag::Unknown(format!("its end offset cannot be read: {}", Chain(&e))),
        Ok(marks) => match checker.against(&o.tp, o.expected, marks) {
            Some(a) => Lag::Anomaly(a),
            None => Lag::Known(partition_lag(marks.0, marks.1, o.expected)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::idle_group;
    use std::time::{Duration, Instant};

    #[test]
    fn a_group_that_applies_nothing_while_records_wait_is_stalled_after_the_limit() {
        let (t0, after) = (Instant::now(), Duration::from_secs(30));
        let at = |s| t0 + Duration::from_secs(s);
        let (seen, stalled) = idle_group(None, 100, 5, true, at(0), after);
        assert_eq!((seen, stalled), ((100, at(0)), None));
        let (seen, stalled) = idle_group(Some(seen), 100, 5, true, at(29), after);
        assert_eq!(stalled, None);
        let (seen, stalled) = idle_group(Some(seen), 100, 5, true, at(31), after);
        assert_eq!(stalled, Some(Duration::from_secs(31)));
        // The offsets move: another instance applies them.
        let (seen, stalled) = idle_group(Some(seen), 105, 5, true, at(40), after);
        assert_eq!((seen, stalled), ((105, at(40)), None));
        // Nothing waits, or the integration has not started: not a stall.
        assert_eq!(idle_group(Some(seen), 105, 0, true, at(90), after).1, None);
        assert_eq!(idle_group(Some(seen), 105, 5, false, at(90), after).1, None);
    }
}
