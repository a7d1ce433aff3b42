//! The worked examples of `docs/policies.md`: one data source, two analysts and a policy
//! set per rule. Tests keep the document's SQL equal to the generator's and its tables
//! equal to what PostgreSQL returns to the two analysts.

use crate::event::{
    Column, DataSource, Exceptions, Mask, MaskMethod, Policy, Project, RowFilter, RowFilterKind,
    Rule, Status, Target, UserProfile,
};

use std::collections::BTreeMap;

pub fn orders() -> DataSource {
    let col = |n: &str, tags: &[&str]| Column {
        name: n.into(),
        data_type: "text".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    DataSource {
        id: "ds-orders".into(),
        version: 1,
        host: "warehouse.example".into(),
        database: "analytics".into(),
        schema: "sales".into(),
        table: "orders".into(),
        view_name: "orders".into(),
        columns: vec![
            col("id", &[]),
            col("email", &["pii"]),
            col("region", &["geo"]),
        ],
        tags: vec!["sales".into()],
        status: Status::Active,
    }
}

fn policy(id: &str, rule: Rule, groups: &[&str], purposes: &[&str]) -> Policy {
    Policy {
        id: id.into(),
        version: 1,
        status: Status::Active,
        target: Target {
            data_source_ids: vec![],
            tags: vec!["sales".into()],
        },
        rule,
        exceptions: Exceptions {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            purposes: purposes.iter().map(|g| g.to_string()).collect(),
        },
    }
}

fn mask(method: MaskMethod, constant: Option<&str>) -> Rule {
    Rule::Mask(Mask {
        column_tag: "pii".into(),
        method,
        constant: constant.map(String::from),
    })
}

/// (title, policies)
pub fn all() -> Vec<(&'static str, Vec<Policy>)> {
    let region = Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MatchingAttribute,
        column_tag: Some("geo".into()),
        attribute: Some("region".into()),
        group: None,
    });
    let group = Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MemberOfGroup,
        column_tag: None,
        attribute: None,
        group: Some("finance".into()),
    });
    vec![
        ("Subscription only", vec![]),
        (
            "MATCHING_ATTRIBUTE",
            vec![policy("pol-region", region, &[], &[])],
        ),
        (
            "MEMBER_OF_GROUP",
            vec![policy("pol-finance", group, &[], &[])],
        ),
        (
            "HASH",
            vec![policy("pol-hash", mask(MaskMethod::Hash, None), &[], &[])],
        ),
        (
            "NULLIFY",
            vec![policy(
                "pol-null",
                mask(MaskMethod::Nullify, None),
                &[],
                &[],
            )],
        ),
        (
            "CONSTANT",
            vec![policy(
                "pol-const",
                mask(MaskMethod::Constant, Some("REDACTED")),
                &[],
                &[],
            )],
        ),
        (
            "Exceptions",
            vec![policy(
                "pol-hash",
                mask(MaskMethod::Hash, None),
                &["privacy"],
                &["fraud"],
            )],
        ),
        (
            "Several masks on one column",
            vec![
                policy(
                    "pol-b-const",
                    mask(MaskMethod::Constant, Some("REDACTED")),
                    &[],
                    &[],
                ),
                policy(
                    "pol-a-hash",
                    mask(MaskMethod::Hash, None),
                    &["privacy"],
                    &[],
                ),
            ],
        ),
    ]
}

/// The two analysts of the document: ana (region eu, no groups) and ben (groups finance
/// and privacy, region us, current project purpose fraud, acknowledged).
pub fn analysts(ana: &str, ben: &str) -> [UserProfile; 2] {
    let profile = |user: &str, groups: &[&str], region: &str, project: bool| UserProfile {
        user: user.into(),
        version: 1,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: BTreeMap::from([("region".to_string(), vec![region.to_string()])]),
        current_project: project.then(|| Project {
            id: "p-7".into(),
            purposes: vec!["fraud".into()],
        }),
        acknowledged_purposes: if project {
            vec!["fraud".into()]
        } else {
            vec![]
        },
        data_sources: vec!["ds-orders".into()],
    };
    [
        profile(ana, &[], "eu", false),
        profile(ben, &["finance", "privacy"], "us", true),
    ]
}

/// A data source over a raw table with a column of each kind of type (`canonical`), as
/// the catalog names them in `dialect`, every column filtered by a MATCHING_ATTRIBUTE and
/// masked by a HASH: what the golden files and the conformance test pin each type's
/// canonical text with.
pub fn every_type(dialect: crate::config::Dialect) -> (DataSource, Vec<Policy>) {
    let types: &[&str] = match dialect {
        crate::config::Dialect::Postgres => &[
            "text",
            "int4",
            "bool",
            "bytea",
            "date",
            "timestamp",
            "timestamptz",
            "float4",
            "float8",
            "interval",
            "money",
            "_float8",
        ],
        crate::config::Dialect::Redshift => &[
            "character varying(256)",
            "integer",
            "boolean",
            "varbyte(64)",
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "real",
            "double precision",
            "interval year to month",
            "super",
        ],
    };
    let columns = types
        .iter()
        .enumerate()
        .map(|(i, t)| Column {
            name: format!("c{i}"),
            data_type: t.to_string(),
            tags: vec!["key".into()],
        })
        .collect();
    let ds = DataSource {
        columns,
        view_name: "typed".into(),
        table: "typed".into(),
        id: "ds-typed".into(),
        ..orders()
    };
    let filter = Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MatchingAttribute,
        column_tag: Some("key".into()),
        attribute: Some("k".into()),
        group: None,
    });
    let hash = Rule::Mask(Mask {
        column_tag: "key".into(),
        method: MaskMethod::Hash,
        constant: None,
    });
    let policies = vec![
        policy("pol-filter", filter, &[], &[]),
        policy("pol-hash", hash, &["privacy"], &[]),
    ];
    (ds, policies)
}
