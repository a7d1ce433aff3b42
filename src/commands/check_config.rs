//! `policy-push check-config [--connect]`: the configuration as `run` would take it,
//! printed redacted; with `--connect`, whether each server answers (`reach`). Exit 2 for
//! a configuration `run` would refuse, 1 for a server that cannot be reached.

use crate::error::Chain;
use std::process::ExitCode;

use crate::config::Config;

/// Checks `config` (loaded already; a file that does not load is exit 2 in `cli`).
pub async fn check_config(config: &Config, connect: bool) -> ExitCode {
    if let Err(e) = check_clients(config) {
        eprintln!("{}", Chain(e.as_ref()));
        return ExitCode::from(2);
    }
    match config.effective_toml() {
        Ok(text) => {
            println!("# configuration is valid; as run takes it, secrets redacted:\n{text}")
        }
        Err(e) => {
            eprintln!("the configuration cannot be shown: {}", Chain(&e));
            return ExitCode::from(2);
        }
    }
    if connect && !super::reach::report(config).await {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// What `run` would refuse beyond the configuration's own rules: the librdkafka client
/// configurations, and each warehouse connection's settings and TLS (a root certificate
/// that cannot be read).
fn check_clients(config: &Config) -> anyhow::Result<()> {
    crate::consume::check::client_configs(&crate::pipeline::kafka_config(config))?;
    for i in &config.integrations {
        i.pg_config()?;
        i.setup_config()?;
        let setup = i.setup_url.as_ref().map(|_| ("setup_url", i.setup_tls()));
        for (key, tls) in std::iter::once(("url", i.tls())).chain(setup) {
            let tls = tls?;
            crate::apply::connect::Connector::new(&tls, Default::default()).map_err(|e| {
                anyhow::Error::new(e).context(format!("integration.{}.{key}", i.name))
            })?;
        }
    }
    Ok(())
}
