//! Data-source and policy definitions, stored as JSON text in both dialects.

use super::*;

/// The partition and offset a record was read at, as procedure parameters: the stored
/// state remembers them so that a stale tombstone can be recognised
/// (`postgres::stale_tombstone`).
pub(super) fn position(origin: &Origin) -> (i32, i64) {
    (origin.tp.partition, origin.offset)
}

/// Applies data-source or policy changes; returns the ids whose stored state changed.
/// Definitions travel as JSON text in both dialects.
pub(super) async fn apply_definitions<T: serde::Serialize + crate::batch::Versioned>(
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
            let def = serde_json::to_string(&u.value).map_err(|e| ApplyError::json(entity, e))?;
            if let Some(reason) = redshift::too_large(limit, entity, def.len()) {
                rejected.push(DeadLetter {
                    stage: crate::record::Stage::Apply,
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
