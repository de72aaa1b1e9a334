//! Compiles every Grafana dashboard in `dashboards/*.json` into the operator (the dashboards
//! ConfigMap it creates), so a dashboard added there needs no code change here.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../dashboards");
    // A directory: cargo reruns this script when any file in it changes, is added or removed.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut out = String::from("&[\n");
    for f in &files {
        let name = f.file_name().unwrap().to_str().expect("a UTF-8 file name");
        let path = f.canonicalize().unwrap();
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.to_str().expect("a UTF-8 path")));
    }
    out.push(']');
    fs::write(PathBuf::from(env::var("OUT_DIR").unwrap()).join("dashboards.rs"), out).unwrap();
}
