//! Hiding secrets in what policy-push prints: connection strings in every form
//! tokio-postgres accepts, and librdkafka properties that hold secrets.

const REDACTED: &str = "<redacted>";

/// A warehouse connection string with its password hidden, in either form tokio-postgres
/// accepts: a URL (`postgres://user:secret@host/db`, and `password=` among its query
/// parameters) or `key=value` pairs (`host=h password=secret`, `password='a b'`).
pub fn redact_url(conn: &str) -> String {
    match conn.find("://") {
        Some(scheme_end) => redact_uri(conn, scheme_end + 3),
        None => redact_key_values(conn),
    }
}

/// A Schema Registry URL with its user info hidden whole: over HTTP the user part alone
/// may be a token (`https://TOKEN@host`). Everything up to the last `@` before the query
/// is hidden, so a password holding `/` or `@` is too.
pub fn redact_registry_url(url: &str) -> String {
    let Some(rest_at) = url.find("://").map(|i| i + 3) else {
        return redact_url(url);
    };
    let end = url[rest_at..].find('?').map_or(url.len(), |q| rest_at + q);
    match url[rest_at..end].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..rest_at], &url[rest_at + at..]),
        None => url.to_string(),
    }
}

fn redact_uri(url: &str, rest_at: usize) -> String {
    let (before_query, query) = match url[rest_at..].find('?') {
        Some(q) => url.split_at(rest_at + q),
        None => (url, ""),
    };
    let mut out = String::with_capacity(url.len());
    // The user info ends at the last '@' before the query: a password may hold '@'.
    match before_query[rest_at..].rfind('@') {
        Some(at) => {
            let userinfo = &before_query[rest_at..rest_at + at];
            out += &before_query[..rest_at];
            match userinfo.find(':') {
                Some(colon) => {
                    out += &userinfo[..colon];
                    out += ":";
                    out += REDACTED;
                }
                None => out += userinfo,
            }
            out += &before_query[rest_at + at..];
        }
        None => out += before_query,
    }
    if let Some(params) = query.strip_prefix('?') {
        out.push('?');
        let parts: Vec<String> = params
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if is_password_key(k) => format!("{k}={REDACTED}"),
                _ => p.to_string(),
            })
            .collect();
        out += &parts.join("&");
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("password")
}

/// `key=value` pairs, values optionally single-quoted with backslash escapes, as libpq and
/// tokio-postgres read them. Anything after a malformed part is hidden too: a string this
/// function cannot read may still hold a password.
fn redact_key_values(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    loop {
        let trimmed = rest.trim_start();
        out += &rest[..rest.len() - trimmed.len()];
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let Some(eq) = rest.find('=') else {
            out += REDACTED;
            return out;
        };
        let key = &rest[..eq];
        let after_key = &rest[eq + 1..];
        let value_start = after_key.len() - after_key.trim_start().len();
        let value = &after_key[value_start..];
        let Some(len) = value_len(value) else {
            out += key;
            out += "=";
            out += REDACTED;
            return out;
        };
        out += key;
        out += "=";
        out += &after_key[..value_start];
        if is_password_key(key) {
            out += REDACTED;
        } else {
            out += &value[..len];
        }
        rest = &value[len..];
    }
}

/// The byte length of one value: up to the next space, or a quoted string with its
/// quotes. None if a quote is never closed.
fn value_len(value: &str) -> Option<usize> {
    if !value.starts_with('\'') {
        return Some(value.find(char::is_whitespace).unwrap_or(value.len()));
    }
    let mut escaped = false;
    for (i, c) in value.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// librdkafka properties whose values are secrets: every `*password*`, `*passphrase*` and `*secret*`
/// (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`, a key's passphrase,
/// `sasl.oauthbearer.client.secret`), inline private keys and the OAUTHBEARER config,
/// which may embed a token.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("passphrase")
        || k.contains("secret")
        || k.ends_with(".key.pem")
        || k == "sasl.oauthbearer.config"
}

/// A connection string as `check-config` prints it (`serialize_with`).
pub(super) fn write_conn<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// An optional value as `check-config` prints it: `shown` of it, when it is set.
fn write_optional<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
    shown: impl Fn(&str) -> String,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&shown(v)),
        None => s.serialize_none(),
    }
}

/// An optional Schema Registry URL as `check-config` prints it.
pub(super) fn write_registry_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    write_optional(url, s, redact_registry_url)
}

/// An optional connection string as `check-config` prints it.
pub(super) fn write_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    write_optional(url, s, redact_url)
}

/// A secret as `check-config` prints it: that it is set, never its value.
pub(super) fn write_secret<S: serde::Serializer>(
    secret: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    write_optional(secret, s, |_| REDACTED.to_string())
}

/// The `[kafka]` properties with the secret ones hidden.
pub(super) fn write_kafka<S: serde::Serializer>(
    kafka: &std::collections::BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(kafka.iter().map(|(k, v)| {
        let shown = if is_secret_property(k) {
            REDACTED
        } else {
            v.as_str()
        };
        (k, shown)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2";

    fn hidden(conn: &str) -> String {
        let shown = redact_url(conn);
        assert!(!shown.contains(SECRET), "{conn} → {shown}");
        assert!(shown.contains(REDACTED), "{conn} → {shown}");
        shown
    }

    #[test]
    fn passwords_are_hidden_in_every_connection_string_form() {
        assert_eq!(
            hidden("postgres://system:hunter2@db.example:5432/analytics"),
            "postgres://system:<redacted>@db.example:5432/analytics"
        );
        assert_eq!(
            hidden("postgresql://system:hun@ter2@h/db?sslmode=require"),
            "postgresql://system:<redacted>@h/db?sslmode=require"
        );
        hidden("postgres://system:hunter2@h/db");
        assert_eq!(
            hidden("postgres://system@h/db?sslmode=require&password=hunter2&application_name=x"),
            "postgres://system@h/db?sslmode=require&password=<redacted>&application_name=x"
        );
        hidden("postgres://h/db?PASSWORD=hunter2");
        assert_eq!(
            hidden("host=h port=5439 user=system password=hunter2 dbname=db"),
            "host=h port=5439 user=system password=<redacted> dbname=db"
        );
        assert_eq!(
            hidden("host=h password = 'hun ter2 \\' hunter2' dbname=db"),
            "host=h password = <redacted> dbname=db"
        );
        hidden("password='hunter2");
        hidden("host=h password=hunter2");
        hidden("host=h garbage hunter2");
    }

    #[test]
    fn strings_without_passwords_are_unchanged() {
        for s in [
            "postgres://system@h/db",
            "postgres://h/db?sslmode=verify-full",
            "host=h user=system dbname='my db'",
        ] {
            assert_eq!(redact_url(s), s);
        }
    }

    #[test]
    fn a_registry_url_hides_its_whole_user_info() {
        use super::redact_registry_url;
        assert_eq!(
            redact_registry_url("https://TOKEN@registry:8081/x"),
            "https://<redacted>@registry:8081/x"
        );
        assert_eq!(
            redact_registry_url("https://u:p/a@ss@registry"),
            "https://<redacted>@registry"
        );
        assert_eq!(
            redact_registry_url("http://registry:8081"),
            "http://registry:8081"
        );
    }

    #[test]
    fn secret_librdkafka_properties_are_recognised() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.passphrase",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
        for k in ["bootstrap.servers", "sasl.username", "ssl.ca.location"] {
            assert!(!is_secret_property(k), "{k}");
        }
    }
}
