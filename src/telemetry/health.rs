//! Per-integration health, as `/health`, `/ready` and the health gauges report it.
//!
//! Health counts time, not failures: an integration that has not been able to apply for
//! longer than `http.failing_after_ms` is failing, whether it failed once and is stuck
//! (a consumer waiting at its assignment for a warehouse that does not answer) or failed
//! a hundred times. Conditions only the operator can clear (a fatal error that stopped
//! the integration, a stored offset past its partition's end, a warehouse that refuses
//! on configuration) make it failing at once; warnings (an input topic that is not
//! compacted) make a working integration degraded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::names;

pub use crate::config::FAILING_AFTER;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Healthy,
    Degraded,
    Failing,
}

/// Something the operator must act on, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `failing` or `degraded`: what the condition does to the integration's state.
    pub severity: State,
    pub error: String,
    pub hint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntegrationHealth {
    pub state: State,
    pub last_applied_unix_ms: Option<u64>,
    /// Since when the integration has not been able to apply: its first failure after
    /// its last success.
    pub failing_since_unix_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub hint: Option<String>,
    /// Sum of consumer lag over the integration's partitions, when known.
    pub lag: Option<i64>,
    /// Why the lag is not known, when it is not (then `lag` is null, never 0).
    pub lag_unknown: Option<String>,
    /// Conditions by subject (`stopped`, `partition TOPIC/N`, `topic TOPIC`).
    pub conditions: BTreeMap<String, Condition>,
    /// Applier lanes whose last batch failed (bit per lane): one lane committing must not
    /// make a failing sibling look healthy.
    #[serde(skip)]
    failing_lanes: u32,
    /// The last failure is one only the operator can fix: failing without waiting.
    #[serde(skip)]
    needs_operator: bool,
    /// The warehouse has answered at least once (offsets read or a batch applied).
    #[serde(skip)]
    reached: bool,
    /// When the warehouse first answered.
    #[serde(skip)]
    reached_unix_ms: Option<u64>,
    #[serde(skip)]
    registered_unix_ms: u64,
}

impl IntegrationHealth {
    fn new(now_ms: u64) -> Self {
        IntegrationHealth {
            state: State::Starting,
            last_applied_unix_ms: None,
            failing_since_unix_ms: None,
            consecutive_failures: 0,
            last_error: None,
            hint: None,
            lag: None,
            lag_unknown: None,
            conditions: BTreeMap::new(),
            failing_lanes: 0,
            needs_operator: false,
            reached: false,
            reached_unix_ms: None,
            registered_unix_ms: now_ms,
        }
    }

    fn state_at(&self, now_ms: u64, failing_after: Duration) -> State {
        let after = failing_after.as_millis() as u64;
        let worst = self.conditions.values().map(|c| c.severity).max();
        if worst == Some(State::Failing) || self.needs_operator {
            return State::Failing;
        }
        if let Some(since) = self.failing_since_unix_ms {
            return if now_ms.saturating_sub(since) >= after {
                State::Failing
            } else {
                State::Degraded
            };
        }
        if !self.reached {
            return if now_ms.saturating_sub(self.registered_unix_ms) >= after {
                State::Failing
            } else {
                State::Starting
            };
        }
        worst.unwrap_or(State::Healthy).max(State::Healthy)
    }

    fn recovered(&mut self) {
        self.failing_since_unix_ms = None;
        self.consecutive_failures = 0;
        self.needs_operator = false;
        self.last_error = None;
        self.hint = None;
    }
}

/// Shared per-integration health, written by the pipeline and read by /health.
#[derive(Debug, Clone)]
pub struct Health {
    map: Arc<Mutex<BTreeMap<String, IntegrationHealth>>>,
    failing_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(FAILING_AFTER)
    }
}

fn lane_bit(lane: usize) -> u32 {
    1u32.checked_shl(lane as u32).unwrap_or(0)
}

const NOT_STARTED_HINT: &str = "no partition was assigned and the warehouse was not reached: check that Kafka is reachable (`policy-push check-config --connect`) and that the consumer group can join";

impl Health {
    pub fn new(failing_after: Duration) -> Self {
        Health {
            map: Arc::default(),
            failing_after,
        }
    }

    fn update(&self, integration: &str, f: impl FnOnce(&mut IntegrationHealth)) {
        let now = super::now_ms();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let h = map
            .entry(integration.to_string())
            .or_insert_with(|| IntegrationHealth::new(now));
        f(h);
        h.state = h.state_at(now, self.failing_after);
        let healthy = if h.state == State::Failing { 0.0 } else { 1.0 };
        let label = integration.to_string();
        metrics::gauge!(names::HEALTHY, "integration" => label.clone()).set(healthy);
        if let Some(at) = h.last_applied_unix_ms {
            metrics::gauge!(names::LAST_COMMIT, "integration" => label).set(at as f64 / 1000.0);
        }
    }

    pub fn register(&self, integration: &str) {
        self.update(integration, |_| {});
        super::zero_series(integration);
    }

    /// Re-evaluates the state and re-emits the gauges (gauges idle out when not
    /// refreshed, and time alone can turn an integration failing).
    pub fn touch(&self, integration: &str) {
        self.update(integration, |_| {});
    }

    /// A lane committed a batch; the integration is healthy again once no lane fails.
    pub fn lane_applied(&self, integration: &str, lane: usize) {
        self.update(integration, |h| {
            h.failing_lanes &= !lane_bit(lane);
            h.last_applied_unix_ms = Some(super::now_ms());
            h.reached = true;
            h.reached_unix_ms.get_or_insert_with(super::now_ms);
            if h.failing_lanes == 0 {
                h.recovered();
            }
        });
    }

    /// A lane's batch failed.
    pub fn lane_failing(&self, integration: &str, lane: usize, error: &str, hint: &str) {
        self.update(integration, |h| h.failing_lanes |= lane_bit(lane));
        self.failing(integration, error, hint);
    }

    /// A lane's batch failed on something only the operator can fix: failing at once.
    pub fn lane_failed(&self, integration: &str, lane: usize, error: &str, hint: &str) {
        self.update(integration, |h| {
            h.failing_lanes |= lane_bit(lane);
            h.needs_operator = true;
        });
        self.failing(integration, error, hint);
    }

    /// The warehouse answered (e.g. offsets were read) even if nothing was applied yet.
    pub fn reachable(&self, integration: &str) {
        self.update(integration, |h| {
            h.reached = true;
            h.reached_unix_ms.get_or_insert_with(super::now_ms);
            if h.failing_lanes == 0 {
                h.recovered();
            }
        });
    }

    /// Something kept the integration from applying; failing once it has lasted
    /// `failing_after`.
    pub fn failing(&self, integration: &str, error: &str, hint: &str) {
        self.update(integration, |h| {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            h.failing_since_unix_ms.get_or_insert_with(super::now_ms);
            h.last_error = Some(error.to_string());
            h.hint = Some(hint.to_string());
        });
    }

    /// Raises (or replaces) the condition on `subject`.
    pub fn set_condition(&self, integration: &str, subject: &str, condition: Condition) {
        self.update(integration, |h| {
            h.conditions.insert(subject.to_string(), condition);
        });
    }

    pub fn clear_condition(&self, integration: &str, subject: &str) {
        self.update(integration, |h| {
            h.conditions.remove(subject);
        });
    }

    /// The integration's lag, or why it is not known.
    pub fn set_lag(&self, integration: &str, lag: Result<i64, String>) {
        self.update(integration, |h| match lag {
            Ok(lag) => {
                h.lag = Some(lag);
                h.lag_unknown = None;
            }
            Err(why) => {
                h.lag = None;
                h.lag_unknown = Some(why);
            }
        });
    }

    /// Whether the integration has started: the warehouse answered once.
    pub fn started(&self, integration: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(integration).is_some_and(|h| h.reached)
    }

    /// How long an integration may go without applying before it is failing.
    pub fn failing_after(&self) -> Duration {
        self.failing_after
    }

    /// How long the integration has gone without committing (since it started, if never)
    /// while records wait, when they do and that is `failing_after` or more. One that has
    /// not started is failing as that already ("not started").
    pub fn stalled(&self, integration: &str) -> Option<(Duration, i64)> {
        let now = super::now_ms();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.get(integration)?;
        let lag = h.lag.filter(|l| *l > 0)?;
        let since = h.last_applied_unix_ms.or(h.reached_unix_ms)?;
        let idle = Duration::from_millis(now.saturating_sub(since));
        (idle >= self.failing_after).then_some((idle, lag))
    }

    /// Every integration's health, evaluated now.
    pub fn snapshot(&self) -> BTreeMap<String, IntegrationHealth> {
        let now = super::now_ms();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in map.values_mut() {
            h.state = h.state_at(now, self.failing_after);
            if h.state == State::Failing && !h.reached && h.last_error.is_none() {
                h.last_error = Some(format!(
                    "not started after {} s",
                    self.failing_after.as_secs()
                ));
                h.hint = Some(NOT_STARTED_HINT.into());
            }
        }
        map
    }

    /// The worst state over all integrations.
    pub fn overall(&self) -> State {
        overall(&self.snapshot())
    }

    pub fn report(&self) -> HealthReport {
        let integrations = self.snapshot();
        HealthReport {
            status: overall(&integrations),
            integrations,
        }
    }
}

fn overall(snap: &BTreeMap<String, IntegrationHealth>) -> State {
    let states: Vec<State> = snap.values().map(|h| h.state).collect();
    [State::Failing, State::Degraded, State::Starting]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(State::Healthy)
}

#[derive(Serialize)]
pub struct HealthReport {
    pub status: State,
    pub integrations: BTreeMap<String, IntegrationHealth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(h: &Health, integration: &str, by: Duration) {
        let by = by.as_millis() as u64;
        h.update(integration, |i| {
            i.registered_unix_ms -= by;
            if let Some(since) = i.failing_since_unix_ms.as_mut() {
                *since -= by;
            }
        });
    }

    #[test]
    fn failing_counts_time_not_failures() {
        let h = Health::new(Duration::from_secs(30));
        h.register("a");
        assert_eq!(h.overall(), State::Starting);
        for _ in 0..10 {
            h.failing("a", "down", "start it");
        }
        assert_eq!(h.overall(), State::Degraded);
        aged(&h, "a", Duration::from_secs(31));
        // One failure long ago is enough: the consumer waiting at its assignment.
        assert_eq!(h.overall(), State::Failing);
        assert_eq!(h.snapshot()["a"].hint.as_deref(), Some("start it"));
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Healthy);
        assert!(h.snapshot()["a"].last_error.is_none());
        assert!(h.snapshot()["a"].failing_since_unix_ms.is_none());
    }

    #[test]
    fn an_integration_that_never_starts_becomes_failing() {
        let h = Health::new(Duration::from_secs(30));
        h.register("a");
        aged(&h, "a", Duration::from_secs(31));
        assert_eq!(h.overall(), State::Failing);
        assert_eq!(h.snapshot()["a"].hint.as_deref(), Some(NOT_STARTED_HINT));
        h.reachable("a");
        assert_eq!(h.overall(), State::Healthy);
    }

    #[test]
    fn a_committing_lane_does_not_hide_a_failing_one() {
        let h = Health::new(Duration::ZERO);
        h.register("a");
        h.lane_failing("a", 0, "out of shared memory", "raise locks");
        h.lane_applied("a", 1);
        assert_eq!(h.overall(), State::Failing);
        assert!(h.snapshot()["a"].last_applied_unix_ms.is_some());
        h.reachable("a");
        assert_eq!(h.overall(), State::Failing);
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Healthy);
    }

    #[test]
    fn operator_conditions_fail_at_once_and_warnings_only_degrade() {
        let h = Health::new(Duration::from_secs(3600));
        h.register("a");
        h.lane_applied("a", 0);
        let warn = Condition {
            severity: State::Degraded,
            error: "not compacted".into(),
            hint: "compact it".into(),
        };
        h.set_condition("a", "topic t", warn);
        assert_eq!(h.overall(), State::Degraded);
        h.lane_failed("a", 0, "permission denied", "grant it");
        assert_eq!(h.overall(), State::Failing);
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Degraded);
        let stop = Condition {
            severity: State::Failing,
            error: "stopped".into(),
            hint: "fix".into(),
        };
        h.set_condition("a", "stopped", stop);
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Failing);
        h.clear_condition("a", "stopped");
        h.clear_condition("a", "topic t");
        assert_eq!(h.overall(), State::Healthy);
    }
}
