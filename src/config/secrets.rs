//! Where a warehouse password comes from when it is not in the URL, read again for each
//! new connection so that a rotated secret is picked up without a restart:
//! - `POLICY_PUSH_INTEGRATION_<NAME>_PASSWORD_FILE` (and `..._SETUP_PASSWORD_FILE`): a file,
//!   as Docker and Kubernetes mount secrets; one trailing newline is not part of it;
//! - `password_command`: a command run with `sh -c` whose standard output is the password
//!   (AWS's `redshift get-cluster-credentials` issues temporary ones; README, "Secrets").
//!
//! Any other `POLICY_PUSH_..._FILE` variable (a Kafka or registry secret) is read once at
//! start: librdkafka reconnects on its own with the settings it was given.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// In the URL, in `..._PASSWORD`, or none.
    #[default]
    Fixed,
    File(PathBuf),
    Command(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the password file {path}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("password_command failed: {0}")]
    Command(String),
    #[error("password_command failed: {what}")]
    CommandIo {
        what: &'static str,
        source: std::io::Error,
    },
}

/// How long `password_command` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest secret read from a file or a command.
const MAX_SECRET: u64 = 64 * 1024;

/// Reads a secret file: its contents without one trailing newline.
pub fn read_file(path: &Path) -> Result<String, SecretError> {
    use std::io::Read;
    let err = |source| SecretError::File {
        path: path.display().to_string(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_SECRET)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(strip_newline(text))
}

fn strip_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

impl Source {
    /// The password for a new connection, if this source supplies one.
    pub async fn password(&self) -> Result<Option<String>, SecretError> {
        match self {
            Source::Fixed => Ok(None),
            Source::File(path) => read_file(path).map(Some),
            Source::Command(cmd) => run(cmd).await.map(Some),
        }
    }
}

async fn run(cmd: &str) -> Result<String, SecretError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SecretError::CommandIo {
            what: "cannot start sh",
            source,
        })?;
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SecretError::Command(format!("no answer within {COMMAND_TIMEOUT:?}")))?
        .map_err(|source| SecretError::CommandIo {
            what: "cannot read its output",
            source,
        })?;
    if !out.status.success() {
        // Its error output may help, but is capped: it is not ours to print in full.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first: String = stderr
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(SecretError::Command(format!("{}: {first}", out.status)));
    }
    if out.stdout.len() as u64 > MAX_SECRET {
        return Err(SecretError::Command(
            "its output is too long for a password".into(),
        ));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| SecretError::Command("its output is not UTF-8".into()))?;
    Ok(strip_newline(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_read_again_each_time() {
        let dir = std::env::temp_dir().join(format!("pp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "first\n").unwrap();
        let source = Source::File(path.clone());
        assert_eq!(source.password().await.unwrap().as_deref(), Some("first"));
        std::fs::write(&path, "second").unwrap();
        assert_eq!(source.password().await.unwrap().as_deref(), Some("second"));
        std::fs::remove_file(&path).unwrap();
        let err = source.password().await.unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("cannot read the password file"), "{err}");
    }

    #[tokio::test]
    async fn a_command_prints_the_password() {
        let ok = Source::Command("printf 'tok\\n'".into());
        assert_eq!(ok.password().await.unwrap().as_deref(), Some("tok"));
        let failing = Source::Command("echo denied >&2; exit 3".into());
        let err = failing.password().await.unwrap_err().to_string();
        assert!(err.contains("denied") && err.contains('3'), "{err}");
        assert_eq!(Source::Fixed.password().await.unwrap(), None);
    }

    #[test]
    fn file_variables_reach_the_config() {
        let dir = std::env::temp_dir().join(format!("pp-secret-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (warehouse, kafka) = (dir.join("warehouse"), dir.join("kafka"));
        std::fs::write(&warehouse, "w-secret\n").unwrap();
        std::fs::write(&kafka, "k-secret\n").unwrap();
        let text = "[kafka]\n\"bootstrap.servers\" = \"b:9092\"\n[[integration]]\nname = \"main\"\nhost = \"h\"\nurl = \"postgres://u@h/db\"\n";
        let env = |pairs: &[(&str, &std::path::Path)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.display().to_string()))
                .collect::<Vec<_>>()
        };
        let config = crate::config::Config::from_toml(
            text,
            env(&[
                ("POLICY_PUSH_INTEGRATION_MAIN_PASSWORD_FILE", &warehouse),
                ("POLICY_PUSH_KAFKA_SASL_PASSWORD_FILE", &kafka),
            ]),
        )
        .unwrap();
        let i = &config.integrations[0];
        assert_eq!(i.password.as_deref(), Some("w-secret"));
        assert_eq!(i.password_source, Source::File(warehouse.clone()));
        assert_eq!(
            config.kafka.get("sasl.password").map(String::as_str),
            Some("k-secret")
        );

        let registry = format!("{text}[schema_registry]\nurl = \"https://r:8081\"\n");
        let config = crate::config::Config::from_toml(
            &registry,
            env(&[("POLICY_PUSH_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE", &kafka)]),
        )
        .unwrap();
        let r = &config.schema_registry;
        assert_eq!(r.bearer_auth_token_file.as_deref(), Some(kafka.as_path()));
        assert_eq!(
            r.bearer_auth_token, None,
            "kept as a path, read per request"
        );

        let missing = dir.join("missing");
        let err = crate::error::chain(
            &crate::config::Config::from_toml(
                text,
                env(&[("POLICY_PUSH_INTEGRATION_MAIN_PASSWORD_FILE", &missing)]),
            )
            .unwrap_err(),
        );
        assert!(
            err.contains("integration.main.password_file") && err.contains("missing"),
            "{err}"
        );
        let with_command = format!("{text}password_command = \"echo x\"\n");
        let config = crate::config::Config::from_toml(&with_command, Vec::new()).unwrap();
        assert_eq!(
            config.integrations[0].password_source,
            Source::Command("echo x".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
