//! Every command and every flag says what it does (`-h`), so that an operator at 3 a.m.
//! need not read the README to use one.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(args)
        .arg("-h")
        .output()
        .expect("run policy-push");
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names listed under "Commands:" in `text`.
fn commands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let (name, about) = l.trim().split_once(char::is_whitespace)?;
            assert!(!about.trim().is_empty(), "command {name} has no help");
            (name != "help").then(|| name.to_string())
        })
        .collect()
}

/// Each option of `-h` output has a description, not only a default: on its own line
/// after the option's, or after the option on the same line.
fn undescribed(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .collect();
    let option = |l: &str| l.trim_start().starts_with('-');
    let mut missing = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !option(l) {
            continue;
        }
        let indent = l.len() - l.trim_start().len();
        let same_line = l[indent..]
            .find("  ")
            .map_or("", |at| l[indent + at..].trim());
        let next_line = lines
            .get(i + 1)
            .filter(|n| !option(n) && n.len() - n.trim_start().len() > indent)
            .map_or("", |n| n.trim());
        let described = |t: &str| !t.is_empty() && !t.starts_with('[');
        if !described(same_line) && !described(next_line) {
            missing.push(l.to_string());
        }
    }
    missing
}

#[test]
fn every_command_and_flag_has_help() {
    let top = help(&[]);
    let mut missing = undescribed(&top);
    let names = commands(&top);
    assert!(names.contains(&"offsets".to_string()), "{top}");
    for name in names {
        let text = help(&[&name]);
        missing.extend(
            undescribed(&text)
                .into_iter()
                .map(|l| format!("{name}: {l}")),
        );
        for sub in commands(&text) {
            let text = help(&[&name, &sub]);
            missing.extend(
                undescribed(&text)
                    .into_iter()
                    .map(|l| format!("{name} {sub}: {l}")),
            );
        }
    }
    assert!(
        missing.is_empty(),
        "flags without help:\n{}",
        missing.join("\n")
    );
}
