//! Kafka over TLS against a real Kafka protocol implementation: Tansu behind a TLS
//! terminator on loopback (Tansu has no TLS listener of its own), advertising the
//! terminator's address, with a CA made for this run. The pipeline applies events over
//! `security.protocol = "SSL"`; with another CA, `check-config --connect` says the
//! certificate was refused.

mod common;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{acceptor, pki};
use common::*;
use openssl::ssl::Ssl;

/// Accepts TLS on `listener` and forwards the plaintext to `upstream`.
async fn terminate(listener: tokio::net::TcpListener, dir: &Path, upstream: String) {
    let acceptor = Arc::new(acceptor(dir));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(ssl) = Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, conn) else {
                    return;
                };
                if Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_applies_over_tls_and_a_wrong_ca_is_named() {
    let dir = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = format!("localhost:{}", listener.local_addr().unwrap().port());
    let advertised = tls_addr.clone();
    let (child, plain) = tokio::task::spawn_blocking(move || {
        common::tansu::start_advertising(&tansu_bin(), Some(&advertised)).expect("start tansu")
    })
    .await
    .unwrap();
    terminate(listener, &dir, plain.clone()).await;
    let broker = Broker::Tansu {
        child,
        bootstrap: plain,
    };
    let topics = random_topics();
    broker.create_topics(&topics, 2).await;
    let mut db = Database::create().await;
    let mut config = config(&broker, &topics, &mut db, "tls", HOST);
    let ca = dir.join("ca.pem").display().to_string();
    for (k, v) in [
        ("bootstrap.servers", tls_addr.as_str()),
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca.as_str()),
    ] {
        config.kafka.insert(k.into(), v.into());
    }
    bootstrap(&config).await;
    let running = start(&config);
    publish(&config, &[profile("alice", 1, &["g"], &[], &[])]).await;
    let client = db.client().await;
    wait_for(
        "the profile, consumed over TLS",
        Duration::from_secs(90),
        || {
            let client = &client;
            async move {
                rows(client, "SELECT user_name FROM immuta_system.profile")
                    .await
                    .is_ok_and(|r| r == vec![vec![Some("alice".to_string())]])
            }
        },
    )
    .await;
    running.stop().await;

    let path = dir.join("wrong_ca.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\n\"bootstrap.servers\" = \"{tls_addr}\"\n\"security.protocol\" = \"SSL\"\n\
             \"ssl.ca.location\" = \"{}\"\n[http]\nlisten = \"\"\n[[integration]]\nname = \"i\"\n\
             host = \"h\"\nurl = \"{}\"\n",
            dir.join("other_ca.pem").display(),
            db.url
        ),
    )
    .unwrap();
    let (code, text) = check_config_connect(path).await;
    assert_eq!(code, Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("kafka broker {tls_addr}")))
        .unwrap_or_else(|| panic!("no line for the broker: {text}"));
    assert!(
        line.starts_with("FAIL") && line.contains("certificate verify failed"),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
