//! `segctl policy graph -f FILE`: dot, Mermaid, and SVG drawn by Graphviz
//! (rasterized with rsvg-convert, so the SVG is one a renderer reads), and
//! the dot text with a note when Graphviz is missing. No controller needed.

use std::process::Command;

fn segctl(args: &[&str], path: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segctl"));
    cmd.args(args);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().expect("run segctl")
}

const SHOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop/policy.yaml");

#[test]
fn the_shop_example_as_dot_mermaid_and_svg() {
    let dot = segctl(&["policy", "graph", "-f", SHOP, "-o", "dot"], None);
    let text = String::from_utf8_lossy(&dot.stdout);
    assert!(
        dot.status.success() && text.contains("\"shop/api\" -> \"shop/db\" [label=\"5432/tcp\"]"),
        "{text}"
    );
    let mermaid = segctl(&["policy", "graph", "-f", SHOP, "-o", "mermaid"], None);
    assert!(String::from_utf8_lossy(&mermaid.stdout).starts_with("flowchart LR"));
    let svg = segctl(&["policy", "graph", "-f", SHOP], None);
    let image = String::from_utf8_lossy(&svg.stdout);
    assert!(svg.status.success() && image.contains("<svg") && image.contains("shop/web"), "{image}");
    let dir = tempfile::tempdir().unwrap();
    let (file, png) = (dir.path().join("shop.svg"), dir.path().join("shop.png"));
    std::fs::write(&file, &svg.stdout).unwrap();
    let raster = Command::new("rsvg-convert")
        .arg(&file)
        .arg("-o")
        .arg(&png)
        .status()
        .expect("rsvg-convert (scripts/setup)");
    assert!(raster.success() && std::fs::metadata(&png).unwrap().len() > 1000);
}

#[test]
fn without_graphviz_the_dot_text_comes_with_a_note() {
    let out = segctl(&["policy", "graph", "-f", SHOP], Some("/nonexistent"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Graphviz is not installed"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph seg {"));
}

#[test]
fn a_bad_file_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nservices:\n  db: { egres: none }\n").unwrap();
    let out = segctl(&["policy", "graph", "-f", bad.to_str().unwrap()], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.yaml:3:"), "{err}");
}
