//! The operator's path for a backfill, with the real binary: configure a LiveChat connection
//! with API credentials (pointed at the fake LiveChat API on loopback), `switchboard serve`,
//! `switchboard sync`, then see the archived chats and the sync state with the client commands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use switchboard_testkit::fake::livechat::{ACCOUNT_ID, API_KEY, FakeLiveChat, LOGIN};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_backfills_a_configured_connection_and_resumes() {
    let vendor = FakeLiveChat::new().with_archived_chats(150);
    let fake = vendor.start().await.expect("fake starts");
    let dir = tempfile::tempdir().expect("temp dir");
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

[[connections]]
id = "lc-eu"
vendor = "livechat"
settings = {{ account_id = "{ACCOUNT_ID}", login = "{LOGIN}", base_url = "{base}", agent_api_base_url = "{base}", archive_page_size = "50" }}
secrets = {{ webhook_secret = "lc-webhook-secret" }}
"#,
            data = dir.path().join("data").display(),
            base = fake.base_url(),
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        // The API key comes from the environment, as an operator would keep it out of the file.
        .env("SWITCHBOARD_SECRET__LC_EU__API_KEY", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("addresses");
    let _serve = Serve(child);
    let grpc = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("grpc="))
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| panic!("no grpc address in {line:?}"));

    // A first, partial backfill (2 pages), as if interrupted...
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let grpc = grpc.clone();
        move || run(&["sync", "lc-eu", "--max-pages", "2", "--server", &grpc])
    })
    .await
    .expect("join");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 pages"), "{stdout}");
    assert!(stdout.contains("more to pull"), "{stdout}");
    // ...progress is reported per page on a non-terminal...
    assert!(stderr.contains("lc-eu: 1 pages"), "{stderr}");

    // ...then run again: it resumes from the saved cursor and finishes.
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let grpc = grpc.clone();
        move || run(&["sync", "lc-eu", "--server", &grpc])
    })
    .await
    .expect("join");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");

    let (ok, conversations, stderr) = tokio::task::spawn_blocking({
        let grpc = grpc.clone();
        move || run(&["conversations", "list", "--all", "--server", &grpc])
    })
    .await
    .expect("join");
    assert!(ok, "{stderr}");
    assert_eq!(
        conversations
            .lines()
            .filter(|l| l.contains("lc-eu/"))
            .count(),
        150,
        "every archived chat once:\n{conversations}"
    );

    let (ok, connections, stderr) = tokio::task::spawn_blocking({
        let grpc = grpc.clone();
        move || run(&["connections", "--server", &grpc])
    })
    .await
    .expect("join");
    assert!(ok, "{stderr}");
    // The connection's line, then its details on indented lines.
    let block: Vec<&str> = connections
        .lines()
        .skip_while(|l| !l.starts_with("lc-eu "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l)
        .collect();
    let block = block.join("\n");
    assert!(block.contains("last_success=20"), "{connections}");
    assert!(!block.contains("last error"), "{block}");
    assert!(!connections.contains(API_KEY), "no secret in the output");

    // An unknown connection is a clear error.
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || run(&["sync", "nope", "--server", &grpc]))
            .await
            .expect("join");
    assert!(!ok);
    assert!(stderr.contains("no connection"), "{stderr}");
}
