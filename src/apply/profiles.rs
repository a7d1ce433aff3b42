//! Profiles: PostgreSQL's set-based calls with binary record arrays, Redshift's
//! flattened per-profile calls.

use super::*;

pub(super) async fn apply_profiles(
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
pub(super) const ROWS_PER_CALL_BYTES: usize = 1 << 20;

/// Chunked procedure calls (profiles, view builds) in flight at once on a transaction's
/// connection, so PostgreSQL works on one chunk while the next is prepared.
pub(super) const CALLS_IN_FLIGHT: usize = 2;

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
pub(super) async fn upsert_profiles(
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
pub(super) fn next_rows(
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
pub(super) async fn call_upsert_profiles(
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
                stage: crate::record::Stage::Apply,
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

/// A profile's current project as procedure parameters: id (NULL for none) and purposes.
pub fn project(v: &crate::event::UserProfile) -> (Option<&str>, &[String]) {
    match &v.current_project {
        Some(p) => (Some(p.id.as_str()), p.purposes.as_slice()),
        None => (None, &[][..]),
    }
}
