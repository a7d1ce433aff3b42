//! Conversion between resolved Avro values and the event types. Written by hand rather
//! than through serde because the record unions (`Policy.rule`) and enums map poorly onto
//! serde, and because this is the hot path of decoding.

use crate::event::{
    Column, DataSource, Event, Exceptions, Impersonation, Kind, Mask, MaskMethod, Policy, Project,
    RowFilter, RowFilterKind, Rule, Status, Target, UserProfile,
};
use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;

use super::CodecError;

fn shape(what: impl Into<String>) -> CodecError {
    CodecError::Shape(what.into())
}

/// The fields of a resolved record, taken out by name.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn of(v: Value, record: &str) -> Result<Self, CodecError> {
        match v {
            Value::Record(fields) => Ok(Fields(fields)),
            other => Err(shape(format!("{record}: expected a record, got {other:?}"))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        let at = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| shape(format!("missing field {name}")))?;
        Ok(std::mem::replace(&mut self.0[at].1, Value::Null))
    }

    fn string(&mut self, name: &str) -> Result<String, CodecError> {
        string(self.take(name)?, name)
    }

    fn long(&mut self, name: &str) -> Result<i64, CodecError> {
        match self.take(name)? {
            Value::Long(n) => Ok(n),
            Value::Int(n) => Ok(n.into()),
            other => Err(shape(format!("{name}: expected long, got {other:?}"))),
        }
    }

    fn strings(&mut self, name: &str) -> Result<Vec<String>, CodecError> {
        strings(self.take(name)?, name)
    }

    fn optional_string(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            v => string(v, name).map(Some),
        }
    }

    fn symbol(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            other => Err(shape(format!("{name}: expected enum, got {other:?}"))),
        }
    }
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        v => v,
    }
}

fn string(v: Value, name: &str) -> Result<String, CodecError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(shape(format!("{name}: expected string, got {other:?}"))),
    }
}

fn strings(v: Value, name: &str) -> Result<Vec<String>, CodecError> {
    match v {
        Value::Array(items) => items.into_iter().map(|i| string(i, name)).collect(),
        other => Err(shape(format!("{name}: expected array, got {other:?}"))),
    }
}

fn status(s: &str) -> Result<Status, CodecError> {
    match s {
        "ACTIVE" => Ok(Status::Active),
        "DISABLED" => Ok(Status::Disabled),
        other => Err(shape(format!("unknown status {other}"))),
    }
}

pub(super) fn event(kind: Kind, v: Value) -> Result<Event, CodecError> {
    let mut f = Fields::of(v, kind.record_name())?;
    Ok(match kind {
        Kind::Profile => Event::Profile(profile(&mut f)?),
        Kind::DataSource => Event::DataSource(data_source(&mut f)?),
        Kind::Policy => Event::Policy(policy(&mut f)?),
        Kind::Impersonation => Event::Impersonation(Impersonation {
            user: f.string("user")?,
            version: f.long("version")?,
            allowed: match f.take("allowed")? {
                Value::Boolean(b) => b,
                other => return Err(shape(format!("allowed: expected boolean, got {other:?}"))),
            },
        }),
    })
}

fn profile(f: &mut Fields) -> Result<UserProfile, CodecError> {
    let attributes = match f.take("attributes")? {
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Ok((k, strings(v, "attributes")?)))
            .collect::<Result<BTreeMap<_, _>, CodecError>>()?,
        other => return Err(shape(format!("attributes: expected map, got {other:?}"))),
    };
    let current_project = match unwrap_union(f.take("current_project")?) {
        Value::Null => None,
        v => {
            let mut p = Fields::of(v, "Project")?;
            Some(Project {
                id: p.string("id")?,
                purposes: p.strings("purposes")?,
            })
        }
    };
    Ok(UserProfile {
        user: f.string("user")?,
        version: f.long("version")?,
        groups: f.strings("groups")?,
        attributes,
        current_project,
        acknowledged_purposes: f.strings("acknowledged_purposes")?,
        data_sources: f.strings("data_sources")?,
    })
}

fn data_source(f: &mut Fields) -> Result<DataSource, CodecError> {
    let columns = match f.take("columns")? {
        Value::Array(items) => items
            .into_iter()
            .map(|c| {
                let mut c = Fields::of(c, "Column")?;
                Ok(Column {
                    name: c.string("name")?,
                    data_type: c.string("type")?,
                    tags: c.strings("tags")?,
                })
            })
            .collect::<Result<Vec<_>, CodecError>>()?,
        other => return Err(shape(format!("columns: expected array, got {other:?}"))),
    };
    Ok(DataSource {
        id: f.string("id")?,
        version: f.long("version")?,
        host: f.string("host")?,
        database: f.string("database")?,
        schema: f.string("schema")?,
        table: f.string("table")?,
        view_name: f.string("view_name")?,
        columns,
        tags: f.strings("tags")?,
        status: status(&f.symbol("status")?)?,
    })
}

fn policy(f: &mut Fields) -> Result<Policy, CodecError> {
    let mut target = Fields::of(f.take("target")?, "Target")?;
    let mut exceptions = Fields::of(f.take("exceptions")?, "Exceptions")?;
    let rule = match f.take("rule")? {
        Value::Union(0, r) => {
            let mut r = Fields::of(*r, "RowFilter")?;
            let kind = match r.symbol("kind")?.as_str() {
                "MATCHING_ATTRIBUTE" => RowFilterKind::MatchingAttribute,
                "MEMBER_OF_GROUP" => RowFilterKind::MemberOfGroup,
                other => return Err(shape(format!("unknown row filter kind {other}"))),
            };
            Rule::RowFilter(RowFilter {
                kind,
                column_tag: r.optional_string("column_tag")?,
                attribute: r.optional_string("attribute")?,
                group: r.optional_string("group")?,
            })
        }
        Value::Union(1, m) => {
            let mut m = Fields::of(*m, "Mask")?;
            let method = match m.symbol("method")?.as_str() {
                "HASH" => MaskMethod::Hash,
                "NULLIFY" => MaskMethod::Nullify,
                "CONSTANT" => MaskMethod::Constant,
                other => return Err(shape(format!("unknown mask method {other}"))),
            };
            Rule::Mask(Mask {
                column_tag: m.string("column_tag")?,
                method,
                constant: m.optional_string("constant")?,
            })
        }
        other => {
            return Err(shape(format!(
                "rule: expected RowFilter or Mask, got {other:?}"
            )))
        }
    };
    Ok(Policy {
        id: f.string("id")?,
        version: f.long("version")?,
        status: status(&f.symbol("status")?)?,
        target: Target {
            data_source_ids: target.strings("data_source_ids")?,
            tags: target.strings("tags")?,
        },
        rule,
        exceptions: Exceptions {
            groups: exceptions.strings("groups")?,
            purposes: exceptions.strings("purposes")?,
        },
    })
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn arr(vs: &[String]) -> Value {
    Value::Array(vs.iter().map(|v| s(v)).collect())
}

fn opt(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(s(x))),
    }
}

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
}

fn status_value(st: Status) -> Value {
    match st {
        Status::Active => Value::Enum(0, "ACTIVE".into()),
        Status::Disabled => Value::Enum(1, "DISABLED".into()),
    }
}

/// The Avro value of an event under the current (reader) schema.
pub fn to_avro(event: &Event) -> Value {
    match event {
        Event::Profile(p) => rec(vec![
            ("user", s(&p.user)),
            ("version", Value::Long(p.version)),
            ("groups", arr(&p.groups)),
            (
                "attributes",
                Value::Map(
                    p.attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), arr(v)))
                        .collect::<HashMap<_, _>>(),
                ),
            ),
            (
                "current_project",
                match &p.current_project {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(pr) => Value::Union(
                        1,
                        Box::new(rec(vec![
                            ("id", s(&pr.id)),
                            ("purposes", arr(&pr.purposes)),
                        ])),
                    ),
                },
            ),
            ("acknowledged_purposes", arr(&p.acknowledged_purposes)),
            ("data_sources", arr(&p.data_sources)),
        ]),
        Event::DataSource(d) => rec(vec![
            ("id", s(&d.id)),
            ("version", Value::Long(d.version)),
            ("host", s(&d.host)),
            ("database", s(&d.database)),
            ("schema", s(&d.schema)),
            ("table", s(&d.table)),
            ("view_name", s(&d.view_name)),
            (
                "columns",
                Value::Array(
                    d.columns
                        .iter()
                        .map(|c| {
                            rec(vec![
                                ("name", s(&c.name)),
                                ("type", s(&c.data_type)),
                                ("tags", arr(&c.tags)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("tags", arr(&d.tags)),
            ("status", status_value(d.status)),
        ]),
        Event::Policy(p) => rec(vec![
            ("id", s(&p.id)),
            ("version", Value::Long(p.version)),
            ("status", status_value(p.status)),
            (
                "target",
                rec(vec![
                    ("data_source_ids", arr(&p.target.data_source_ids)),
                    ("tags", arr(&p.target.tags)),
                ]),
            ),
            (
                "rule",
                match &p.rule {
                    Rule::RowFilter(f) => Value::Union(
                        0,
                        Box::new(rec(vec![
                            (
                                "kind",
                                match f.kind {
                                    RowFilterKind::MatchingAttribute => {
                                        Value::Enum(0, "MATCHING_ATTRIBUTE".into())
                                    }
                                    RowFilterKind::MemberOfGroup => {
                                        Value::Enum(1, "MEMBER_OF_GROUP".into())
                                    }
                                },
                            ),
                            ("column_tag", opt(&f.column_tag)),
                            ("attribute", opt(&f.attribute)),
                            ("group", opt(&f.group)),
                        ])),
                    ),
                    Rule::Mask(m) => Value::Union(
                        1,
                        Box::new(rec(vec![
                            ("column_tag", s(&m.column_tag)),
                            (
                                "method",
                                match m.method {
                                    MaskMethod::Hash => Value::Enum(0, "HASH".into()),
                                    MaskMethod::Nullify => Value::Enum(1, "NULLIFY".into()),
                                    MaskMethod::Constant => Value::Enum(2, "CONSTANT".into()),
                                },
                            ),
                            ("constant", opt(&m.constant)),
                        ])),
                    ),
                },
            ),
            (
                "exceptions",
                rec(vec![
                    ("groups", arr(&p.exceptions.groups)),
                    ("purposes", arr(&p.exceptions.purposes)),
                ]),
            ),
        ]),
        Event::Impersonation(i) => rec(vec![
            ("user", s(&i.user)),
            ("version", Value::Long(i.version)),
            ("allowed", Value::Boolean(i.allowed)),
        ]),
    }
}
