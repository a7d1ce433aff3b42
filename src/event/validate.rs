//! The validation rules: identifiers folded and checked against a portable grammar,
//! free-text values bounded and free of NUL, keys that must agree with their record's id,
//! schemas policy-push owns kept out of reach.

use super::{
    DataSource, Event, Impersonation, Kind, MaskMethod, Policy, RowFilterKind, Rule, UserProfile,
    ValidationError, MAX_IDENTIFIER_LEN, MAX_VALUE_LEN,
};

/// How many characters of an offending value an error quotes. Reasons travel in a
/// dead letter's headers: quoting a whole megabyte-long value would make the dead letter
/// larger than the producer accepts, and the batch would be retried forever.
pub const QUOTED_CHARS: usize = 64;

/// `value` quoted as Rust's `{:?}` does, cut to [`QUOTED_CHARS`] characters with its
/// length appended when longer.
pub fn quote_capped(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &value[..end], value.len()),
        None => format!("{value:?}"),
    }
}

/// Folds an identifier to lower case and checks it against the portable grammar.
pub fn identifier(field: &str, raw: &str) -> Result<String, ValidationError> {
    let folded = raw.to_ascii_lowercase();
    let mut chars = folded.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if first_ok && rest_ok && folded.len() <= MAX_IDENTIFIER_LEN {
        Ok(folded)
    } else {
        Err(ValidationError::Identifier {
            field: field.into(),
            value: quote_capped(raw),
        })
    }
}

/// Warehouse user names are compared as values and only ever used quoted, so they may hold
/// a few more characters than identifiers (e-mail style names are common).
pub fn user_name(field: &str, raw: &str) -> Result<String, ValidationError> {
    fold_user_name(field, raw.to_owned())
}

/// `user_name` for a string we own: folds in place instead of copying (the hot path).
fn fold_user_name(field: &str, mut folded: String) -> Result<String, ValidationError> {
    folded.make_ascii_lowercase();
    let ok = !folded.is_empty()
        && folded.len() <= MAX_IDENTIFIER_LEN
        && folded
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.@+-$".contains(c));
    if ok {
        Ok(folded)
    } else {
        Err(ValidationError::UserName {
            field: field.into(),
            value: quote_capped(&folded),
        })
    }
}

/// A free-text value: compared and bound, never spliced, so it only has to be non-empty,
/// NUL-free and of bounded length.
pub(crate) fn check_value(field: &str, v: &str) -> Result<(), ValidationError> {
    if v.is_empty() || v.len() > MAX_VALUE_LEN || v.contains('\0') {
        return Err(ValidationError::Value {
            field: field.into(),
        });
    }
    Ok(())
}

fn values<'a>(
    field: &str,
    vs: impl IntoIterator<Item = &'a String>,
) -> Result<(), ValidationError> {
    vs.into_iter().try_for_each(|v| check_value(field, v))
}

/// What validation needs to know about the integration the record is for.
pub struct Scope<'a> {
    /// The integration's database, lower case.
    pub database: &'a str,
    /// The schema policy-push creates the integration's views in, lower case.
    pub view_schema: &'a str,
}

/// The schemas policy-push itself creates on every host. A data source over one of them
/// would publish policy-push's own state (every user's profile, the offsets) as a view
/// granted to PUBLIC.
pub const OWN_SCHEMAS: [&str; 3] = ["immuta_system", "immuta_functions", "immuta_procedures"];

/// Why a data source may not read from `schema`, if it may not: policy-push's own
/// schemas, the view schema, and the system catalogs (`pg_catalog`, `information_schema`
/// and every `pg_*` schema, which on Redshift also holds its own system tables).
pub fn reserved_schema(schema: &str, view_schema: &str) -> Option<&'static str> {
    if OWN_SCHEMAS.contains(&schema) {
        Some("it is one of policy-push's own schemas")
    } else if schema == view_schema {
        Some("it is the schema policy-push builds the policy views in")
    } else if schema == "information_schema" || schema.starts_with("pg_") {
        Some("it is a system catalog schema")
    } else {
        None
    }
}

impl UserProfile {
    pub fn validate(mut self) -> Result<Self, ValidationError> {
        self.user = fold_user_name("UserProfile.user", self.user)?;
        values("UserProfile.groups", &self.groups)?;
        for (name, vals) in &self.attributes {
            check_value("UserProfile.attributes key", name)?;
            values("UserProfile.attributes value", vals)?;
        }
        if let Some(p) = &self.current_project {
            check_value("UserProfile.current_project.id", &p.id)?;
            values("UserProfile.current_project.purposes", &p.purposes)?;
        }
        values(
            "UserProfile.acknowledged_purposes",
            &self.acknowledged_purposes,
        )?;
        values("UserProfile.data_sources", &self.data_sources)?;
        Ok(self)
    }
}

impl DataSource {
    /// Validates everything but the host; the host decides skip-or-apply before this runs.
    pub fn validate(mut self, scope: &Scope<'_>) -> Result<Self, ValidationError> {
        check_value("DataSource.id", &self.id)?;
        self.database = identifier("DataSource.database", &self.database)?;
        self.schema = identifier("DataSource.schema", &self.schema)?;
        self.table = identifier("DataSource.table", &self.table)?;
        self.view_name = identifier("DataSource.view_name", &self.view_name)?;
        if let Some(why) = reserved_schema(&self.schema, scope.view_schema) {
            return Err(ValidationError::BadDataSource {
                id: self.id,
                reason: format!("schema {} cannot back a policy view: {why}", self.schema),
            });
        }
        values("DataSource.tags", &self.tags)?;
        if self.columns.is_empty() {
            return Err(ValidationError::BadDataSource {
                id: self.id,
                reason: "has no columns".into(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for c in &mut self.columns {
            c.name = identifier("DataSource.columns.name", &c.name)?;
            check_value("DataSource.columns.type", &c.data_type)?;
            values("DataSource.columns.tags", &c.tags)?;
            if !seen.insert(c.name.clone()) {
                return Err(ValidationError::BadDataSource {
                    id: self.id.clone(),
                    reason: format!("column {} is listed twice", c.name),
                });
            }
        }
        if self.database != scope.database {
            return Err(ValidationError::ForeignDatabase {
                id: self.id,
                database: self.database,
                expected: scope.database.into(),
            });
        }
        Ok(self)
    }
}

impl Policy {
    pub fn validate(self) -> Result<Self, ValidationError> {
        check_value("Policy.id", &self.id)?;
        values(
            "Policy.target.data_source_ids",
            &self.target.data_source_ids,
        )?;
        values("Policy.target.tags", &self.target.tags)?;
        values("Policy.exceptions.groups", &self.exceptions.groups)?;
        values("Policy.exceptions.purposes", &self.exceptions.purposes)?;
        let unusable = |reason: &str| ValidationError::UnusablePolicy {
            id: self.id.clone(),
            reason: reason.into(),
        };
        match &self.rule {
            Rule::RowFilter(f) => match f.kind {
                RowFilterKind::MatchingAttribute => {
                    let (Some(tag), Some(attr)) = (&f.column_tag, &f.attribute) else {
                        return Err(unusable(
                            "MATCHING_ATTRIBUTE needs both column_tag and attribute",
                        ));
                    };
                    check_value("Policy.rule.column_tag", tag)?;
                    check_value("Policy.rule.attribute", attr)?;
                }
                RowFilterKind::MemberOfGroup => {
                    let Some(group) = &f.group else {
                        return Err(unusable("MEMBER_OF_GROUP needs group"));
                    };
                    check_value("Policy.rule.group", group)?;
                }
            },
            Rule::Mask(m) => {
                check_value("Policy.rule.column_tag", &m.column_tag)?;
                match (&m.method, &m.constant) {
                    (MaskMethod::Constant, None) => {
                        return Err(unusable("CONSTANT mask needs constant"))
                    }
                    (_, Some(c)) if c.contains('\0') || c.len() > MAX_VALUE_LEN => {
                        return Err(ValidationError::Value {
                            field: "Policy.rule.constant".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(self)
    }
}

impl Impersonation {
    pub fn validate(mut self) -> Result<Self, ValidationError> {
        self.user = fold_user_name("Impersonation.user", self.user)?;
        Ok(self)
    }
}

/// Validates a decoded value and checks that it belongs to its record key. The key is
/// compared after the same folding as the id, so `Alice` and `alice` are one entity.
pub fn validate(event: Event, key: &str, scope: &Scope<'_>) -> Result<Event, ValidationError> {
    let event = match event {
        Event::Profile(p) => Event::Profile(p.validate()?),
        Event::DataSource(d) => Event::DataSource(d.validate(scope)?),
        Event::Policy(p) => Event::Policy(p.validate()?),
        Event::Impersonation(i) => Event::Impersonation(i.validate()?),
    };
    check_key(event.kind(), key, event.id())?;
    Ok(event)
}

/// Checks that a record key names the entity `id` (valid and folded) of its value.
pub fn check_key(kind: Kind, key: &str, id: &str) -> Result<(), ValidationError> {
    // The id is valid by now, so a key equal to it after folding is valid too; only a
    // mismatch needs the key validated, to report the more precise error.
    let matches = match kind {
        Kind::Profile | Kind::Impersonation => key.eq_ignore_ascii_case(id),
        Kind::DataSource | Kind::Policy => key == id,
    };
    if !matches {
        return Err(ValidationError::KeyMismatch {
            key: quote_capped(&entity_key(kind, key)?),
            id: quote_capped(id),
        });
    }
    Ok(())
}

/// Normalizes a record key the way the entity id is normalized, so tombstones find
/// the entity they delete.
pub fn entity_key(kind: Kind, key: &str) -> Result<String, ValidationError> {
    match kind {
        Kind::Profile | Kind::Impersonation => user_name("record key", key),
        Kind::DataSource | Kind::Policy => check_value("record key", key).map(|_| key.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Exceptions, Mask, RowFilter, Status, Target};

    #[test]
    fn identifiers_fold_and_reject_hostile_names() {
        assert_eq!(identifier("f", "Sales_2024").unwrap(), "sales_2024");
        for bad in [
            "x\"; drop table t; --",
            "",
            "1abc",
            "a b",
            "a.b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(identifier("f", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn user_names_allow_email_style_but_not_quotes() {
        assert_eq!(user_name("u", "Alice@Corp.com").unwrap(), "alice@corp.com");
        assert!(user_name("u", "bob\"; --").is_err());
        assert!(user_name("u", "").is_err());
    }

    #[test]
    fn unusable_policies_are_rejected() {
        let p = Policy {
            id: "p1".into(),
            version: 1,
            status: Status::Active,
            target: Target::default(),
            rule: Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MatchingAttribute,
                column_tag: Some("t".into()),
                attribute: None,
                group: None,
            }),
            exceptions: Exceptions::default(),
        };
        assert!(matches!(
            p.clone().validate(),
            Err(ValidationError::UnusablePolicy { .. })
        ));
        let mask = Policy {
            rule: Rule::Mask(Mask {
                column_tag: "t".into(),
                method: MaskMethod::Constant,
                constant: None,
            }),
            ..p
        };
        assert!(matches!(
            mask.validate(),
            Err(ValidationError::UnusablePolicy { .. })
        ));
    }

    #[test]
    fn key_must_match_id() {
        let i = Event::Impersonation(Impersonation {
            user: "Bob".into(),
            version: 1,
            allowed: true,
        });
        let scope = Scope {
            database: "db",
            view_schema: "immuta",
        };
        assert!(validate(i.clone(), "bob", &scope).is_ok());
        assert!(matches!(
            validate(i, "eve", &scope),
            Err(ValidationError::KeyMismatch { .. })
        ));
    }
}
