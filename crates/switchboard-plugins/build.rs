//! Reads this crate's `Cargo.toml` and writes `$OUT_DIR/plugins.rs`: an `extern crate ... as _;`
//! for every `switchboard-plugin-*` dependency (so that its `inventory::submit!` is linked) and
//! the `CRATES` table of their names and directories. Adding a plugin is then one line in
//! `Cargo.toml` and nothing here.

use std::fmt::Write as _;
use std::path::Path;

const PREFIX: &str = "switchboard-plugin-";

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let manifest_path = Path::new(&manifest_dir).join("Cargo.toml");
    println!("cargo::rerun-if-changed=Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest_path.display()));

    let mut plugins = Vec::new();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[dependencies]" || !line.starts_with(PREFIX) {
            continue;
        }
        let (name, spec) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("Cargo.toml: cannot read the dependency line {line:?}"));
        let name = name.trim();
        let path = spec
            .split_once("path")
            .and_then(|(_, rest)| rest.split('"').nth(1))
            .unwrap_or_else(|| {
                panic!(
                    "Cargo.toml: {name} must be a path dependency on one line: {name} = {{ path = \"../../plugins/<vendor>\" }}"
                )
            });
        let dir = Path::new(&manifest_dir).join(path);
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("Cargo.toml: {name}: {}: {e}", dir.display()));
        plugins.push((name.to_owned(), dir));
    }
    plugins.sort();

    let mut out = String::new();
    for (name, _) in &plugins {
        let _ = writeln!(out, "extern crate {} as _;", name.replace('-', "_"));
    }
    out.push_str("\n/// Every plugin crate this crate links, by crate name, with its directory.\n");
    out.push_str("pub const CRATES: &[PluginCrate] = &[\n");
    for (name, dir) in &plugins {
        let _ = writeln!(
            out,
            "    PluginCrate {{ name: {name:?}, dir: {:?} }},",
            dir.display().to_string()
        );
    }
    out.push_str("];\n");
    let target = Path::new(&out_dir).join("plugins.rs");
    std::fs::write(&target, out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}
