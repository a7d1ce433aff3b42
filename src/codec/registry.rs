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
    cache: Mutex<HashMap<u32, Arc<Registered>>>,
}

/// A writer schema from the registry, with its fingerprint computed once: a schema
/// identical to the reader's lets the codec skip resolution.
pub struct Registered {
    pub schema: Schema,
    pub fingerprint: [u8; 8],
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

    fn cached(&self, id: u32) -> Option<Arc<Registered>> {
        self.cache.lock().ok().and_then(|c| c.get(&id).cloned())
    }

    fn remember(&self, id: u32, schema: Schema) -> Arc<Registered> {
        let registered = Arc::new(Registered {
            fingerprint: super::fingerprint(&schema),
            schema,
        });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, registered.clone());
        }
        registered
    }

    /// Makes `id` known without asking the registry (benchmarks, tests).
    #[doc(hidden)]
    pub fn preload(&self, id: u32, schema: Schema) {
        self.remember(id, schema);
    }

    /// The writer schema for `id`. Transport failures are retryable; a 404 or a
    /// non-Avro schema is poison for the record that named it.
    pub fn schema(&self, id: u32) -> Result<Arc<Registered>, CodecError> {
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
        let schema =
            Schema::parse_str(&body.schema).map_err(|e| CodecError::Datum(e.to_string()))?;
        Ok(self.remember(id, schema))
    }
}
