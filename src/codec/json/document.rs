//! The four records as JSON documents (SPEC §2): the Avro schemas' field names, a field
//! with a default in the schema may be left out, a union is its plain value or null, and
//! fields the schema lacks are skipped.
//!
//! Strings are checked against [`MAX_VALUE_LEN`] before they are copied, so a document
//! allocates no string longer than any the validation that follows accepts; a map that
//! names a key twice is refused rather than resolved by whichever copy a parser keeps.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::{
    Column, DataSource, Event, Exceptions, Impersonation, Kind, Mask, MaskMethod, Policy, Project,
    RowFilter, RowFilterKind, Rule, Status, Target, UserProfile, MAX_VALUE_LEN,
};

/// A string of at most [`MAX_VALUE_LEN`] bytes, refused before it is copied.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl Visitor<'_> for Bounded {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string of at most {MAX_VALUE_LEN} bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                if s.len() > MAX_VALUE_LEN {
                    return Err(E::custom(format_args!(
                        "a string of {} bytes, longer than the {MAX_VALUE_LEN} any field accepts",
                        s.len()
                    )));
                }
                Ok(Text(s.to_owned()))
            }
        }
        d.deserialize_str(Bounded)
    }
}

fn texts(v: Vec<Text>) -> Vec<String> {
    v.into_iter().map(|t| t.0).collect()
}

/// `attributes`: a map of arrays of strings whose keys are all distinct.
#[derive(Default)]
struct Attributes(BTreeMap<String, Vec<String>>);

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Distinct;
        impl<'de> Visitor<'de> for Distinct {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of arrays of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(Text(key)) = map.next_key()? {
                    let values: Vec<Text> = map.next_value()?;
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!(
                            "attribute {} is named twice",
                            crate::event::quote_capped(&key)
                        )));
                    }
                    out.insert(key, texts(values));
                }
                Ok(Attributes(out))
            }
        }
        d.deserialize_map(Distinct)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum StatusDoc {
    Active,
    Disabled,
}

impl From<StatusDoc> for Status {
    fn from(s: StatusDoc) -> Status {
        match s {
            StatusDoc::Active => Status::Active,
            StatusDoc::Disabled => Status::Disabled,
        }
    }
}

#[derive(Deserialize)]
struct ProjectDoc {
    id: Text,
    #[serde(default)]
    purposes: Vec<Text>,
}

#[derive(Deserialize)]
struct ProfileDoc {
    user: Text,
    version: i64,
    #[serde(default)]
    groups: Vec<Text>,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    current_project: Option<ProjectDoc>,
    #[serde(default)]
    acknowledged_purposes: Vec<Text>,
    #[serde(default)]
    data_sources: Vec<Text>,
}

#[derive(Deserialize)]
struct ColumnDoc {
    name: Text,
    #[serde(rename = "type")]
    data_type: Text,
    #[serde(default)]
    tags: Vec<Text>,
}

#[derive(Deserialize)]
struct DataSourceDoc {
    id: Text,
    version: i64,
    host: Text,
    database: Text,
    schema: Text,
    table: Text,
    view_name: Text,
    columns: Vec<ColumnDoc>,
    #[serde(default)]
    tags: Vec<Text>,
    status: StatusDoc,
}

/// `target` and `exceptions` are read as empty when left out, though the Avro schema has
/// no default for them: Debezium's outbox event router, expanding a payload, drops empty
/// arrays and so may drop an object left empty. Either way the policy targets nothing, or
/// exempts nobody, exactly as the control plane wrote it.
#[derive(Deserialize, Default)]
struct TargetDoc {
    #[serde(default)]
    data_source_ids: Vec<Text>,
    #[serde(default)]
    tags: Vec<Text>,
}

#[derive(Deserialize, Default)]
struct ExceptionsDoc {
    #[serde(default)]
    groups: Vec<Text>,
    #[serde(default)]
    purposes: Vec<Text>,
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum KindDoc {
    MatchingAttribute,
    MemberOfGroup,
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum MethodDoc {
    Hash,
    Nullify,
    Constant,
}

/// `rule`, the union of RowFilter and Mask as its plain value: told apart by `kind`
/// (RowFilter) or `method` (Mask). A rule with fields of both is refused, not guessed at:
/// a filter read as a mask, or the other way round, would change what analysts see.
#[derive(Deserialize)]
struct RuleDoc {
    kind: Option<KindDoc>,
    method: Option<MethodDoc>,
    column_tag: Option<Text>,
    attribute: Option<Text>,
    group: Option<Text>,
    constant: Option<Text>,
}

impl RuleDoc {
    fn into_rule<E: de::Error>(self) -> Result<Rule, E> {
        let text = |t: Option<Text>| t.map(|t| t.0);
        match (self.kind, self.method) {
            (Some(kind), None) if self.constant.is_none() => Ok(Rule::RowFilter(RowFilter {
                kind: match kind {
                    KindDoc::MatchingAttribute => RowFilterKind::MatchingAttribute,
                    KindDoc::MemberOfGroup => RowFilterKind::MemberOfGroup,
                },
                column_tag: text(self.column_tag),
                attribute: text(self.attribute),
                group: text(self.group),
            })),
            (None, Some(method)) if self.attribute.is_none() && self.group.is_none() => {
                Ok(Rule::Mask(Mask {
                    column_tag: text(self.column_tag)
                        .ok_or_else(|| E::missing_field("column_tag"))?,
                    method: match method {
                        MethodDoc::Hash => MaskMethod::Hash,
                        MethodDoc::Nullify => MaskMethod::Nullify,
                        MethodDoc::Constant => MaskMethod::Constant,
                    },
                    constant: text(self.constant),
                }))
            }
            (None, None) => Err(E::custom(
                "rule has neither kind (a RowFilter) nor method (a Mask)",
            )),
            _ => Err(E::custom(
                "rule mixes a RowFilter's fields (kind, attribute, group) with a Mask's (method, constant)",
            )),
        }
    }
}

#[derive(Deserialize)]
struct PolicyDoc {
    id: Text,
    version: i64,
    status: StatusDoc,
    #[serde(default)]
    target: TargetDoc,
    rule: RuleDoc,
    #[serde(default)]
    exceptions: ExceptionsDoc,
}

#[derive(Deserialize)]
struct ImpersonationDoc {
    user: Text,
    version: i64,
    allowed: bool,
}

fn profile(p: ProfileDoc) -> UserProfile {
    UserProfile {
        user: p.user.0,
        version: p.version,
        groups: texts(p.groups),
        attributes: p.attributes.0,
        current_project: p.current_project.map(|c| Project {
            id: c.id.0,
            purposes: texts(c.purposes),
        }),
        acknowledged_purposes: texts(p.acknowledged_purposes),
        data_sources: texts(p.data_sources),
    }
}

fn data_source(d: DataSourceDoc) -> DataSource {
    DataSource {
        id: d.id.0,
        version: d.version,
        host: d.host.0,
        database: d.database.0,
        schema: d.schema.0,
        table: d.table.0,
        view_name: d.view_name.0,
        columns: d
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name.0,
                data_type: c.data_type.0,
                tags: texts(c.tags),
            })
            .collect(),
        tags: texts(d.tags),
        status: d.status.into(),
    }
}

fn policy<E: de::Error>(p: PolicyDoc) -> Result<Policy, E> {
    Ok(Policy {
        id: p.id.0,
        version: p.version,
        status: p.status.into(),
        target: Target {
            data_source_ids: texts(p.target.data_source_ids),
            tags: texts(p.target.tags),
        },
        rule: p.rule.into_rule()?,
        exceptions: Exceptions {
            groups: texts(p.exceptions.groups),
            purposes: texts(p.exceptions.purposes),
        },
    })
}

/// Reads one document of the record `kind` carries.
#[derive(Clone, Copy)]
pub(super) struct Document(pub Kind);

impl<'de> DeserializeSeed<'de> for Document {
    type Value = Event;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
        Ok(match self.0 {
            Kind::Profile => Event::Profile(profile(ProfileDoc::deserialize(d)?)),
            Kind::DataSource => Event::DataSource(data_source(DataSourceDoc::deserialize(d)?)),
            Kind::Policy => Event::Policy(policy(PolicyDoc::deserialize(d)?)?),
            Kind::Impersonation => {
                let i = ImpersonationDoc::deserialize(d)?;
                Event::Impersonation(Impersonation {
                    user: i.user.0,
                    version: i.version,
                    allowed: i.allowed,
                })
            }
        })
    }
}

/// The document of an event, as a control plane writes it into an outbox: every field
/// (keys in alphabetical order), a union as its plain value.
pub fn to_json(event: &Event) -> Value {
    match event {
        Event::Profile(p) => json!({
            "user": p.user,
            "version": p.version,
            "groups": p.groups,
            "attributes": p.attributes,
            "current_project": p.current_project.as_ref().map(|c| json!({"id": c.id, "purposes": c.purposes})),
            "acknowledged_purposes": p.acknowledged_purposes,
            "data_sources": p.data_sources,
        }),
        Event::DataSource(d) => json!({
            "id": d.id,
            "version": d.version,
            "host": d.host,
            "database": d.database,
            "schema": d.schema,
            "table": d.table,
            "view_name": d.view_name,
            "columns": d.columns.iter().map(|c| json!({"name": c.name, "type": c.data_type, "tags": c.tags})).collect::<Vec<_>>(),
            "tags": d.tags,
            "status": d.status,
        }),
        Event::Policy(p) => json!({
            "id": p.id,
            "version": p.version,
            "status": p.status,
            "target": {"data_source_ids": p.target.data_source_ids, "tags": p.target.tags},
            "rule": match &p.rule {
                Rule::RowFilter(f) => json!({"kind": f.kind, "column_tag": f.column_tag, "attribute": f.attribute, "group": f.group}),
                Rule::Mask(m) => json!({"column_tag": m.column_tag, "method": m.method, "constant": m.constant}),
            },
            "exceptions": {"groups": p.exceptions.groups, "purposes": p.exceptions.purposes},
        }),
        Event::Impersonation(i) => {
            json!({"user": i.user, "version": i.version, "allowed": i.allowed})
        }
    }
}
