//! ARCHITECTURE.md's module table holds against the code: every `crate::<module>` a library
//! module names outside comments is one its row allows, and none is one its row forbids
//! ("never ..."), so the dependency list cannot drift from what the code does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules any module may import (the table's header says so).
const COMMON: &[&str] = &["error", "fsutil", "pyjson", "progress"];

struct Row {
    allowed: BTreeSet<String>,
    forbidden: BTreeSet<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Backticked names in `text` (`export`, `runtime`).
fn ticked(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

/// The rows of the module table: module → (allowed, forbidden).
fn table() -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = text
        .split("## Modules")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Modules` section");
    let mut rows = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | module | owns | imports |
        if cells.len() != 5 || !cells[1].starts_with('`') {
            continue;
        }
        let (may, never) = cells[3].split_once("never").unwrap_or((cells[3], ""));
        for module in ticked(cells[1]) {
            let row = Row {
                allowed: ticked(may),
                forbidden: ticked(never),
            };
            rows.insert(module, row);
        }
    }
    rows
}

/// The `.rs` files of a module: `src/<m>.rs` and everything under `src/<m>/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let src = root().join("src");
    let mut out = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        out.push(single);
    }
    let mut stack = vec![src.join(module)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The crate root's re-exports (`pub use model_dir::{GenerationConfig, ModelDir};`): item → module.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for item in items.split(',') {
            out.insert(item.trim().to_string(), module.to_string());
        }
    }
    out
}

/// The module a path after `crate::` names: `model_dir::X` → `model_dir`, a root re-export
/// `ModelDir` → `model_dir`.
fn module_of(path: &str, reexports: &BTreeMap<String, String>) -> Option<String> {
    let name: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return None;
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return reexports.get(&name).cloned();
    }
    Some(name)
}

/// Every module named by `crate::...` in the code of `path` (comments left out), with grouped
/// imports (`crate::{A, b::C}`) and root re-exports resolved.
fn imports(path: &Path, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for part in code.split("crate::").skip(1) {
            match part.strip_prefix('{') {
                Some(group) => {
                    let group = group.split('}').next().unwrap_or("");
                    out.extend(group.split(',').filter_map(|p| module_of(p, reexports)));
                }
                None => out.extend(module_of(part, reexports)),
            }
        }
    }
    out
}

#[test]
fn module_imports_follow_architecture_md() {
    let rows = table();
    let reexports = root_reexports();
    assert!(
        rows.len() >= 15,
        "module table not found: {:?}",
        rows.keys()
    );
    let mut problems = Vec::new();
    for (module, row) in &rows {
        let files = files_of(module);
        assert!(
            !files.is_empty(),
            "ARCHITECTURE.md names `{module}`, which has no source"
        );
        for file in files {
            for dep in imports(&file, &reexports) {
                if dep == *module || COMMON.contains(&dep.as_str()) {
                    continue;
                }
                if row.forbidden.contains(&dep) || !row.allowed.contains(&dep) {
                    problems.push(format!("{}: imports `{dep}`", file.display()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports that ARCHITECTURE.md's module table does not allow (change the code or the table):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_library_module_has_a_row() {
    let rows = table();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let missing: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or(l.trim().strip_prefix("pub(crate) mod "))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .filter(|m| !rows.contains_key(m) && !COMMON.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a row in ARCHITECTURE.md: {missing:?}"
    );
}
