//! Signs a fixture body for its `.request.json`, as a vendor that signs its webhooks would:
//!
//! ```sh
//! cargo run -p switchboard-testkit --bin sign-fixture -- \
//!     plugins/acme/fixtures/chat_started.json x-acme-signature sha256 hex app-secret-93b7e0 sha256=
//! ```
//!
//! computes the HMAC (`sha1` or `sha256`, written `hex` or `base64`, after the optional prefix)
//! of the body's exact bytes keyed by the secret, and writes it as the header into
//! `<name>.request.json` beside the body, keeping every other header and query parameter.
//! Use the secret your `fixtures/connection.toml` gives. Re-run it whenever the body changes.

use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use serde_json::{Map, Value};
use switchboard_core::verify::{HmacHash, hmac_digest};

const USAGE: &str = "usage: sign-fixture <fixtures/name.json> <header> <sha1|sha256> <hex|base64> <secret> [prefix]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sign-fixture: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let [body_path, header, hash, encoding, secret, rest @ ..] = args else {
        return Err(USAGE.to_owned());
    };
    let prefix = match rest {
        [] => "",
        [prefix] => prefix.as_str(),
        _ => return Err(USAGE.to_owned()),
    };
    let hash = match hash.as_str() {
        "sha1" => HmacHash::Sha1,
        "sha256" => HmacHash::Sha256,
        other => return Err(format!("unknown hash {other:?}: use sha1 or sha256")),
    };
    let body_path = Path::new(body_path);
    let name = body_path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .filter(|n| !n.ends_with(".request"))
        .ok_or_else(|| format!("{} is not a fixture body <name>.json", body_path.display()))?;
    let body = std::fs::read(body_path)
        .map_err(|e| format!("cannot read {}: {e}", body_path.display()))?;
    let digest = hmac_digest(hash, secret.as_bytes(), &body);
    let signature = match encoding.as_str() {
        "hex" => hex::encode(digest),
        "base64" => base64::engine::general_purpose::STANDARD.encode(digest),
        other => return Err(format!("unknown encoding {other:?}: use hex or base64")),
    };
    let request_path = body_path.with_file_name(format!("{name}.request.json"));
    let mut request = match std::fs::read(&request_path) {
        Ok(text) => serde_json::from_slice::<Value>(&text)
            .map_err(|e| format!("{} is not JSON: {e}", request_path.display()))?,
        Err(_) => Value::Object(Map::new()),
    };
    let headers = request
        .as_object_mut()
        .ok_or_else(|| format!("{} is not a JSON object", request_path.display()))?
        .entry("headers")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| format!("{}: headers is not an object", request_path.display()))?;
    headers.retain(|k, _| !k.eq_ignore_ascii_case(header));
    headers.insert(
        header.to_ascii_lowercase(),
        Value::String(format!("{prefix}{signature}")),
    );
    let text = serde_json::to_string_pretty(&request).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&request_path, text)
        .map_err(|e| format!("cannot write {}: {e}", request_path.display()))?;
    Ok(format!(
        "{}: {header}: {prefix}{signature}",
        request_path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_into_the_request_file_keeping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("hello.json");
        std::fs::write(&body, "The quick brown fox jumps over the lazy dog").unwrap();
        std::fs::write(
            dir.path().join("hello.request.json"),
            r#"{"headers": {"X-Sig": "old", "x-other": "1"}, "query": {"a": "b"}}"#,
        )
        .unwrap();
        let args: Vec<String> = [
            body.to_str().unwrap(),
            "X-Sig",
            "sha256",
            "hex",
            "key",
            "sha256=",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        run(&args).unwrap();
        let written: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("hello.request.json")).unwrap())
                .unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "headers": {
                    "x-sig": "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
                    "x-other": "1"
                },
                "query": {"a": "b"}
            })
        );
        assert!(run(&args[..3]).unwrap_err().starts_with("usage"));
    }
}
