//! `policy-push offsets` on Tansu, which reports a partition's end as the first offset of
//! its last batch plus one: on a healthy, fully applied pipeline whose last batches hold
//! several records each, stored offsets lie past the reported ends, and no partition is
//! flagged (the record before each stored offset is read to tell an under-reported end
//! from a recreated topic).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_pipeline_on_tansu_has_no_flagged_partition() {
    let broker = Broker::tansu().await;
    let (db, config) = setup(&broker, 2, "tansu_offs").await;
    let users: Vec<String> = (0..60).map(|i| format!("user{i}")).collect();
    let records: Vec<_> = users.iter().map(|u| profile(u, 1, &[], &[], &[])).collect();
    // One producer, many records in flight: each partition's last batch holds several.
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;

    let (rows, profiles) = offset_rows(&config, "tansu_offs").await;
    assert_eq!(profiles.len(), 2, "{rows:?}");
    if matches!(broker, Broker::Tansu { .. }) {
        assert!(
            profiles.iter().any(|r| r.stored.is_some_and(|s| s > r.end)),
            "the case under test, a stored offset past the reported end: {profiles:?}"
        );
    }
    for r in &rows {
        assert_eq!(r.problem, None, "{r:?}");
        assert_eq!(r.lag, 0, "{r:?}");
    }
}
