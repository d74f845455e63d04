//! Interim golden check until the conformance kit lands (then `tests/conformance.rs` does it).
use std::path::Path;

#[test]
fn fixtures_match_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var("SWITCHBOARD_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(root.join("fixtures")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".json") || name.ends_with(".request.json") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let events = switchboard_plugin_livetex::parse_webhook(&body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = serde_json::to_string_pretty(&events).unwrap() + "\n";
        let golden = root.join("golden").join(&name);
        if bless {
            std::fs::write(&golden, &text).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(text.as_str()) {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "golden mismatch: {failures:?}");
}
