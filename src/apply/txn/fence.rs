//! The offsets fence: the first write of every batch.

use super::Tx;
use crate::apply::sql::dialect;
use crate::apply::{Applied, ApplyError};
use crate::batch::Batch;
use crate::config::Dialect;

/// The first write of every batch transaction, and it must stay first: replay's reset
/// locks this table to wait for batches in flight and hold off new ones, which is
/// deadlock-free only while every batch takes its first lock here
/// (`replay::hold_off_appliers`).
pub(crate) async fn advance_offsets(
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
