//! CPU path benchmarks: Avro decode, routing/validation, dedup + batch assembly, and
//! view SQL generation. Throughput is reported per record so runs compare as ratios.

use std::hint::black_box;

// The binary's allocator, so the figures are the ones the binary gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use policy_push::batch::{Batch, Body, Item, Raw, TopicPartition};
use policy_push::codec::{encode_confluent, to_avro, Codec, Registry};
use policy_push::config::Topics;
use policy_push::consume::route::Router;
use policy_push::event::{Event, Kind};
use policy_push::simulate::{self, Spec};

/// `n` encoded profile records, `per_user` versions of each user.
fn profiles(n: usize, per_user: usize) -> Vec<(String, Vec<u8>)> {
    let codec = Codec::embedded().expect("codec");
    let spec = Spec {
        users: n / per_user,
        data_sources: 20,
        policies: 0,
        changes: n,
        ..Spec::default()
    };
    simulate::workload(&spec)
        .into_iter()
        .filter(|r| r.kind == Kind::Profile)
        .filter_map(|r| r.value.map(|v| (r.key, codec.encode(&v).expect("encode"))))
        .take(n)
        .collect()
}

fn decode(c: &mut Criterion) {
    let codec = Codec::embedded().expect("codec");
    let records = profiles(10_000, 10);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("user_profile_single_object", |b| {
        b.iter(|| {
            for (_, bytes) in &records {
                black_box(codec.decode(Kind::Profile, bytes).expect("decode"));
            }
        })
    });
    // The Confluent wire format: schema id 1, resolved once (preloaded here instead of
    // asked of a registry).
    let registry = Registry::new("http://127.0.0.1:9");
    let schema = codec.reader_schema(Kind::Profile).clone();
    registry.preload(1, schema.clone());
    let confluent_codec = Codec::embedded()
        .expect("codec")
        .with_registry(Some(registry));
    let confluent: Vec<Vec<u8>> = records
        .iter()
        .map(|(_, bytes)| {
            let event = codec.decode(Kind::Profile, bytes).expect("decode");
            encode_confluent(&schema, 1, to_avro(&event)).expect("encode")
        })
        .collect();
    g.bench_function("user_profile_confluent", |b| {
        b.iter(|| {
            for bytes in &confluent {
                black_box(
                    confluent_codec
                        .decode(Kind::Profile, bytes)
                        .expect("decode"),
                );
            }
        })
    });
    g.finish();
}

/// Adds one record to `batch`, as the applier does.
fn push(
    batch: &mut Batch,
    topic: &Arc<str>,
    partition: i32,
    offset: usize,
    size: usize,
    body: Body,
) {
    let tp = TopicPartition {
        topic: topic.clone(),
        partition,
    };
    let item = Item {
        tp,
        generation: 1,
        offset: offset as i64,
        timestamp_ms: None,
        size,
        body,
    };
    batch.push(item, None);
}

/// Routes (check or decode, validate) and batches `records`, then writes the PostgreSQL
/// records of what survives deduplication (`ProfileRows`), as the applier does: the whole CPU cost of
/// a profile record.
fn route_batch_rows(router: &Router, records: &[(String, Vec<u8>)]) -> usize {
    let topic: Arc<str> = Arc::from("immuta.profiles");
    let mut batch = Batch::default();
    for (offset, (key, bytes)) in records.iter().enumerate() {
        let body = router
            .route(
                "immuta.profiles",
                Some(key.as_bytes()),
                Some(bytes),
                &|| false,
            )
            .expect("routed");
        push(
            &mut batch,
            &topic,
            (offset % 4) as i32,
            offset,
            bytes.len(),
            body,
        );
    }
    let mut rows = policy_push::apply::ProfileRows::default();
    for (user, pending) in &batch.profiles {
        if let Some(u) = &pending.upsert {
            rows.push(user, &u.value, &u.origin).expect("encodes");
        }
    }
    black_box(rows);
    batch.ops()
}

fn route_dedup_batch(c: &mut Criterion) {
    let hot = profiles(10_000, 10);
    let unique = profiles(10_000, 1);
    let router = Router {
        codec: Arc::new(Codec::embedded().expect("codec")),
        topics: Topics::default(),
        host: "127.0.0.1".into(),
        database: "immuta".into(),
        view_schema: "immuta".into(),
        on_wait: Arc::new(|_| {}),
    };
    let topic: Arc<str> = Arc::from("immuta.profiles");
    let mut g = c.benchmark_group("pipeline_cpu");
    g.throughput(Throughput::Elements(hot.len() as u64));
    g.bench_function("decode_validate_dedup_batch_profiles", |b| {
        b.iter(|| black_box(route_batch_rows(&router, &hot)))
    });
    g.throughput(Throughput::Elements(unique.len() as u64));
    g.bench_function("decode_validate_dedup_batch_unique_profiles", |b| {
        b.iter(|| black_box(route_batch_rows(&router, &unique)))
    });
    let records = hot;
    g.bench_function("dedup_batch_only", |b| {
        let codec = Codec::embedded().expect("codec");
        let events: Vec<Event> = records
            .iter()
            .map(|(_, v)| codec.decode(Kind::Profile, v).expect("decode"))
            .collect();
        b.iter(|| {
            let mut batch = Batch::default();
            for (offset, e) in events.iter().enumerate() {
                let body = Body::Upsert(e.clone(), Raw::default());
                push(&mut batch, &topic, 0, offset, 100, body);
            }
            black_box(batch.ops())
        })
    });
    g.finish();
}

fn view_sql(c: &mut Criterion) {
    let spec = Spec {
        users: 0,
        data_sources: 100,
        policies: 200,
        changes: 0,
        ..Spec::default()
    };
    let records = simulate::workload(&spec);
    let sources: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.value {
            Some(Event::DataSource(d)) => Some(d.clone()),
            _ => None,
        })
        .collect();
    let policies: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.value {
            Some(Event::Policy(p)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("view_sql");
    g.throughput(Throughput::Elements(sources.len() as u64));
    g.bench_function("plan_100_views_200_policies", |b| {
        b.iter(|| {
            for ds in &sources {
                black_box(policy_push::apply::sql::view::plan(ds, &policies, "immuta"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode, route_dedup_batch, view_sql);
criterion_main!(benches);
