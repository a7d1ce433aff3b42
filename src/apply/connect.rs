//! Connections to the warehouse: TLS by libpq's `sslmode` (`config::warehouse`), and the
//! password read again for each new connection (`config::secrets`).
//!
//! OpenSSL is the one Debian ships (libssl-dev), already linked for librdkafka.

use crate::error::Chain;
use std::sync::{Arc, Mutex};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;

use crate::config::secrets::Source;
use crate::config::{SslMode, Tls};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS setup: {what}")]
    Tls {
        what: String,
        source: openssl::error::ErrorStack,
    },
    #[error(transparent)]
    Secret(#[from] crate::config::secrets::SecretError),
    /// `tls` says what the TLS settings make of a refused certificate (`explain`).
    #[error("cannot connect to the warehouse{}", .tls.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        tls: Option<String>,
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The connection was made, but its session could not be set up (`PIN_SEARCH_PATH`).
    #[error("the warehouse refused the session's search_path")]
    Session(#[source] tokio_postgres::Error),
}

/// Every session policy-push opens resolves names in the system catalog only. Where
/// PUBLIC may create objects (the `public` schema on Redshift, and on PostgreSQL before
/// 15 or after an upgrade from it), an analyst's `public.&&(text[], text[])` or
/// `public.convert_to(text, text)` matches the arguments of a view or procedure statement
/// better than the built-in and would be bound into what policy-push creates; with only
/// `pg_catalog` on the path (the session's own temporary schema, which nobody else can
/// write, aside) nothing of theirs can be. Every object of policy-push's own is named
/// with its schema. A URL's `options=-c search_path=…` is overridden too.
pub const PIN_SEARCH_PATH: &str = "SET search_path TO pg_catalog";

async fn pin_search_path(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(PIN_SEARCH_PATH).await
}

/// One connection as the integration's system account (`url`), outside the pool.
pub async fn system_client(
    integration: &crate::config::Integration,
) -> Result<tokio_postgres::Client, ConnectError> {
    let connector = Connector::new(&integration.tls()?, integration.password_source.clone())?;
    connector.client(&integration.pg_config()?).await
}

/// One connection as the setup user (`setup_url`, or `url` without one).
pub async fn setup_client(
    integration: &crate::config::Integration,
) -> Result<tokio_postgres::Client, ConnectError> {
    let source = match integration.setup_url {
        Some(_) => Source::Fixed,
        None => integration.password_source.clone(),
    };
    let connector = Connector::new(&integration.setup_tls()?, source)?;
    connector.client(&integration.setup_config()?).await
}

/// Makes warehouse connections with one integration's TLS settings, and remembers why
/// the last certificate it refused was refused (OpenSSL's handshake error does not say).
#[derive(Clone)]
pub struct Connector {
    make: MakeTlsConnector,
    tls: Tls,
    refusal: Arc<Mutex<Option<String>>>,
    source: Source,
}

impl Connector {
    pub fn new(tls: &Tls, source: Source) -> Result<Self, ConnectError> {
        let ssl = |source| ConnectError::Tls {
            what: "the TLS client".into(),
            source,
        };
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(ssl)?;
        if let Some(root) = &tls.root_cert {
            builder
                .set_ca_file(root)
                .map_err(|source| ConnectError::Tls {
                    what: format!("sslrootcert {}", root.display()),
                    source,
                })?;
        }
        let verify = tls.verifies_chain();
        if !verify {
            builder.set_verify(SslVerifyMode::NONE);
        }
        let mut make = MakeTlsConnector::new(builder.build());
        let refusal = Arc::new(Mutex::new(None));
        let check_host = tls.mode == SslMode::VerifyFull;
        let slot = refusal.clone();
        make.set_callback(move |config, _domain| {
            config.set_verify_hostname(check_host);
            if verify {
                let slot = slot.clone();
                config.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
                    if !ok {
                        let reason = ctx.error().error_string().to_string();
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(reason);
                        }
                    }
                    ok
                });
            }
            Ok(())
        });
        Ok(Connector {
            make,
            tls: tls.clone(),
            refusal,
            source,
        })
    }

    /// Connects with `cfg`, its password replaced by the source's current one.
    pub async fn connect(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                postgres_openssl::TlsStream<tokio_postgres::Socket>,
            >,
        ),
        ConnectError,
    > {
        let cfg = self.with_password(cfg).await?;
        cfg.connect(self.make.clone())
            .await
            .map_err(|source| ConnectError::Refused {
                tls: self.explain(&cfg),
                source,
            })
    }

    /// `cfg` with the source's current password, if it supplies one.
    async fn with_password(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Config, crate::config::secrets::SecretError> {
        let mut cfg = cfg.clone();
        if let Some(password) = self.source.password().await? {
            cfg.password(password);
        }
        Ok(cfg)
    }

    /// Connects, drives the connection on its own task and pins its search_path.
    pub async fn client(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let (client, connection) = self.connect(cfg).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        pin_search_path(&client)
            .await
            .map_err(ConnectError::Session)?;
        Ok(client)
    }

    /// What the TLS settings make of the connection that just failed: a refused
    /// certificate says why and what the mode checks.
    pub fn explain(&self, cfg: &tokio_postgres::Config) -> Option<String> {
        let reason = self.refusal.lock().ok().and_then(|mut s| s.take())?;
        let host = cfg
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        let trust = match &self.tls.root_cert {
            Some(p) => format!("sslrootcert {}", p.display()),
            None => "the system's trust store (set sslrootcert)".into(),
        };
        let what = match self.tls.mode {
            SslMode::VerifyFull => format!("signed by {trust} and names the host {host}"),
            _ => format!("signed by {trust}"),
        };
        Some(format!(
                "the warehouse's TLS certificate was refused: {reason}; sslmode={} checks that it is {what}",
                self.tls.mode.as_str()
            ))
    }
}

/// An error with its sources, which tokio-postgres's own message leaves out.
impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> futures::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let cfg = cfg.clone();
        Box::pin(async move {
            // The password last read stays in `cfg`; the connection says if it fails.
            let cfg = self.with_password(&cfg).await.unwrap_or_else(|e| {
                tracing::warn!(error = %Chain(&e), "cannot read the warehouse password again; using the last one");
                cfg.clone()
            });
            // The pool's caller reports a failure, with `explain`.
            let (client, connection) = cfg.connect(self.make.clone()).await?;
            let handle = tokio::spawn(async move {
                let _ = connection.await;
            });
            pin_search_path(&client).await?;
            Ok((client, handle))
        })
    }
}
