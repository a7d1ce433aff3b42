//! How policy-push reaches a warehouse: TLS as libpq's `sslmode` and `sslrootcert`
//! define it, in the connection string or as integration keys.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and no
//! `sslrootcert`: both are taken out of the connection string here, so that every mode of
//! libpq means what it means there (PostgreSQL manual, "SSL Support", table "SSL Mode
//! Descriptions"): `prefer` and `require` encrypt without checking the certificate
//! (`require` with a root certificate checks it, as libpq does), `verify-ca` checks it
//! against the root certificate, `verify-full` also that it names the host. Without
//! `sslrootcert`, verification uses the system's trust store. libpq's default is `prefer`.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl Tls {
    /// Whether the server's certificate chain is checked.
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }
}

/// A connection string without its TLS parameters, and those parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub rest: String,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string in either form
/// tokio-postgres accepts (a URL with query parameters, or `key=value` pairs).
pub fn split_tls(conn: &str) -> Result<Split, String> {
    if conn.contains("://") {
        Ok(split_uri(conn))
    } else {
        split_key_values(conn)
    }
}

fn split_uri(url: &str) -> Split {
    let mut out = Split {
        rest: url.to_string(),
        sslmode: None,
        sslrootcert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return out;
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => out.sslmode = Some(percent_decode(value)),
            "sslrootcert" => out.sslrootcert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    out.rest = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    out
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key = value` pairs, values optionally single-quoted with backslash escapes.
fn split_key_values(conn: &str) -> Result<Split, String> {
    let mut out = Split {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut chars = conn.char_indices().peekable();
    let mut kept = Vec::new();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("expected '=' after {key:?}"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars)?;
        let end = chars.peek().map_or(conn.len(), |(i, _)| *i);
        match key.as_str() {
            "sslmode" => out.sslmode = Some(value),
            "sslrootcert" => out.sslrootcert = Some(value),
            _ => kept.push(&conn[start..end]),
        }
    }
    out.rest = kept.iter().map(|p| p.trim()).collect::<Vec<_>>().join(" ");
    Ok(out)
}

fn read_value(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, String> {
    let mut value = String::new();
    if chars.next_if(|(_, c)| *c == '\'').is_none() {
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
            value.push(c);
        }
        return Ok(value);
    }
    loop {
        match chars.next() {
            Some((_, '\'')) => return Ok(value),
            Some((_, '\\')) => match chars.next() {
                Some((_, c)) => value.push(c),
                None => return Err("unterminated escape".into()),
            },
            Some((_, c)) => value.push(c),
            None => return Err("unterminated quoted value".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_a_url() {
        let s = split_tls(
            "postgres://u:p@db.example:5439/dev?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            s.rest,
            "postgres://u:p@db.example:5439/dev?application_name=x"
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let s = split_tls("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(s.rest, "postgres://h/db");
        let s = split_tls("postgres://h/db").unwrap();
        assert_eq!((s.rest.as_str(), s.sslmode), ("postgres://h/db", None));
    }

    #[test]
    fn tls_parameters_leave_key_value_pairs() {
        let s = split_tls(
            "host=h sslmode = verify-ca password='a b\\'c' sslrootcert='/x y/ca.pem' dbname=d",
        )
        .unwrap();
        assert_eq!(s.rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/x y/ca.pem"));
        assert!(split_tls("host=h sslmode").is_err());
        assert!(split_tls("host='h").is_err());
    }

    #[test]
    fn require_with_a_root_certificate_verifies_as_libpq_does() {
        let tls = |mode, root: Option<&str>| Tls {
            mode,
            root_cert: root.map(PathBuf::from),
        };
        assert!(!tls(SslMode::Require, None).verifies_chain());
        assert!(tls(SslMode::Require, Some("/ca")).verifies_chain());
        assert!(tls(SslMode::VerifyCa, None).verifies_chain());
        assert!(!tls(SslMode::Prefer, Some("/ca")).verifies_chain());
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(m).map(SslMode::as_str), Some(m));
        }
        assert_eq!(SslMode::parse("allow"), None);
    }
}
