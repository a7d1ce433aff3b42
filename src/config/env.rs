//! Environment overrides (`POLICY_PUSH_*`, see the module docs of `config`).

use super::{invalid, secrets, unusable, ConfigError};
use std::collections::BTreeMap;
use std::path::Path;

/// librdkafka takes every value as a string; accept TOML numbers and booleans too.
pub(super) fn stringify_kafka(doc: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(kafka) = doc.get_mut("kafka") else {
        return Ok(());
    };
    let table = kafka
        .as_table_mut()
        .ok_or_else(|| invalid("kafka", "must be a table"))?;
    for (k, v) in table.iter_mut() {
        let s = match v {
            toml::Value::String(_) => continue,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(invalid(
                    format!("kafka.{k}"),
                    "must be a string, number or boolean",
                ))
            }
        };
        *v = toml::Value::String(s);
    }
    Ok(())
}

pub(super) fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

pub(super) const SECTIONS: [&str; 6] = [
    "schema_registry",
    "consumer",
    "topics",
    "batch",
    "http",
    "log",
];

/// Integration secrets from the environment, by (integration, `password`,
/// `setup_password`, their `_file` forms, or `hash_salt`).
pub(super) type Passwords = BTreeMap<(String, &'static str), String>;

/// Applies `POLICY_PUSH_*` variables to the document; returns integration passwords by
/// upper-cased integration name.
pub(super) fn apply_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Passwords, ConfigError> {
    let mut passwords: Passwords = BTreeMap::new();
    for (var, val) in env {
        let Some(rest) = var.strip_prefix("POLICY_PUSH_") else {
            continue;
        };
        // A secret from a file. The warehouse passwords' and the registry credentials'
        // files are kept as paths and read again for each connection or request
        // (`secrets`); any other is read now.
        let (rest, val) = match rest.strip_suffix("_FILE") {
            Some(base) if !kept_as_path(base) => {
                let text = secrets::read_file(Path::new(&val)).map_err(|e| unusable(&var, e))?;
                (base, text)
            }
            _ => (rest, val),
        };
        let lower = rest.to_ascii_lowercase();
        if let Some(prop) = lower.strip_prefix("kafka_") {
            let table = section(doc, "kafka")?;
            table.insert(prop.replace('_', "."), toml::Value::String(val));
        } else if lower == "errors_tolerance" || lower.starts_with("errors_tolerance_") {
            // Without a topic: every input topic.
            let topics = match lower.strip_prefix("errors_tolerance_") {
                Some(topic) => vec![topic.to_string()],
                None => ["profiles", "data_sources", "policies", "impersonation"]
                    .map(String::from)
                    .to_vec(),
            };
            let errors = section(doc, "errors")?;
            let tolerance = section(errors, "tolerance")?;
            for topic in topics {
                tolerance.insert(topic, toml::Value::String(val.clone()));
            }
        } else if let Some(tail) = rest.strip_prefix("INTEGRATION_") {
            apply_integration_env(doc, tail, val, &mut passwords, &var)?;
        } else if let Some(sec) = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        {
            let key = &lower[sec.len() + 1..];
            section(doc, sec)?.insert(key.to_string(), scalar(&val));
        }
    }
    Ok(passwords)
}

pub(super) fn apply_integration_env(
    doc: &mut toml::Table,
    tail: &str,
    val: String,
    passwords: &mut Passwords,
    var: &str,
) -> Result<(), ConfigError> {
    let Some(list) = doc.get_mut("integration").and_then(|v| v.as_array_mut()) else {
        return Err(invalid(var, "there is no [[integration]] to override"));
    };
    for item in list.iter_mut() {
        let Some(table) = item.as_table_mut() else {
            continue;
        };
        let Some(name) = table.get("name").and_then(|n| n.as_str()).map(env_name) else {
            continue;
        };
        let Some(key) = tail.strip_prefix(&format!("{name}_")) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if let Some(kind) = [
            "password",
            "setup_password",
            "password_file",
            "setup_password_file",
            "hash_salt",
        ]
        .into_iter()
        .find(|k| *k == key)
        {
            passwords.insert((name, kind), val);
        } else {
            table.insert(key, scalar(&val));
        }
        return Ok(());
    }
    Err(invalid(var, "names no configured integration"))
}

/// `INTEGRATION_<NAME>_PASSWORD`, `..._SETUP_PASSWORD`, or a registry credential.
pub(super) fn kept_as_path(var: &str) -> bool {
    (var.starts_with("INTEGRATION_") && var.ends_with("_PASSWORD"))
        || var == "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
        || var == "SCHEMA_REGISTRY_BEARER_AUTH_TOKEN"
}

pub(super) fn section<'a>(
    doc: &'a mut toml::Table,
    name: &str,
) -> Result<&'a mut toml::Table, ConfigError> {
    doc.entry(name.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| invalid(name, "must be a table"))
}

/// Environment values are strings; numbers and booleans are typed so that numeric keys
/// such as `batch.max_records` can be overridden.
pub(super) fn scalar(v: &str) -> toml::Value {
    if let Ok(n) = v.parse::<i64>() {
        toml::Value::Integer(n)
    } else if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(v.to_string())
    }
}
