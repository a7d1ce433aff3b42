//! The four records as JSON documents (SPEC §2): the Avro schemas' field names, a field
//! with a default in the schema may be left out, a union is its plain value or null, and
//! fields the schema lacks are skipped.
//!
//! Stricter than serde's defaults, as the Avro path is: a record is only ever an object
//! (serde would also read a struct from an array, by position), an enum only its symbol
//! as a string, a string field at most `event::MAX_VALUE_LEN` bytes (checked before it is
//! copied out of the parser), and a map that names a key twice is refused rather than
//! resolved by whichever copy a parser keeps.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::{
    Column, DataSource, Event, Exceptions, Impersonation, Kind, Mask, MaskMethod, Policy, Project,
    RowFilter, RowFilterKind, Rule, Status, Target, UserProfile,
};

use super::strict::{symbol, texts, Attributes, Obj, Text};

#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "Text")]
struct StatusDoc(Status);

impl TryFrom<Text> for StatusDoc {
    type Error = String;
    fn try_from(t: Text) -> Result<Self, String> {
        symbol(
            t,
            &[("ACTIVE", Status::Active), ("DISABLED", Status::Disabled)],
        )
        .map(StatusDoc)
    }
}

impl From<StatusDoc> for Status {
    fn from(s: StatusDoc) -> Status {
        s.0
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
    current_project: Option<Obj<ProjectDoc>>,
    #[serde(default)]
    acknowledged_purposes: Vec<Text>,
    #[serde(default)]
    data_sources: Vec<Text>,
    /// Impersonation's own field. An Impersonation document published to the profiles
    /// topic would otherwise read as a profile with every list empty, and wipe the
    /// user's entitlements; every other record lacks a profile's required `user`.
    allowed: Option<IgnoredAny>,
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
    columns: Vec<Obj<ColumnDoc>>,
    #[serde(default)]
    tags: Vec<Text>,
    status: StatusDoc,
}

#[derive(Deserialize)]
struct TargetDoc {
    #[serde(default)]
    data_source_ids: Vec<Text>,
    #[serde(default)]
    tags: Vec<Text>,
}

#[derive(Deserialize)]
struct ExceptionsDoc {
    #[serde(default)]
    groups: Vec<Text>,
    #[serde(default)]
    purposes: Vec<Text>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "Text")]
struct KindDoc(RowFilterKind);

impl TryFrom<Text> for KindDoc {
    type Error = String;
    fn try_from(t: Text) -> Result<Self, String> {
        let symbols = [
            ("MATCHING_ATTRIBUTE", RowFilterKind::MatchingAttribute),
            ("MEMBER_OF_GROUP", RowFilterKind::MemberOfGroup),
        ];
        symbol(t, &symbols).map(KindDoc)
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "Text")]
struct MethodDoc(MaskMethod);

impl TryFrom<Text> for MethodDoc {
    type Error = String;
    fn try_from(t: Text) -> Result<Self, String> {
        let symbols = [
            ("HASH", MaskMethod::Hash),
            ("NULLIFY", MaskMethod::Nullify),
            ("CONSTANT", MaskMethod::Constant),
        ];
        symbol(t, &symbols).map(MethodDoc)
    }
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
                kind: kind.0,
                column_tag: text(self.column_tag),
                attribute: text(self.attribute),
                group: text(self.group),
            })),
            (None, Some(method)) if self.attribute.is_none() && self.group.is_none() => {
                Ok(Rule::Mask(Mask {
                    column_tag: text(self.column_tag)
                        .ok_or_else(|| E::missing_field("column_tag"))?,
                    method: method.0,
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
    /// Required, as in the Avro schema: a policy whose target is left out (or misspelt)
    /// must not become one that targets nothing, lifting its rule from every view.
    target: Obj<TargetDoc>,
    rule: Obj<RuleDoc>,
    exceptions: Obj<ExceptionsDoc>,
}

#[derive(Deserialize)]
struct ImpersonationDoc {
    user: Text,
    version: i64,
    allowed: bool,
}

fn profile<E: de::Error>(p: ProfileDoc) -> Result<UserProfile, E> {
    if p.allowed.is_some() {
        return Err(E::custom(
            "field `allowed` belongs to an Impersonation, not a UserProfile: a record on the wrong topic?",
        ));
    }
    Ok(UserProfile {
        user: p.user.0,
        version: p.version,
        groups: texts(p.groups),
        attributes: p.attributes.0,
        current_project: p.current_project.map(|Obj(c)| Project {
            id: c.id.0,
            purposes: texts(c.purposes),
        }),
        acknowledged_purposes: texts(p.acknowledged_purposes),
        data_sources: texts(p.data_sources),
    })
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
            .map(|Obj(c)| Column {
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
    let (Obj(target), Obj(rule), Obj(exceptions)) = (p.target, p.rule, p.exceptions);
    Ok(Policy {
        id: p.id.0,
        version: p.version,
        status: p.status.into(),
        target: Target {
            data_source_ids: texts(target.data_source_ids),
            tags: texts(target.tags),
        },
        rule: rule.into_rule()?,
        exceptions: Exceptions {
            groups: texts(exceptions.groups),
            purposes: texts(exceptions.purposes),
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
            Kind::Profile => Event::Profile(profile(Obj::<ProfileDoc>::deserialize(d)?.0)?),
            Kind::DataSource => {
                Event::DataSource(data_source(Obj::<DataSourceDoc>::deserialize(d)?.0))
            }
            Kind::Policy => Event::Policy(policy(Obj::<PolicyDoc>::deserialize(d)?.0)?),
            Kind::Impersonation => {
                let Obj(i) = Obj::<ImpersonationDoc>::deserialize(d)?;
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
