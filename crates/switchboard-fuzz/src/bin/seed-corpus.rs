//! Writes the seed corpus of every fuzz target to `fuzz/corpus/<target>/` and a dictionary per
//! vendor to `fuzz/dicts/<target>.dict`, from the plugins' fixtures:
//! `cargo run -p switchboard-fuzz --bin seed-corpus`.
//!
//! Seeds are written next to whatever the directory already holds (inputs found by fuzzing are
//! kept); a seed whose file exists is overwritten.

use std::fs;
use std::path::Path;

use switchboard_fuzz::corpus::{repo_root, seeds, webhook_dictionary};
use switchboard_fuzz::targets;

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    let fuzz = repo_root().join("fuzz");
    for target in targets() {
        let target = target.as_str();
        let seeds = seeds(target);
        for seed in &seeds {
            write(
                &fuzz.join("corpus").join(target).join(&seed.name),
                &seed.data,
            );
        }
        eprintln!("{target}: {} seeds", seeds.len());
        if let Some(vendor) = target.strip_prefix("webhook_") {
            let dict = fuzz.join("dicts").join(format!("{target}.dict"));
            write(&dict, webhook_dictionary(vendor).as_bytes());
        }
    }
}
