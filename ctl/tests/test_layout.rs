//! One test layout across `ctl/src`, `common/src` and `sidecar/src`
//! (`docs/DESIGN.md`, "Tests"):
//!
//! - a module's unit tests are its child module `tests`, under `#[cfg(test)]`;
//! - inline (`mod tests { … }`) or, when long, a sibling file: `foo.rs`
//!   declares `#[path = "foo_tests.rs"] mod tests;`, `dir/mod.rs` declares
//!   `mod tests;` (→ `dir/tests.rs`);
//! - test functions live nowhere else; shared fixtures (`fakes.rs`,
//!   `fixture.rs`, …) are `#[cfg(test)]` modules of their own, without tests.
//!
//! Read from the source text, like `module_graph.rs`. A failure names the
//! file to fix and how.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["ctl", "common", "sidecar"];

/// One `mod NAME;` / `mod NAME {` line and the attributes just above it.
struct ModDecl {
    line: usize,
    name: String,
    inline: bool,
    path_attr: Option<String>,
    cfg_test: bool,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `mod` declarations of a file, with the `#[path]` and `#[cfg(…test…)]`
/// attributes of each (attributes and doc comments directly above it).
fn mod_decls(text: &str) -> Vec<ModDecl> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, inline)) = parse_mod(line) else { continue };
        let (mut path_attr, mut cfg_test) = (None, false);
        for attr in lines[..i].iter().rev().take_while(|l| l.starts_with("#[") || l.starts_with("///")) {
            if let Some(p) = attr.strip_prefix("#[path = \"").and_then(|p| p.strip_suffix("\"]")) {
                path_attr = Some(p.to_owned());
            }
            cfg_test |= attr.starts_with("#[cfg(") && attr.contains("test");
        }
        out.push(ModDecl { line: i + 1, name, inline, path_attr, cfg_test });
    }
    out
}

/// `[pub[(…)]] mod NAME;` or `… mod NAME {` → (NAME, inline).
fn parse_mod(line: &str) -> Option<(String, bool)> {
    let rest = match line.strip_prefix("pub") {
        Some(r) if r.starts_with('(') => r.split_once(')')?.1.trim_start(),
        Some(r) => r.trim_start(),
        None => line,
    };
    let rest = rest.strip_prefix("mod ")?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (name, tail) = rest.split_at(end);
    match tail.trim() {
        ";" => Some((name.to_owned(), false)),
        "{" => Some((name.to_owned(), true)),
        _ => None,
    }
}

fn stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name")
}

/// A file whose children live in its own directory (`mod.rs`, crate roots).
fn is_mod_rs(path: &Path) -> bool {
    matches!(stem(path), "mod" | "lib" | "main")
}

fn is_test_file(path: &Path) -> bool {
    stem(path) == "tests" || stem(path).ends_with("_tests")
}

/// What is wrong with one declaration in `file`, if anything.
fn check_decl(file: &Path, d: &ModDecl) -> Option<String> {
    let own = format!("{}_tests.rs", stem(file));
    if d.name.ends_with("_tests") {
        return Some(format!("`mod {}` — a module's tests are its child `mod tests`", d.name));
    }
    if d.name == "tests" && !d.cfg_test && !is_test_file(file) {
        return Some("`mod tests` without `#[cfg(test)]`".into());
    }
    match (&d.path_attr, d.name == "tests") {
        (Some(p), true) if is_mod_rs(file) => {
            Some(format!("`#[path = \"{p}\"]` — `{}` declares plain `mod tests;` (→ tests.rs)", stem(file)))
        }
        (Some(p), true) if *p != own => {
            Some(format!("`#[path = \"{p}\"]` — this module's tests file is `{own}`"))
        }
        (Some(p), false) if p.ends_with("_tests.rs") || p == "tests.rs" => Some(format!(
            "`#[path = \"{p}\"]` on `mod {}` — tests are declared as `mod tests` by their module",
            d.name
        )),
        (None, true) if !d.inline && !is_mod_rs(file) && !is_test_file(file) => {
            Some(format!("`mod tests;` would be `{}/tests.rs` — use `#[path = \"{own}\"]`", stem(file)))
        }
        _ => None,
    }
}

/// Test functions only inside a `tests` module: in a tests file, or after
/// an inline `mod tests {`.
fn check_test_fns(file: &Path, text: &str, decls: &[ModDecl]) -> Option<String> {
    if is_test_file(file) {
        return None;
    }
    let is_test_attr =
        |l: &str| l.trim_start().starts_with("#[test]") || l.trim_start().starts_with("#[tokio::test");
    let first = text.lines().position(is_test_attr)? + 1;
    let tests_start = decls.iter().find(|d| d.name == "tests" && d.inline).map(|d| d.line);
    match tests_start {
        Some(start) if start < first => None,
        _ => Some(format!(
            "test function at line {first} outside `mod tests` — move it into the module's tests"
        )),
    }
}

fn problems() -> Vec<String> {
    let root = workspace();
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    files.sort();
    let mut found = Vec::new();
    // tests file → the files declaring it as a module's `tests`.
    let mut declared: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let decls = mod_decls(&text);
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        for d in &decls {
            if let Some(why) = check_decl(file, d) {
                found.push(format!("{shown}:{}: {why}", d.line));
            }
            if d.name == "tests" && !d.inline {
                let target = file.with_file_name(d.path_attr.as_deref().unwrap_or("tests.rs"));
                declared.entry(target).or_default().push(file.clone());
            }
        }
        found.extend(check_test_fns(file, &text, &decls).map(|why| format!("{shown}: {why}")));
    }
    for file in files.iter().filter(|f| is_test_file(f)) {
        let shown = file.strip_prefix(&root).unwrap_or(file).display();
        let owner = if stem(file) == "tests" {
            file.with_file_name("mod.rs")
        } else {
            file.with_file_name(format!("{}.rs", stem(file).trim_end_matches("_tests")))
        };
        let owner_shown = owner.strip_prefix(&root).unwrap_or(&owner).display().to_string();
        match declared.get(file).map(Vec::as_slice) {
            Some([by]) if *by == owner => {}
            _ => found.push(format!(
                "{shown}: not the tests of `{owner_shown}` — name the file after the module it tests and \
                 declare it there, once, as `#[cfg(test)] mod tests`"
            )),
        }
    }
    found
}

#[test]
fn every_crate_follows_the_one_test_layout() {
    let found = problems();
    assert!(found.is_empty(), "test layout (docs/DESIGN.md, \"Tests\") broken:\n  {}", found.join("\n  "));
}

#[test]
fn the_parser_sees_the_declarations_it_checks() {
    let decls =
        mod_decls("#[cfg(test)]\n#[path = \"a_tests.rs\"]\nmod tests;\npub(crate) mod b {\nmod c_tests;\n");
    let got: Vec<_> =
        decls.iter().map(|d| (d.name.as_str(), d.inline, d.path_attr.as_deref(), d.cfg_test)).collect();
    assert_eq!(
        got,
        [
            ("tests", false, Some("a_tests.rs"), true),
            ("b", true, None, false),
            ("c_tests", false, None, false)
        ]
    );
    let a = Path::new("x/a.rs");
    assert!(check_decl(a, &decls[0]).is_none());
    assert!(check_decl(Path::new("x/other.rs"), &decls[0]).is_some(), "a #[path] to another module's tests");
    assert!(check_decl(a, &decls[2]).is_some(), "mod c_tests");
    assert!(check_decl(Path::new("x/mod.rs"), &decls[0]).is_some(), "mod.rs uses tests.rs");
}
