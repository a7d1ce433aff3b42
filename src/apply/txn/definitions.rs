//! Data-source and policy definitions, stored as JSON text in both dialects.

use std::collections::BTreeSet;

use super::Tx;
use crate::apply::sql::statements;
use crate::apply::ApplyError;
use crate::batch::{DeadLetter, Origin};

/// The partition and offset a record was read at, as procedure parameters: the stored
/// state remembers them so that a stale tombstone can be recognised
/// (`setup::postgres::stale_tombstone`).
pub(crate) fn position(origin: &Origin) -> (i32, i64) {
    (origin.tp.partition, origin.offset)
}

/// What applying a topic's definitions did.
#[derive(Debug, Default)]
pub(crate) struct DefinitionsApplied {
    /// Ids whose stored state changed.
    pub(crate) changed: BTreeSet<String>,
    /// Ids whose newest record could not be stored (`too_large`): tombstoned at that
    /// record's version, so that a storable newer one applies, and dead-lettered.
    pub(crate) withheld: BTreeSet<String>,
}

/// Applies data-source or policy changes. Definitions travel as JSON text in both
/// dialects.
///
/// Fail closed when the newest state cannot be stored (a definition over `limit`, which
/// on Redshift is a varchar's 65,535 bytes): keeping the older state live would enforce a
/// policy the newest record has replaced, or none of a policy whose first version is too
/// large. So the entity is tombstoned at the record's version (its data source's view
/// goes; a policy's views are withheld, `rebuild::withheld`) and the record is
/// dead-lettered with the reason, until a version that fits arrives.
pub(crate) async fn apply_definitions<T: serde::Serialize + crate::batch::Versioned>(
    tx: &Tx<'_>,
    entity: &str,
    changes: &crate::batch::Entities<T>,
    limit: Option<usize>,
    rejected: &mut Vec<DeadLetter>,
) -> Result<DefinitionsApplied, ApplyError> {
    let mut out = DefinitionsApplied::default();
    if changes.is_empty() {
        return Ok(out);
    }
    let delete = tx
        .prepare_cached(&statements::delete_definition(entity))
        .await?;
    let upsert = tx
        .prepare_cached(&statements::upsert_definition(entity))
        .await?;
    let applied = |row: tokio_postgres::Row| -> Result<bool, ApplyError> {
        Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(false))
    };
    for (id, p) in changes {
        let mut any = false;
        if let Some(d) = &p.delete {
            let (partition, offset) = position(&d.origin);
            any |= applied(
                tx.query_one(&delete, &[id, &d.floor, &partition, &offset])
                    .await?,
            )?;
        }
        if let Some(u) = &p.upsert {
            let def = serde_json::to_string(&u.value).map_err(|e| ApplyError::json(entity, e))?;
            let version = u.value.version();
            let (partition, offset) = position(&u.origin);
            if let Some(reason) = too_large(limit, entity, def.len()) {
                if newer_stored(tx, entity, "id", id, version).await? {
                    // An old record read again (a replay from a timestamp): a no-op,
                    // as it would be if it fit.
                    continue;
                }
                rejected.push(DeadLetter {
                    stage: crate::record::Stage::Apply,
                    origin: u.origin.clone(),
                    reason: format!(
                        "{reason}; what it targets is withheld until a version that fits arrives"
                    ),
                    raw: u.raw.clone(),
                });
                let floor = Some(version);
                any |= applied(
                    tx.query_one(&delete, &[id, &floor, &partition, &offset])
                        .await?,
                )?;
                out.withheld.insert(id.clone());
            } else {
                any |= applied(
                    tx.query_one(&upsert, &[id, &version, &def, &partition, &offset])
                        .await?,
                )?;
            }
        }
        if any {
            out.changed.insert(id.clone());
        }
    }
    Ok(out)
}

/// Whether `table` holds a version of `id` (by `key`) at least `version`: a record that
/// is not newer changes nothing, also when it is too large to store.
pub(crate) async fn newer_stored(
    tx: &Tx<'_>,
    table: &str,
    key: &str,
    id: &str,
    version: i64,
) -> Result<bool, ApplyError> {
    let query = tx
        .prepare_cached(&statements::stored_version(table, key))
        .await?;
    let stored: Option<i64> = match tx.query_opt(&query, &[&id]).await? {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    Ok(stored.is_some_and(|s| s >= version))
}

/// Why a `kind` record of `bytes` cannot be stored, if it cannot (`limit`: what one
/// definition or profile value set may hold).
pub(crate) fn too_large(limit: Option<usize>, kind: &str, bytes: usize) -> Option<String> {
    let limit = limit?;
    (bytes > limit).then(|| {
        format!("{kind} record too large to store: {bytes} bytes once flattened, the warehouse holds at most {limit} (a Redshift varchar holds 65,535)")
    })
}

#[cfg(test)]
mod tests {
    use super::too_large;
    use crate::apply::sql::dialect;
    use crate::config::Dialect;

    #[test]
    fn only_a_limit_refuses_and_redshift_has_a_varchars() {
        assert_eq!(
            too_large(
                dialect::of(Dialect::Postgres).stored_limit(),
                "policy",
                1 << 20
            ),
            None
        );
        let redshift = dialect::of(Dialect::Redshift).stored_limit();
        assert_eq!(too_large(redshift, "policy", 65_535), None);
        let reason = too_large(redshift, "policy", 65_536).expect("refused");
        assert!(
            reason.contains("65536 bytes") && reason.contains("65535"),
            "{reason}"
        );
    }
}
