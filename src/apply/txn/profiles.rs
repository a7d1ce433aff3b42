//! Profiles: PostgreSQL's set-based calls with binary record arrays, Redshift's
//! flattened per-profile calls.

use super::definitions::{newer_stored, position, too_large};
use super::{ProfileRows, Tx};
use crate::apply::sql::statements;
use crate::apply::ApplyError;
use crate::batch::{Batch, DeadLetter};
use crate::config::Dialect;

type ProfileUpsert = crate::batch::Upsert<crate::batch::Profile>;

pub(crate) async fn apply_profiles(
    tx: &Tx<'_>,
    d: Dialect,
    batch: &Batch,
    limit: Option<usize>,
    rejected: &mut Vec<DeadLetter>,
) -> Result<(), ApplyError> {
    if batch.profiles.is_empty() {
        return Ok(());
    }
    let delete = tx.prepare_cached(statements::DELETE_PROFILE).await?;
    let deletes = batch
        .profiles
        .iter()
        .filter_map(|(user, p)| p.delete.as_ref().map(|d| (user, d.floor, &d.origin)));
    let (upserts, unfit) = fitting(batch, limit)?;
    let mut too_large = Vec::with_capacity(unfit.len());
    for (user, u, reason) in unfit {
        let version = crate::batch::Versioned::version(&u.value);
        // An old record read again changes nothing, as it would if it fit.
        if newer_stored(tx, "profile", "user_name", user, version).await? {
            continue;
        }
        rejected.push(DeadLetter {
            stage: crate::record::Stage::Apply,
            origin: u.origin.clone(),
            reason: format!(
                "{reason}; the user's profile is removed until a version that fits arrives"
            ),
            raw: crate::batch::profile_raw(&u.value, &u.raw),
        });
        too_large.push((user, u));
    }
    // A profile whose newest state cannot be stored is removed at that state's version:
    // an older one left in place could hold a subscription the newest record revokes.
    let removals = deletes.chain(too_large.iter().map(|(user, u)| {
        (
            *user,
            Some(crate::batch::Versioned::version(&u.value)),
            &u.origin,
        )
    }));
    let removals: Vec<_> = removals.collect();
    futures::future::try_join_all(removals.into_iter().map(|(user, floor, origin)| {
        let delete = &delete;
        async move {
            let (partition, offset) = position(origin);
            tx.execute(delete, &[user, &floor, &partition, &offset])
                .await
        }
    }))
    .await?;
    if upserts.is_empty() {
        return Ok(());
    }
    match d {
        Dialect::Postgres => upsert_profiles(tx, &upserts).await,
        Dialect::Redshift => call_upsert_profiles(tx, &upserts).await,
    }
}

type Upserts<'b> = Vec<(&'b String, &'b ProfileUpsert)>;
type Unfit<'b> = Vec<(&'b String, &'b ProfileUpsert, String)>;

/// The batch's profile upserts whose value sets fit `limit` (Redshift's flattened form,
/// `profile_values`), and those that do not, with the reason.
fn fitting(batch: &Batch, limit: Option<usize>) -> Result<(Upserts<'_>, Unfit<'_>), ApplyError> {
    let all = batch
        .profiles
        .iter()
        .filter_map(|(user, p)| p.upsert.as_ref().map(|u| (user, u)));
    let Some(limit) = limit else {
        return Ok((all.collect(), Vec::new()));
    };
    let (mut fit, mut unfit) = (Vec::new(), Vec::new());
    for (user, u) in all {
        let bytes = profile_values(u.value.get()?.as_ref()).len();
        match too_large(Some(limit), "profile", bytes) {
            None => fit.push((user, u)),
            Some(reason) => unfit.push((user, u, reason)),
        }
    }
    Ok((fit, unfit))
}

/// Bytes of profile records per `upsert_profiles` call. One array for a whole drain-size
/// batch (20,000 profiles, about 8 MB) is copied twice more on its way to the socket,
/// and that raised the drain's peak RSS from 165 to 288 MB.
pub(crate) const ROWS_PER_CALL_BYTES: usize = 1 << 20;

/// Chunked procedure calls (profiles, view builds) in flight at once on a transaction's
/// connection, so PostgreSQL works on one chunk while the next is prepared.
pub(crate) const CALLS_IN_FLIGHT: usize = 2;

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
pub(crate) async fn upsert_profiles(
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
pub(crate) fn next_rows(
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

/// Redshift's procedures take no arrays of records, so profiles go as pipelined calls.
pub(crate) async fn call_upsert_profiles(
    tx: &Tx<'_>,
    upserts: &[(&String, &ProfileUpsert)],
) -> Result<(), ApplyError> {
    let upsert = tx.prepare_cached(statements::UPSERT_PROFILE).await?;
    let mut profiles = Vec::with_capacity(upserts.len());
    for (_, u) in upserts {
        let v = u.value.get()?;
        let values = profile_values(&v);
        profiles.push((v, values, position(&u.origin)));
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

/// A profile's current project as procedure parameters: id (NULL for none) and purposes.
pub fn project(v: &crate::event::UserProfile) -> (Option<&str>, &[String]) {
    match &v.current_project {
        Some(p) => (Some(p.id.as_str()), p.purposes.as_slice()),
        None => (None, &[][..]),
    }
}

/// A profile's sets as the JSON `[[kind, name, value], ...]` that Redshift's
/// `upsert_profile` reads. Its length is also what `fitting` measures against the stored
/// limit, on either dialect (`max_stored_bytes` tests the Redshift path on PostgreSQL).
pub fn profile_values(p: &crate::event::UserProfile) -> String {
    let mut rows: Vec<[&str; 3]> = Vec::new();
    rows.extend(p.groups.iter().map(|g| ["group", "", g.as_str()]));
    for (name, values) in &p.attributes {
        rows.extend(
            values
                .iter()
                .map(|v| ["attribute", name.as_str(), v.as_str()]),
        );
    }
    if let Some(project) = &p.current_project {
        rows.extend(
            project
                .purposes
                .iter()
                .map(|v| ["project_purpose", "", v.as_str()]),
        );
    }
    rows.extend(
        p.acknowledged_purposes
            .iter()
            .map(|v| ["acknowledged_purpose", "", v.as_str()]),
    );
    rows.extend(
        p.data_sources
            .iter()
            .map(|v| ["data_source", "", v.as_str()]),
    );
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::profile_values;

    #[test]
    fn profile_values_flatten_every_set() {
        let mut p = crate::event::test_profile("u", 1);
        p.groups = vec!["g".into()];
        p.attributes
            .insert("region".into(), vec!["eu".into(), "us".into()]);
        p.current_project = Some(crate::event::Project {
            id: "p".into(),
            purposes: vec!["fraud".into()],
        });
        p.acknowledged_purposes = vec!["fraud".into()];
        p.data_sources = vec!["ds\"1".into()];
        assert_eq!(
            profile_values(&p),
            r#"[["group","","g"],["attribute","region","eu"],["attribute","region","us"],["project_purpose","","fraud"],["acknowledged_purpose","","fraud"],["data_source","","ds\"1"]]"#
        );
    }
}
