//! The optional audit log of every applied change.

use tokio_postgres::types::ToSql;

use super::Tx;
use crate::apply::sql::statements;
use crate::apply::ApplyError;
use crate::batch::{Batch, Origin};

/// One audit row: topic, partition, offset, kind, entity id, version, operation.
pub(crate) type AuditRow<'a> = (String, i32, i64, &'a str, String, Option<i64>, &'a str);

pub(crate) fn audit_rows<'a, T: crate::batch::Versioned>(
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
pub(crate) async fn write_audit(tx: &Tx<'_>, group: &str, batch: &Batch) -> Result<(), ApplyError> {
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
