//! Records compressed with every codec a producer may choose are consumed and applied:
//! librdkafka is built with zstd (and has lz4, snappy and gzip), so a compressed batch
//! never stops a partition.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_lz4_snappy_and_gzip_batches_are_applied() {
    let broker = Broker::mock();
    let (db, config) = setup(&broker, 1, "codecs").await;
    let mut total = 0;
    for codec in ["zstd", "lz4", "snappy", "gzip"] {
        let mut producing = config.clone();
        producing
            .kafka
            .insert("compression.type".into(), codec.into());
        let records: Vec<_> = (0..50)
            .map(|i| profile(&format!("{codec}_user_{i}"), 1, &["g"], &[], &[]))
            .collect();
        publish(&producing, &records).await;
        total += records.len();
    }
    let running = start(&config);
    wait_applied(&db, &config, total).await;
    running.stop().await;
    let users = rows(
        &db.client().await,
        "SELECT count(*) FROM immuta_system.profile WHERE NOT deleted",
    )
    .await
    .unwrap();
    assert_eq!(users[0][0].as_deref(), Some(total.to_string().as_str()));
}
