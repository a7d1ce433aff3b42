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

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The expression of the parenthesized select item that ends at the end of `items`.
fn last_parenthesized(items: &str) -> Option<&str> {
    let items = items.trim_end().strip_suffix(')')?;
    let mut depth = 0;
    for (i, c) in items.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return Some(&items[i + 1..]),
            '(' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Redshift has no security barrier; an analyst's predicate is kept behind a view's row
/// condition only on a relation protected by row-level security (t_rls_performance, "Safety
/// of operators and functions"). So every view must expose its WHERE condition as
/// `immuta_row_visible` (what the policy reads) and be protected once created.
fn unprotected_views(lower: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in lower.match_indices("create ") {
        let rest = &lower[at..];
        let Some(rest) = rest
            .strip_prefix("create view ")
            .or_else(|| rest.strip_prefix("create or replace view "))
        else {
            continue;
        };
        let statement = rest.split(';').next().unwrap_or("");
        let name = statement
            .split_whitespace()
            .next()
            .unwrap_or("")
            .replace('"', "");
        let (schema, view) = name.split_once('.').unwrap_or(("", &name));
        let select = statement.split("\nfrom ").next().unwrap_or("");
        let condition = statement
            .split("\nwhere ")
            .nth(1)
            .map(|w| w.split("\nwith no schema binding").next().unwrap_or(w));
        let exposed = select
            .rsplit_once(" as immuta_row_visible")
            .and_then(|(items, _)| last_parenthesized(items));
        match (exposed, condition) {
            (Some(e), Some(c)) if squash(e) == squash(c) => {}
            _ => found.push(format!(
                "view {name} does not expose its WHERE condition as immuta_row_visible (t_rls_performance)"
            )),
        }
        let call = format!("protect_view('{schema}', '{view}', true)");
        if !lower[at..].contains(&call) {
            found.push(format!(
                "view {name} is not protected by row-level security after it is created (r_ATTACH_RLS_POLICY)"
            ));
        }
    }
    found
}

/// What DROP does to a view with an attached RLS policy is not documented: every view is
/// released first (r_DETACH_RLS_POLICY).
fn unreleased_drops(lower: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in lower.match_indices("drop view if exists ") {
        let list = lower[at + "drop view if exists ".len()..]
            .split(';')
            .next()
            .unwrap_or("");
        let list = list.trim_end().strip_suffix(" cascade").unwrap_or(list);
        for name in list.split(',') {
            let name = name.trim().replace('"', "");
            let (schema, view) = name.split_once('.').unwrap_or(("", &name));
            let call = format!("protect_view('{schema}', '{view}', false)");
            if !lower[..at].contains(&call) {
                found.push(format!(
                    "view {name} is dropped without detaching its row-level security policy first (r_DETACH_RLS_POLICY)"
                ));
            }
        }
    }
    found
}

/// Words before a `(` that are SQL syntax or a type with a length, not a function call.
const NOT_FUNCTIONS: &[&str] = &[
    "exists",
    "in",
    "any",
    "all",
    "some",
    "values",
    "coalesce",
    "greatest",
    "least",
    "nullif",
    "nvl",
    "cast",
    "varchar",
    "char",
    "character",
    "decimal",
    "numeric",
    "key",
    "as",
    "and",
    "or",
    "not",
    "on",
    "using",
    "with",
    "where",
    "when",
    "then",
    "else",
    "select",
    "from",
    "if",
    "is",
    "by",
    "over",
    "returns",
    "table",
    "array",
    "operator",
    "varbyte",
    "case",
];

/// `sql` with the text of its string literals blanked, so that their words are not read
/// as code (doubled quotes stay inside a literal).
fn without_literals(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut inside = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (inside, c) {
            (false, '\'') => {
                inside = true;
                out.push(c);
            }
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push_str("  ");
            }
            (true, '\'') => {
                inside = false;
                out.push(c);
            }
            (true, _) => out.push(' '),
            (false, _) => out.push(c),
        }
    }
    out
}

/// Every function called without its schema: on Redshift a built-in is found first only
/// while pg_catalog comes first on the search path, which any user may change, and a
/// late-binding view resolves names when it is queried (udf-naming-udfs, r_search_path,
/// r_CREATE_VIEW). Built-ins live in pg_catalog and are called as `pg_catalog.<name>`.
fn unqualified_functions(lower: &str) -> Vec<String> {
    let code = without_literals(lower);
    let mut found = Vec::new();
    for (at, _) in code.match_indices('(') {
        let before = code[..at].trim_end();
        let word: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let rest = &before[..before.len() - word.len()];
        let qualified = rest.ends_with('.');
        // The name of what a statement creates or fills, or an alias, not a call.
        let created = [
            "table",
            "procedure",
            "function",
            "into",
            "view",
            "exists",
            "type",
            " as",
        ]
        .iter()
        .any(|k| rest.trim_end().ends_with(k));
        if word.is_empty() || qualified || created || NOT_FUNCTIONS.contains(&word.as_str()) {
            continue;
        }
        if word.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        found.push(format!(
            "function {word}( is not qualified with pg_catalog (udf-naming-udfs)"
        ));
    }
    found
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
    found.extend(unprotected_views(&lower));
    found.extend(unreleased_drops(&lower));
    found.extend(unqualified_functions(&lower));
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
CREATE VIEW s.v AS
SELECT t.a, (t.a > 1) AS immuta_row_visible
FROM t
WHERE t.a > 2;
CREATE VIEW s.w AS
SELECT t.a
FROM t
WHERE t.a > 2;
DROP VIEW IF EXISTS \"s\".\"v\", s.w;
SELECT SHA2(x, 256), 'lower(y)' FROM t;
";
    let found = problems(bad);
    for needle in [
        "bare column name",
        "not quoted",
        "now(",
        "\"session_user\" is not a simple variable",
        "\"'y'\" is not a simple variable",
        "without SET search_path",
        "view s.v does not expose",
        "view s.w does not expose",
        "view s.w is not protected",
        "view s.v is dropped without detaching",
        "view s.w is dropped without detaching",
        "function sha2(",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "{needle}: {found:?}"
        );
    }
    let good = "CREATE TABLE t (\"partition\" integer, \"offset\" bigint);
CREATE OR REPLACE PROCEDURE p() AS $$ DECLARE v varchar(9); BEGIN v := 'y'; RAISE EXCEPTION 'x %', v; END; $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO s;
CREATE VIEW s.v AS
SELECT t.a, (t.a > (1)) AS immuta_row_visible
FROM t
WHERE t.a > (1);
CALL immuta_procedures.protect_view('s', 'v', true);
CALL immuta_procedures.protect_view('s', 'v', false);
DROP VIEW IF EXISTS \"s\".\"v\";
";
    assert!(problems(good).is_empty(), "{:?}", problems(good));
    assert!(
        !problems(bad).iter().any(|p| p.contains("lower(")),
        "a literal is not code"
    );
}

/// Operators not named `OPERATOR(pg_catalog.…)`: PostgreSQL binds a view's operators when
/// the view is created, by the search path and by how well argument types match, so an
/// analyst's `public.&&(text[], text[])` would beat the built-in `anyarray` one.
fn unqualified_operators(sql: &str) -> Vec<String> {
    let mut code = without_literals(sql);
    // Quoted identifiers may hold any character.
    let mut out = String::new();
    let mut quoted = false;
    for c in code.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        out.push(if quoted && c != '"' { ' ' } else { c });
    }
    code = out.replace("::", " ");
    while let Some(at) = code.find("operator(pg_catalog.") {
        let end = code[at..].find(')').map_or(code.len(), |e| at + e + 1);
        code.replace_range(at..end, " ");
    }
    code.chars()
        .filter(|c| "=<>!~+-*/%^&|#@".contains(*c))
        .map(|c| format!("operator {c} is not qualified with pg_catalog"))
        .collect()
}

#[test]
fn every_generated_view_calls_only_qualified_functions_and_operators() {
    use policy_push::apply::sql::{canonical, dialect, examples, view};
    use policy_push::config::Dialect;
    let mut all = Vec::new();
    for dialect in [Dialect::Postgres, Dialect::Redshift] {
        let d: &dyn view::ViewDialect = match dialect {
            Dialect::Postgres => &dialect::postgres::Postgres,
            Dialect::Redshift => &dialect::redshift::Redshift,
        };
        let mut cases: Vec<_> = examples::all()
            .into_iter()
            .map(|(_, p)| (examples::orders(), p))
            .collect();
        cases.push(examples::every_type(dialect));
        for (ds, policies) in cases {
            let plan = view::plan_with(d, &ds, &policies, "immuta", &canonical::declared(&ds));
            let sql = plan.create_sql.to_ascii_lowercase();
            let mut found = unqualified_functions(&sql);
            if dialect == Dialect::Postgres {
                found.extend(unqualified_operators(&sql));
            }
            all.extend(
                found
                    .into_iter()
                    .map(|f| format!("{dialect:?} {}: {f}", ds.id)),
            );
        }
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
    let planted = "select a from t where a && b and x operator(pg_catalog.=) 'a=b' and \"c=d\" = 1";
    assert_eq!(
        unqualified_operators(planted).len(),
        3,
        "{:?}",
        unqualified_operators(planted)
    );
}
