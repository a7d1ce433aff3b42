//! Statements a record can make the warehouse refuse, and which refusals blame the
//! record (dead letter) rather than the warehouse (retry).

use tokio_postgres::types::ToSql;

use super::Tx;
use crate::apply::ApplyError;
use crate::batch::{DeadLetter, Origin};

/// Runs one statement whose refusal should dead-letter its record. On PostgreSQL it runs
/// in a savepoint, so a refusal rolls back only this statement. Redshift has no
/// savepoints (and PostgreSQL may be told to use none): there the checks before the
/// statement are the first guard, and a refusal fails the batch, whose refused records
/// the applier then isolates (`batch::split`).
pub(crate) async fn guarded(
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
                stage: crate::record::Stage::Apply,
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
/// (`setup/postgres.rs`) catches exactly these and re-raises everything else.
pub fn record_sqlstate(code: &str) -> bool {
    const CLASSES: [&str; 8] = ["0A", "21", "22", "23", "2F", "42", "44", "P0"];
    // A missing privilege, procedure or table is the warehouse's state, not the
    // record's: bootstrap or a grant fixes it, and the record then applies.
    const NOT_THE_RECORD: [&str; 3] = ["42501", "42883", "42P01"];
    !NOT_THE_RECORD.contains(&code) && CLASSES.iter().any(|c| code.starts_with(c))
}

pub(crate) fn warehouse_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => refusal(db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The dead-letter reason for an error the warehouse raised (message and SQLSTATE).
pub(crate) fn refusal(message: &str, code: &str) -> String {
    format!("warehouse refused the change: {message} ({code})")
}
