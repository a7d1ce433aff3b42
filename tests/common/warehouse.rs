//! Real PostgreSQL: databases and login roles with random names, dropped afterwards
//! (also when a test fails), and what tests assert about the state a run left.

use policy_push::event::Kind;
use policy_push::simulate::{self, Record};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::unique;

pub fn admin_url() -> String {
    std::env::var("PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A fresh database; it and every role made through it are dropped on drop.
///
/// policy-push connects to it as `url`: a system account that is neither a superuser nor
/// `CREATEROLE`, which may create schemas in this database and read the tables the
/// superuser creates there (the raw tables). Only bootstrap's setup connection,
/// `admin_url`, is a superuser; so is `client()`, which tests use to set things up and
/// look at the result.
pub struct Database {
    pub name: String,
    pub url: String,
    pub system_role: String,
    pub admin_url: String,
    pub roles: Vec<String>,
}

impl Database {
    pub async fn create() -> Self {
        let name = unique("pp_test");
        let system_role = unique("pp_system");
        let admin = connect(&admin_url()).await;
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!("CREATE ROLE {system_role} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB"),
            format!("GRANT CREATE ON DATABASE {name} TO {system_role}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let admin_url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        connect(&admin_url)
            .await
            .batch_execute(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE ON SCHEMAS TO {system_role};
                 ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO {system_role};
                 ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE, SELECT ON SEQUENCES TO {system_role};"
            ))
            .await
            .expect("system account privileges");
        Database {
            url: format!("postgres://{system_role}@127.0.0.1:5432/{name}"),
            name,
            roles: vec![system_role.clone()],
            system_role,
            admin_url,
        }
    }

    /// A superuser connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.admin_url).await
    }

    /// A cluster-wide role registered for cleanup (login or group).
    pub async fn role(&mut self, prefix: &str, login: bool) -> String {
        let name = unique(prefix);
        let kind = if login { "LOGIN" } else { "NOLOGIN" };
        connect(&admin_url())
            .await
            .batch_execute(&format!("CREATE ROLE {name} {kind}"))
            .await
            .expect("create role");
        self.roles.push(name.clone());
        name
    }

    /// Registers a role created by someone else (the integration) for cleanup.
    pub fn adopt_role(&mut self, name: &str) {
        self.roles.push(name.to_string());
    }

    pub async fn as_role(&self, role: &str) -> Client {
        connect(&format!("postgres://{role}@127.0.0.1:5432/{}", self.name)).await
    }

    /// Runs a query as `role` and returns every cell as text (NULL as None).
    pub async fn rows_as(
        &self,
        role: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        rows(&self.as_role(role).await, sql).await
    }
}

/// The stored `next_offset` of a one-partition topic (-1 when none is stored).
pub async fn stored_offset(db: &Database, topic: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT next_offset FROM immuta_system.offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

/// The SQLSTATE a query failed with (None when it succeeded, or failed without one).
pub fn sqlstate<T>(result: &Result<T, tokio_postgres::Error>) -> Option<&str> {
    result.as_ref().err()?.code().map(|c| c.code())
}

/// Permission denied.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// No such relation (a view that is not there).
pub const UNDEFINED_TABLE: &str = "42P01";

pub async fn rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = msg {
            out.push((0..r.len()).map(|i| r.get(i).map(String::from)).collect());
        }
    }
    Ok(out)
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let roles = std::mem::take(&mut self.roles);
        // Drop cannot await; clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok((c, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await else {
                    return;
                };
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                for r in roles {
                    let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
                }
            });
        })
        .join();
    }
}

/// No offset applied twice (audit log), and live profiles equal the newest record per user.
pub async fn assert_exactly_once(db: &Database, records: &[Record]) {
    let client = db.client().await;
    let dupes = rows(&client, "SELECT topic, partition, \"offset\" FROM immuta_system.apply_log GROUP BY 1, 2, 3 HAVING count(*) > 1")
        .await
        .unwrap();
    assert!(
        dupes.is_empty(),
        "{}: records applied twice: {dupes:?}",
        db.name
    );
    assert_latest_profiles(db, records).await;
}

/// Live profiles equal the newest record per user.
pub async fn assert_latest_profiles(db: &Database, records: &[Record]) {
    let client = db.client().await;
    let live = rows(
        &client,
        "SELECT user_name, version FROM immuta_system.profile WHERE NOT deleted ORDER BY 1",
    )
    .await
    .unwrap();
    let want: Vec<Vec<Option<String>>> = simulate::expected_state(records)
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Profile)
        .filter_map(|((_, key), v)| {
            v.as_ref()
                .map(|v| vec![Some(key.clone()), Some(v.version().to_string())])
        })
        .collect();
    assert_eq!(
        live, want,
        "{}: profiles equal the newest record per user",
        db.name
    );
}
