//! Every golden file of the Redshift dialect against the Amazon Redshift Database
//! Developer Guide: the rules docs/redshift.md cites, checked statically (nobody here can
//! reach a cluster).

use std::path::Path;

/// Amazon Redshift reserved words (Database Developer Guide, r_pg_keywords).
const RESERVED: &str = "AES128 AES256 ALL ALLOWOVERWRITE ANALYSE ANALYZE AND ANY ARRAY AS ASC AUTHORIZATION AZ64 \
BACKUP BETWEEN BINARY BLANKSASNULL BOTH BYTEDICT BZIP2 CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CREDENTIALS \
CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURRENT_USER_ID DEFAULT DEFERRABLE DEFLATE DEFRAG \
DELTA DELTA32K DESC DISABLE DISTINCT DO ELSE EMPTYASNULL ENABLE ENCODE ENCRYPT ENCRYPTION END EXCEPT EXPLICIT FALSE \
FOR FOREIGN FREEZE FROM FULL GLOBALDICT256 GLOBALDICT64K GRANT GROUP GZIP HAVING IDENTITY IGNORE ILIKE IN INITIALLY \
INNER INTERSECT INTERVAL INTO IS ISNULL JOIN LEADING LEFT LIKE LIMIT LOCALTIME LOCALTIMESTAMP LUN LUNS LZO LZOP MINUS \
MOSTLY16 MOSTLY32 MOSTLY8 NATURAL NEW NOT NOTNULL NULL NULLS OFF OFFLINE OFFSET OID OLD ON ONLY OPEN OR ORDER OUTER \
OVERLAPS PARALLEL PARTITION PERCENT PERMISSIONS PIVOT PLACING PRIMARY RAW READRATIO RECOVER REFERENCES REJECTLOG \
RESORT RESPECT RESTORE RIGHT SELECT SESSION_USER SIMILAR SNAPSHOT SOME SYSDATE SYSTEM TABLE TAG TDES TEXT255 TEXT32K \
THEN TIMESTAMP TO TOP TRAILING TRUE TRUNCATECOLUMNS UNION UNIQUE UNNEST UNPIVOT USER USING VERBOSE WALLET WHEN WHERE \
WITH WITHOUT";

/// Functions that run only on the leader node and fail on user tables
/// (c_SQL_functions_leader_node_only).
const LEADER_ONLY: [&str; 6] = [
    "now(",
    "age(",
    "current_schemas(",
    "isfinite(",
    "to_ascii(",
    "timeofday(",
];

/// PostgreSQL features Redshift lacks (c_unsupported-postgresql-features and
/// c_unsupported-postgresql-functions, c_unsupported-postgresql-datatypes).
const UNSUPPORTED: [&str; 8] = [
    "on conflict",
    "jsonb",
    "text[]",
    "savepoint",
    "do $",
    "security_barrier",
    "generate_series(",
    "with ordinality",
];

/// The SQL of a golden file without `--` comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Column names declared in the CREATE TABLE statements.
fn columns(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for table in sql.split("CREATE TABLE").skip(1) {
        let Some(open) = table.find('(') else {
            continue;
        };
        let mut depth = 0;
        let mut body = String::new();
        for c in table[open + 1..].chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 && c == ',' {
                body.push('\n');
            } else {
                body.push(c);
            }
        }
        for def in body.lines() {
            let name = def.split_whitespace().next().unwrap_or("");
            if !name.is_empty()
                && !name.eq_ignore_ascii_case("primary")
                && !name.starts_with(char::is_numeric)
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn problems(sql: &str) -> Vec<String> {
    let reserved: Vec<&str> = RESERVED.split_whitespace().collect();
    let lower = sql.to_ascii_lowercase();
    let mut found = Vec::new();
    for column in columns(sql) {
        if !column.starts_with('"') && reserved.contains(&column.to_ascii_uppercase().as_str()) {
            found.push(format!(
                "reserved word {column} used as a bare column name (r_pg_keywords)"
            ));
        }
    }
    for word in ["partition", "offset"] {
        let bare = lower.match_indices(word).any(|(i, _)| {
            let before = lower[..i].chars().last();
            let after = lower[i + word.len()..].chars().next();
            let ident = |c: Option<char>| {
                c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"')
            };
            !ident(before) && !ident(after)
        });
        if bare {
            found.push(format!("reserved word {word} not quoted (r_pg_keywords)"));
        }
    }
    for f in LEADER_ONLY {
        if lower.contains(f) {
            found.push(format!(
                "leader-node-only function {f}) (c_SQL_functions_leader_node_only)"
            ));
        }
    }
    for f in UNSUPPORTED {
        if lower.contains(f) {
            found.push(format!("{f} is not supported by Redshift"));
        }
    }
    for raise in lower.split("raise ").skip(1) {
        let statement = raise.split(';').next().unwrap_or("");
        let Some(after_format) = statement.splitn(3, '\'').nth(2) else {
            continue;
        };
        for arg in after_format.split(',').skip(1) {
            let arg = arg.trim();
            let variable = !arg.is_empty()
                && arg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !reserved.contains(&arg.to_ascii_uppercase().as_str());
            if !variable {
                found.push(format!(
                    "RAISE argument {arg:?} is not a simple variable (c_PLpgSQL-statements)"
                ));
            }
        }
    }
    for statement in lower.split("create or replace procedure").skip(1) {
        let statement = statement.split("create ").next().unwrap_or("");
        if statement.contains("security definer") && !statement.contains("set search_path") {
            let name = statement.split('(').next().unwrap_or("").trim();
            found.push(format!(
                "SECURITY DEFINER procedure {name} without SET search_path (stored-procedure-security-and-privileges)"
            ));
        }
    }
    found
}

#[test]
fn every_redshift_golden_file_follows_the_developer_guide() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("redshift") || !name.ends_with(".sql") {
            continue;
        }
        checked += 1;
        let sql = code(&std::fs::read_to_string(&path).unwrap());
        all.extend(problems(&sql).into_iter().map(|p| format!("{name}: {p}")));
    }
    assert!(checked >= 2, "no golden files found in {}", dir.display());
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn the_checker_finds_what_the_guide_forbids() {
    let bad = "CREATE TABLE t (partition integer, \"offset\" bigint);
UPDATE t SET x = now();
CREATE OR REPLACE PROCEDURE p() AS $$ BEGIN RAISE EXCEPTION 'x % %', session_user, 'y'; END; $$ LANGUAGE plpgsql SECURITY DEFINER;
";
    let found = problems(bad);
    for needle in [
        "bare column name",
        "not quoted",
        "now(",
        "\"session_user\" is not a simple variable",
        "\"'y'\" is not a simple variable",
        "without SET search_path",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "{needle}: {found:?}"
        );
    }
    let good = "CREATE TABLE t (\"partition\" integer, \"offset\" bigint);
CREATE OR REPLACE PROCEDURE p() AS $$ DECLARE v varchar(9); BEGIN v := 'y'; RAISE EXCEPTION 'x %', v; END; $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO s;
";
    assert!(problems(good).is_empty(), "{:?}", problems(good));
}
