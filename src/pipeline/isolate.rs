//! A batch the warehouse refused one of its records of, applied without that record:
//! the refused record found by halving, dead-lettered, and the rest committed.

use super::applier::Applier;
use crate::apply::{Applied, ApplyError};
use crate::batch::Batch;
use crate::error::Chain;

impl Applier {
    /// Applies `batch` when the warehouse refuses one of its records and cannot roll it
    /// back alone: halves of its changes in transactions of their own, halved again
    /// while a record is refused, then the offsets and the dead letters for the entities
    /// refused on their own (`batch::split`).
    pub(super) async fn isolate(&self, batch: &Batch) -> Result<Applied, ApplyError> {
        let mut total = Applied::default();
        let mut refused = Vec::new();
        let mut todo = vec![batch.changes_only()];
        while let Some(part) = todo.pop() {
            if part.entries() == 0 {
                continue;
            }
            match self.try_apply(&part).await {
                Ok(a) => {
                    total.changes += a.changes;
                    total.rejected += a.rejected;
                    total.views_rebuilt += a.views_rebuilt;
                    total.views_dropped += a.views_dropped;
                    total.views_deferred += a.views_deferred;
                }
                Err(e) if e.refused_by_record() && part.entries() == 1 => {
                    let letters = part.refused(&e.refusal());
                    tracing::warn!(integration = %self.name, error = %Chain(&e), records = letters.len(), "isolated a refused record");
                    refused.extend(letters);
                }
                Err(e) if e.refused_by_record() => {
                    let (first, second) = part.halves();
                    todo.push(second);
                    todo.push(first);
                }
                Err(e) => return Err(e),
            }
        }
        let isolated = refused.len();
        let mut applied = self.try_apply(&batch.closing(refused)).await?;
        applied.changes = total.changes + isolated;
        applied.rejected = total.rejected + isolated;
        applied.views_rebuilt = total.views_rebuilt;
        applied.views_dropped = total.views_dropped;
        applied.views_deferred += total.views_deferred;
        Ok(applied)
    }
}
