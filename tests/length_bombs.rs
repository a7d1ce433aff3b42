//! A record whose string, array or map length claims more than the record holds is a dead
//! letter, not an allocation: the real binary runs under an address-space limit far below
//! what the claimed lengths would reserve, and must dead-letter every such record of every
//! type, in both wire encodings, on the fast and the generic decode path, then apply the
//! good record behind them with a small peak RSS.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use apache_avro::Schema;
use common::*;
use policy_push::event::Kind;

/// Items or bytes each bomb claims: 400 Mi array items reserve tens of gigabytes.
const CLAIM: i64 = 400_000_000;
/// The address space the binary gets (bytes): enough to run, far too little for a bomb.
const ADDRESS_SPACE: u64 = 6 << 30;

fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    String,
    Array,
    Map,
}

/// Writes the smallest valid values up to the first value of type `target`, which claims
/// [`CLAIM`] bytes or items and is followed by nothing. False if the schema has none.
fn bomb(schema: &Schema, target: Target, out: &mut Vec<u8>) -> bool {
    match (schema, target) {
        (Schema::String, Target::String)
        | (Schema::Array(_), Target::Array)
        | (Schema::Map(_), Target::Map) => {
            varint(out, CLAIM);
            true
        }
        (Schema::Record(r), _) => r.fields.iter().any(|f| bomb(&f.schema, target, out)),
        (Schema::Array(a), _) => {
            varint(out, 1);
            bomb(&a.items, target, out) || {
                varint(out, 0);
                false
            }
        }
        (Schema::Union(u), _) => {
            // The first branch that holds the target, else the first branch.
            let mut probe = Vec::new();
            match u
                .variants()
                .iter()
                .position(|v| bomb(v, target, &mut probe))
            {
                Some(i) => {
                    varint(out, i as i64);
                    bomb(&u.variants()[i], target, out)
                }
                None => {
                    varint(out, 0);
                    bomb(&u.variants()[0], target, out)
                }
            }
        }
        (Schema::Boolean, _) => {
            out.push(0);
            false
        }
        (Schema::Null, _) => false,
        // Empty strings, empty maps, zero longs and the first enum symbol.
        _ => {
            varint(out, 0);
            false
        }
    }
}

/// A stand-in Schema Registry on loopback: `GET /schemas/ids/N` answers `schemas[N - 1]`.
fn registry(schemas: Vec<String>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let id: Option<usize> = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/schemas/ids/"))
                .and_then(|n| n.parse().ok());
            let (status, body) = match id.and_then(|i| schemas.get(i.wrapping_sub(1))) {
                Some(s) => ("200 OK", serde_json::json!({ "schema": s }).to_string()),
                None => ("404 Not Found", "{}".to_string()),
            };
            let _ = write!(
                &stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_bombs_are_dead_lettered_without_allocating() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 1, "bombs").await;
    let codec = policy_push::codec::Codec::embedded().unwrap();
    let kinds = [
        Kind::Profile,
        Kind::DataSource,
        Kind::Policy,
        Kind::Impersonation,
    ];
    let mut registered: Vec<String> = kinds
        .iter()
        .map(|k| codec.reader_schema(*k).canonical_form())
        .collect();
    // A profile writer schema with one more (defaulted) field: it is resolved by the
    // generic decoder, not read by the fast one.
    let mut evolved: serde_json::Value =
        serde_json::from_str(&codec.reader_schema(Kind::Profile).canonical_form()).unwrap();
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "extra", "type": "string", "default": ""}));
    registered.push(evolved.to_string());
    config.schema_registry.url = Some(registry(registered.clone()));

    let mut bombs: Vec<(Kind, Vec<u8>, String)> = Vec::new();
    for (i, text) in registered.iter().enumerate() {
        let kind = kinds.get(i).copied().unwrap_or(Kind::Profile);
        let schema = Schema::parse_str(text).unwrap();
        for target in [Target::String, Target::Array, Target::Map] {
            let mut datum = Vec::new();
            if !bomb(&schema, target, &mut datum) {
                continue;
            }
            datum.extend_from_slice(b"tail");
            let mut confluent = vec![0u8];
            confluent.extend_from_slice(&(i as u32 + 1).to_be_bytes());
            confluent.extend_from_slice(&datum);
            bombs.push((
                kind,
                confluent,
                format!("{kind:?} {target:?} confluent id {}", i + 1),
            ));
            if i < 4 {
                let mut single = vec![0xC3, 0x01];
                let fp = schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
                single.extend_from_slice(&fp[..8]);
                single.extend_from_slice(&datum);
                bombs.push((kind, single, format!("{kind:?} {target:?} single-object")));
            }
        }
    }
    assert!(bombs.len() >= 14, "{} bombs", bombs.len());

    send_raw(
        &config,
        bombs
            .iter()
            .map(|(kind, bytes, _)| (*kind, "k", bytes.as_slice())),
    )
    .await;
    let someone = "someone";
    publish(&config, &[profile(someone, 1, &["g"], &[], &[])]).await;
    let total = bombs.len() + 1;

    let dir = std::env::temp_dir().join(unique("bombs"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = config_file(&config, &db, &dir);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" --config \"$1\" run",
            ADDRESS_SPACE / 1024
        ))
        .arg(env!("CARGO_BIN_EXE_policy-push"))
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let client = db.client().await;
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    wait_for("every bomb consumed", Duration::from_secs(90), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "policy-push exited ({status}) while reading the bombs:\n{}",
                std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
            );
        }
        let (client, group) = (&client, &group);
        async move { stored_total(client, group).await >= total as i64 }
    })
    .await;
    let peak_kb = peak_rss_kb(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    eprintln!("peak RSS {} MB over {} bombs", peak_kb / 1024, bombs.len());
    assert!(peak_kb > 0 && peak_kb < 300 * 1024, "peak RSS {peak_kb} kB");

    let letters = read_dead_letters(&config, bombs.len()).await;
    for l in &letters {
        assert!(
            l.reason.contains("claims more than the record holds")
                || l.reason.contains("out of range"),
            "{}",
            l.reason
        );
    }
    let applied = rows(&client, "SELECT user_name FROM immuta_system.profile")
        .await
        .unwrap();
    assert_eq!(applied, vec![row(&[Some(someone)])]);
    let _ = std::fs::remove_dir_all(&dir);
}
