//! The library's modules depend on each other one way. Read from the sources: a module
//! "uses" another when its non-test code names `crate::<other>` or `super::<other>` from
//! the crate root. No cycle is allowed, and the stages of the pipeline only use stages
//! before them (config → consume → codec → batch → apply → telemetry), the shared
//! `record`, `event` and `error` leaves, and nothing of the tooling.

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

/// Top-level module → the top-level modules its non-test code names.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let module = rel.split(['/', '.']).next().unwrap().to_string();
        let entry = graph.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != module && !name.is_empty() {
                entry.insert(name);
            }
        }
    }
    graph
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
const TOOLING: [&str; 5] = ["cli", "demo", "bench", "simulate", "commands"];

#[test]
fn no_module_cycle() {
    let graph = uses();
    assert!(
        graph.contains_key("apply") && graph.contains_key("consume"),
        "{graph:?}"
    );
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

/// What each part of the library may use beyond itself. `telemetry` (metric names and
/// health, kept in one place) is a sink every stage reports to and that depends on none
/// of them; what the consumer needs from the warehouse is an interface it defines
/// (`consume::OffsetStore`), so no stage before `apply` uses it.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "error" | "event" => &["error", "event"],
        "record" => &["event", "codec"],
        "config" => &["error", "event"],
        "telemetry" => &["config", "error", "event"],
        "codec" => &["config", "error", "event", "record"],
        "consume" => &["config", "error", "event", "record", "codec", "telemetry"],
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
