//! The demo's database and roles: made at the start (dropping an earlier demo's), and
//! dropped at the end unless `--keep`. A database of the demo's name that the demo did
//! not make (its comment says so) is never dropped.

use anyhow::{bail, Context};
use tokio_postgres::NoTls;

use policy_push::apply::sql::quote::{ident, literal};
use policy_push::event::identifier;

use super::{DemoArgs, ANALYSTS, IMPERSONATOR};

/// The comment that marks a database as the demo's own: only such a one is dropped.
const MARK: &str = "made by policy-push demo; dropped by the next one";

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", policy_push::config::redact_url(url)))?;
    tokio::spawn(conn);
    Ok(client)
}

pub(super) async fn prepare_database(args: &DemoArgs) -> anyhow::Result<String> {
    let db = identifier("--database", &args.database)?;
    let admin = connect(&args.admin_url).await?;
    // Recreated every run: the in-process Kafka starts empty each time, so offsets stored
    // by an earlier run would point past the new topics' end.
    refuse_a_database_not_ours(&admin, &db).await?;
    println!(
        "Creating database {db} (dropping an earlier demo's first) and the login roles {}.",
        ANALYSTS.join(", ")
    );
    drop_database(&admin, &db).await?;
    // Two statements: CREATE DATABASE cannot share a (multi-statement) transaction.
    admin
        .batch_execute(&format!("CREATE DATABASE {}", ident(&db)))
        .await?;
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE {} IS {}",
            ident(&db),
            literal(MARK)
        ))
        .await?;
    for a in ANALYSTS {
        let sql = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} LOGIN; END IF; END $$",
            literal(a),
            ident(a)
        );
        admin.batch_execute(&sql).await?;
    }
    let mut cfg: tokio_postgres::Config = args.admin_url.parse()?;
    cfg.dbname(&db);
    let db_url = database_url(&cfg, &db);
    let client = cfg.connect(NoTls).await.map(|(c, conn)| {
        tokio::spawn(conn);
        c
    })?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS demo;
             CREATE TABLE IF NOT EXISTS demo.orders (id integer PRIMARY KEY, customer_email text, region text, amount numeric);
             INSERT INTO demo.orders VALUES
               (1, 'ana@example.com', 'eu', 120.00), (2, 'ben@example.com', 'us', 75.50),
               (3, 'chloe@example.com', 'eu', 310.25), (4, 'dev@example.com', 'apac', 42.00),
               (5, 'eve@example.com', 'us', 18.99)
             ON CONFLICT DO NOTHING;",
        )
        .await?;
    Ok(db_url)
}

async fn drop_database(admin: &tokio_postgres::Client, db: &str) -> anyhow::Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db));
    Ok(admin.batch_execute(&sql).await?)
}

/// An error if `db` exists and is not a database an earlier demo made.
async fn refuse_a_database_not_ours(
    admin: &tokio_postgres::Client,
    db: &str,
) -> anyhow::Result<()> {
    let rows = admin
        .query(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = $1",
            &[&db],
        )
        .await?;
    match rows.first().map(|r| r.get::<_, Option<String>>(0)) {
        Some(comment) if comment.as_deref() != Some(MARK) => bail!(
            "database {db} exists and was not made by the demo: the demo would drop it; name another with --database"
        ),
        _ => Ok(()),
    }
}

/// Drops what the demo made: the database, the analysts' roles and the impersonator role.
pub(super) async fn clean_up(args: &DemoArgs) -> anyhow::Result<()> {
    let admin = connect(&args.admin_url).await?;
    let db = identifier("--database", &args.database)?;
    let roles: Vec<String> = ANALYSTS
        .iter()
        .chain(std::iter::once(&IMPERSONATOR))
        .map(|r| ident(r))
        .collect();
    drop_database(&admin, &db).await?;
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {}", roles.join(", ")))
        .await?;
    println!(
        "\nDropped database {db} and the roles {}, {IMPERSONATOR} (pass --keep to look with psql).",
        ANALYSTS.join(", ")
    );
    Ok(())
}

/// A URL for database `db` on the server and as the user of an admin connection
/// (TCP only; the integration URL must be a URL).
pub fn database_url(admin: &tokio_postgres::Config, db: &str) -> String {
    let user = admin.get_user().unwrap_or("postgres");
    let host = match admin.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.as_str(),
        _ => "127.0.0.1",
    };
    let port = admin.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{user}@{host}:{port}/{db}")
}
