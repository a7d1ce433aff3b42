//! Builders for the control plane's records.

use std::collections::BTreeMap;

use policy_push::event::*;
use policy_push::simulate::Record;

use super::pipeline::HOST;
use super::warehouse::Database;

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn profile(
    user: &str,
    version: i64,
    groups: &[&str],
    attrs: &[(&str, &[&str])],
    sources: &[&str],
) -> Record {
    let p = UserProfile {
        user: user.into(),
        version,
        groups: strings(groups),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), strings(v)))
            .collect::<BTreeMap<_, _>>(),
        current_project: None,
        acknowledged_purposes: vec![],
        data_sources: strings(sources),
    };
    Record {
        kind: Kind::Profile,
        key: user.into(),
        value: Some(Event::Profile(p)),
    }
}

pub fn impersonation(user: &str, version: i64, allowed: bool) -> Record {
    Record {
        kind: Kind::Impersonation,
        key: user.into(),
        value: Some(Event::Impersonation(Impersonation {
            user: user.into(),
            version,
            allowed,
        })),
    }
}

pub fn tombstone(kind: Kind, key: &str) -> Record {
    Record {
        kind,
        key: key.into(),
        value: None,
    }
}

pub struct Ds<'a> {
    pub id: &'a str,
    pub version: i64,
    pub host: &'a str,
    pub database: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub view: &'a str,
    pub columns: &'a [(&'a str, &'a [&'a str])],
    pub tags: &'a [&'a str],
    pub status: Status,
}

/// An active data source over `raw.t`, whose view is `immuta.t`.
pub fn raw_t(db: &Database, version: i64, columns: &[(&str, &[&str])], tags: &[&str]) -> Record {
    data_source(Ds {
        id: "ds",
        version,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: "t",
        view: "t",
        columns,
        tags,
        status: Status::Active,
    })
}

/// A data source over `raw.t` whose view name validation refuses: dead-lettered when
/// consumed.
pub fn invalid_view(db: &Database, host: &str) -> Record {
    data_source(Ds {
        id: "ds-bad",
        version: 1,
        host,
        database: &db.name,
        schema: "raw",
        table: "t",
        view: "no spaces allowed",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    })
}

pub fn data_source(d: Ds<'_>) -> Record {
    let ds = DataSource {
        id: d.id.into(),
        version: d.version,
        host: d.host.into(),
        database: d.database.into(),
        schema: d.schema.into(),
        table: d.table.into(),
        view_name: d.view.into(),
        columns: d
            .columns
            .iter()
            .map(|(n, t)| Column {
                name: n.to_string(),
                data_type: "text".into(),
                tags: strings(t),
            })
            .collect(),
        tags: strings(d.tags),
        status: d.status,
    };
    Record {
        kind: Kind::DataSource,
        key: d.id.into(),
        value: Some(Event::DataSource(ds)),
    }
}

pub fn policy(
    id: &str,
    version: i64,
    rule: Rule,
    target_tags: &[&str],
    target_ids: &[&str],
    except_groups: &[&str],
) -> Record {
    let p = Policy {
        id: id.into(),
        version,
        status: Status::Active,
        target: Target {
            data_source_ids: strings(target_ids),
            tags: strings(target_tags),
        },
        rule,
        exceptions: Exceptions {
            groups: strings(except_groups),
            purposes: vec![],
        },
    };
    Record {
        kind: Kind::Policy,
        key: id.into(),
        value: Some(Event::Policy(p)),
    }
}

pub fn mask(tag: &str, method: MaskMethod, constant: Option<&str>) -> Rule {
    Rule::Mask(Mask {
        column_tag: tag.into(),
        method,
        constant: constant.map(String::from),
    })
}

pub fn matching(tag: &str, attribute: &str) -> Rule {
    Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MatchingAttribute,
        column_tag: Some(tag.into()),
        attribute: Some(attribute.into()),
        group: None,
    })
}

pub fn member_of(group: &str) -> Rule {
    Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MemberOfGroup,
        column_tag: None,
        attribute: None,
        group: Some(group.into()),
    })
}

/// `Some(v)` as the text PostgreSQL prints, for row comparisons.
pub fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
    cells.iter().map(|c| c.map(String::from)).collect()
}

/// Lower-case hex SHA-256, computed independently of the warehouse.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
