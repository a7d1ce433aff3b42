//! Applying batches to a warehouse host (SPEC §3, §5).
//!
//! One batch is one transaction:
//! 1. advance `immuta_system.offsets` for every partition the batch covers, but only from
//!    the value this instance last saw (`UPDATE … WHERE next_offset = expected`). If another
//!    instance moved it (a rebalance this one has not heard of yet), the batch is *fenced*:
//!    rolled back and re-read from the stored offsets. This is what makes the effect
//!    exactly-once even with zombie consumers;
//! 2. call the version-guarded procedures: deletes before upserts. PostgreSQL profiles go
//!    as array parameters of set-based calls (about 1 MB of records each, pipelined);
//!    Redshift's are pipelined calls, one per profile;
//! 3. rebuild every view the batch touched, once each. A view whose raw table or columns
//!    are missing, or (PostgreSQL, rolled back alone on the server) that the warehouse refuses, is dropped
//!    (fail closed: never leave a view with stale policies) and the records that caused it
//!    are dead-lettered;
//! 4. optionally write the audit log;
//! 5. publish dead letters and wait for the broker's acknowledgement, then COMMIT.

pub mod barrier;
mod bootstrap;
pub mod connect;
pub use bootstrap::{bootstrap_all, bootstrap_sql, case_sensitive, BootstrapError};
#[doc(hidden)]
pub mod dialect;
pub mod examples;
mod pg_roles;
pub mod postgres;
mod preflight;
mod rebuild;
pub mod redshift;
pub mod row_security;
pub mod sql;
mod statements;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::batch::{Batch, DeadLetter, Origin, Profile, TopicPartition};
use crate::config::{Dialect, Integration};
use crate::error::{Class, Classify};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot get a warehouse connection: {0}")]
    Pool(String),
    #[error("warehouse error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("offsets of {0:?} were moved by another instance; the batch was rolled back")]
    Fenced(Vec<TopicPartition>),
    #[error("dead-letter publish failed: {0}")]
    DeadLetter(PublishError),
    #[error("stored definition is unreadable: {0}")]
    Corrupt(String),
    #[error("a profile that passed its check when consumed does not decode: {0}")]
    Undecodable(#[from] crate::codec::CodecError),
    #[error("{0}")]
    Refused(String),
    #[error("the batch transaction took longer than {0:?} and was abandoned")]
    Timeout(Duration),
}

impl ApplyError {
    /// The `kind` label of `policy_push_warehouse_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Pool(_) => "connection",
            ApplyError::Db(_) => "sql",
            ApplyError::Fenced(_) => "fenced",
            ApplyError::Timeout(_) => "timeout",
            ApplyError::DeadLetter(_) => "dead_letter",
            ApplyError::Corrupt(_) | ApplyError::Undecodable(_) => "corrupt",
            ApplyError::Refused(_) => "config",
        }
    }

    /// The warehouse refused the batch because of what one of its records holds
    /// (`record_sqlstate`): its records can be isolated (`batch::split`).
    pub fn refused_by_record(&self) -> bool {
        matches!(self, ApplyError::Db(e) if caused_by_record(e))
    }

    /// The dead-letter reason for a record the warehouse refused.
    pub fn refusal(&self) -> String {
        match self {
            ApplyError::Db(e) => warehouse_reason(e),
            other => other.to_string(),
        }
    }

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
            ApplyError::Db(e) if e.code() == Some(&SqlState::OUT_OF_MEMORY) => {
                "the batch rebuilds more views than PostgreSQL's lock table holds: raise max_locks_per_transaction, or lower batch.max_definitions"
            }
            ApplyError::Db(_) => "check the warehouse log for this error; the batch is retried with backoff",
            ApplyError::Fenced(_) => "another instance owns these partitions now; nothing to do",
            ApplyError::DeadLetter(e) if e.refused => "the dead-letter topic refuses writes: create it (not compacted) or grant this client WRITE on it (and DESCRIBE); this lane applies nothing until the rejected records are published",
            ApplyError::DeadLetter(_) => "check that the dead-letter topic exists and is writable",
            ApplyError::Corrupt(_) => "a stored definition was edited by hand; restore it or replay the host",
            ApplyError::Undecodable(_) => "a bug in policy-push's profile reader: report it with this message; pinning the producer to the previous schema version avoids the fast path",
            ApplyError::Refused(_) => "fix the warehouse setting named in the message, then bootstrap again",
            ApplyError::Timeout(_) => "the warehouse is slow or unresponsive: check its load and locks (pg_stat_activity)",
        }
    }
}

impl ApplyError {
    /// Failing at once rather than after a few retries: only the operator can fix it.
    pub fn needs_operator(&self) -> bool {
        matches!(self, ApplyError::DeadLetter(e) if e.refused)
    }
}

impl Classify for ApplyError {
    fn class(&self) -> Class {
        match self {
            ApplyError::Refused(_) => Class::Fatal,
            // A host that is failing keeps retrying: the operator may fix it (bootstrap,
            // grants) without restarting, and other hosts are not affected.
            _ => Class::Retryable,
        }
    }
}

pub use crate::record::{DeadLetterSink, PublishError};

impl crate::consume::OffsetStore for Warehouse {
    fn load_offsets<'a>(&'a self, group: &'a str) -> crate::consume::store::Loading<'a> {
        Box::pin(async move {
            Warehouse::load_offsets(self, group)
                .await
                .map_err(|e| crate::consume::StoreError {
                    message: e.to_string(),
                    hint: e.hint(),
                })
        })
    }
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
    connector: connect::Connector,
    pg: tokio_postgres::Config,
    integration: Integration,
    database: String,
    barrier: barrier::PolicyBarrier,
}

fn pool_error(e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Pool(e.to_string())
}

impl Warehouse {
    pub fn new(integration: &Integration) -> Result<Self, crate::config::ConfigError> {
        let pg = integration.pg_config()?;
        let database = integration.database()?;
        let tls = integration.tls()?;
        let connector = connect::Connector::new(&tls, integration.password_source.clone())
            .map_err(|e| crate::config::ConfigError::Invalid {
                key: format!("integration.{}.sslrootcert", integration.name),
                reason: e.to_string(),
            })?;
        let mgr = Manager::from_connect(
            pg.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut pool = Pool::builder(mgr);
        let commit = integration
            .synchronous_commit
            .unwrap_or(crate::config::SynchronousCommit::Off);
        if let Some(session) = dialect::of(integration.dialect).session(commit) {
            let session: std::sync::Arc<str> = session.into();
            pool = pool.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let session = session.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&session)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }));
        }
        let pool = pool
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
            connector,
            pg,
            integration: integration.clone(),
            database,
            barrier: barrier::PolicyBarrier::default(),
        })
    }

    /// Whether new views may go live yet (`barrier`).
    pub fn barrier(&self) -> &barrier::PolicyBarrier {
        &self.barrier
    }

    /// Builds the views waiting for the policy barrier if the policies have caught up;
    /// returns whether the barrier is open. For when no batch comes to do it.
    pub async fn open_views_if_caught_up(&self, group: &str) -> Result<bool, ApplyError> {
        if self.barrier.is_open() {
            return Ok(true);
        }
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The first lock, as in every batch: replay's reset waits for it (advance_offsets).
        tx.batch_execute(dialect::of(d).lock_offsets()).await?;
        if !self.barrier.allows_new_views(&tx, d, group).await? {
            return Ok(false);
        }
        if let Some(settings) = dialect::of(d).before_view_builds() {
            tx.batch_execute(settings).await?;
        }
        // Nothing in this transaction to blame for a view that cannot be built: the
        // records were applied before; the view is dropped and the refusal logged.
        let (mut applied, mut rejected) = (Applied::default(), Vec::new());
        let none = BTreeSet::new();
        rebuild::Rebuild::new(
            &tx,
            d,
            &self.integration.view_schema,
            &mut applied,
            &mut rejected,
        )
        .under_barrier(true, true)
        .rebuild_views(&Batch::default(), &none, &none)
        .await?;
        tx.commit().await?;
        self.barrier.opened();
        tracing::info!(
            views = applied.views_rebuilt,
            "policies caught up: pending views built"
        );
        Ok(true)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ApplyError> {
        self.pool.get().await.map_err(|e| match &e {
            deadpool_postgres::PoolError::Backend(b) => {
                ApplyError::Pool(self.connector.explain(b, &self.pg))
            }
            _ => pool_error(e),
        })
    }

    fn dialect(&self) -> Dialect {
        self.integration.dialect
    }

    /// Whether a refused record can be rolled back alone: PostgreSQL, unless
    /// `savepoints = false` (Redshift has none).
    fn savepoints(&self) -> bool {
        dialect::of(self.dialect()).savepoints() && self.integration.savepoints
    }

    /// A setting as a pooled session sees it (`SHOW`), for diagnostics.
    pub async fn session_setting(&self, name: &str) -> Result<String, ApplyError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_catalog.current_setting($1)", &[&name])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Stored `next_offset` per topic-partition for a consumer group.
    pub async fn load_offsets(
        &self,
        group: &str,
    ) -> Result<HashMap<(String, i32), i64>, ApplyError> {
        let client = self.client().await?;
        let rows = client.query(statements::LOAD_OFFSETS, &[&group]).await?;
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
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut applied = Applied::default();
        advance_offsets(&tx, d, group, batch, &mut applied).await?;
        let mut rejected = Vec::new();
        apply_profiles(&tx, d, batch, &mut rejected).await?;
        rejected.extend(apply_impersonations(&tx, self.savepoints(), batch).await?);
        let limit = dialect::of(d).stored_limit();
        let changed_ds = apply_definitions(
            &tx,
            "data_source",
            &batch.data_sources,
            limit,
            &mut rejected,
        )
        .await?;
        let changed_pol =
            apply_definitions(&tx, "policy", &batch.policies, limit, &mut rejected).await?;
        // A batch that only moves offsets (the last step of an isolation) may be the one
        // that brings the policies up to the barrier's ends.
        let definitions = !batch.data_sources.is_empty()
            || !batch.policies.is_empty()
            || self.barrier.waits_on(batch.partitions.keys());
        let may_create = !definitions || self.barrier.allows_new_views(&tx, d, group).await?;
        let opening = definitions && may_create && !self.barrier.is_open();
        if !changed_ds.is_empty() || !changed_pol.is_empty() || opening {
            if let Some(settings) = dialect::of(d).before_view_builds() {
                tx.batch_execute(settings).await?;
            }
            let view_schema = &self.integration.view_schema;
            rebuild::Rebuild::new(&tx, d, view_schema, &mut applied, &mut rejected)
                .under_barrier(may_create, opening)
                .with_subtransactions(self.savepoints())
                .rebuild_views(batch, &changed_ds, &changed_pol)
                .await?;
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
        if opening {
            self.barrier.opened();
        }
        Ok(applied)
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;
type ProfileUpsert = crate::batch::Upsert<crate::batch::Profile>;

/// The first write of every batch transaction, and it must stay first: replay's reset
/// locks this table to wait for batches in flight and hold off new ones, which is
/// deadlock-free only while every batch takes its first lock here
/// (`replay::hold_off_appliers`).
async fn advance_offsets(
    tx: &Tx<'_>,
    d: Dialect,
    group: &str,
    batch: &Batch,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let sql = dialect::of(d);
    if let Some(lock) = sql.batch_lock() {
        tx.batch_execute(lock).await?;
    }
    let update = tx.prepare_cached(sql.offsets_update()).await?;
    let insert = tx.prepare_cached(sql.offsets_insert()).await?;
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

async fn apply_profiles(
    tx: &Tx<'_>,
    d: Dialect,
    batch: &Batch,
    rejected: &mut Vec<DeadLetter>,
) -> Result<(), ApplyError> {
    if batch.profiles.is_empty() {
        return Ok(());
    }
    let delete = tx.prepare_cached(statements::DELETE_PROFILE).await?;
    let deletes = batch
        .profiles
        .iter()
        .filter_map(|(user, p)| p.delete.as_ref().map(|d| (user, d)));
    futures::future::try_join_all(deletes.map(|(user, d)| {
        let delete = &delete;
        async move {
            let (partition, offset) = position(&d.origin);
            tx.execute(delete, &[user, &d.floor, &partition, &offset])
                .await
        }
    }))
    .await?;

    let upserts: Vec<(&String, &ProfileUpsert)> = batch
        .profiles
        .iter()
        .filter_map(|(user, p)| p.upsert.as_ref().map(|u| (user, u)))
        .collect();
    if upserts.is_empty() {
        return Ok(());
    }
    match d {
        Dialect::Postgres => upsert_profiles(tx, &upserts).await,
        Dialect::Redshift => call_upsert_profiles(tx, &upserts, rejected).await,
    }
}

/// Bytes of profile records per `upsert_profiles` call. One array for a whole drain-size
/// batch (20,000 profiles, about 8 MB) is copied twice more on its way to the socket,
/// and that raised the drain's peak RSS from 165 to 288 MB.
const ROWS_PER_CALL_BYTES: usize = 1 << 20;

/// Chunked procedure calls (profiles, view builds) in flight at once on a transaction's
/// connection, so PostgreSQL works on one chunk while the next is prepared.
const CALLS_IN_FLIGHT: usize = 2;

/// PostgreSQL: the batch's profiles as array parameters of set-based procedure calls, a
/// megabyte of records each, pipelined. Per-profile calls cost a round trip and a plan
/// execution each; this is what lets a batch approach the speed of a plain `INSERT … ON
/// CONFLICT` (docs/performance.md). Profiles still held as their Avro datum are
/// transcoded straight into the binary record, without building a `UserProfile`. A
/// batch holds one profile per user, so the chunks never overlap.
///
/// This replaced a binary COPY into a temporary table emptied `ON COMMIT DELETE ROWS`:
/// that truncation ran inside every commit and freed the table's file blocks, and on a
/// file system that discards freed blocks it stalled commits for up to seconds.
async fn upsert_profiles(
    tx: &Tx<'_>,
    upserts: &[(&String, &ProfileUpsert)],
) -> Result<(), ApplyError> {
    use futures::{StreamExt, TryStreamExt};
    let call = tx.prepare_cached(statements::UPSERT_PROFILES).await?;
    let mut rest = upserts.iter();
    let chunks = std::iter::from_fn(|| next_rows(&mut rest).transpose());
    futures::stream::iter(chunks)
        .map(|rows| async {
            let rows = rows?;
            tx.execute(&call, &[&rows, &rows.partitions, &rows.offsets])
                .await?;
            Ok::<_, ApplyError>(())
        })
        .buffered(CALLS_IN_FLIGHT)
        .try_collect()
        .await
}

/// The next `ROWS_PER_CALL_BYTES` of records, or `None` when `rest` is done.
fn next_rows(
    rest: &mut std::slice::Iter<'_, (&String, &ProfileUpsert)>,
) -> Result<Option<ProfileRows>, ApplyError> {
    // A profile record is a few hundred bytes; room for the rest, up to one call's worth,
    // plus the record that crosses the limit (without it, each full chunk reallocated to
    // twice its size: peak RSS 206 MB against 174 to 181).
    let room = (rest.len() * 512).min(ROWS_PER_CALL_BYTES) + 64 * 1024;
    let mut rows = ProfileRows::with_capacity(room);
    for (user, u) in rest.by_ref() {
        rows.push(user, &u.value, &u.origin)?;
        if rows.bytes() >= ROWS_PER_CALL_BYTES {
            break;
        }
    }
    Ok((!rows.is_empty()).then_some(rows))
}

/// An `immuta_procedures.profile_row[]` in PostgreSQL's binary array format, built one
/// record at a time. The element type's oid differs per database, so the header is written
/// when the driver says which type the parameter is.
#[derive(Debug, Default)]
pub struct ProfileRows {
    count: i32,
    /// Each element: its length, then the record.
    elements: Vec<u8>,
    /// Where each record came from, in the same order (`upsert_profiles`' position
    /// arrays; see `postgres::stale_tombstone`).
    partitions: Vec<i32>,
    offsets: Vec<i64>,
}

impl ProfileRows {
    pub fn with_capacity(bytes: usize) -> Self {
        ProfileRows {
            count: 0,
            elements: Vec::with_capacity(bytes),
            partitions: Vec::new(),
            offsets: Vec::new(),
        }
    }

    /// Appends `profile` under `user` (folded), read at `origin`.
    pub fn push(
        &mut self,
        user: &str,
        profile: &Profile,
        origin: &Origin,
    ) -> Result<(), ApplyError> {
        let at = self.elements.len();
        self.elements.extend_from_slice(&[0; 4]);
        let written = match profile {
            Profile::Datum(d) => d
                .profile_record(user, &mut self.elements)
                .map_err(Into::into),
            Profile::Decoded(v) => record_decoded(v, &mut self.elements),
        };
        if let Err(e) = written {
            self.elements.truncate(at);
            return Err(e);
        }
        // A record is bounded by the message size, far below 2 GiB.
        let len = (self.elements.len() - at - 4) as i32;
        self.elements[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
        let (partition, offset) = position(origin);
        self.partitions.push(partition);
        self.offsets.push(offset);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the records so far.
    pub fn bytes(&self) -> usize {
        self.elements.len()
    }
}

impl ToSql for ProfileRows {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let tokio_postgres::types::Kind::Array(member) = ty.kind() else {
            return Err(format!("profile rows sent as {ty}, not as an array").into());
        };
        // One dimension, no nulls, the element type, the count, lower bound 1.
        for word in [1i32, 0, member.oid() as i32, self.count, 1] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.elements);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(ty.kind(), tokio_postgres::types::Kind::Array(m) if m.name() == "profile_row")
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A decoded profile (an older writer schema, or the Confluent wire format) as one
/// `profile_row` record, through the driver's own encoders.
pub(crate) fn record_decoded(
    v: &crate::event::UserProfile,
    out: &mut Vec<u8>,
) -> Result<(), ApplyError> {
    use tokio_postgres::types::{IsNull, Json, Type};
    let (project_id, purposes) = project(v);
    let attributes = Json(&v.attributes);
    let row: [(&(dyn ToSql + Sync), Type); 8] = [
        (&v.user, Type::TEXT),
        (&v.version, Type::INT8),
        (&v.groups, Type::TEXT_ARRAY),
        (&attributes, Type::JSONB),
        (&project_id, Type::TEXT),
        (&purposes, Type::TEXT_ARRAY),
        (&v.acknowledged_purposes, Type::TEXT_ARRAY),
        (&v.data_sources, Type::TEXT_ARRAY),
    ];
    out.extend_from_slice(&(row.len() as i32).to_be_bytes());
    let mut field = bytes::BytesMut::new();
    for (value, ty) in &row {
        field.clear();
        out.extend_from_slice(&ty.oid().to_be_bytes());
        let is_null = value.to_sql_checked(ty, &mut field).map_err(|e| {
            // The driver refuses only values its types cannot carry: a bug here.
            ApplyError::Undecodable(crate::codec::CodecError::Datum(format!(
                "profile of {} cannot be written as a record: {e}",
                v.user
            )))
        })?;
        match is_null {
            IsNull::Yes => out.extend_from_slice(&(-1i32).to_be_bytes()),
            IsNull::No => {
                out.extend_from_slice(&(field.len() as i32).to_be_bytes());
                out.extend_from_slice(&field);
            }
        }
    }
    Ok(())
}

/// Redshift's procedures take no arrays of records, so profiles go as pipelined calls.
/// Redshift: a profile whose value set does not fit the procedure's `varchar(65535)` is
/// dead-lettered before any call.
async fn call_upsert_profiles(
    tx: &Tx<'_>,
    upserts: &[(&String, &ProfileUpsert)],
    rejected: &mut Vec<DeadLetter>,
) -> Result<(), ApplyError> {
    let upsert = tx.prepare_cached(statements::UPSERT_PROFILE).await?;
    let limit = dialect::of(Dialect::Redshift).stored_limit();
    let mut profiles = Vec::with_capacity(upserts.len());
    for (_, u) in upserts {
        let v = u.value.get()?;
        let values = redshift::profile_values(&v);
        match redshift::too_large(limit, "profile", values.len()) {
            Some(reason) => rejected.push(DeadLetter {
                origin: u.origin.clone(),
                reason,
                raw: crate::batch::profile_raw(&u.value, &u.raw),
            }),
            None => profiles.push((v, values, position(&u.origin))),
        }
    }
    let calls = profiles.iter().map(|(v, values, (partition, offset))| {
        let (project_id, _) = project(v);
        let upsert = &upsert;
        async move {
            tx.execute(
                upsert,
                &[&v.user, &v.version, &project_id, &values, partition, offset],
            )
            .await
        }
    });
    futures::future::try_join_all(calls).await?;
    Ok(())
}

/// The partition and offset a record was read at, as procedure parameters: the stored
/// state remembers them so that a stale tombstone can be recognised
/// (`postgres::stale_tombstone`).
fn position(origin: &Origin) -> (i32, i64) {
    (origin.tp.partition, origin.offset)
}

/// A profile's current project as procedure parameters: id (NULL for none) and purposes.
pub(crate) fn project(v: &crate::event::UserProfile) -> (Option<&str>, &[String]) {
    match &v.current_project {
        Some(p) => (Some(p.id.as_str()), p.purposes.as_slice()),
        None => (None, &[][..]),
    }
}

/// Impersonation changes manage group membership. A grant for a user the warehouse does
/// not know is dead-lettered without being attempted.
async fn apply_impersonations(
    tx: &Tx<'_>,
    savepoints: bool,
    batch: &Batch,
) -> Result<Vec<DeadLetter>, ApplyError> {
    let mut rejected = Vec::new();
    for (user, p) in &batch.impersonations {
        if let Some(del) = &p.delete {
            let sql = statements::DELETE_IMPERSONATION;
            let (partition, offset) = position(&del.origin);
            let params: [&(dyn ToSql + Sync); 4] = [user, &del.floor, &partition, &offset];
            rejected.extend(guarded(tx, savepoints, sql, &params, &del.origin, &del.raw).await?);
        }
        if let Some(u) = &p.upsert {
            let known = tx
                .query_opt(statements::USER_EXISTS, &[user])
                .await?
                .is_some();
            if u.value.allowed && !known {
                let reason = format!("warehouse refused the change: user {user} does not exist; create it, then publish the grant again");
                rejected.push(DeadLetter {
                    origin: u.origin.clone(),
                    reason,
                    raw: u.raw.clone(),
                });
                continue;
            }
            let sql = statements::UPSERT_IMPERSONATION;
            let (partition, offset) = position(&u.origin);
            let params: [&(dyn ToSql + Sync); 5] = [
                user,
                &u.value.version,
                &u.value.allowed,
                &partition,
                &offset,
            ];
            rejected.extend(guarded(tx, savepoints, sql, &params, &u.origin, &u.raw).await?);
        }
    }
    Ok(rejected)
}

/// Runs one statement whose refusal should dead-letter its record. On PostgreSQL it runs
/// in a savepoint, so a refusal rolls back only this statement. Redshift has no
/// savepoints (and PostgreSQL may be told to use none): there the checks before the
/// statement are the first guard, and a refusal fails the batch, whose refused records
/// the applier then isolates (`batch::split`).
async fn guarded(
    tx: &Tx<'_>,
    savepoints: bool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    origin: &Origin,
    raw: &crate::batch::Raw,
) -> Result<Option<DeadLetter>, ApplyError> {
    if !savepoints {
        tx.execute(sql, params).await?;
        return Ok(None);
    }
    tx.batch_execute("SAVEPOINT policy_push_item").await?;
    match tx.execute(sql, params).await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT policy_push_item")
                .await?;
            Ok(None)
        }
        Err(e) if caused_by_record(&e) => {
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

/// Whether the warehouse refused a statement because of what the record holds, so that
/// the record should be dead-lettered. Any other error would pass on a retry or once the
/// operator fixes the warehouse (lost connection, deadlock, serialization failure, lock
/// or statement timeout, shutdown, out of resources, a missing privilege of the system
/// role, an internal error such as "tuple concurrently updated"): it fails the batch,
/// which is retried with backoff, and no good record is dead-lettered for it.
pub(crate) fn caused_by_record(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| record_sqlstate(db.code().code()))
}

/// SQLSTATEs that blame the statement's data: data exceptions (22), integrity (23),
/// syntax and access rules (42, but not a missing privilege, procedure or table),
/// unsupported features (0A), cardinality (21), invalid SQL statements (2F), WITH CHECK
/// OPTION (44) and errors raised by a procedure (P0). `immuta_procedures.build_views`
/// (postgres.rs) catches exactly these and re-raises everything else.
pub fn record_sqlstate(code: &str) -> bool {
    const CLASSES: [&str; 8] = ["0A", "21", "22", "23", "2F", "42", "44", "P0"];
    // A missing privilege, procedure or table is the warehouse's state, not the
    // record's: bootstrap or a grant fixes it, and the record then applies.
    const NOT_THE_RECORD: [&str; 3] = ["42501", "42883", "42P01"];
    !NOT_THE_RECORD.contains(&code) && CLASSES.iter().any(|c| code.starts_with(c))
}

fn warehouse_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => refusal(db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The dead-letter reason for an error the warehouse raised (message and SQLSTATE).
fn refusal(message: &str, code: &str) -> String {
    format!("warehouse refused the change: {message} ({code})")
}

/// Applies data-source or policy changes; returns the ids whose stored state changed.
/// Definitions travel as JSON text in both dialects.
async fn apply_definitions<T: serde::Serialize + crate::batch::Versioned>(
    tx: &Tx<'_>,
    entity: &str,
    changes: &crate::batch::Entities<T>,
    limit: Option<usize>,
    rejected: &mut Vec<DeadLetter>,
) -> Result<BTreeSet<String>, ApplyError> {
    let mut changed = BTreeSet::new();
    if changes.is_empty() {
        return Ok(changed);
    }
    let delete = tx
        .prepare_cached(&statements::delete_definition(entity))
        .await?;
    let upsert = tx
        .prepare_cached(&statements::upsert_definition(entity))
        .await?;
    for (id, p) in changes {
        let mut any = false;
        if let Some(d) = &p.delete {
            let (partition, offset) = position(&d.origin);
            any |= tx
                .query_one(&delete, &[id, &d.floor, &partition, &offset])
                .await?
                .try_get::<_, Option<bool>>(0)?
                .unwrap_or(false);
        }
        if let Some(u) = &p.upsert {
            let def =
                serde_json::to_string(&u.value).map_err(|e| ApplyError::Corrupt(e.to_string()))?;
            if let Some(reason) = redshift::too_large(limit, entity, def.len()) {
                rejected.push(DeadLetter {
                    origin: u.origin.clone(),
                    reason,
                    raw: u.raw.clone(),
                });
                if any {
                    changed.insert(id.clone());
                }
                continue;
            }
            let version = u.value.version();
            let (partition, offset) = position(&u.origin);
            any |= tx
                .query_one(&upsert, &[id, &version, &def, &partition, &offset])
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

fn audit_rows<'a, T: crate::batch::Versioned>(
    rows: &mut Vec<AuditRow<'a>>,
    kind: &'a str,
    m: &crate::batch::Entities<T>,
) {
    for (id, p) in m {
        let mut push = |o: &Origin, version: Option<i64>, op: &'a str| {
            rows.push((
                o.tp.topic.to_string(),
                o.tp.partition,
                o.offset,
                kind,
                id.clone(),
                version,
                op,
            ));
        };
        if let Some(d) = p.delete.as_ref().filter(|d| !d.foreign) {
            push(&d.origin, d.floor, "delete");
        }
        if let Some(u) = &p.upsert {
            push(&u.origin, Some(u.value.version()), "upsert");
        }
    }
}

/// Writes the audit log with multi-row inserts (both dialects accept them).
async fn write_audit(tx: &Tx<'_>, group: &str, batch: &Batch) -> Result<(), ApplyError> {
    let mut rows: Vec<AuditRow<'_>> = Vec::new();
    audit_rows(&mut rows, "profile", &batch.profiles);
    audit_rows(&mut rows, "data_source", &batch.data_sources);
    audit_rows(&mut rows, "policy", &batch.policies);
    audit_rows(&mut rows, "impersonation", &batch.impersonations);
    let group = group.to_string();
    for chunk in rows.chunks(1000) {
        let sql = statements::audit_insert(chunk.len());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 8);
        for r in chunk {
            params.extend([
                &group as &(dyn ToSql + Sync),
                &r.0,
                &r.1,
                &r.2,
                &r.3,
                &r.4,
                &r.5,
                &r.6,
            ]);
        }
        tx.execute(&sql, &params).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_error_kind_is_listed() {
        use super::ApplyError::*;
        let errors = [
            Pool("x".into()),
            Fenced(vec![]),
            Timeout(std::time::Duration::ZERO),
            DeadLetter(super::PublishError {
                message: "x".into(),
                refused: true,
            }),
            Corrupt("x".into()),
            Refused("x".into()),
        ];
        for e in errors {
            assert!(
                crate::telemetry::names::WAREHOUSE_ERROR_KINDS.contains(&e.kind()),
                "{}",
                e.kind()
            );
        }
        assert!(crate::telemetry::names::WAREHOUSE_ERROR_KINDS.contains(&"sql"));
    }

    #[test]
    fn case_sensitivity_settings_are_read_as_redshift_prints_them() {
        for on in ["on", "ON", "true", " on\n"] {
            assert!(super::case_sensitive(on), "{on:?}");
        }
        for off in ["off", "false", ""] {
            assert!(!super::case_sensitive(off), "{off:?}");
        }
    }
}
