//! `policy-push explain --integration NAME --user USER [--data-source ID] [--json]`: for
//! each view the user could query, whether they are subscribed, each policy that targets
//! it and whether and why each rule applies to them, which mask each column shows, and
//! the rows they see, in words. It reads what the warehouse stores (`apply::enforced`),
//! so it explains what is enforced, not what was published.

mod verdict;

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

pub use verdict::{explain as explain_view, ColumnVerdict, PolicyVerdict, ViewVerdict};

use crate::apply::{Enforced, Warehouse};
use crate::config::Config;
use crate::event::{Status, UserProfile};

/// What `explain` found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub user: String,
    /// What this explanation cannot tell in this dialect.
    pub caveats: Vec<String>,
    /// The stored profile, None when there is none.
    pub profile: Option<UserProfile>,
    pub views: Vec<ViewVerdict>,
}

/// The explanation for `user` on the integration `name`, for one data source or all.
pub async fn explanation(
    config: &Config,
    name: &str,
    user: &str,
    data_source: Option<&str>,
) -> anyhow::Result<Explanation> {
    let integration = config
        .integrations
        .iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no integration named {name}"))?;
    // Profiles are stored under the folded name, as validation leaves it.
    let user = crate::event::user_name("--user", user)?;
    let warehouse = Warehouse::new(integration)?;
    let stored = warehouse
        .enforced(&user)
        .await
        .context("cannot read what the warehouse stores")?;
    let mut sources: Vec<_> = stored
        .data_sources
        .iter()
        .filter(|d| d.status == Status::Active)
        .filter(|d| data_source.is_none_or(|id| d.id == id))
        .collect();
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    if let (Some(id), true) = (data_source, sources.is_empty()) {
        anyhow::bail!("no active data source {id} is stored in integration {name}'s warehouse");
    }
    let views = sources
        .into_iter()
        .map(|ds| {
            let view = format!("{}.{}", integration.view_schema, ds.view_name);
            let mut v = explain_view(ds, view, &stored.policies, stored.profile.as_ref());
            v.state = state(&stored, &ds.id, &ds.view_name, &v);
            v
        })
        .collect();
    let caveats = match integration.dialect {
        crate::config::Dialect::Redshift => vec![REDSHIFT_TEXT.to_string()],
        crate::config::Dialect::Postgres => Vec::new(),
    };
    Ok(Explanation {
        user,
        caveats,
        profile: stored.profile,
        views,
    })
}

/// Redshift has no text form that a session cannot change for some types (docs/redshift.md),
/// and this explanation does not read the raw columns' types.
const REDSHIFT_TEXT: &str = "on Redshift a MATCHING_ATTRIBUTE filter on a column whose type has no fixed text form there (floats, intervals) matches no row, and a HASH of one shows NULL; this explanation does not read the columns' types, so on such columns the view shows less than it says";

/// Whether the view exists and enforces what the verdict was made from.
fn state(stored: &Enforced, id: &str, view_name: &str, v: &ViewVerdict) -> String {
    let targeting: Vec<&str> = v
        .policies
        .iter()
        .filter(|p| p.in_view)
        .map(|p| p.id.as_str())
        .collect();
    match stored.built.get(id) {
        None => "no view: the warehouse refused it, the policy barrier holds it, or another data source holds its name (see `dead-letters list`); nothing is shown through it".into(),
        Some(_) if stored.waiting.contains(id) => "built, but waiting to be rebuilt (an open transaction holds it, or the policy barrier): until then it enforces the policies it was built with".into(),
        Some((name, _)) if name != view_name => format!("built under its old name {name}, waiting to be renamed"),
        Some((_, built_with)) => {
            let mut built_with: Vec<&str> = built_with.iter().map(String::as_str).collect();
            built_with.sort_unstable();
            let mut now = targeting.clone();
            now.sort_unstable();
            if built_with == now {
                "built with the stored policies".into()
            } else {
                format!("built with policies [{}], not yet rebuilt with the stored ones", built_with.join(", "))
            }
        }
    }
}

/// `policy-push explain`: the explanation as text, or as JSON with `json`.
pub async fn explain(
    config: &Config,
    name: &str,
    user: &str,
    data_source: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let e = explanation(config, name, user, data_source).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", text(&e));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(e: &Explanation) -> String {
    let mut out = match &e.profile {
        None => format!(
            "user {}: no profile is stored; every view shows them no rows\n",
            e.user
        ),
        Some(p) => format!("{}\n", profile(p)),
    };
    for v in &e.views {
        out += &format!(
            "\nview {} (data source {}): {}\n",
            v.view, v.data_source, v.state
        );
        out += &format!(
            "  subscribed: {}\n",
            if v.subscribed { "yes" } else { "no" }
        );
        for p in &v.policies {
            let verdict = if p.applies {
                "applies"
            } else {
                "does not apply"
            };
            out += &format!("  policy {} ({}): {verdict}: {}\n", p.id, p.rule, p.why);
        }
        let columns: Vec<String> = v
            .columns
            .iter()
            .map(|c| format!("{} {}", c.column, c.shows))
            .collect();
        out += &format!("  columns: {}\n", columns.join("; "));
        out += &format!("  rows: {}\n", v.rows);
    }
    if e.views.is_empty() {
        out += "\nno active data source is stored in this warehouse\n";
    }
    for c in &e.caveats {
        out += &format!("\nnote: {c}\n");
    }
    out
}

fn profile(p: &UserProfile) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let attributes: Vec<String> = p
        .attributes
        .iter()
        .map(|(k, v)| format!("{k} = [{}]", v.join(", ")))
        .collect();
    let project = p.current_project.as_ref().map_or("none".into(), |c| {
        format!("{} (purposes: {})", c.id, list(&c.purposes))
    });
    format!(
        "user {} (profile version {}): groups: {}; attributes: {}; current project: {project}; acknowledged purposes: {}; data sources: {}",
        p.user,
        p.version,
        list(&p.groups),
        if attributes.is_empty() { "none".into() } else { attributes.join(", ") },
        list(&p.acknowledged_purposes),
        list(&p.data_sources)
    )
}
