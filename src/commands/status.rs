//! `policy-push status`: the /health of the running instance, as an HTTP probe sees it;
//! exit 1 when it is failing. On a terminal a table (integration, state, lag, last
//! commit, hint, and under a row each error and condition); the JSON itself with
//! `--json` or when the output is not a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::commands::table;
use crate::commands::timestamp::format_ms;
use crate::config::Config;

const HEADER: [&str; 5] = ["INTEGRATION", "STATE", "LAG", "LAST COMMIT", "HINT"];

/// Reads /health from the instance serving `[http] listen`, so that the answer is the
/// same JSON an HTTP probe sees.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let listen = &config.http.listen;
    anyhow::ensure!(
        !listen.is_empty(),
        "status reads /health from a running instance, but [http] listen is empty"
    );
    let (code, body) = crate::telemetry::http_get(listen, "/health")
        .await
        .with_context(|| format!("no policy-push instance answers at {listen}: is `policy-push run` running with this config?"))?;
    anyhow::ensure!(code == 200, "{listen}/health answered HTTP {code}");
    let report: Value = serde_json::from_str(&body).context("/health did not return JSON")?;
    if json || !std::io::stdout().is_terminal() {
        println!("{body}");
    } else {
        print!("{}", render(&report, crate::telemetry::epoch_ms()));
    }
    Ok(if report["status"] == "failing" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report as a table, times against `now_ms`.
fn render(report: &Value, now_ms: i64) -> String {
    let mut out = format!("status: {}\n", text(&report["status"]));
    let empty = serde_json::Map::new();
    let integrations = report["integrations"].as_object().unwrap_or(&empty);
    let rows: Vec<[String; 5]> = integrations
        .iter()
        .map(|(name, h)| {
            [
                name.clone(),
                text(&h["state"]),
                lag(h),
                last_commit(h, now_ms),
                text(&h["hint"]),
            ]
        })
        .collect();
    let rendered = table::render(HEADER, &rows);
    let mut lines = rendered.lines();
    if let Some(header) = lines.next() {
        out += &format!(
            "{header}
"
        );
    }
    for (line, h) in lines.zip(integrations.values()) {
        out += &format!("{line}\n{}", details(h));
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str().map_or("-".into(), String::from)
}

fn lag(h: &Value) -> String {
    match (h["lag"].as_i64(), h["lag_unknown"].as_str()) {
        (Some(n), _) => n.to_string(),
        (None, Some(_)) => "unknown".into(),
        (None, None) => "-".into(),
    }
}

fn last_commit(h: &Value, now_ms: i64) -> String {
    match h["last_applied_unix_ms"].as_i64() {
        Some(at) => format!("{} ({} s ago)", format_ms(at), (now_ms - at).max(0) / 1000),
        None => "never".into(),
    }
}

/// What a person must read beyond the row: the last error, each condition, and why the
/// lag is unknown.
fn details(h: &Value) -> String {
    let mut out = String::new();
    if h["state"] != "healthy" {
        if let Some(e) = h["last_error"].as_str() {
            out += &format!("  error: {e}\n");
        }
    }
    if let Some(why) = h["lag_unknown"].as_str() {
        out += &format!("  lag unknown: {why}\n");
    }
    for (subject, c) in h["conditions"].as_object().into_iter().flatten() {
        out += &format!(
            "  {} {subject}: {}\n    hint: {}\n",
            text(&c["severity"]),
            text(&c["error"]),
            text(&c["hint"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn the_table_says_state_lag_last_commit_and_hint_at_a_glance() {
        let report = serde_json::json!({
            "status": "failing",
            "integrations": {
                "east": {"state": "healthy", "lag": 0, "last_applied_unix_ms": 1_700_000_000_000_i64,
                         "hint": null, "last_error": "old", "conditions": {}},
                "west": {"state": "failing", "lag": null, "lag_unknown": "broker down",
                         "last_applied_unix_ms": null, "hint": "check the warehouse",
                         "last_error": "warehouse error: ERROR 42501: permission denied",
                         "conditions": {"topic t": {"severity": "degraded", "error": "not compacted", "hint": "compact it"}}}
            }
        });
        let text = render(&report, 1_700_000_012_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "status: failing");
        assert!(lines[1].starts_with("INTEGRATION  STATE    LAG"), "{text}");
        assert!(lines[2].starts_with("east         healthy  0"), "{text}");
        assert!(
            lines[2].contains("2023-11-14T22:13:20.000Z (12 s ago)"),
            "{text}"
        );
        assert!(
            !text.contains("old"),
            "a healthy row shows no past error: {text}"
        );
        assert!(
            text.contains("west         failing  unknown  never"),
            "{text}"
        );
        assert!(
            text.contains("  error: warehouse error: ERROR 42501"),
            "{text}"
        );
        assert!(
            text.contains("  degraded topic t: not compacted\n    hint: compact it"),
            "{text}"
        );
    }
}
