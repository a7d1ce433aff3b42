//! A Confluent Schema Registry client: resolves schema ids to writer schemas, once each.
//!
//! Lookups run on the consumer thread, which is already blocking, so a small blocking
//! HTTP client fits. Only `http://` URLs are supported for now (no TLS in the build);
//! put a TLS-terminating sidecar in front of an `https://` registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;

use super::CodecError;

pub struct Registry {
    base: String,
    agent: ureq::Agent,
    cache: Mutex<HashMap<u32, Arc<Schema>>>,
}

#[derive(serde::Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

impl Registry {
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Registry {
            base: url.trim_end_matches('/').to_string(),
            agent,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.cache.lock().ok().and_then(|c| c.get(&id).cloned())
    }

    /// The writer schema for `id`. Transport failures are retryable; a 404 or a
    /// non-Avro schema is poison for the record that named it.
    pub fn schema(&self, id: u32) -> Result<Arc<Schema>, CodecError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) => return Err(CodecError::UnknownSchemaId(id)),
            Err(e) => return Err(CodecError::RegistryUnavailable(e.to_string())),
        };
        let text = resp.body_mut().read_to_string().map_err(|e| {
            CodecError::RegistryUnavailable(format!("unreadable answer for id {id}: {e}"))
        })?;
        let body: SchemaById = serde_json::from_str(&text).map_err(|e| {
            CodecError::RegistryUnavailable(format!("unexpected answer for id {id}: {e}"))
        })?;
        if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(CodecError::UnknownSchemaId(id));
        }
        let schema = Arc::new(
            Schema::parse_str(&body.schema).map_err(|e| CodecError::Datum(e.to_string()))?,
        );
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, schema.clone());
        }
        Ok(schema)
    }
}
