//! The library's modules depend on each other one way. Read from the sources: a module
//! "uses" another when its non-test code names `crate::<other>`, or reaches the crate root
//! through `super::` (from `src/<other>.rs`, `super::<name>`; from `src/a/b.rs`,
//! `super::super::<name>`) and names `<other>` there. No cycle is allowed, and the stages
//! of the pipeline only use stages before them (config → consume → codec → batch → apply
//! → telemetry), the shared `record`, `event` and `error` leaves, and nothing of the
//! tooling. Production code imports by name: no glob import (`use x::*`) outside tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The text without its `#[cfg(test)]` items (a test module, a test helper, a
/// test-only import), wherever they sit. The code is rustfmt-formatted (CI checks it), so
/// an item ends on its first line when that line ends with `;`, and otherwise at the
/// first line that closes a bracket at the attribute's indentation.
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            kept.push_str(line);
            kept.push('\n');
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let Some(first) = lines.next() else { break };
        if first.trim_end().ends_with(';') {
            continue;
        }
        for l in lines.by_ref() {
            let l = l.trim_end();
            let closes = l
                .strip_prefix(indent)
                .is_some_and(|rest| ["}", "};", "];", ");"].contains(&rest));
            if closes {
                break;
            }
        }
    }
    kept
}

/// Every source file of the library but `main.rs`, `lib.rs` and test files: its path
/// under `src/` and its code without the test items.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if !rel.ends_with(".rs") || rel == "main.rs" || rel == "lib.rs" || rel.ends_with("tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = without_tests(&text);
        found.push((rel, code));
    }
    found
}

/// The module path of a file under `src/`: `consume/poll.rs` is `consume::poll`,
/// `consume/mod.rs` is `consume`, `record.rs` is `record`.
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    rel.split('/').map(String::from).collect()
}

/// The leading identifier of `text`.
fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The crate-root names that `code`, in the module `path`, reaches through `super::`:
/// a chain of as many `super::` as the path is deep ends at the root, and the name after
/// it (or each first name of a `{…}` group there) is a top-level module or item. A
/// shorter chain stays inside the file's own top-level module. Inline modules are taken
/// as part of their file (none but tests, which are left out, has any).
fn root_names_by_super(code: &str, path: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::")
            || code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let mut rest = &code[i..];
        let mut depth = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        if depth != path.len() {
            continue;
        }
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(group.split(',').map(|n| ident(n.trim())));
            }
            None => names.push(ident(rest)),
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Top-level module → the top-level modules its non-test code names.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let sources = sources();
    let modules: BTreeSet<String> = sources
        .iter()
        .map(|(rel, _)| module_path(rel)[0].clone())
        .collect();
    for (rel, code) in sources {
        let path = module_path(&rel);
        let module = path[0].clone();
        let entry = graph.entry(module.clone()).or_default();
        let by_crate = code
            .match_indices("crate::")
            .map(|(i, _)| ident(&code[i + 7..]));
        let by_super = root_names_by_super(&code, &path);
        for name in by_crate.chain(by_super) {
            // Through `super::` the root's own items (`lib.rs`) are reached too.
            if name != module && modules.contains(&name) {
                entry.insert(name);
            }
        }
    }
    graph
}

/// Where `code` imports with a glob (`use a::*;`, `use a::{b, *};`), one statement each:
/// a `use` that starts its line (after any `pub(…)`) up to its `;`, spaces aside.
fn glob_imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("use ") {
        let line = &code[code[..at].rfind('\n').map_or(0, |n| n + 1)..at];
        let line = line.trim();
        if !(line.is_empty() || line.starts_with("pub") && !line.contains("//")) {
            continue;
        }
        let end = code[at..].find(';').map_or(code.len(), |e| at + e + 1);
        let statement: String = code[at..end].split_whitespace().collect();
        if statement.contains("::*") || statement.contains("{*") || statement.contains(",*") {
            found.push(code[at..end].to_string());
        }
    }
    found
}

/// "About 400 lines", tests aside: a file past this has more than one concern to split.
const MAX_LINES: usize = 420;

#[test]
fn no_file_is_over_about_400_lines() {
    let sources = sources();
    assert!(sources.len() > 50, "{} files", sources.len());
    let long: Vec<String> = sources
        .iter()
        .map(|(rel, code)| (rel, code.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(rel, n)| format!("{rel}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "split these: {}", long.join(", "));
}

fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Tooling: commands and their helpers, which may use the library but not the reverse.
/// `tooling/` (the demo and the load harness) is the binary's own, not the library's.
const TOOLING: [&str; 4] = ["cli", "simulate", "commands", "tooling"];

#[test]
fn the_library_holds_the_product_only() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for tooling in ["mod tooling", "mod bench", "mod demo"] {
        assert!(!lib.contains(tooling), "lib.rs declares `{tooling}`");
    }
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    assert!(
        main.contains("mod tooling;"),
        "the binary builds the tooling"
    );
    for (rel, code) in sources()
        .iter()
        .filter(|(rel, _)| rel.starts_with("tooling/"))
    {
        assert!(
            !code.contains("crate::")
                || code.matches("crate::").count() == code.matches("crate::tooling").count(),
            "{rel} reaches into the library by crate:: (it may use its public API only)"
        );
    }
}

#[test]
fn no_module_cycle() {
    let graph = uses();
    assert!(
        graph.contains_key("apply") && graph.contains_key("consume"),
        "{graph:?}"
    );
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

/// What each part of the library may use beyond itself; a new dependency is a change
/// here, made on purpose. `telemetry` (metric names and health, kept in one place) is a
/// sink every stage reports to and that depends on none of them; what the consumer needs
/// from the warehouse is an interface it defines (`consume::OffsetStore`), so no stage
/// before `apply` uses it.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "error" | "event" => &["error", "event"],
        // Backoff and the waits between attempts that end at a stop.
        "retry" => &[],
        "record" => &["event", "codec"],
        "config" => &["error", "event"],
        "telemetry" => &["config", "error", "event"],
        "codec" => &["config", "error", "event", "record"],
        "consume" => &[
            "config",
            "error",
            "event",
            "record",
            "retry",
            "codec",
            "telemetry",
        ],
        "batch" => &["config", "error", "event", "record", "codec"],
        "apply" => &[
            "config",
            "error",
            "event",
            "record",
            "codec",
            "batch",
            "consume",
            "telemetry",
        ],
        // Lag and caught-up checks: Kafka's end offsets against the warehouse's stored
        // ones, reported to telemetry; read by the pipeline and by replay.
        "offsets" => &["config", "error", "record", "consume", "apply", "telemetry"],
        // The wiring of every stage: it may use them all, and nothing of the tooling.
        "pipeline" => &[
            "config",
            "error",
            "event",
            "record",
            "retry",
            "codec",
            "consume",
            "batch",
            "apply",
            "offsets",
            "telemetry",
        ],
        _ => return None,
    })
}

#[test]
fn stages_use_only_what_comes_before_them() {
    let graph = uses();
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        if let Some(allowed) = allowed(module) {
            for u in used.iter().filter(|u| !allowed.contains(&u.as_str())) {
                wrong.push(format!("{module} uses {u}"));
            }
        }
        if !TOOLING.contains(&module.as_str()) {
            for u in used.iter().filter(|u| TOOLING.contains(&u.as_str())) {
                wrong.push(format!("{module} uses the tooling module {u}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&graph), None);
}

#[test]
fn test_items_are_left_out_wherever_they_sit() {
    let text = "use a;\n#[cfg(test)]\nuse b;\nfn c() {}\n#[cfg(test)]\nfn d() {\n    e();\n}\nfn f() {}\n#[cfg(test)]\nmod tests {\n    fn g() {\n    }\n}\n";
    assert_eq!(without_tests(text), "use a;\nfn c() {}\nfn f() {}\n");
}

#[test]
fn production_code_has_no_glob_import() {
    let mut found = Vec::new();
    for (rel, code) in sources() {
        found.extend(
            glob_imports(&code)
                .into_iter()
                .map(|g| format!("{rel}: {g}")),
        );
    }
    assert!(
        found.is_empty(),
        "name what is imported:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_a_glob_import() {
    for glob in [
        "use super::*;\n",
        "fn f() {\n    use Level::*;\n}\n",
        "pub use poll::*;\n",
        "pub(crate) use a::{b, *};\n",
        "use a::{\n    b,\n    c::*,\n};\n",
    ] {
        assert_eq!(glob_imports(glob).len(), 1, "{glob}");
    }
    let named = "use a::{b, c};\nfn f() -> u8 {\n    let reuse = 2 * 3; // use b::*; in a comment\n    reuse\n}\n";
    assert!(glob_imports(named).is_empty());
    let tests = "use a::b;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n";
    assert!(glob_imports(&without_tests(tests)).is_empty());
}

#[test]
fn super_paths_are_resolved_from_the_files_module() {
    let path = |rel| module_path(rel);
    assert_eq!(path("consume/mod.rs"), ["consume"]);
    assert_eq!(
        root_names_by_super(
            "use super::event::Kind;\nuse super::{config, error::Class};",
            &path("simulate/mod.rs")
        ),
        ["event", "config", "error"]
    );
    // One `super::` from consume/poll.rs stays in consume; two reach the root.
    let code = "use super::store::OffsetStore;\nuse super::super::batch::Batch;";
    assert_eq!(
        root_names_by_super(code, &path("consume/poll.rs")),
        ["batch"]
    );
    assert_eq!(
        root_names_by_super(code, &path("consume/mod.rs")),
        ["store"]
    );
}
