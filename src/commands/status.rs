//! `policy-push status`: the /health of the running instance, as an HTTP probe sees it;
//! exit 1 when it is failing.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;

/// Reads /health from the instance serving `[http] listen`, so that the answer is the
/// same JSON an HTTP probe sees.
pub async fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let listen = &config.http.listen;
    anyhow::ensure!(
        !listen.is_empty(),
        "status reads /health from a running instance, but [http] listen is empty"
    );
    let (code, body) = crate::telemetry::http_get(listen, "/health")
        .await
        .with_context(|| format!("no policy-push instance answers at {listen}: is `policy-push run` running with this config?"))?;
    anyhow::ensure!(code == 200, "{listen}/health answered HTTP {code}");
    println!("{body}");
    let report: serde_json::Value =
        serde_json::from_str(&body).context("/health did not return JSON")?;
    Ok(if report["status"] == "failing" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
