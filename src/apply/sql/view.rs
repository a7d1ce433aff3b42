//! Generation of the policy-enforced view of one data source (SPEC §4).
//!
//! The view selects the data source's columns, in order, from the raw table, joined to
//! `immuta_system.user_profile` (at most one row: the querying user's). So at query time:
//! no profile or no subscription gives no rows; row filters are ANDed in the WHERE clause
//! over the raw values; masks are CASE expressions in the select list, where the first
//! applicable mask by ascending policy id wins for each user.
//!
//! Masked columns: a HASH or CONSTANT mask yields text, so a column with such a mask is
//! exposed as text to every user (a view column has one type). A column with only
//! NULLIFY masks keeps its type.

use std::fmt::Write;

use super::canonical::{self, ColumnTypes, TextForm};
use super::quote::{ident, qualified};
use crate::event::{Column, DataSource, Mask, MaskMethod, Policy, RowFilterKind, Rule, Status};

/// The SQL fragments that differ between warehouses. Values reaching these methods are
/// already quoted literals or column expressions. Every function and operator a fragment
/// uses is qualified with `pg_catalog` (on Redshift, which has no user-defined operators,
/// every function): a late-binding view on Redshift resolves names when it is queried,
/// and an analyst who may create objects in a schema on the search path could otherwise
/// plant a better-matching `&&`, `convert_to` or `sha2` of their own.
pub trait ViewDialect {
    /// The user is subscribed to the data source `id`.
    fn subscribed(&self, id: &str) -> String;
    /// The user is in group `group`.
    fn in_group(&self, group: &str) -> String;
    /// The user is in at least one of `groups`.
    fn in_any_group(&self, groups: &[String]) -> String;
    /// A purpose of the user's current project is in `purposes` and acknowledged.
    fn acknowledged_purpose(&self, purposes: &[String]) -> String;
    /// The canonical text `text` is one of the user's values of `attribute`.
    fn attribute_matches(&self, text: &str, attribute: &str) -> String;
    /// How a column whose catalog type is `catalog_type` becomes canonical text.
    fn text_form(&self, catalog_type: Option<&str>) -> TextForm;
    /// The canonical text of `expr` (`canonical`), or None where this dialect has no form
    /// that the querying session cannot change.
    fn canonical(&self, expr: &str, form: TextForm) -> Option<String>;
    /// `expr` cast to text, as the querying session prints it: what a masked column
    /// shows to the users its masks do not apply to when its type has no canonical text.
    fn text(&self, expr: &str) -> String;
    /// Lower-case hex SHA-256 of the integration's salt (`hs.salt`, [`SALT_JOIN`])
    /// followed by the canonical text `text` (NULL stays NULL).
    fn sha256_hex(&self, text: &str) -> String;
    /// A string literal that evaluates to `value` in this dialect.
    fn literal(&self, value: &str) -> String;
    /// `CREATE VIEW <name> … AS`, with whatever keeps a user's own predicates from seeing
    /// rows the view does not show.
    fn create_view(&self, qualified_name: &str) -> String;
    /// What ends the view's definition after its query.
    fn view_end(&self) -> &'static str {
        ""
    }
    /// A last select-list item that exposes the view's row `condition`, for a dialect
    /// whose protection reads it (Redshift row-level security).
    fn row_visible(&self, _condition: &str) -> Option<String> {
        None
    }
    /// What runs after the view `schema.view` is created, before it is granted.
    fn after_create(&self, _schema: &str, _view: &str) -> Option<String> {
        None
    }
    /// What runs before the view `schema.view` is dropped.
    fn before_drop(&self, _schema: &str, _view: &str) -> Option<String> {
        None
    }
}

/// What a view with a HASH mask joins: the integration's salt (empty when it has none),
/// in a table only the system account may read. The view reads it as its owner, so the
/// salt is in no view definition, and rotating it needs no rebuild.
pub const SALT_JOIN: &str = "CROSS JOIN immuta_system.hash_salt AS hs";

use super::dialect::postgres::Postgres;

/// A view to create: its name and definition, and the policies it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPlan {
    pub qualified_name: String,
    pub create_sql: String,
    pub policy_ids: Vec<String>,
}

/// Whether `policy` targets `ds` (by id or by a tag of the data source or its columns).
pub fn targets(policy: &Policy, ds: &DataSource) -> bool {
    if policy.status != Status::Active {
        return false;
    }
    if policy.target.data_source_ids.contains(&ds.id) {
        return true;
    }
    policy
        .target
        .tags
        .iter()
        .any(|t| ds.tags.contains(t) || ds.columns.iter().any(|c| c.tags.contains(t)))
}

/// The columns of `ds` tagged `tag`.
pub fn tagged<'a>(ds: &'a DataSource, tag: &str) -> impl Iterator<Item = &'a Column> + 'a {
    let tag = tag.to_string();
    ds.columns.iter().filter(move |c| c.tags.contains(&tag))
}

/// True for users this policy's rule does not apply to; None when nobody is exempt.
fn exempt(d: &dyn ViewDialect, policy: &Policy) -> Option<String> {
    let ex = &policy.exceptions;
    let mut parts = Vec::new();
    if !ex.groups.is_empty() {
        parts.push(d.in_any_group(&ex.groups));
    }
    if !ex.purposes.is_empty() {
        parts.push(d.acknowledged_purpose(&ex.purposes));
    }
    (!parts.is_empty()).then(|| format!("({})", parts.join(" OR ")))
}

fn raw(column: &str) -> String {
    format!("t.{}", ident(column))
}

/// One view being planned: its dialect, data source and raw column types.
struct Planner<'a> {
    d: &'a dyn ViewDialect,
    ds: &'a DataSource,
    types: &'a ColumnTypes,
}

impl Planner<'_> {
    /// The canonical text of a raw column, if the dialect has a fixed form for its type.
    fn canonical(&self, column: &Column) -> Option<String> {
        let catalog_type = self.types.get(&column.name).cloned().flatten();
        let form = self.d.text_form(catalog_type.as_deref());
        self.d.canonical(&raw(&column.name), form)
    }

    /// The WHERE conjunct of a row-filter policy, or None if it does not apply to the
    /// data source. A column with no fixed canonical form matches nothing.
    fn row_filter(&self, policy: &Policy) -> Option<String> {
        let d = self.d;
        let Rule::RowFilter(f) = &policy.rule else {
            return None;
        };
        let check = match f.kind {
            RowFilterKind::MemberOfGroup => d.in_group(&d.literal(f.group.as_deref()?)),
            RowFilterKind::MatchingAttribute => {
                let attr = d.literal(f.attribute.as_deref()?);
                let conds: Vec<_> = tagged(self.ds, f.column_tag.as_deref()?)
                    .map(|c| match self.canonical(c) {
                        Some(text) => d.attribute_matches(&text, &attr),
                        None => "false".to_string(),
                    })
                    .collect();
                if conds.is_empty() {
                    return None;
                }
                conds.join(" AND ")
            }
        };
        Some(match exempt(d, policy) {
            Some(ex) => format!("({ex} OR ({check}))"),
            None => format!("({check})"),
        })
    }

    /// The select-list expression of one column under the masks that target it (in
    /// ascending policy id order). The first mask without exceptions ends the search:
    /// nobody gets past it. A HASH of a column with no fixed canonical form shows NULL.
    fn column_expr(&self, column: &Column, masks: &[&Policy]) -> String {
        let d = self.d;
        let applicable = masks_on(column, masks);
        let name = ident(&column.name);
        let raw_value = raw(&column.name);
        if applicable.is_empty() {
            return format!("{raw_value} AS {name}");
        }
        let as_text = applicable
            .iter()
            .any(|(_, m)| m.method != MaskMethod::Nullify);
        let canonical = self.canonical(column);
        // Those no mask applies to see the canonical text where there is one.
        let value = match (as_text, &canonical) {
            (false, _) => raw_value.clone(),
            (true, Some(text)) => text.clone(),
            (true, None) => d.text(&raw_value),
        };
        let mut whens = String::new();
        let mut fallback = value.clone();
        for (policy, mask) in applicable {
            let shown = match mask.method {
                MaskMethod::Nullify => "NULL".to_string(),
                MaskMethod::Constant => d.literal(mask.constant.as_deref().unwrap_or_default()),
                MaskMethod::Hash => match &canonical {
                    Some(text) => d.sha256_hex(text),
                    None => "NULL".to_string(),
                },
            };
            match exempt(d, policy) {
                Some(ex) => {
                    let _ = write!(whens, " WHEN NOT {ex} THEN {shown}");
                }
                None => {
                    fallback = shown;
                    break;
                }
            }
        }
        match (whens.is_empty(), fallback.as_str()) {
            // A bare NULL would lose the column's type; the CASE keeps it.
            (true, "NULL") if !as_text => {
                format!("CASE WHEN true THEN NULL ELSE {raw_value} END AS {name}")
            }
            (true, _) => format!("{fallback} AS {name}"),
            (false, _) => format!("CASE{whens} ELSE {fallback} END AS {name}"),
        }
    }
}

/// The masks of `masks` that target `column`, in their order.
fn masks_on<'p>(column: &Column, masks: &[&'p Policy]) -> Vec<(&'p Policy, &'p Mask)> {
    masks
        .iter()
        .filter_map(|p| match &p.rule {
            Rule::Mask(m) if column.tags.contains(&m.column_tag) => Some((*p, m)),
            _ => None,
        })
        .collect()
}

/// Plans the view of an active data source under the given policies (any order), in
/// PostgreSQL's dialect with the types its record declares.
pub fn plan(ds: &DataSource, policies: &[Policy], view_schema: &str) -> ViewPlan {
    plan_with(
        &Postgres,
        ds,
        policies,
        view_schema,
        &canonical::declared(ds),
    )
}

/// Plans a view in the given dialect, over a raw table whose columns have `types`.
pub fn plan_with(
    d: &dyn ViewDialect,
    ds: &DataSource,
    policies: &[Policy],
    view_schema: &str,
    types: &ColumnTypes,
) -> ViewPlan {
    let planner = Planner { d, ds, types };
    let mut applicable: Vec<&Policy> = policies.iter().filter(|p| targets(p, ds)).collect();
    applicable.sort_by(|a, b| a.id.cmp(&b.id));
    let filters: Vec<(String, &Policy)> = applicable
        .iter()
        .filter_map(|p| planner.row_filter(p).map(|f| (f, *p)))
        .collect();
    let masks: Vec<&Policy> = applicable
        .iter()
        .copied()
        .filter(|p| matches!(p.rule, Rule::Mask(_)))
        .collect();
    let columns: Vec<_> = ds
        .columns
        .iter()
        .map(|c| planner.column_expr(c, &masks))
        .collect();
    let hashes = ds.columns.iter().any(|c| {
        masks_on(c, &masks)
            .iter()
            .any(|(_, m)| m.method == MaskMethod::Hash)
    });

    let mut enforced: Vec<String> = filters.iter().map(|(_, p)| p.id.clone()).collect();
    let filters: Vec<String> = filters.into_iter().map(|(f, _)| f).collect();
    enforced.extend(
        masks
            .iter()
            .filter(|p| match &p.rule {
                Rule::Mask(m) => tagged(ds, &m.column_tag).next().is_some(),
                Rule::RowFilter(_) => false,
            })
            .map(|p| p.id.clone()),
    );
    enforced.sort();
    enforced.dedup();

    let mut conditions = vec![d.subscribed(&d.literal(&ds.id))];
    conditions.extend(filters);
    let mut columns = columns;
    columns.extend(d.row_visible(&conditions.join(" AND ")));

    let qualified_name = qualified(view_schema, &ds.view_name);
    let salt = if hashes {
        format!("\n{SALT_JOIN}")
    } else {
        String::new()
    };
    let mut sql = format!(
        "{}\nSELECT {}\nFROM {} AS t\nCROSS JOIN immuta_system.user_profile AS up{salt}\nWHERE {}",
        d.create_view(&qualified_name),
        columns.join(",\n       "),
        qualified(&ds.schema, &ds.table),
        conditions.join("\n  AND "),
    );
    sql += d.view_end();
    ViewPlan {
        qualified_name,
        create_sql: sql,
        policy_ids: enforced,
    }
}

/// The statements that drop the view `view` of `view_schema`, if it exists, with every
/// view an analyst built on it: otherwise any analyst could keep a policy change from
/// ever applying with `CREATE TEMP VIEW x AS SELECT * FROM immuta.orders`, which makes
/// a plain `DROP VIEW` fail for as long as their session lasts.
pub fn drop_view(d: &dyn ViewDialect, view_schema: &str, view: &str) -> String {
    let mut ddl = String::new();
    if let Some(before) = d.before_drop(view_schema, view) {
        ddl += &format!("{before};\n");
    }
    ddl += &format!(
        "DROP VIEW IF EXISTS {} CASCADE;\n",
        qualified(view_schema, view)
    );
    ddl
}

/// The statements that replace the view of `plan` (named `view`): the old one goes, under
/// its old name `old_view` too if the data source was renamed, and the new one is
/// protected, then readable by everyone (the view itself decides what each user sees).
pub fn replacement(
    d: &dyn ViewDialect,
    view_schema: &str,
    old_view: Option<&str>,
    view: &str,
    plan: &ViewPlan,
) -> String {
    let mut ddl = String::new();
    if let Some(old) = old_view.filter(|o| *o != view) {
        ddl += &drop_view(d, view_schema, old);
    }
    ddl += &drop_view(d, view_schema, view);
    ddl += &format!("{};\n", plan.create_sql);
    // Protected before it is granted (Redshift's row-level security).
    if let Some(after) = d.after_create(view_schema, view) {
        ddl += &format!("{after};\n");
    }
    ddl += &format!("GRANT SELECT ON {} TO PUBLIC;\n", plan.qualified_name);
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    fn ds() -> DataSource {
        DataSource {
            id: "ds1".into(),
            version: 1,
            host: "h".into(),
            database: "db".into(),
            schema: "raw".into(),
            table: "orders".into(),
            view_name: "orders".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    data_type: "int".into(),
                    tags: vec![],
                },
                Column {
                    name: "email".into(),
                    data_type: "text".into(),
                    tags: vec!["pii".into()],
                },
                Column {
                    name: "region".into(),
                    data_type: "text".into(),
                    tags: vec!["geo".into()],
                },
            ],
            tags: vec!["sales".into()],
            status: Status::Active,
        }
    }

    fn policy(id: &str, rule: Rule) -> Policy {
        Policy {
            id: id.into(),
            version: 1,
            status: Status::Active,
            target: Target {
                data_source_ids: vec![],
                tags: vec!["sales".into()],
            },
            rule,
            exceptions: Exceptions::default(),
        }
    }

    fn mask(tag: &str, method: MaskMethod, constant: Option<&str>) -> Rule {
        Rule::Mask(Mask {
            column_tag: tag.into(),
            method,
            constant: constant.map(String::from),
        })
    }

    #[test]
    fn unprotected_view_only_checks_subscription() {
        let plan = plan(&ds(), &[], "immuta");
        assert_eq!(
            plan.create_sql,
            "CREATE VIEW \"immuta\".\"orders\" WITH (security_barrier) AS\n\
             SELECT t.\"id\" AS \"id\",\n       t.\"email\" AS \"email\",\n       t.\"region\" AS \"region\"\n\
             FROM \"raw\".\"orders\" AS t\n\
             CROSS JOIN immuta_system.user_profile AS up\n\
             WHERE 'ds1' OPERATOR(pg_catalog.=) ANY (up.data_sources)"
        );
        assert!(plan.policy_ids.is_empty());
    }

    #[test]
    fn row_filters_and_masks_with_exceptions() {
        let mut attr = policy(
            "p2",
            Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MatchingAttribute,
                column_tag: Some("geo".into()),
                attribute: Some("region".into()),
                group: None,
            }),
        );
        attr.exceptions.groups = vec!["admins".into()];
        let hash = policy("p1", mask("pii", MaskMethod::Hash, None));
        let plan = plan(&ds(), &[attr, hash], "immuta");
        let sql = &plan.create_sql;
        assert!(
            sql.contains(
                "pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(hs.salt OPERATOR(pg_catalog.||) t.\"email\"::pg_catalog.text, 'UTF8')), 'hex') AS \"email\""
            ),
            "{sql}"
        );
        assert!(sql.contains(
            "AND ((up.groups OPERATOR(pg_catalog.&&) ARRAY['admins']::pg_catalog.text[]) OR (t.\"region\"::pg_catalog.text OPERATOR(pg_catalog.=) ANY (SELECT pg_catalog.jsonb_array_elements_text(up.attributes OPERATOR(pg_catalog.->) 'region'))))"
        ), "{sql}");
        assert_eq!(plan.policy_ids, vec!["p1", "p2"]);
    }

    #[test]
    fn lowest_policy_id_mask_comes_first_and_nullify_keeps_type() {
        let c = policy("b", mask("pii", MaskMethod::Constant, Some("x'y")));
        let n = policy("a", mask("pii", MaskMethod::Nullify, None));
        let sql = plan(&ds(), &[c, n], "v").create_sql;
        assert!(
            sql.contains("NULL AS \"email\""),
            "lowest id wins, later masks unreachable: {sql}"
        );
        assert!(!sql.contains("x''y"), "{sql}");
        let only_null = plan(
            &ds(),
            &[policy("a", mask("pii", MaskMethod::Nullify, None))],
            "v",
        )
        .create_sql;
        assert!(
            only_null.contains("CASE WHEN true THEN NULL ELSE t.\"email\" END"),
            "keeps the type: {only_null}"
        );
        let mut exempted = policy("a", mask("pii", MaskMethod::Nullify, None));
        exempted.exceptions.groups = vec!["g".into()];
        let both = plan(
            &ds(),
            &[
                exempted,
                policy("b", mask("pii", MaskMethod::Constant, Some("x'y"))),
            ],
            "v",
        )
        .create_sql;
        assert!(
            both.contains("CASE WHEN NOT (up.groups OPERATOR(pg_catalog.&&) ARRAY['g']::pg_catalog.text[]) THEN NULL ELSE 'x''y' END AS \"email\""),
            "{both}"
        );
    }

    #[test]
    fn rules_without_matching_tags_or_targets_do_not_apply() {
        let no_col = policy("p", mask("nope", MaskMethod::Nullify, None));
        let mut other = policy("q", mask("pii", MaskMethod::Nullify, None));
        other.target.tags = vec!["finance".into()];
        let mut disabled = policy("r", mask("pii", MaskMethod::Nullify, None));
        disabled.status = Status::Disabled;
        let plan = plan(&ds(), &[no_col, other, disabled], "v");
        assert!(!plan.create_sql.contains("CASE"));
        assert!(plan.policy_ids.is_empty());
    }

    #[test]
    fn purpose_exceptions_need_an_acknowledged_project_purpose() {
        let mut g = policy(
            "g",
            Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MemberOfGroup,
                column_tag: None,
                attribute: None,
                group: Some("eu".into()),
            }),
        );
        g.exceptions.purposes = vec!["audit".into()];
        let sql = plan(&ds(), &[g], "v").create_sql;
        assert!(sql.contains("WHERE pp.purpose OPERATOR(pg_catalog.=) ANY (ARRAY['audit']::pg_catalog.text[]) AND pp.purpose OPERATOR(pg_catalog.=) ANY (up.acknowledged_purposes)"), "{sql}");
        assert!(
            sql.contains("OR ('eu' OPERATOR(pg_catalog.=) ANY (up.groups))"),
            "{sql}"
        );
        assert!(!sql.contains("false"), "{sql}");
    }
}

#[cfg(test)]
mod doc_tests {
    use crate::apply::sql::examples::{all, orders};

    #[test]
    fn docs_policies_md_shows_the_generated_sql() {
        let doc = include_str!("../../../docs/policies.md");
        for (title, policies) in all() {
            let sql = super::plan(&orders(), &policies, "immuta").create_sql;
            assert!(
                doc.contains(&format!("```sql\n{sql};\n```")),
                "docs/policies.md is stale for {title:?}; it should show:\n{sql};"
            );
        }
    }

    #[test]
    #[ignore = "prints the examples' SQL for docs/policies.md"]
    fn print_doc_sql() {
        for (title, policies) in all() {
            println!(
                "### {title}\n```sql\n{};\n```\n",
                super::plan(&orders(), &policies, "immuta").create_sql
            );
        }
    }
}
