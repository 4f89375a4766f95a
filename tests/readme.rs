//! README.md's flags table is the binary's `--help`, not a copy that drifts.
//!
//! Runs `ringcast --help`, reads every option (name, `[default: …]`, description, possible
//! values) and checks README's "## Flags" table against it both ways: every flag of the binary
//! has a row and every row is a flag of the binary; a row's default is the binary's (empty when
//! it has none); its meaning contains the binary's description; an enum's values are all there,
//! each described value on a line of its own (`<br>`), not run together into one sentence.
//! Every flag but `--help`/`--version` shows its environment variable, `RINGCAST_<FLAG_NAME>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One option as `--help` prints it.
#[derive(Debug, Default)]
struct HelpFlag {
    default: Option<String>,
    /// `[env: NAME]`: the variable that sets it.
    env: Option<String>,
    /// The description paragraphs, joined by spaces.
    description: String,
    /// `- name: text` entries of a value enum with doc comments.
    described_values: Vec<(String, String)>,
    /// `[possible values: a, b]` of a value enum without doc comments.
    possible_values: Vec<String>,
}

/// Whether `trimmed` starts an option in clap's help: `--name …` or `-x, --name …`.
fn flag_name(trimmed: &str) -> Option<&str> {
    let rest = match trimmed.strip_prefix("--") {
        Some(r) => r,
        None => {
            let b = trimmed.as_bytes();
            if b.len() > 5 && b[0] == b'-' && b[1].is_ascii_alphanumeric() && &b[2..5] == b", -" {
                trimmed[4..].strip_prefix("--")?
            } else {
                return None;
            }
        }
    };
    let name = rest.split(' ').next().unwrap_or_default();
    (!name.is_empty()).then_some(name)
}

fn help_flags() -> BTreeMap<String, HelpFlag> {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("--help")
        .output()
        .expect("run ringcast --help");
    assert!(out.status.success(), "ringcast --help failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("help is UTF-8");
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, HelpFlag)> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = flag_name(t) {
            if let Some((n, f)) = current.take() {
                flags.insert(n, f);
            }
            current = Some((name.to_string(), HelpFlag::default()));
            continue;
        }
        let Some((_, f)) = current.as_mut() else {
            continue;
        };
        if let Some(d) = t
            .strip_prefix("[default: ")
            .and_then(|d| d.strip_suffix(']'))
        {
            f.default = Some(d.to_string());
        } else if let Some(e) = t.strip_prefix("[env: ").and_then(|e| e.strip_suffix(']')) {
            f.env = Some(e.to_string());
        } else if let Some(v) = t
            .strip_prefix("[possible values: ")
            .and_then(|v| v.strip_suffix(']'))
        {
            f.possible_values = v.split(", ").map(str::to_string).collect();
        } else if let Some((name, text)) = t.strip_prefix("- ").and_then(|e| e.split_once(':')) {
            f.described_values
                .push((name.to_string(), text.trim().to_string()));
        } else if !t.is_empty() && t != "Possible values:" {
            if !f.description.is_empty() {
                f.description.push(' ');
            }
            f.description.push_str(t);
        }
    }
    if let Some((n, f)) = current {
        flags.insert(n, f);
    }
    // The parse itself must have worked, or the comparison below proves nothing.
    for must in [
        "listen",
        "driver",
        "slow-client",
        "ws-client-publish",
        "help",
    ] {
        assert!(flags.contains_key(must), "--{must} not found in --help");
    }
    assert!(!flags["driver"].described_values.is_empty());
    assert!(!flags["log-level"].possible_values.is_empty());
    flags
}

/// README's "## Flags" rows: flag → (default cell, meaning cell).
fn readme_rows() -> BTreeMap<String, (String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).expect("read README.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Flags\n"))
        .expect("README.md has a \"## Flags\" section");
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a flags row has three cells: {line}");
        let flag = cells[0]
            .strip_prefix("`--")
            .and_then(|f| f.strip_suffix('`'))
            .unwrap_or_else(|| panic!("first cell is `--flag`: {line}"));
        let prev = rows.insert(
            flag.to_string(),
            (cells[1].to_string(), cells[2].to_string()),
        );
        assert!(prev.is_none(), "--{flag} has two rows");
    }
    rows
}

#[test]
fn readme_flags_table_is_the_binarys_help() {
    let help = help_flags();
    let readme = readme_rows();

    let missing: Vec<_> = help.keys().filter(|f| !readme.contains_key(*f)).collect();
    let stale: Vec<_> = readme.keys().filter(|f| !help.contains_key(*f)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's flags table and `ringcast --help` differ: not in README {missing:?}, \
         not a flag of the binary {stale:?}"
    );

    for (name, flag) in &help {
        let (default, meaning) = &readme[name];
        let want_default = flag
            .default
            .as_ref()
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        assert_eq!(default, &want_default, "--{name}: default");
        if name != "help" && name != "version" {
            let want_env = format!("RINGCAST_{}", name.to_uppercase().replace('-', "_"));
            assert_eq!(
                flag.env.as_deref(),
                Some(want_env.as_str()),
                "--{name}: env"
            );
        }
        assert!(
            meaning.contains(&flag.description),
            "--{name}: the meaning should contain the help text\n  help:   {}\n  README: {meaning}",
            flag.description
        );
        assert!(
            !meaning.contains("Possible values"),
            "--{name}: clap's enum help flattened into the row: {meaning}"
        );
        for (value, text) in &flag.described_values {
            let entry = format!("<br>`{value}`: {text}");
            assert!(
                meaning.contains(&entry),
                "--{name}: each value on its own line, as {entry:?}; the row says: {meaning}"
            );
        }
        for value in &flag.possible_values {
            assert!(
                meaning.contains(&format!("`{value}`")),
                "--{name}: value `{value}` missing from: {meaning}"
            );
        }
    }
}
