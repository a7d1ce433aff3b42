//! Why a user sees what they see through one view: SPEC §4 evaluated for one user over
//! the definitions the warehouse stores, in words. The views enforce the same rules in
//! SQL (`apply::sql::view`); `tests/explain.rs` checks the two agree for real roles.

use serde::Serialize;

use crate::apply::sql::view::{tagged, targets};
use crate::event::{DataSource, Mask, MaskMethod, Policy, RowFilterKind, Rule, UserProfile};

/// What one view shows the user, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ViewVerdict {
    pub data_source: String,
    pub view: String,
    /// Whether the view exists and enforces the stored policies (`explain` sets it).
    pub state: String,
    /// Whether the data source is among the user's `data_sources`.
    pub subscribed: bool,
    /// Each policy that targets the data source, lowest id first.
    pub policies: Vec<PolicyVerdict>,
    /// What each column shows.
    pub columns: Vec<ColumnVerdict>,
    /// Which rows the user sees, in words.
    pub rows: String,
    /// No row at all, whatever the table holds.
    pub no_rows: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyVerdict {
    pub id: String,
    pub rule: String,
    /// The view enforces the rule for someone: it has a column with the rule's tag.
    pub in_view: bool,
    pub applies: bool,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnVerdict {
    pub column: String,
    /// `unmasked`, or the mask and the policy it comes from.
    pub shows: String,
    /// The mask shown, if any.
    #[serde(skip)]
    pub mask: Option<MaskMethod>,
}

/// Why the exceptions of `p` cover `u`, if they do.
fn exception(p: &Policy, u: &UserProfile) -> Option<String> {
    if let Some(g) = p.exceptions.groups.iter().find(|g| u.groups.contains(g)) {
        return Some(format!("the user is in exception group {g}"));
    }
    let project = u.current_project.as_ref()?;
    let purpose = project
        .purposes
        .iter()
        .find(|x| p.exceptions.purposes.contains(x) && u.acknowledged_purposes.contains(x))?;
    Some(format!(
        "the user's current project {} has exception purpose {purpose}, which the user acknowledged",
        project.id
    ))
}

fn describe_rule(rule: &Rule) -> String {
    match rule {
        Rule::RowFilter(f) => match f.kind {
            RowFilterKind::MemberOfGroup => format!(
                "row filter: members of group {}",
                f.group.as_deref().unwrap_or("?")
            ),
            RowFilterKind::MatchingAttribute => format!(
                "row filter: columns tagged {} match the user's attribute {}",
                f.column_tag.as_deref().unwrap_or("?"),
                f.attribute.as_deref().unwrap_or("?")
            ),
        },
        Rule::Mask(m) => format!("mask {} of columns tagged {}", method(m), m.column_tag),
    }
}

fn method(m: &Mask) -> String {
    match m.method {
        MaskMethod::Hash => "HASH".into(),
        MaskMethod::Nullify => "NULLIFY".into(),
        MaskMethod::Constant => format!("CONSTANT {:?}", m.constant.as_deref().unwrap_or("")),
    }
}

/// One rule's effect on the rows: None when it lets every row through.
enum Effect {
    All,
    None(String),
    Where(String),
}

/// Whether `p`'s rule applies to `u` on `ds`, why, and its effect on the rows.
fn judge(p: &Policy, ds: &DataSource, u: &UserProfile) -> (PolicyVerdict, Effect) {
    let verdict = |applies: bool, why: String| PolicyVerdict {
        id: p.id.clone(),
        rule: describe_rule(&p.rule),
        in_view: true,
        applies,
        why,
    };
    let tag = match &p.rule {
        Rule::RowFilter(f) if f.kind == RowFilterKind::MemberOfGroup => None,
        Rule::RowFilter(f) => f.column_tag.as_deref(),
        Rule::Mask(m) => Some(m.column_tag.as_str()),
    };
    let columns: Option<Vec<&str>> = tag.map(|t| tagged(ds, t).map(|c| c.name.as_str()).collect());
    if let (Some(t), Some(cols)) = (tag, &columns) {
        if cols.is_empty() {
            let why = format!("no column of this data source is tagged {t}");
            let unused = PolicyVerdict {
                in_view: false,
                ..verdict(false, why)
            };
            return (unused, Effect::All);
        }
    }
    if let Some(why) = exception(p, u) {
        return (verdict(false, why), Effect::All);
    }
    match &p.rule {
        Rule::Mask(_) => {
            let cols = columns.unwrap_or_default().join(", ");
            (verdict(true, format!("masks {cols}")), Effect::All)
        }
        Rule::RowFilter(f) if f.kind == RowFilterKind::MemberOfGroup => {
            let group = f.group.as_deref().unwrap_or("?");
            if u.groups.iter().any(|g| g == group) {
                (
                    verdict(
                        true,
                        format!("the user is in group {group}: every row passes"),
                    ),
                    Effect::All,
                )
            } else {
                let why = format!("the user is not in group {group}: no row passes");
                (
                    verdict(true, why.clone()),
                    Effect::None(format!("policy {}: {why}", p.id)),
                )
            }
        }
        Rule::RowFilter(f) => {
            let attribute = f.attribute.as_deref().unwrap_or("?");
            let cols = columns.unwrap_or_default().join(", ");
            match u.attributes.get(attribute).filter(|v| !v.is_empty()) {
                None => {
                    let why = format!("the user has no attribute {attribute}: no row passes");
                    (
                        verdict(true, why.clone()),
                        Effect::None(format!("policy {}: {why}", p.id)),
                    )
                }
                Some(values) => {
                    let values = values.join(", ");
                    let condition =
                        format!("{cols} is one of the user's {attribute} values ({values})");
                    (
                        verdict(true, format!("rows where {condition}")),
                        Effect::Where(condition),
                    )
                }
            }
        }
    }
}

/// The verdict on `ds`'s view for `user` (None: no profile stored for them).
pub fn explain(
    ds: &DataSource,
    view: String,
    policies: &[Policy],
    user: Option<&UserProfile>,
) -> ViewVerdict {
    let mut targeting: Vec<&Policy> = policies.iter().filter(|p| targets(p, ds)).collect();
    targeting.sort_by(|a, b| a.id.cmp(&b.id));
    let subscribed = user.is_some_and(|u| u.data_sources.contains(&ds.id));
    let mut verdict = ViewVerdict {
        data_source: ds.id.clone(),
        view,
        state: String::new(),
        subscribed,
        policies: Vec::new(),
        columns: Vec::new(),
        rows: String::new(),
        no_rows: true,
    };
    let Some(u) = user else {
        verdict.rows = "no rows: no profile of this user is stored (an analyst's login name must equal the profile's user)".into();
        verdict.columns = columns(ds, &[], None);
        return verdict;
    };
    let mut effects = Vec::new();
    for p in &targeting {
        let (policy, effect) = judge(p, ds, u);
        verdict.policies.push(policy);
        effects.push(effect);
    }
    verdict.columns = columns(ds, &targeting, Some(u));
    let denied: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::None(why) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    let conditions: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Where(c) => Some(c.as_str()),
            _ => None,
        })
        .collect();
    (verdict.rows, verdict.no_rows) = if !subscribed {
        (
            format!(
                "no rows: the user is not subscribed to data source {}",
                ds.id
            ),
            true,
        )
    } else if !denied.is_empty() {
        (format!("no rows: {}", denied.join("; ")), true)
    } else if conditions.is_empty() {
        ("every row".into(), false)
    } else {
        (format!("rows where {}", conditions.join(", and ")), false)
    };
    verdict
}

/// What each column shows `u`: the mask of the lowest policy id that applies to it.
fn columns(ds: &DataSource, targeting: &[&Policy], u: Option<&UserProfile>) -> Vec<ColumnVerdict> {
    ds.columns
        .iter()
        .map(|c| {
            let mask = u.and_then(|u| {
                targeting.iter().find_map(|p| match &p.rule {
                    Rule::Mask(m)
                        if c.tags.contains(&m.column_tag) && exception(p, u).is_none() =>
                    {
                        Some((p.id.as_str(), m))
                    }
                    _ => None,
                })
            });
            ColumnVerdict {
                column: c.name.clone(),
                shows: mask.map_or("unmasked".into(), |(id, m)| {
                    format!("{} (policy {id})", method(m))
                }),
                mask: mask.map(|(_, m)| m.method),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::explain;
    use crate::event::{
        Column, DataSource, Exceptions, Mask, MaskMethod, Policy, Project, Rule, Status, Target,
        UserProfile,
    };

    fn ds() -> DataSource {
        DataSource {
            id: "ds".into(),
            version: 1,
            host: "h".into(),
            database: "db".into(),
            schema: "raw".into(),
            table: "t".into(),
            view_name: "t".into(),
            columns: vec![Column {
                name: "email".into(),
                data_type: "text".into(),
                tags: vec!["pii".into()],
            }],
            tags: vec![],
            status: Status::Active,
        }
    }

    fn hashing(purposes: &[&str]) -> Policy {
        Policy {
            id: "p".into(),
            version: 1,
            status: Status::Active,
            target: Target {
                data_source_ids: vec![],
                tags: vec!["pii".into()],
            },
            rule: Rule::Mask(Mask {
                column_tag: "pii".into(),
                method: MaskMethod::Hash,
                constant: None,
            }),
            exceptions: Exceptions {
                groups: vec![],
                purposes: purposes.iter().map(|p| p.to_string()).collect(),
            },
        }
    }

    fn user(acknowledged: &[&str]) -> UserProfile {
        UserProfile {
            user: "u".into(),
            version: 1,
            groups: vec![],
            attributes: Default::default(),
            current_project: Some(Project {
                id: "proj".into(),
                purposes: vec!["fraud".into()],
            }),
            acknowledged_purposes: acknowledged.iter().map(|p| p.to_string()).collect(),
            data_sources: vec!["ds".into()],
        }
    }

    #[test]
    fn a_purpose_exempts_only_when_the_project_has_it_and_the_user_acknowledged_it() {
        let p = [hashing(&["fraud"])];
        let v = explain(&ds(), "v".into(), &p, Some(&user(&["fraud"])));
        assert_eq!(v.columns[0].shows, "unmasked");
        assert!(
            v.policies[0].why.contains("exception purpose fraud"),
            "{v:?}"
        );
        assert_eq!(v.rows, "every row");
        let v = explain(&ds(), "v".into(), &p, Some(&user(&[])));
        assert_eq!(v.columns[0].shows, "HASH (policy p)");
        assert!(v.policies[0].applies);
    }

    #[test]
    fn a_disabled_policy_does_not_target() {
        let mut p = hashing(&[]);
        p.status = Status::Disabled;
        let v = explain(&ds(), "v".into(), &[p], Some(&user(&[])));
        assert!(v.policies.is_empty());
        assert_eq!(v.columns[0].shows, "unmasked");
    }
}
