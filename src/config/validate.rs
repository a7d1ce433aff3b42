//! The rules a configuration must meet beyond its types; each names the offending key.

use super::integration::{Dialect, Integration};
use super::sections::GAUGE_IDLE;
use super::{invalid, secrets, unusable, Config, ConfigError};

impl Config {
    fn validate_registry(&self) -> Result<(), ConfigError> {
        let r = &self.schema_registry;
        let Some(url) = &r.url else {
            return Ok(());
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(invalid(
                "schema_registry.url",
                "must be http:// or https://",
            ));
        }
        if r.ssl_ca_location.is_some() && !url.starts_with("https://") {
            return Err(invalid(
                "schema_registry.ssl_ca_location",
                "needs an https:// url",
            ));
        }
        let ways = [
            r.basic_auth_user_info.is_some(),
            r.bearer_auth_token.is_some(),
            r.basic_auth_user_info_file.is_some(),
            r.bearer_auth_token_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(invalid(
                "schema_registry",
                "set one of basic_auth_user_info, bearer_auth_token and their _file forms",
            ));
        }
        for path in [&r.basic_auth_user_info_file, &r.bearer_auth_token_file]
            .into_iter()
            .flatten()
        {
            secrets::read_file(path).map_err(|e| unusable("schema_registry", e))?;
        }
        if r.basic_auth_user_info
            .as_ref()
            .is_some_and(|u| !u.contains(':'))
        {
            return Err(invalid(
                "schema_registry.basic_auth_user_info",
                "must be user:password",
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.topics;
        for (key, v) in [
            ("topics.profiles", &t.profiles),
            ("topics.data_sources", &t.data_sources),
            ("topics.policies", &t.policies),
            ("topics.impersonation", &t.impersonation),
            ("topics.dead_letter", &t.dead_letter),
        ] {
            if v.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        let mut inputs = t.inputs().to_vec();
        inputs.push(&t.dead_letter);
        inputs.sort();
        if inputs.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("topics", "every topic must be distinct"));
        }
        if self.consumer.group_prefix.is_empty() {
            return Err(invalid("consumer.group_prefix", "must not be empty"));
        }
        if self.consumer.channel_capacity == 0 {
            return Err(invalid("consumer.channel_capacity", "must be at least 1"));
        }
        if !(1..=16).contains(&self.batch.lanes) {
            return Err(invalid("batch.lanes", "must be between 1 and 16"));
        }
        if self.batch.max_definitions == 0 {
            return Err(invalid("batch.max_definitions", "must be at least 1"));
        }
        if self.batch.max_records == 0 {
            return Err(invalid("batch.max_records", "must be at least 1"));
        }
        if self.http.lag_refresh.is_zero() || self.http.lag_refresh >= GAUGE_IDLE {
            return Err(invalid(
                "http.lag_refresh_ms",
                "must be between 1 and 29999",
            ));
        }
        if self.http.failing_after.is_zero() {
            return Err(invalid("http.failing_after_ms", "must be at least 1"));
        }
        if self.batch.apply_timeout.is_zero() {
            return Err(invalid("batch.apply_timeout_ms", "must be at least 1"));
        }
        if self.batch.max_bytes == 0 {
            return Err(invalid("batch.max_bytes", "must be at least 1"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                "must be host:port, e.g. 127.0.0.1:9464",
            ));
        }
        self.validate_registry()?;
        if self.integrations.is_empty() {
            return Err(invalid(
                "integration",
                "at least one [[integration]] is required",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for i in &self.integrations {
            self.validate_integration(i)?;
            if !names.insert(&i.name) {
                return Err(invalid(
                    format!("integration.{}.name", i.name),
                    "names must be unique",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn validate_integration(&self, i: &Integration) -> Result<(), ConfigError> {
        let key = |k: &str| format!("integration.{}.{k}", i.name);
        if i.name.is_empty()
            || !i
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "integration.name",
                format!("{:?}: use letters, digits, - and _", i.name),
            ));
        }
        if i.host.is_empty() {
            return Err(invalid(key("host"), "must not be empty"));
        }
        crate::event::identifier(&key("view_schema"), &i.view_schema)
            .map_err(|e| invalid(key("view_schema"), e.to_string()))?;
        crate::event::identifier(&key("impersonator_role"), &i.impersonator_role)
            .map_err(|e| invalid(key("impersonator_role"), e.to_string()))?;
        if i.view_schema.starts_with("immuta_") {
            return Err(invalid(
                key("view_schema"),
                "the immuta_* schemas are reserved for the integration",
            ));
        }
        // One connection per lane, plus one for reading offsets at assignment.
        if i.pool_size < self.batch.lanes + 1 {
            return Err(invalid(
                key("pool_size"),
                format!(
                    "must be at least batch.lanes + 1 ({})",
                    self.batch.lanes + 1
                ),
            ));
        }
        if i.dialect == Dialect::Redshift && i.synchronous_commit.is_some() {
            return Err(invalid(
                key("synchronous_commit"),
                "Redshift has no synchronous_commit; remove the key",
            ));
        }
        if i.dialect == Dialect::Redshift && i.terminate_blockers_after.is_some() {
            return Err(invalid(
                key("terminate_blockers_after_ms"),
                "Redshift lets only a superuser end another user's session (PG_TERMINATE_BACKEND); remove the key",
            ));
        }
        if i.max_stored_bytes.is_some_and(|b| b < 256) {
            return Err(invalid(key("max_stored_bytes"), "must be at least 256"));
        }
        if let Some(salt) = &i.hash_salt {
            // A short salt could be found by hashing a value the analyst knows; Redshift
            // stores it as varchar(1024).
            if !(MIN_SALT..=MAX_SALT).contains(&salt.len()) || salt.contains('\0') {
                return Err(invalid(
                    key("hash_salt"),
                    format!("must be {MIN_SALT} to {MAX_SALT} bytes without NUL (POLICY_PUSH_INTEGRATION_<NAME>_HASH_SALT)"),
                ));
            }
        }
        i.database()?;
        Ok(())
    }
}

/// Bounds of a HASH salt, in bytes.
const MIN_SALT: usize = 16;
const MAX_SALT: usize = 1024;
