//! Certificates made for one test run with the openssl command: a CA, and a server
//! certificate for `localhost` signed by it.

use std::path::Path;
use std::process::Command;

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A self-signed CA, `<ca>.pem` with its key `<ca>.key`.
pub fn certificates(dir: &Path, ca: &str) {
    let subject = format!("/CN=policy-push test CA {ca}");
    let (key, cert) = (format!("{ca}.key"), format!("{ca}.pem"));
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &cert,
        ],
    );
}

pub fn server_certificate(dir: &Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// A directory with a CA `ca`, another CA `other_ca`, and a certificate for `localhost`
/// signed by `ca` (`server.pem`, `server.key`).
pub fn pki() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(super::unique("pp_pki"));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, "ca");
    certificates(&dir, "other_ca");
    server_certificate(&dir);
    dir
}

/// A TLS server with the certificate of [`pki`].
pub fn acceptor(dir: &Path) -> openssl::ssl::SslAcceptor {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut acceptor = SslAcceptor::mozilla_intermediate(SslMethod::tls()).unwrap();
    acceptor
        .set_private_key_file(dir.join("server.key"), SslFiletype::PEM)
        .unwrap();
    acceptor
        .set_certificate_chain_file(dir.join("server.pem"))
        .unwrap();
    acceptor.build()
}
