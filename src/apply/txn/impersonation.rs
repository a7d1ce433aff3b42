//! Impersonation grants: group membership, through the setup user's procedures.

use tokio_postgres::types::ToSql;

use super::definitions::position;
use super::refusal::guarded;
use super::Tx;
use crate::apply::sql::statements;
use crate::apply::ApplyError;
use crate::batch::{Batch, DeadLetter};

/// Impersonation changes manage group membership. A grant for a user the warehouse does
/// not know is dead-lettered without being attempted.
pub(crate) async fn apply_impersonations(
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
                    stage: crate::record::Stage::Apply,
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
