//! Every metric name, in one place. Units are in the names; labels are bounded
//! (integration names come from the config, topics and partitions from the assignment).

pub const RECORDS_CONSUMED: &str = "policy_push_records_consumed_total";
pub const RECORDS_APPLIED: &str = "policy_push_records_applied_total";
pub const RECORDS_DEDUPLICATED: &str = "policy_push_records_deduplicated_total";
pub const RECORDS_SKIPPED: &str = "policy_push_records_skipped_total";
/// Records fetched from a stopped partition (`consume::identity`): held back, not
/// applied, read again once the partition resumes.
pub const RECORDS_HELD: &str = "policy_push_records_held_total";
pub const RECORDS_DEAD_LETTERED: &str = "policy_push_records_dead_lettered_total";
pub const BATCHES_COMMITTED: &str = "policy_push_batches_committed_total";
pub const BATCHES_FENCED: &str = "policy_push_batches_fenced_total";
pub const BATCH_RECORDS: &str = "policy_push_batch_records";
pub const APPLY_DURATION: &str = "policy_push_apply_duration_seconds";
pub const END_TO_END_LATENCY: &str = "policy_push_end_to_end_latency_seconds";
/// Record timestamp to the moment the consumer received it: the producer's and the
/// broker's share of the end-to-end latency (plus any backlog, while behind).
pub const FETCH_DELAY: &str = "policy_push_fetch_delay_seconds";
pub const VIEWS_REBUILT: &str = "policy_push_views_rebuilt_total";
/// Views whose DDL an open transaction held up, left for a later rebuild.
pub const VIEWS_DEFERRED: &str = "policy_push_views_deferred_total";
/// Sessions terminated because they held up a view rebuild.
pub const VIEW_BLOCKERS_TERMINATED: &str = "policy_push_view_blockers_terminated_total";
/// Since when deferred views have waited to be rebuilt (Unix seconds; 0 when none wait).
pub const VIEWS_STALE_SINCE: &str = "policy_push_views_stale_since_timestamp_seconds";
pub const WAREHOUSE_ERRORS: &str = "policy_push_warehouse_errors_total";
pub const KAFKA_ERRORS: &str = "policy_push_kafka_errors_total";
pub const REBALANCES: &str = "policy_push_rebalances_total";
pub const CONSUMER_LAG: &str = "policy_push_consumer_lag_records";
/// 1 where a partition's lag cannot be known (its stored or end offset cannot be read,
/// or its stored offset does not belong to it); its lag gauge is then NaN, never 0.
pub const CONSUMER_LAG_UNKNOWN: &str = "policy_push_consumer_lag_unknown";
/// Partitions found not to be the ones the stored offsets were taken from
/// (`consume::identity`), by `kind`: recreated, above_end, below_start.
pub const PARTITION_ANOMALIES: &str = "policy_push_partition_anomalies_total";
pub const HEALTHY: &str = "policy_push_integration_healthy";
pub const CONSUMER_PAUSED: &str = "policy_push_consumer_paused";
/// When the integration last committed a batch to its warehouse (Unix seconds).
pub const LAST_COMMIT: &str = "policy_push_last_commit_timestamp_seconds";
/// Always 1, labelled with the running version.
pub const BUILD_INFO: &str = "policy_push_build_info";

/// Every `kind` label of [`WAREHOUSE_ERRORS`] (`apply::ApplyError::kind`), for creating
/// the series up front.
pub const WAREHOUSE_ERROR_KINDS: &[&str] = &[
    "connection",
    "sql",
    "fenced",
    "timeout",
    "dead_letter",
    "corrupt",
    "config",
    "blocked",
];
