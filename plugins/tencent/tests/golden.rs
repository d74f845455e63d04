//! Golden files: every fixture's parsed events, reviewed. `SWITCHBOARD_BLESS=1` rewrites them.
//! (Temporary: the conformance kit takes this over.)

use std::path::Path;

use switchboard_core::{ConnectionConfig, ConnectionId, Timestamp, WebhookRequest};

fn pairs(value: Option<&serde_json::Value>) -> Vec<(String, String)> {
    value
        .and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn golden_files_match() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = ConnectionConfig::new(ConnectionId::new("tencent").unwrap(), "tencent");
    config.verify = false;
    let source = switchboard_plugin_tencent::webhook(&config).unwrap();
    let bless = std::env::var("SWITCHBOARD_BLESS").as_deref() == Ok("1");
    let mut names: Vec<_> = std::fs::read_dir(root.join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".request.json"))
        .collect();
    names.sort();
    for name in names {
        let body = std::fs::read(root.join("fixtures").join(&name)).unwrap();
        let request_file = root
            .join("fixtures")
            .join(name.replace(".json", ".request.json"));
        let meta: serde_json::Value = std::fs::read(&request_file)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default();
        let headers = pairs(meta.get("headers"));
        let query = pairs(meta.get("query"));
        let request = WebhookRequest {
            connection: &config,
            headers: &headers,
            query: &query,
            body: &body,
            received_at: Timestamp::from_secs(1).unwrap(),
        };
        let events = source.parse(&request).unwrap();
        let text = serde_json::to_string_pretty(&events).unwrap() + "\n";
        let golden = root.join("golden").join(&name);
        if bless {
            std::fs::write(&golden, text).unwrap();
        } else {
            assert_eq!(std::fs::read_to_string(&golden).unwrap(), text, "{name}");
        }
    }
}
