//! No secret ever reaches the logs: the real binary runs at `RUST_LOG=debug` with JSON logs and
//! a config full of webhook secrets, vendor credentials and an API key hash; good and bad
//! webhooks and gRPC calls with wrong, missing and right keys are sent; then every byte it wrote
//! is searched for every secret.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

const WEBHOOK_SECRET: &str = "lc-hook-Zq8sVt31";
const BASIC_PASSWORD: &str = "basic-pw-Ml20xQ";
const SMARTSUPP_TOKEN: &str = "ss-hook-Pa77Kd";
const APP_SECRET: &str = "ss-app-secret-Rr41";
const SMARTSUPP_API_TOKEN: &str = "ss-api-token-Wq93Lm";
const LIVETEX_KEY: &str = "lt-key-Hn55Cx";
const LIVETEX_PASSWORD: &str = "lt-password-Uy62Bz";
/// A wrong credential a caller presents: not ours, but it must not be echoed either.
const WRONG_TOKEN: &str = "wrong-token-Gk19Fe";

fn chat_started(chat_id: &str) -> String {
    format!(
        r#"{{"event_type":"chat_started","event_unique_id":"{chat_id}","license_id":"1067","lc_version":"2","chat":{{"id":"{chat_id}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V{chat_id}","name":"n"}}}}"#
    )
}

/// Runs `switchboard keys new` and returns (key, config snippet).
fn new_key(name: &str, scope: &str) -> (String, String) {
    let output = Command::new(BIN)
        .args(["keys", "new", "--name", name, "--scope", scope])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let key = text
        .lines()
        .find(|l| l.starts_with("sbk_"))
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_owned();
    let snippet = text[text.find("[[api_keys]]").unwrap()..].to_owned();
    assert!(!snippet.contains(&key), "the snippet holds only the hash");
    (key, snippet)
}

async fn call_with(channel: Channel, key: Option<&str>) -> Result<(), tonic::Status> {
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        key.map(|k| format!("Bearer {k}").parse().unwrap());
    let mut client =
        SwitchboardClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            if let Some(v) = &value {
                r.metadata_mut().insert("authorization", v.clone());
            }
            Ok(r)
        });
    client
        .list_connections(v1::ListConnectionsRequest {})
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_key_or_password_appears_in_the_logs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (key, snippet) = new_key("ops", "admin");
    let (reader_key, reader_snippet) = new_key("reader", "conversations:read");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[http]
addr = "127.0.0.1:0"
[grpc]
addr = "127.0.0.1:0"

{snippet}
{reader_snippet}
[[connections]]
id = "livechat"
vendor = "livechat"
secrets = {{ webhook_secret = "{WEBHOOK_SECRET}", basic_user = "lc", basic_password = "{BASIC_PASSWORD}" }}

[[connections]]
id = "smartsupp"
vendor = "smartsupp"
settings = {{ base_url = "http://127.0.0.1:9", max_attempts = "1", deadline_ms = "1000" }}
secrets = {{ webhook_secret = "{SMARTSUPP_TOKEN}", app_secret = "{APP_SECRET}", api_token = "{SMARTSUPP_API_TOKEN}" }}

[[connections]]
id = "livetex"
vendor = "livetex"
settings = {{ login = "ops@example.com", base_url = "http://127.0.0.1:9", max_attempts = "1", deadline_ms = "1000" }}
secrets = {{ webhook_key = "{LIVETEX_KEY}", password = "{LIVETEX_PASSWORD}" }}
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let hashes: Vec<String> = [&snippet, &reader_snippet]
        .iter()
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("sha256 = \""))
                .unwrap()
                .trim_end_matches('"')
                .to_owned()
        })
        .collect();

    let mut child = Command::new(BIN)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env_remove("SWITCHBOARD_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = |prefix: &str| {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {line:?}"))
            .to_owned()
    };
    let http = format!("http://{}", addr("http="));
    let grpc = format!("http://{}", addr("grpc="));

    // Webhooks: right token, wrong token, right and wrong Basic auth, wrong HMAC, wrong key.
    let web = reqwest::Client::new();
    let post = |path: &str, body: String, headers: Vec<(&'static str, String)>| {
        let mut request = web.post(format!("{http}{path}")).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let ok = post(
        "/webhooks/livechat",
        chat_started("A1"),
        vec![("x-switchboard-token", WEBHOOK_SECRET.to_owned())],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    for (path, headers) in [
        (
            "/webhooks/livechat",
            vec![("x-switchboard-token", WRONG_TOKEN.to_owned())],
        ),
        ("/webhooks/livechat?token=wrong-token-Gk19Fe", Vec::new()),
        (
            "/webhooks/livechat",
            vec![(
                "authorization",
                format!("Basic {}", basic("lc", WRONG_TOKEN)),
            )],
        ),
        (
            "/webhooks/smartsupp",
            vec![("x-smartsupp-hmac", WRONG_TOKEN.to_owned())],
        ),
    ] {
        let response = post(path, chat_started("B1"), headers).await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let basic_ok = post(
        "/webhooks/livechat",
        chat_started("A2"),
        vec![(
            "authorization",
            format!("Basic {}", basic("lc", BASIC_PASSWORD)),
        )],
    )
    .await
    .unwrap();
    assert_eq!(basic_ok.status(), 200);
    let livetex = post(
        "/webhooks/livetex",
        format!(r#"{{"webHookKey":"{WRONG_TOKEN}","type":"message"}}"#),
        Vec::new(),
    )
    .await
    .unwrap();
    assert!(livetex.status().is_client_error());

    // gRPC: no key, wrong key, a key without the scope, the right key; and a sync that fails
    // against an unreachable vendor with the vendor credentials configured.
    let channel = Channel::from_shared(grpc).unwrap().connect().await.unwrap();
    let status = call_with(channel.clone(), None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = call_with(channel.clone(), Some(WRONG_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = call_with(channel.clone(), Some(&reader_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    call_with(channel.clone(), Some(&key)).await.unwrap();
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    let mut admin =
        SwitchboardClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        });
    for connection in ["smartsupp", "livetex"] {
        let sync = admin.sync_connection(v1::SyncConnectionRequest {
            connection_id: connection.to_owned(),
            ..Default::default()
        });
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), sync).await {
            let mut stream = response.into_inner();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Ok(Some(_)) = stream.message().await {}
            })
            .await;
        }
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let logs = format!("{line}{rest}{}", stderr_reader.join().unwrap());

    // The capture is real: it holds the requests we made, at debug level, as JSON.
    assert!(logs.contains("webhook ingested"), "{logs}");
    assert!(logs.contains("gRPC request refused"), "{logs}");
    assert!(
        logs.contains("\"api_key\":\"ops\""),
        "the key's name is logged"
    );
    assert!(
        logs.contains("\"level\":\"DEBUG\""),
        "debug logs were captured"
    );
    for secret in [
        WEBHOOK_SECRET,
        BASIC_PASSWORD,
        SMARTSUPP_TOKEN,
        APP_SECRET,
        SMARTSUPP_API_TOKEN,
        LIVETEX_KEY,
        LIVETEX_PASSWORD,
        WRONG_TOKEN,
        &key,
        &reader_key,
        &hashes[0],
        &hashes[1],
        &basic("lc", BASIC_PASSWORD),
    ] {
        if let Some(at) = logs.find(secret) {
            let start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!("{secret:?} appears in the logs: {}", &logs[start..end]);
        }
    }
}

/// `user:password` in base64, as HTTP Basic sends it.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
