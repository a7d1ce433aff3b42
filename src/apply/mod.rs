//! Applying batches to a warehouse host (SPEC §3, §5).
//!
//! One batch is one transaction:
//! 1. advance `immuta_system.offsets` for every partition the batch covers, but only from
//!    the value this instance last saw (`UPDATE … WHERE next_offset = expected`). If another
//!    instance moved it (a rebalance this one has not heard of yet), the batch is *fenced*:
//!    rolled back and re-read from the stored offsets. This is what makes the effect
//!    exactly-once even with zombie consumers;
//! 2. call the version-guarded procedures: deletes before upserts, profiles pipelined;
//! 3. rebuild every view the batch touched, once each, in a savepoint: a view that the
//!    warehouse refuses is dropped (fail closed: never leave a view with stale policies)
//!    and the records that caused it are dead-lettered;
//! 4. optionally write the audit log;
//! 5. publish dead letters and wait for the broker's acknowledgement, then COMMIT.

pub mod postgres;
pub mod sql;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::batch::{Batch, DeadLetter, Origin, Pending, TopicPartition};
use crate::config::{Dialect, Integration};
use crate::error::{Class, Classify};
use crate::event::{DataSource, Policy, Status};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot get a warehouse connection: {0}")]
    Pool(String),
    #[error("warehouse error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("offsets of {0:?} were moved by another instance; the batch was rolled back")]
    Fenced(Vec<TopicPartition>),
    #[error("dead-letter publish failed: {0}")]
    DeadLetter(String),
    #[error("stored definition is unreadable: {0}")]
    Corrupt(String),
    #[error("the {0:?} dialect is not supported yet")]
    Unsupported(Dialect),
    #[error("{0}")]
    Refused(String),
    #[error("the batch transaction took longer than {0:?} and was abandoned")]
    Timeout(Duration),
}

impl ApplyError {
    /// What the operator should do, for /health.
    pub fn hint(&self) -> &'static str {
        match self {
            ApplyError::Pool(_) => "check that the warehouse is reachable and the integration url and password are right",
            ApplyError::Db(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) || e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
                "the integration objects are missing: run `policy-push bootstrap`"
            }
            ApplyError::Db(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                "the system role lacks a privilege: see the README's warehouse privileges"
            }
            ApplyError::Db(_) => "check the warehouse log for this error; the batch is retried with backoff",
            ApplyError::Fenced(_) => "another instance owns these partitions now; nothing to do",
            ApplyError::DeadLetter(_) => "check that the dead-letter topic exists and is writable",
            ApplyError::Corrupt(_) => "a stored definition was edited by hand; restore it or replay the host",
            ApplyError::Unsupported(_) => "use dialect = \"postgres\"",
            ApplyError::Refused(_) => "fix the warehouse setting named in the message, then bootstrap again",
            ApplyError::Timeout(_) => "the warehouse is slow or unresponsive: check its load and locks (pg_stat_activity)",
        }
    }
}

impl Classify for ApplyError {
    fn class(&self) -> Class {
        match self {
            ApplyError::Unsupported(_) | ApplyError::Refused(_) => Class::Fatal,
            // A host that is failing keeps retrying: the operator may fix it (bootstrap,
            // grants) without restarting, and other hosts are not affected.
            _ => Class::Retryable,
        }
    }
}

/// Where dead letters go. Publishing must be acknowledged before the transaction that
/// advances the offsets past the records commits, so that nothing is lost.
pub trait DeadLetterSink {
    fn publish(
        &self,
        letters: &[DeadLetter],
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Procedure calls made (one per surviving change).
    pub changes: usize,
    pub views_rebuilt: usize,
    pub views_dropped: usize,
    /// Records dead-lettered because the warehouse refused them.
    pub rejected: usize,
    /// New `next_offset` per partition.
    pub offsets: BTreeMap<TopicPartition, i64>,
}

pub struct Warehouse {
    pool: Pool,
    integration: Integration,
    database: String,
}

fn pool_error(e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Pool(e.to_string())
}

impl Warehouse {
    pub fn new(integration: &Integration) -> Result<Self, crate::config::ConfigError> {
        let pg = integration.pg_config()?;
        let database = integration.database()?;
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(integration.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| crate::config::ConfigError::Invalid {
                key: format!("integration.{}", integration.name),
                reason: e.to_string(),
            })?;
        Ok(Warehouse {
            pool,
            integration: integration.clone(),
            database,
        })
    }

    pub fn integration(&self) -> &Integration {
        &self.integration
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ApplyError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Creates or updates the warehouse objects. Safe to run any number of times, also
    /// concurrently.
    pub async fn bootstrap(&self) -> Result<(), ApplyError> {
        if self.integration.dialect != Dialect::Postgres {
            return Err(ApplyError::Unsupported(self.integration.dialect));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('policy-push bootstrap'))",
            &[],
        )
        .await?;
        let script = postgres::bootstrap_script(&postgres::Names {
            database: &self.database,
            view_schema: &self.integration.view_schema,
            impersonator_role: &self.integration.impersonator_role,
        });
        tx.batch_execute(&script).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stored `next_offset` per topic-partition for a consumer group.
    pub async fn load_offsets(
        &self,
        group: &str,
    ) -> Result<HashMap<(String, i32), i64>, ApplyError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT topic, partition, next_offset FROM immuta_system.offsets WHERE consumer_group = $1",
                &[&group],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    (r.try_get::<_, String>(0)?, r.try_get::<_, i32>(1)?),
                    r.try_get::<_, i64>(2)?,
                ))
            })
            .collect()
    }

    /// Applies one batch in one transaction; see the module docs.
    pub async fn apply<D: DeadLetterSink>(
        &self,
        group: &str,
        batch: &Batch,
        dlq: &D,
    ) -> Result<Applied, ApplyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut applied = Applied::default();
        advance_offsets(&tx, group, batch, &mut applied).await?;
        apply_profiles(&tx, batch).await?;
        let mut rejected = apply_impersonations(&tx, batch).await?;
        let changed_ds = apply_definitions(&tx, "data_source", &batch.data_sources).await?;
        let changed_pol = apply_definitions(&tx, "policy", &batch.policies).await?;
        if !changed_ds.is_empty() || !changed_pol.is_empty() {
            let mut ctx = Rebuild {
                tx: &tx,
                view_schema: &self.integration.view_schema,
                applied: &mut applied,
                rejected: &mut rejected,
            };
            ctx.rebuild_views(batch, &changed_ds, &changed_pol).await?;
        }
        applied.changes = batch.ops();
        if self.integration.audit {
            write_audit(&tx, group, batch).await?;
        }
        let mut letters = batch.dead_letters.clone();
        applied.rejected = rejected.len();
        letters.extend(rejected);
        if !letters.is_empty() {
            dlq.publish(&letters)
                .await
                .map_err(ApplyError::DeadLetter)?;
        }
        tx.commit().await?;
        Ok(applied)
    }
}

async fn advance_offsets(
    tx: &deadpool_postgres::Transaction<'_>,
    group: &str,
    batch: &Batch,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let update = tx
        .prepare_cached(
            "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = now() \
             WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
        )
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO immuta_system.offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut fenced = Vec::new();
    for (tp, span) in &batch.partitions {
        let topic: &str = &tp.topic;
        let rows = match span.expected {
            Some(expected) => {
                tx.execute(
                    &update,
                    &[&group, &topic, &tp.partition, &span.next_offset, &expected],
                )
                .await?
            }
            None => {
                tx.execute(&insert, &[&group, &topic, &tp.partition, &span.next_offset])
                    .await?
            }
        };
        if rows != 1 {
            fenced.push(tp.clone());
        }
        applied.offsets.insert(tp.clone(), span.next_offset);
    }
    if fenced.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Fenced(fenced))
    }
}

fn floor(p: &crate::batch::Delete) -> Option<i64> {
    p.floor
}

async fn apply_profiles(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &Batch,
) -> Result<(), ApplyError> {
    if batch.profiles.is_empty() {
        return Ok(());
    }
    let delete = tx
        .prepare_cached("CALL immuta_procedures.delete_profile($1, $2)")
        .await?;
    let deletes = batch
        .profiles
        .iter()
        .filter_map(|(user, p)| p.delete.as_ref().map(|d| (user, floor(d))));
    futures::future::try_join_all(deletes.map(|(user, f)| {
        let delete = &delete;
        async move { tx.execute(delete, &[user, &f]).await }
    }))
    .await?;

    let upsert = tx
        .prepare_cached("CALL immuta_procedures.upsert_profile($1, $2, $3, $4, $5, $6, $7, $8)")
        .await?;
    let upserts = batch
        .profiles
        .values()
        .filter_map(|p| p.upsert.as_ref())
        .map(|u| {
            let v = &u.value;
            let attributes = serde_json::to_value(&v.attributes).unwrap_or_default();
            let (project_id, purposes) = match &v.current_project {
                Some(p) => (Some(p.id.as_str()), p.purposes.as_slice()),
                None => (None, &[][..]),
            };
            let upsert = &upsert;
            async move {
                let params: [&(dyn ToSql + Sync); 8] = [
                    &v.user,
                    &v.version,
                    &v.groups,
                    &attributes,
                    &project_id,
                    &purposes,
                    &v.acknowledged_purposes,
                    &v.data_sources,
                ];
                tx.execute(upsert, &params).await
            }
        });
    futures::future::try_join_all(upserts).await?;
    Ok(())
}

/// Impersonation changes manage role membership, which the warehouse may refuse (the
/// user has no role there yet). Each runs in a savepoint so a refusal dead-letters only
/// that record.
async fn apply_impersonations(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &Batch,
) -> Result<Vec<DeadLetter>, ApplyError> {
    let mut rejected = Vec::new();
    for (user, p) in &batch.impersonations {
        if let Some(d) = &p.delete {
            let sql = "CALL immuta_procedures.delete_impersonation($1, $2)";
            rejected.extend(in_savepoint(tx, sql, &[user, &d.floor], &d.origin, &d.raw).await?);
        }
        if let Some(u) = &p.upsert {
            let sql = "CALL immuta_procedures.upsert_impersonation($1, $2, $3)";
            let params: [&(dyn ToSql + Sync); 3] = [user, &u.value.version, &u.value.allowed];
            rejected.extend(in_savepoint(tx, sql, &params, &u.origin, &u.raw).await?);
        }
    }
    Ok(rejected)
}

/// Runs one statement in a savepoint. If the warehouse refuses it, rolls back to the
/// savepoint and returns the dead letter for the record; a connection error is an `Err`.
async fn in_savepoint(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    origin: &Origin,
    raw: &crate::batch::Raw,
) -> Result<Option<DeadLetter>, ApplyError> {
    tx.batch_execute("SAVEPOINT policy_push_item").await?;
    match tx.execute(sql, params).await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT policy_push_item")
                .await?;
            Ok(None)
        }
        Err(e) if e.as_db_error().is_some() => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT policy_push_item")
                .await?;
            Ok(Some(DeadLetter {
                origin: origin.clone(),
                reason: warehouse_reason(&e),
                raw: raw.clone(),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

fn warehouse_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "warehouse refused the change: {} ({})",
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    }
}

/// Applies data-source or policy changes; returns the ids whose stored state changed.
async fn apply_definitions<T: serde::Serialize + crate::batch::Versioned>(
    tx: &deadpool_postgres::Transaction<'_>,
    entity: &str,
    changes: &HashMap<String, Pending<T>>,
) -> Result<BTreeSet<String>, ApplyError> {
    let mut changed = BTreeSet::new();
    if changes.is_empty() {
        return Ok(changed);
    }
    let delete = tx
        .prepare_cached(&format!(
            "CALL immuta_procedures.delete_{entity}($1, $2, NULL)"
        ))
        .await?;
    let upsert = tx
        .prepare_cached(&format!(
            "CALL immuta_procedures.upsert_{entity}($1, $2, $3, NULL)"
        ))
        .await?;
    for (id, p) in changes {
        let mut any = false;
        if let Some(d) = &p.delete {
            any |= tx
                .query_one(&delete, &[id, &d.floor])
                .await?
                .try_get::<_, Option<bool>>(0)?
                .unwrap_or(false);
        }
        if let Some(u) = &p.upsert {
            let def =
                serde_json::to_value(&u.value).map_err(|e| ApplyError::Corrupt(e.to_string()))?;
            let version = u.value.version();
            any |= tx
                .query_one(&upsert, &[id, &version, &def])
                .await?
                .try_get::<_, Option<bool>>(0)?
                .unwrap_or(false);
        }
        if any {
            changed.insert(id.clone());
        }
    }
    Ok(changed)
}

/// One audit row: topic, partition, offset, kind, entity id, version, operation.
type AuditRow<'a> = (String, i32, i64, &'a str, String, Option<i64>, &'a str);

async fn write_audit(
    tx: &deadpool_postgres::Transaction<'_>,
    group: &str,
    batch: &Batch,
) -> Result<(), ApplyError> {
    let mut rows: Vec<AuditRow<'_>> = Vec::new();
    fn collect<'a, T: crate::batch::Versioned>(
        rows: &mut Vec<AuditRow<'a>>,
        kind: &'a str,
        m: &HashMap<String, Pending<T>>,
    ) {
        for (id, p) in m {
            if let Some(d) = p.delete.as_ref().filter(|d| !d.foreign) {
                let o: &Origin = &d.origin;
                rows.push((
                    o.tp.topic.to_string(),
                    o.tp.partition,
                    o.offset,
                    kind,
                    id.clone(),
                    d.floor,
                    "delete",
                ));
            }
            if let Some(u) = &p.upsert {
                let o = &u.origin;
                rows.push((
                    o.tp.topic.to_string(),
                    o.tp.partition,
                    o.offset,
                    kind,
                    id.clone(),
                    Some(u.value.version()),
                    "upsert",
                ));
            }
        }
    }
    collect(&mut rows, "profile", &batch.profiles);
    collect(&mut rows, "data_source", &batch.data_sources);
    collect(&mut rows, "policy", &batch.policies);
    collect(&mut rows, "impersonation", &batch.impersonations);
    if rows.is_empty() {
        return Ok(());
    }
    let topics: Vec<_> = rows.iter().map(|r| r.0.clone()).collect();
    let partitions: Vec<_> = rows.iter().map(|r| r.1).collect();
    let offsets: Vec<_> = rows.iter().map(|r| r.2).collect();
    let kinds: Vec<_> = rows.iter().map(|r| r.3).collect();
    let ids: Vec<_> = rows.iter().map(|r| r.4.clone()).collect();
    let versions: Vec<_> = rows.iter().map(|r| r.5).collect();
    let ops: Vec<_> = rows.iter().map(|r| r.6).collect();
    tx.execute(
        "INSERT INTO immuta_system.apply_log (consumer_group, topic, partition, \"offset\", kind, entity_id, version, op) \
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[])",
        &[&group, &topics, &partitions, &offsets, &kinds, &ids, &versions, &ops],
    )
    .await?;
    Ok(())
}

struct Rebuild<'a, 't> {
    tx: &'a deadpool_postgres::Transaction<'t>,
    view_schema: &'a str,
    applied: &'a mut Applied,
    rejected: &'a mut Vec<DeadLetter>,
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApplyError> {
    serde_json::from_value(v).map_err(|e| ApplyError::Corrupt(e.to_string()))
}

impl Rebuild<'_, '_> {
    async fn live<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<Vec<T>, ApplyError> {
        let rows = self
            .tx
            .query(&format!("SELECT definition FROM immuta_system.{table} WHERE NOT deleted AND definition IS NOT NULL"), &[])
            .await?;
        rows.into_iter().map(|r| parse(r.try_get(0)?)).collect()
    }

    /// Rebuilds every view the changed data sources and policies touch, once each.
    async fn rebuild_views(
        &mut self,
        batch: &Batch,
        changed_ds: &BTreeSet<String>,
        changed_pol: &BTreeSet<String>,
    ) -> Result<(), ApplyError> {
        let policies: Vec<Policy> = self.live("policy").await?;
        let sources: BTreeMap<String, DataSource> = self
            .live::<DataSource>("data_source")
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let built: HashMap<String, (String, Vec<String>)> = self
            .tx
            .query(
                "SELECT data_source_id, view_name, policy_ids FROM immuta_system.view_state",
                &[],
            )
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
            .collect::<Result<_, tokio_postgres::Error>>()?;

        let mut affected: BTreeSet<String> = changed_ds.clone();
        for (ds_id, (_, policy_ids)) in &built {
            if policy_ids.iter().any(|p| changed_pol.contains(p)) {
                affected.insert(ds_id.clone());
            }
        }
        for p in policies.iter().filter(|p| changed_pol.contains(&p.id)) {
            affected.extend(
                sources
                    .values()
                    .filter(|d| view::targets(p, d))
                    .map(|d| d.id.clone()),
            );
        }
        for ds_id in affected {
            let old_view = built.get(&ds_id).map(|(v, _)| v.as_str());
            match sources.get(&ds_id).filter(|d| d.status == Status::Active) {
                Some(ds) => {
                    self.build(ds, &policies, old_view, batch, changed_pol)
                        .await?
                }
                None => self.drop(&ds_id, old_view).await?,
            }
        }
        Ok(())
    }

    async fn drop(&mut self, ds_id: &str, old_view: Option<&str>) -> Result<(), ApplyError> {
        if let Some(v) = old_view {
            self.tx
                .batch_execute(&format!(
                    "DROP VIEW IF EXISTS {}",
                    sql::qualified(self.view_schema, v)
                ))
                .await?;
            self.applied.views_dropped += 1;
        }
        self.tx
            .execute(
                "DELETE FROM immuta_system.view_state WHERE data_source_id = $1",
                &[&ds_id],
            )
            .await?;
        Ok(())
    }

    async fn build(
        &mut self,
        ds: &DataSource,
        policies: &[Policy],
        old_view: Option<&str>,
        batch: &Batch,
        changed_pol: &BTreeSet<String>,
    ) -> Result<(), ApplyError> {
        let plan = view::plan(ds, policies, self.view_schema);
        let mut ddl = String::new();
        if let Some(old) = old_view.filter(|o| *o != ds.view_name) {
            ddl += &format!(
                "DROP VIEW IF EXISTS {};\n",
                sql::qualified(self.view_schema, old)
            );
        }
        ddl += &format!(
            "DROP VIEW IF EXISTS {};\n{};\n",
            plan.qualified_name, plan.create_sql
        );
        ddl += &format!("GRANT SELECT ON {} TO PUBLIC;\n", plan.qualified_name);
        self.tx.batch_execute("SAVEPOINT policy_push_view").await?;
        match self.tx.batch_execute(&ddl).await {
            Ok(()) => {
                self.tx
                    .batch_execute("RELEASE SAVEPOINT policy_push_view")
                    .await?;
                self.tx
                    .execute(
                        "INSERT INTO immuta_system.view_state (data_source_id, view_name, policy_ids, built_at) \
                         VALUES ($1, $2, $3, now()) ON CONFLICT (data_source_id) DO UPDATE \
                         SET view_name = EXCLUDED.view_name, policy_ids = EXCLUDED.policy_ids, built_at = now()",
                        &[&ds.id, &ds.view_name, &plan.policy_ids],
                    )
                    .await?;
                self.applied.views_rebuilt += 1;
            }
            Err(e) if e.as_db_error().is_some() => {
                self.tx
                    .batch_execute("ROLLBACK TO SAVEPOINT policy_push_view")
                    .await?;
                let reason = format!(
                    "view {} could not be built and was dropped: {}",
                    plan.qualified_name,
                    warehouse_reason(&e)
                );
                tracing::warn!(data_source = %ds.id, %reason, "view rebuild refused");
                self.drop(&ds.id, old_view.or(Some(&ds.view_name))).await?;
                self.blame(batch, &ds.id, &plan.policy_ids, changed_pol, &reason);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Dead-letters the records of this batch that led to a refused view: the data
    /// source's own record if it changed, otherwise the changed policies on it.
    fn blame(
        &mut self,
        batch: &Batch,
        ds_id: &str,
        policy_ids: &[String],
        changed_pol: &BTreeSet<String>,
        reason: &str,
    ) {
        let mut push = |origin: &Origin, raw: &crate::batch::Raw| {
            if !self.rejected.iter().any(|r| r.origin == *origin) {
                self.rejected.push(DeadLetter {
                    origin: origin.clone(),
                    reason: reason.to_string(),
                    raw: raw.clone(),
                });
            }
        };
        if let Some(u) = batch
            .data_sources
            .get(ds_id)
            .and_then(|p| p.upsert.as_ref())
        {
            push(&u.origin, &u.raw);
            return;
        }
        for id in policy_ids.iter().filter(|p| changed_pol.contains(*p)) {
            if let Some(u) = batch.policies.get(id).and_then(|p| p.upsert.as_ref()) {
                push(&u.origin, &u.raw);
            }
        }
    }
}
