//! TLS to the warehouse against a real second PostgreSQL server, started here on its own
//! port with `ssl = on` and `hostssl`-only TCP access, its certificate issued for
//! `localhost` by a CA generated for this run.

mod common;

use std::process::Command;
use std::time::Duration;

use common::server::Server;
use common::tls::{certificates, run, server_certificate};
use common::*;
use policy_push::apply::connect;

/// The TLS-only server of these tests, with a CA per run.
fn tls_server() -> Server {
    Server::start(|dir| {
        certificates(dir, "ca");
        certificates(dir, "other_ca");
        server_certificate(dir);
        run(Command::new("chmod").arg("600").arg(dir.join("server.key")));
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let hba = "local all all trust\nhostssl all pp_rotating 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 trust\n";
        (conf, Some(hba.into()))
    })
}

fn ca_of(server: &Server, name: &str) -> String {
    server.dir.join(format!("{name}.pem")).display().to_string()
}

fn integration(url: &str) -> policy_push::config::Integration {
    integration_with(url, Vec::new())
}

fn integration_with(url: &str, env: Vec<(String, String)>) -> policy_push::config::Integration {
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:1\"\n[[integration]]\nname = \"tls\"\nhost = \"h\"\nurl = \"{url}\"\n"
    );
    policy_push::Config::from_toml(&text, env)
        .expect("config")
        .integrations
        .remove(0)
}

async fn refusal(url: &str) -> String {
    match connect::system_client(&integration(url)).await {
        Ok(_) => panic!("{url}: connected"),
        Err(e) => policy_push::error::chain(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_applies_over_verify_full_and_mismatches_say_which() {
    let server = tls_server();
    let port = server.port;
    let admin = server.admin("postgres").await;
    let (db, system) = (unique("pp_tls_db"), unique("pp_sys"));
    for sql in [
        format!("CREATE DATABASE {db}"),
        format!("CREATE ROLE {system} LOGIN"),
        format!("GRANT CREATE ON DATABASE {db} TO {system}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let ca = ca_of(&server, "ca");
    let verified = |user: &str, host: &str, ca: &str| {
        format!("postgres://{user}@{host}:{port}/{db}?sslmode=verify-full&sslrootcert={ca}")
    };

    // The host: the certificate names localhost, not 127.0.0.1 (OpenSSL says "IP
    // address mismatch" for an address, "hostname mismatch" for a name).
    let wrong_host = refusal(&verified(&system, "127.0.0.1", &ca)).await;
    assert!(
        wrong_host.contains("address mismatch") && wrong_host.contains("names the host 127.0.0.1"),
        "{wrong_host}"
    );
    // The CA: another CA did not sign it.
    let wrong_ca = refusal(&verified(&system, "localhost", &ca_of(&server, "other_ca"))).await;
    assert!(
        wrong_ca.contains("certificate was refused") && wrong_ca.contains("other_ca.pem"),
        "{wrong_ca}"
    );
    assert!(!wrong_ca.contains("mismatch"), "{wrong_ca}");
    // No TLS at all: the server refuses.
    let plain = refusal(&format!(
        "postgres://{system}@localhost:{port}/{db}?sslmode=disable"
    ))
    .await;
    assert!(plain.contains("no encryption"), "{plain}");
    // verify-ca checks the chain only, so 127.0.0.1 is fine there.
    let ca_only =
        format!("postgres://{system}@127.0.0.1:{port}/{db}?sslmode=verify-ca&sslrootcert={ca}");
    connect::system_client(&integration(&ca_only))
        .await
        .expect("verify-ca");

    let broker = Broker::mock();
    let topics = random_topics();
    broker.create_topics(&topics, 1).await;
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{}\"\n[consumer]\ngroup_prefix = \"{}\"\n[batch]\nlinger_ms = 20\n\
         [http]\nlisten = \"\"\n[[integration]]\nname = \"tls\"\nhost = \"{HOST}\"\nurl = \"{}\"\n\
         setup_url = \"{}\"\nimpersonator_role = \"{}\"\n",
        broker.bootstrap(),
        unique("g"),
        verified(&system, "localhost", &ca),
        verified("postgres", "localhost", &ca),
        unique("pp_imp"),
    );
    let mut config = policy_push::Config::from_toml(&text, Vec::new()).expect("config");
    config.topics = topics;
    bootstrap(&config).await;
    let running = start(&config);
    publish(&config, &[profile("alice", 1, &["g"], &[], &[])]).await;
    let watch = server.admin(&db).await;
    wait_for(
        "the profile, applied over TLS",
        Duration::from_secs(60),
        || {
            let watch = &watch;
            async move {
                rows(watch, "SELECT user_name FROM immuta_system.profile")
                    .await
                    .is_ok_and(|r| r == vec![vec![Some("alice".to_string())]])
            }
        },
    )
    .await;
    let encrypted = rows(
        &watch,
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.usename = '{system}'"
        ),
    )
    .await
    .unwrap();
    running.stop().await;
    assert_ne!(
        encrypted,
        vec![vec![Some("0".to_string())]],
        "the pool's sessions use TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_used_by_the_next_connection() {
    let server = tls_server();
    let admin = server.admin("postgres").await;
    admin
        .batch_execute("CREATE ROLE pp_rotating LOGIN PASSWORD 'first'")
        .await
        .unwrap();
    let file = server.dir.join("password");
    std::fs::write(&file, "first\n").unwrap();
    let url = format!(
        "postgres://pp_rotating@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port,
        ca_of(&server, "ca")
    );
    let env = vec![(
        "POLICY_PUSH_INTEGRATION_TLS_PASSWORD_FILE".to_string(),
        file.display().to_string(),
    )];
    let warehouse = policy_push::apply::Warehouse::new(&integration_with(&url, env)).unwrap();
    let name = warehouse.session_setting("application_name").await.unwrap();
    assert_eq!(name, "policy-push");

    // The secret rotates: the server and the mounted file change, the process does not.
    admin
        .batch_execute("ALTER ROLE pp_rotating PASSWORD 'second'")
        .await
        .unwrap();
    std::fs::write(&file, "second\n").unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pp_rotating'",
        )
        .await
        .unwrap();
    wait_for(
        "a new pooled connection with the new password",
        Duration::from_secs(30),
        || {
            let warehouse = &warehouse;
            async move { warehouse.session_setting("application_name").await.is_ok() }
        },
    )
    .await;
    let sessions = rows(
        &admin,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pp_rotating'",
    )
    .await
    .unwrap();
    assert_eq!(sessions, vec![vec![Some("1".to_string())]]);
}
