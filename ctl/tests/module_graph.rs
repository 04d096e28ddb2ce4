//! The controller's modules form a DAG, layered as `docs/DESIGN.md` draws
//! it: a module may import only modules of a lower layer (or its own), and
//! no two files import each other, directly or around a ring.
//!
//! The graph is read from the source text (`crate::…` and `super::…`
//! paths), leaving out test code (`*_tests.rs`, `tests.rs`, `fakes.rs` and
//! inline `#[cfg(test)] mod … { }` blocks): tests may reach anywhere.
//! A failure names the arrow to remove; a new top-level module must be given
//! a layer in [`LAYERS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of `ctl/src` by layer, highest first.
const LAYERS: &[(&str, u32)] = &[
    ("main", 7),
    ("cli", 6),
    ("audit", 6),
    ("node", 5),
    ("segregation", 4),
    ("docker", 3),
    ("client", 3),
    ("cluster", 2),
    ("firewall", 2),
    ("network", 2),
    ("compose", 2),
    ("policy", 1),
    ("store", 1),
    ("attest", 1),
    ("daemon_json", 1),
    ("identity", 0),
    ("table", 0),
    ("timefmt", 0),
];

type Module = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn is_test_file(name: &str) -> bool {
    name.ends_with("_tests") || name == "tests" || name == "fakes"
}

/// Every non-test source file, by module path (`node/agent.rs` → `[node, agent]`).
fn modules() -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read ctl/src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(rel) = path.strip_prefix(src_dir()).ok().and_then(|r| r.to_str()) else { continue };
            let Some(rel) = rel.strip_suffix(".rs") else { continue };
            let mut module: Module = rel.split('/').map(str::to_owned).collect();
            if module.last().is_some_and(|m| is_test_file(m)) {
                continue;
            }
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            out.insert(module, path);
        }
    }
    out
}

/// The file's text without comments and without its inline test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'))
        {
            break;
        }
        let code = trimmed.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The modules a file refers to through `crate::` and `super::` paths.
fn references(module: &Module, path: &Path, all: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let code = code_of(path);
    let mut found = BTreeSet::new();
    for (start, prefix) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[start + prefix.len()..];
        let segments: Vec<String> = rest
            .split("::")
            .map(|s| {
                s.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect()
            })
            .take_while(|s: &String| !s.is_empty())
            .collect();
        let mut full: Module = if prefix == "crate::" {
            Vec::new()
        } else {
            // `super` is the parent module: for `node/agent.rs` that is
            // `node`, for `node/mod.rs` (module `node`) the crate root.
            let mut parent = module.clone();
            parent.pop();
            parent
        };
        full.extend(segments);
        if let Some(target) = (1..=full.len()).rev().map(|k| full[..k].to_vec()).find(|m| all.contains_key(m))
        {
            if &target != module {
                found.insert(target);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let all = modules();
    all.iter().map(|(m, p)| (m.clone(), references(m, p, &all))).collect()
}

fn layer(top: &str) -> u32 {
    LAYERS.iter().find(|(name, _)| *name == top).map(|(_, l)| *l).unwrap_or_else(|| {
        panic!(
            "ctl/src/{top} has no layer: add it to LAYERS in ctl/tests/module_graph.rs and to docs/DESIGN.md"
        )
    })
}

#[test]
fn modules_only_import_lower_layers() {
    let mut upward = Vec::new();
    for (from, tos) in graph() {
        let from_top = from.first().map(String::as_str).unwrap_or("main");
        for to in tos {
            let to_top = to.first().map(String::as_str).unwrap_or("main");
            if from_top != to_top && layer(from_top) <= layer(to_top) {
                upward.push(format!("{} -> {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run sideways or back up the layers:\n  {}", upward.join("\n  "));
}

#[test]
fn no_files_import_each_other_in_a_ring() {
    let graph = graph();
    let mut cycles = Vec::new();
    // A file is in a ring if it can reach itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Module> = graph[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                cycles.push(start.join("/"));
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
    assert!(cycles.is_empty(), "files in import rings: {}", cycles.join(", "));
}

#[test]
fn the_reader_sees_the_imports() {
    // Guards the test itself: known arrows must be found.
    let graph = graph();
    let agent = graph.get(&vec!["node".to_owned(), "agent".to_owned()]).expect("node/agent.rs");
    assert!(agent.contains(&vec!["attest".to_owned()]), "{agent:?}");
    assert!(agent.contains(&vec!["node".to_owned(), "hangup".to_owned()]), "{agent:?}");
}

/// What the CLI may import besides itself: the admin client, renderers, and
/// pure parsing that catches a typo before anything is sent. Not `docker`
/// (the controller holds the one Docker link), not `daemon_json` (the
/// controller reads host files), not `node` or `segregation`. `cluster`:
/// the endpoint's wire types, an admin's key and CSR made on the admin's
/// side, the TLS client of `--server` (`init`/`join` are `node`'s).
const CLI_MAY_USE: &[&str] = &["client", "table", "timefmt", "policy", "network", "compose", "cluster"];

#[test]
fn the_cli_is_a_client_of_the_api_and_nothing_else() {
    let mut outside = Vec::new();
    for (from, tos) in graph() {
        if from.first().map(String::as_str) != Some("cli") {
            continue;
        }
        for to in tos {
            let top = to.first().map(String::as_str).unwrap_or("main");
            if top != "cli" && !CLI_MAY_USE.contains(&top) {
                outside.push(format!("{} -> {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(outside.is_empty(), "the CLI does work that is the controller's:\n  {}", outside.join("\n  "));
}

#[test]
fn below_the_docker_layer_no_module_names_a_docker_type() {
    // Docker's shapes become seg's in `docker::map`; a lower module that
    // spoke bollard would be a second mapping (and an arrow around the DAG).
    let docker = layer("docker");
    let mut leaks = Vec::new();
    for (module, path) in modules() {
        let top = module.first().map(String::as_str).unwrap_or("main");
        if layer(top) < docker && code_of(&path).contains("bollard") {
            leaks.push(module.join("/"));
        }
    }
    assert!(leaks.is_empty(), "modules below docker/ that use bollard: {}", leaks.join(", "));
}
