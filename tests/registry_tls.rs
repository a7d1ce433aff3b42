//! The Schema Registry over HTTPS with basic and bearer authentication, against a local
//! stand-in with a certificate from a CA made for this run: an id the registry does not
//! know is poison (a dead letter), a registry that fails or refuses the credentials is
//! retried, never the record's fault.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use common::tls::{acceptor, pki};
use policy_push::codec::Codec;
use policy_push::codec::Registry;
use policy_push::config::SchemaRegistrySettings;
use policy_push::error::{Class, Classify};
use policy_push::event::{Event, Impersonation, Kind};

const KNOWN: u32 = 42;
const UNKNOWN: u32 = 9;
const FAILING: u32 = 500;

/// Answers each request on its own connection: 401 without the expected Authorization
/// header, the writer schema for [`KNOWN`], 503 for [`FAILING`], 404 for anything else.
fn stand_in(dir: &Path, authorization: &'static str, schema: String) -> String {
    let acceptor = Arc::new(acceptor(dir));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let Ok(mut tls) = acceptor.accept(conn) else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_string();
            let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
            let authorized = text.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization:")
                    && l[14..].trim() == authorization
            });
            let (status, body) = if !authorized {
                (401, "{\"error_code\":401}".to_string())
            } else if path == format!("/schemas/ids/{KNOWN}") {
                (200, serde_json::json!({ "schema": schema }).to_string())
            } else if path == format!("/schemas/ids/{FAILING}") {
                (503, "{}".to_string())
            } else if path == "/subjects" {
                (200, "[]".to_string())
            } else {
                (404, "{\"error_code\":40403}".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes());
            let _ = tls.shutdown();
        }
    });
    format!("https://localhost:{port}")
}

fn codec(settings: SchemaRegistrySettings) -> Codec {
    let registry = Registry::from_settings(&settings).expect("registry settings");
    Codec::embedded().unwrap().with_registry(registry)
}

/// An impersonation record in the Confluent wire format under `id`.
fn record(id: u32) -> (Vec<u8>, Event) {
    let event = Event::Impersonation(Impersonation {
        user: "carol".into(),
        version: 3,
        allowed: true,
    });
    let single = Codec::embedded().unwrap().encode(&event).unwrap();
    // A single-object record is 2 magic bytes and an 8-byte fingerprint before the datum.
    let framed = [vec![0], id.to_be_bytes().to_vec(), single[10..].to_vec()].concat();
    (framed, event)
}

#[test]
fn https_registry_with_basic_auth_bearer_tokens_and_its_failures() {
    let dir = pki();
    let schema = Codec::embedded()
        .unwrap()
        .reader_schema(Kind::Impersonation)
        .canonical_form();
    // "user:pa:ss" in base64: a password may hold a colon.
    let basic = stand_in(&dir, "Basic dXNlcjpwYTpzcw==", schema.clone());
    let settings = |url: &str, ca: Option<&str>| SchemaRegistrySettings {
        url: Some(url.to_string()),
        ssl_ca_location: ca.map(|c| dir.join(c)),
        ..Default::default()
    };
    let with_basic = |ca, info: &str| SchemaRegistrySettings {
        basic_auth_user_info: Some(info.into()),
        ..settings(&basic, ca)
    };

    let good = codec(with_basic(Some("ca.pem"), "user:pa:ss"));
    let (bytes, event) = record(KNOWN);
    assert_eq!(good.decode(Kind::Impersonation, &bytes).unwrap(), event);
    assert!(
        Registry::from_settings(&with_basic(Some("ca.pem"), "user:pa:ss"))
            .unwrap()
            .unwrap()
            .ping()
            .is_ok()
    );

    let unknown = good
        .decode(Kind::Impersonation, &record(UNKNOWN).0)
        .unwrap_err();
    assert_eq!(unknown.class(), Class::Poison, "{unknown}");
    let failing = good
        .decode(Kind::Impersonation, &record(FAILING).0)
        .unwrap_err();
    assert_eq!(failing.class(), Class::Retryable, "{failing}");
    assert!(failing.to_string().contains("503"), "{failing}");

    let refused = codec(with_basic(Some("ca.pem"), "user:wrong"))
        .decode(Kind::Impersonation, &bytes)
        .unwrap_err();
    assert_eq!(refused.class(), Class::Retryable, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("refused the credentials (HTTP 401)"),
        "{refused}"
    );

    // Another CA, or the system's trust store, does not know this registry's certificate.
    for ca in [Some("other_ca.pem"), None] {
        let untrusted = codec(with_basic(ca, "user:pa:ss"))
            .decode(Kind::Impersonation, &bytes)
            .unwrap_err();
        assert_eq!(untrusted.class(), Class::Retryable, "{untrusted}");
        assert!(
            untrusted.to_string().contains("cannot be reached"),
            "{untrusted}"
        );
    }

    let bearer = stand_in(&dir, "Bearer t0ken", schema);
    let with_token = SchemaRegistrySettings {
        bearer_auth_token: Some("t0ken".into()),
        ..settings(&bearer, Some("ca.pem"))
    };
    assert_eq!(
        codec(with_token)
            .decode(Kind::Impersonation, &bytes)
            .unwrap(),
        event
    );

    // From a file, read for every request: a rotated credential is used at once.
    let file = dir.join("user_info");
    std::fs::write(&file, "user:old\n").unwrap();
    let from_file = codec(SchemaRegistrySettings {
        basic_auth_user_info_file: Some(file.clone()),
        ..settings(&basic, Some("ca.pem"))
    });
    let stale = from_file.decode(Kind::Impersonation, &bytes).unwrap_err();
    assert!(stale.to_string().contains("HTTP 401"), "{stale}");
    std::fs::write(&file, "user:pa:ss\n").unwrap();
    assert_eq!(
        from_file.decode(Kind::Impersonation, &bytes).unwrap(),
        event
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let settings = SchemaRegistrySettings {
        url: Some("https://localhost:1".into()),
        ssl_ca_location: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    };
    let err = Registry::from_settings(&settings)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("schema_registry.ssl_ca_location /nonexistent/ca.pem"),
        "{err}"
    );
}
