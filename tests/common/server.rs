//! A PostgreSQL server of a test's own, on a free port in a temporary directory, for
//! setups the machine's server does not have (TLS only, other authentication) or faults
//! a shared server must not suffer (frozen with SIGSTOP). Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tls::run;
use super::{connect, free_tcp_port, unique};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// `program` of the server's binaries, run as the `postgres` OS user.
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", &format!("{BIN}/{program}")]);
    c
}

pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts a server. `prepare` gets the (empty) directory before `initdb` and returns
    /// lines for postgresql.conf and, if any, the whole pg_hba.conf.
    pub fn start(prepare: impl FnOnce(&Path) -> (String, Option<String>)) -> Server {
        let dir = std::env::temp_dir().join(unique("pp_server"));
        std::fs::create_dir_all(&dir).unwrap();
        let (conf, hba) = prepare(&dir);
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir));
        let data = dir.join("data");
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        let port = free_tcp_port();
        let mut pg_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        pg_conf += &format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}",
            dir.display()
        );
        std::fs::write(data.join("postgresql.conf"), pg_conf).unwrap();
        if let Some(hba) = hba {
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        run(as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(dir.join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Server { dir, port }
    }

    /// The superuser over the socket, for setting up and looking.
    pub async fn admin(&self, db: &str) -> tokio_postgres::Client {
        connect(&format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.display(),
            self.port
        ))
        .await
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the postmaster and every backend.
    pub fn signal(&self, signal: &str) {
        let pidfile =
            std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap_or_default();
        let Some(postmaster) = pidfile.lines().next().map(str::trim) else {
            return;
        };
        let children = Command::new("pgrep").args(["-P", postmaster]).output();
        let children = children
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for pid in std::iter::once(postmaster).chain(children.split_whitespace()) {
            let _ = Command::new("kill").args([signal, pid]).status();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
