//! policy-push's own HTTP server, read as an operator's tools would.

/// GET `path` from a local policy-push HTTP server; returns (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    policy_push::telemetry::http_get(&format!("127.0.0.1:{port}"), path)
        .await
        .ok()
}

/// `/health` as JSON; null when it cannot be read.
pub async fn health_json(port: u16) -> serde_json::Value {
    let (_, body) = http_get(port, "/health").await.unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_default()
}

/// The values of every `/metrics` series whose line starts with `prefix` (none when
/// the server cannot be read).
pub async fn metric_values(port: u16, prefix: &str) -> Vec<f64> {
    let (_, body) = http_get(port, "/metrics").await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

/// The sum of those series.
pub async fn metric_sum(port: u16, prefix: &str) -> f64 {
    metric_values(port, prefix).await.iter().sum()
}

/// An integration's state on `/health` (`healthy`, `failing`, ...); empty when unknown.
pub async fn health_state(port: u16, integration: &str) -> String {
    health_json(port).await["integrations"][integration]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
