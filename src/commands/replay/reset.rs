//! Resetting a host before a replay from the earliest records, in transactions of at
//! most `VIEWS_PER_TRANSACTION` dropped views, retried when PostgreSQL rolls one back on
//! its own (a deadlock, a serialization failure); and moving the stored offsets back for
//! a replay from a timestamp. Both hold off the integration's appliers while they work.

use crate::error::Chain;
use anyhow::Context;

use crate::apply::sql::{dialect, quote};
use crate::config::{Dialect, Integration};
use crate::consume::StoredOffsets;

pub(super) async fn reset(integration: &Integration, group: &str) -> anyhow::Result<()> {
    let mut client = crate::apply::connect::system_client(integration).await?;
    let mut retries = 0;
    loop {
        match reset_step(&mut client, integration, group).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if transient(&e) && retries < TRANSIENT_RETRIES => {
                retries += 1;
                tracing::warn!(error = %Chain(&e), retries, "replay reset rolled back; retrying");
            }
            Err(e) => return Err(e).context("replay cannot reset the host"),
        }
    }
}

/// Views dropped per transaction. Each drop holds a lock until commit, and PostgreSQL's
/// lock table holds about 6,400 with its defaults: dropping every view of a large host
/// in one transaction failed with "out of shared memory".
const VIEWS_PER_TRANSACTION: i64 = 1000;

/// How often one replay command retries a reset transaction that the warehouse rolled
/// back (deadlock, serialization failure) before it gives up.
const TRANSIENT_RETRIES: u32 = 5;

fn transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// One transaction of the reset: drops up to [`VIEWS_PER_TRANSACTION`] managed views,
/// each with its `view_state` row, so a view is recorded exactly while it exists. The
/// transaction that finds fewer left also revokes the impersonation grants, clears the
/// state tables and deletes the stored offsets, so a view that a running instance built
/// between two steps cannot outlive the reset unrecorded. Returns true when the reset is
/// complete. If replay stops half-way, the host has lost some views (access is
/// refused, not widened) and running replay again finishes the job.
async fn reset_step(
    client: &mut tokio_postgres::Client,
    integration: &Integration,
    group: &str,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    hold_off_appliers(&tx, integration.dialect).await?;
    if drop_views(&tx, integration.dialect, &integration.view_schema).await?
        == VIEWS_PER_TRANSACTION
    {
        tx.commit().await?;
        return Ok(false);
    }
    for u in tx.query(ACTIVE_IMPERSONATORS, &[]).await? {
        let user: String = u.try_get(0)?;
        tx.execute(REVOKE, &[&user]).await?;
    }
    for table in dialect::of(integration.dialect).state_tables() {
        tx.batch_execute(&clear(table)).await?;
    }
    tx.execute(FORGET_OFFSETS, &[&group]).await?;
    // The topics as they are now are the ones the host is rebuilt from.
    tx.execute(FORGET_TOPIC_IDS, &[&group]).await?;
    tx.execute(FORGET_HOLDS, &[&group]).await?;
    tx.commit().await?;
    Ok(true)
}

/// Waits for running instances' batches on this host to commit and keeps new ones out
/// until the transaction ends. Every batch transaction writes `immuta_system.offsets`
/// before anything else (`apply::txn::fence`), so a table lock that conflicts with
/// those writes is taken in the same order by everyone: without it, a reset deleting
/// state rows deadlocked with a batch updating them (seen in CI). Reads of the offsets
/// (replay's progress, an operator's query) are not blocked on PostgreSQL; the lag
/// gauges do not read them at all (they use the applier's committed offsets).
const ACTIVE_IMPERSONATORS: &str =
    "SELECT user_name FROM immuta_system.impersonation WHERE allowed AND NOT deleted";
const REVOKE: &str = "CALL immuta_procedures.revoke_impersonation($1)";
const FORGET_OFFSETS: &str = "DELETE FROM immuta_system.offsets WHERE consumer_group = $1";
const FORGET_TOPIC_IDS: &str = "DELETE FROM immuta_system.topic_ids WHERE consumer_group = $1";
const FORGET_HOLDS: &str = "DELETE FROM immuta_system.partition_holds WHERE consumer_group = $1";
const RESTORE_OFFSET: &str = "INSERT INTO immuta_system.offsets (consumer_group, topic, \"partition\", next_offset) VALUES ($1, $2, $3, $4)";
const VIEWS_TO_DROP: &str = "SELECT data_source_id, view_name FROM immuta_system.view_state ORDER BY data_source_id LIMIT $1";

fn clear(table: &str) -> String {
    format!("DELETE FROM immuta_system.{table}")
}

/// One DROP for the whole list, after what the dialect runs before each view is dropped
/// (Redshift detaches its row-level security policy).
fn drop_views_sql(d: Dialect, view_schema: &str, names: &[String]) -> String {
    let sql = dialect::of(d);
    let mut out = String::new();
    for name in names {
        if let Some(before) = sql.before_drop(view_schema, name) {
            out += &format!("{before};\n");
        }
    }
    let qualified: Vec<String> = names
        .iter()
        .map(|n| quote::qualified(view_schema, n))
        .collect();
    // CASCADE: with the views analysts built on them (`view::drop_view`).
    out + &format!("DROP VIEW IF EXISTS {} CASCADE", qualified.join(", "))
}

fn forget_views(n: usize) -> String {
    let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "DELETE FROM immuta_system.view_state WHERE data_source_id IN ({})",
        params.join(", ")
    )
}

/// Every statement replay's reset and rewind send on Redshift, pinned by
/// `tests/golden/redshift_replay.sql`.
#[cfg(test)]
fn redshift_statements() -> String {
    let d = Dialect::Redshift;
    let mut all = vec![
        dialect::of(d).hold_off_batches().to_string(),
        VIEWS_TO_DROP.to_string(),
        drop_views_sql(d, "immuta", &["a".into(), "b".into()]),
        forget_views(2),
        ACTIVE_IMPERSONATORS.to_string(),
        REVOKE.to_string(),
    ];
    all.extend(dialect::of(d).state_tables().iter().map(|t| clear(t)));
    all.push(FORGET_OFFSETS.to_string());
    all.push(FORGET_TOPIC_IDS.to_string());
    all.push(FORGET_HOLDS.to_string());
    all.push(RESTORE_OFFSET.to_string());
    all.iter().map(|s| format!("{s};\n")).collect()
}

async fn hold_off_appliers(
    tx: &tokio_postgres::Transaction<'_>,
    d: Dialect,
) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(dialect::of(d).hold_off_batches()).await
}

/// Drops up to [`VIEWS_PER_TRANSACTION`] managed views and forgets them; returns how
/// many it found.
async fn drop_views(
    tx: &tokio_postgres::Transaction<'_>,
    d: Dialect,
    view_schema: &str,
) -> Result<i64, tokio_postgres::Error> {
    let views = tx.query(VIEWS_TO_DROP, &[&VIEWS_PER_TRANSACTION]).await?;
    if views.is_empty() {
        return Ok(0);
    }
    let found = views.len() as i64;
    let mut ids: Vec<String> = Vec::with_capacity(views.len());
    let mut names: Vec<String> = Vec::with_capacity(views.len());
    for v in views {
        ids.push(v.try_get(0)?);
        names.push(v.try_get(1)?);
    }
    names.sort();
    names.dedup();
    // One statement each for the whole chunk (both dialects take a list of views
    // and an IN list of parameters): a round trip per view made the reset of a
    // large host take seconds.
    tx.batch_execute(&drop_views_sql(d, view_schema, &names))
        .await?;
    let forget = forget_views(ids.len());
    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = ids
        .iter()
        .map(|id| id as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    tx.execute(&forget, &values).await?;
    Ok(found)
}

pub(super) async fn rewind_to(
    integration: &Integration,
    group: &str,
    offsets: &StoredOffsets,
) -> anyhow::Result<()> {
    let mut client = crate::apply::connect::system_client(integration).await?;
    let tx = client.transaction().await?;
    hold_off_appliers(&tx, integration.dialect).await?;
    tx.execute(FORGET_OFFSETS, &[&group]).await?;
    // The topics as they are now are the ones replayed from: their holds go, and their
    // ids are stored anew at the next assignment.
    tx.execute(FORGET_TOPIC_IDS, &[&group]).await?;
    tx.execute(FORGET_HOLDS, &[&group]).await?;
    for (tp, offset) in offsets {
        let topic: &str = &tp.topic;
        tx.execute(RESTORE_OFFSET, &[&group, &topic, &tp.partition, offset])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redshift_replay_statements_are_pinned() {
        crate::apply::sql::golden("redshift_replay.sql", &super::redshift_statements());
    }
}
