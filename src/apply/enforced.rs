//! What the warehouse enforces, read back for `policy-push explain`: a user's stored
//! profile, the live data sources and policies, and the state of each view. It reads what
//! the views read, not what was published: a record still in Kafka, or dead-lettered,
//! is not here.

use std::collections::{BTreeMap, BTreeSet};

use super::{ApplyError, Warehouse};
use crate::config::Dialect;
use crate::event::{DataSource, Policy, Project, UserProfile};

/// The stored state a verdict is made from.
pub struct Enforced {
    /// None when no live profile of the user is stored.
    pub profile: Option<UserProfile>,
    pub data_sources: Vec<DataSource>,
    pub policies: Vec<Policy>,
    /// Data source → the view built for it and the policies it enforces.
    pub built: BTreeMap<String, (String, Vec<String>)>,
    /// Data sources whose view waits for the policy barrier, or for an analyst's open
    /// transaction to let go (`view_pending`, `view_stale`).
    pub waiting: BTreeSet<String>,
}

const PG_PROFILE: &str = "SELECT version, groups, attributes::text, project_id, project_purposes, \
     acknowledged_purposes, data_sources FROM immuta_system.profile WHERE user_name = $1 AND NOT deleted";
const REDSHIFT_PROFILE: &str =
    "SELECT version, project_id FROM immuta_system.profile WHERE user_name = $1 AND NOT deleted";
const REDSHIFT_VALUES: &str =
    "SELECT kind, name, value FROM immuta_system.profile_value WHERE user_name = $1";
const VIEWS: &str = "SELECT data_source_id, view_name, policy_ids FROM immuta_system.view_state";
const WAITING: &str = "SELECT data_source_id FROM immuta_system.view_pending \
     UNION SELECT data_source_id FROM immuta_system.view_stale";

impl Warehouse {
    /// What the warehouse stores for `user` and for every view.
    pub async fn enforced(&self, user: &str) -> Result<Enforced, ApplyError> {
        let client = self.client().await?;
        let profile = match self.dialect() {
            Dialect::Postgres => pg_profile(&client, user).await?,
            Dialect::Redshift => redshift_profile(&client, user).await?,
        };
        let data_sources = parsed(&client, &definitions(self.dialect(), "data_source")).await?;
        let policies = parsed(&client, &definitions(self.dialect(), "policy")).await?;
        let mut built = BTreeMap::new();
        for row in client.query(VIEWS, &[]).await? {
            let ids: String = row.try_get(2)?;
            let ids = serde_json::from_str(&ids).map_err(ApplyError::Corrupt)?;
            built.insert(row.try_get(0)?, (row.try_get(1)?, ids));
        }
        let waiting = client
            .query(WAITING, &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(Enforced {
            profile,
            data_sources,
            policies,
            built,
            waiting,
        })
    }
}

/// The live definitions of `table` (`data_source`, `policy`), as JSON text.
fn definitions(dialect: Dialect, table: &str) -> String {
    let text = super::sql::dialect::of(dialect).definition_text();
    format!("SELECT {text} FROM immuta_system.{table} WHERE NOT deleted AND definition IS NOT NULL")
}

async fn parsed<T: serde::de::DeserializeOwned>(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<T>, ApplyError> {
    let mut out = Vec::new();
    for row in client.query(sql, &[]).await? {
        let text: String = row.try_get(0)?;
        out.push(serde_json::from_str(&text).map_err(ApplyError::Corrupt)?);
    }
    Ok(out)
}

async fn pg_profile(
    client: &tokio_postgres::Client,
    user: &str,
) -> Result<Option<UserProfile>, ApplyError> {
    let Some(row) = client.query_opt(PG_PROFILE, &[&user]).await? else {
        return Ok(None);
    };
    let attributes: String = row.try_get(2)?;
    let project_id: Option<String> = row.try_get(3)?;
    let purposes: Vec<String> = row.try_get(4)?;
    Ok(Some(UserProfile {
        user: user.to_string(),
        version: row.try_get(0)?,
        groups: row.try_get(1)?,
        attributes: serde_json::from_str(&attributes).map_err(ApplyError::Corrupt)?,
        current_project: project_id.map(|id| Project { id, purposes }),
        acknowledged_purposes: row.try_get(5)?,
        data_sources: row.try_get(6)?,
    }))
}

/// Redshift keeps a profile's sets as rows of `profile_value` (kind, name, value).
async fn redshift_profile(
    client: &tokio_postgres::Client,
    user: &str,
) -> Result<Option<UserProfile>, ApplyError> {
    let Some(row) = client.query_opt(REDSHIFT_PROFILE, &[&user]).await? else {
        return Ok(None);
    };
    let project_id: Option<String> = row.try_get(1)?;
    let mut profile = UserProfile {
        user: user.to_string(),
        version: row.try_get(0)?,
        groups: Vec::new(),
        attributes: BTreeMap::new(),
        current_project: None,
        acknowledged_purposes: Vec::new(),
        data_sources: Vec::new(),
    };
    let mut purposes = Vec::new();
    for v in client.query(REDSHIFT_VALUES, &[&user]).await? {
        let (kind, name, value): (String, String, String) =
            (v.try_get(0)?, v.try_get(1)?, v.try_get(2)?);
        match kind.as_str() {
            "group" => profile.groups.push(value),
            "attribute" => profile.attributes.entry(name).or_default().push(value),
            "data_source" => profile.data_sources.push(value),
            "project_purpose" => purposes.push(value),
            "acknowledged_purpose" => profile.acknowledged_purposes.push(value),
            _ => {}
        }
    }
    profile.current_project = project_id.map(|id| Project { id, purposes });
    Ok(Some(profile))
}

/// The statements `enforced` sends to Redshift (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    vec![
        REDSHIFT_PROFILE.into(),
        REDSHIFT_VALUES.into(),
        definitions(Dialect::Redshift, "data_source"),
        VIEWS.into(),
        WAITING.into(),
    ]
}
