//! A Confluent Schema Registry client: resolves schema ids to writer schemas, once each.
//!
//! Lookups run on the consumer thread, which is already blocking, so a small blocking
//! HTTP client fits. `https://` uses the system's OpenSSL and trust store, or the root
//! certificates of `ssl_ca_location`; credentials go in an `Authorization` header, basic
//! (Confluent's `basic.auth.user.info`) or bearer.
//!
//! A 404 is the record's fault (an id the registry does not know: poison, dead-lettered).
//! Anything else that fails, a registry that is down, answers 5xx or refuses the
//! credentials, is retried: the record is fine and must not be dead-lettered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;

use super::CodecError;

pub struct Registry {
    base: String,
    agent: ureq::Agent,
    credentials: Credentials,
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

const TIMEOUT: Duration = Duration::from_secs(10);

fn unavailable(e: ureq::Error) -> CodecError {
    let message = match &e {
        ureq::Error::StatusCode(code @ (401 | 403)) => format!(
            "the schema registry refused the credentials (HTTP {code}): check schema_registry.basic_auth_user_info or bearer_auth_token"
        ),
        ureq::Error::StatusCode(code) => format!("the schema registry answered HTTP {code}"),
        _ => "the schema registry cannot be reached".to_string(),
    };
    retryable(message, e)
}

fn retryable(
    message: String,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> CodecError {
    CodecError::RegistryUnavailable {
        message,
        source: Some(source.into()),
    }
}

/// TLS for an `https://` registry: the certificates of `ca` only, or the system's.
fn tls(ca: Option<&std::path::Path>) -> Result<ureq::tls::TlsConfig, CodecError> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let roots = match ca {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let refused =
                |what: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
                    CodecError::RegistryConfig {
                        message: format!(
                            "schema_registry.ssl_ca_location {}: {what}",
                            path.display()
                        ),
                        source,
                    }
                };
            let pem = std::fs::read(path)
                .map_err(|e| refused("cannot read it".into(), Some(e.into())))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                let item = item.map_err(|e| refused("not PEM".into(), Some(e.into())))?;
                if let PemItem::Certificate(c) = item {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err(refused("no certificate in the file".into(), None));
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        .root_certs(roots)
        .build())
}

/// How requests authenticate. The `_file` forms are read for every request: requests are
/// rare (one per schema id), and a rotated secret is then used without a restart.
enum Credentials {
    None,
    Header(String),
    BasicFile(std::path::PathBuf),
    BearerFile(std::path::PathBuf),
}

impl Credentials {
    fn header(&self) -> Result<Option<String>, CodecError> {
        let read = |path: &std::path::Path| {
            crate::config::secrets::read_file(path)
                .map_err(|e| retryable("its credentials cannot be read".into(), e))
        };
        Ok(match self {
            Credentials::None => None,
            Credentials::Header(h) => Some(h.clone()),
            Credentials::BasicFile(path) => Some(basic(&read(path)?)),
            Credentials::BearerFile(path) => Some(format!("Bearer {}", read(path)?)),
        })
    }
}

fn basic(user_info: &str) -> String {
    format!("Basic {}", base64(user_info.as_bytes()))
}

/// Standard base64 with padding, for the basic auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Registry {
    /// A registry at a plain `http://` URL without credentials.
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Registry {
            base: url.trim_end_matches('/').to_string(),
            agent,
            credentials: Credentials::None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The registry `settings` describe, if they name one.
    pub fn from_settings(
        settings: &crate::config::SchemaRegistrySettings,
    ) -> Result<Option<Self>, CodecError> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let mut config = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT));
        if url.starts_with("https://") {
            config = config.tls_config(tls(settings.ssl_ca_location.as_deref())?);
        }
        let s = settings;
        let credentials = if let Some(info) = &s.basic_auth_user_info {
            Credentials::Header(basic(info))
        } else if let Some(token) = &s.bearer_auth_token {
            Credentials::Header(format!("Bearer {token}"))
        } else if let Some(path) = &s.basic_auth_user_info_file {
            Credentials::BasicFile(path.clone())
        } else if let Some(path) = &s.bearer_auth_token_file {
            Credentials::BearerFile(path.clone())
        } else {
            Credentials::None
        };
        Ok(Some(Registry {
            base: url.trim_end_matches('/').to_string(),
            agent: config.build().into(),
            credentials,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    fn get(
        &self,
        path: &str,
        authorization: Option<String>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = authorization {
            request = request.header("Authorization", auth);
        }
        request.call()
    }

    /// Whether the registry answers (`check-config --connect`).
    pub fn ping(&self) -> Result<(), CodecError> {
        self.get("/subjects", self.credentials.header()?)
            .map(|_| ())
            .map_err(unavailable)
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
        let mut resp = match self.get(&format!("/schemas/ids/{id}"), self.credentials.header()?) {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) => return Err(CodecError::UnknownSchemaId(id)),
            Err(e) => return Err(unavailable(e)),
        };
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| retryable(format!("unreadable answer for id {id}"), e))?;
        let body: SchemaById = serde_json::from_str(&text)
            .map_err(|e| retryable(format!("unexpected answer for id {id}"), e))?;
        if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(CodecError::UnknownSchemaId(id));
        }
        let schema = Schema::parse_str(&body.schema)
            .map_err(|source| CodecError::RegistrySchema { id, source })?;
        Ok(self.remember(id, schema))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pa:ss", "dXNlcjpwYTpzcw=="),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
