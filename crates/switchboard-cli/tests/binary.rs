//! Tests of the real `switchboard` binary: its plugins, its help, and that an acknowledged
//! webhook survives `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[test]
fn every_shipped_plugin_is_registered_in_the_binary() {
    let output = Command::new(BIN).arg("plugins").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let vendors: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // Every plugin crate `switchboard-plugins` links (one per shipped vendor, each with its
    // test connection), whatever they are: no list of vendors to keep here.
    let shipped: Vec<String> = switchboard_plugins::test_connections()
        .into_iter()
        .map(|(_, connection)| connection.vendor)
        .collect();
    assert!(shipped.len() >= 4, "{shipped:?}");
    assert_eq!(vendors, shipped, "{text}");
}

#[test]
fn help_explains_every_command() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    for command in [
        "serve",
        "tail",
        "conversations",
        "connections",
        "plugins",
        "keys",
        "contacts",
        "compact",
    ] {
        assert!(text.contains(command), "--help lacks {command}: {text}");
    }
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--data-dir",
        "--database-url",
        "SWITCHBOARD_DATABASE_URL",
        "--http-addr",
        "--grpc-addr",
        "--allow-unauthenticated",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}: {text}");
    }
    let output = Command::new(BIN).args(["tail", "--help"]).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    for flag in ["--api-key", "SWITCHBOARD_API_KEY", "--ca-cert"] {
        assert!(text.contains(flag), "tail --help lacks {flag}: {text}");
    }
}

#[test]
fn a_bad_config_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[connections]]\nid = \"x\"\nvendor = \"zendesk\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("zendesk") && err.contains("livechat"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `migrate` and `serve --database-url` refuse a missing, foreign or unreachable database with
/// one line that never shows the password.
#[test]
fn migrate_and_a_database_url_give_one_clear_line_without_the_password() {
    let output = Command::new(BIN)
        .arg("migrate")
        .env_remove("SWITCHBOARD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("migrate needs a database"), "{err}");
    assert!(err.contains("--database-url"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let runs: [&[&str]; 3] = [
        &["migrate", "--database-url", "mysql://root:s3cret@db/x"],
        &[
            "migrate",
            "--database-url",
            "postgres://sb:s3cret@127.0.0.1:1/switchboard?connect_timeout=2",
        ],
        &[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--database-url",
            "postgres://sb:s3cret@127.0.0.1:1/switchboard?connect_timeout=2",
        ],
    ];
    for args in runs {
        let output = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(error_lines.len(), 1, "{args:?}: {err}");
        assert!(!err.contains("s3cret"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            error_lines[0].contains("not a PostgreSQL URL")
                || error_lines[0].contains("cannot be reached"),
            "{args:?}: {err}"
        );
        assert!(error_lines[0].contains(":***@"), "{args:?}: {err}");
    }
}

#[test]
fn an_unusable_or_corrupt_data_dir_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data dir should be.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    // A data dir whose store file is garbage.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join("db")).unwrap();
    std::fs::write(corrupt.join("db").join("conf"), "not sled").unwrap();
    std::fs::write(corrupt.join("db").join("db"), vec![0xA5u8; 4096]).unwrap();
    for data_dir in [file, corrupt] {
        let output = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{}", data_dir.display());
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&*data_dir.to_string_lossy()),
            "the error names the data dir: {err}"
        );
    }
}

/// Hostile-input issue, finding 8: a truncated or overwritten store gives one clear error that
/// names the file and the likely cause: no sled panic, no backtrace, no "check permissions".
#[test]
fn a_truncated_or_overwritten_store_names_the_file_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert!(server.terminate().success());
    let db = std::fs::read(data.join("db")).unwrap();
    let truncated = dir.path().join("truncated");
    let overwritten = dir.path().join("overwritten");
    for (copy, contents) in [
        (&truncated, db[..db.len() / 2].to_vec()),
        (&overwritten, vec![0x5Au8; db.len().max(4096)]),
    ] {
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(&data)
                .arg(copy)
                .status()
                .unwrap()
                .success()
        );
        std::fs::write(copy.join("db"), contents).unwrap();
        let output = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(copy)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let err = String::from_utf8_lossy(&output.stderr);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        let line = error_lines[0];
        assert!(line.contains("is corrupt: its file db"), "{line}");
        assert!(line.contains("likely cause"), "{line}");
        assert!(!line.contains("permissions"), "{line}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("Stack backtrace"), "{err}");
    }
}

/// A running `switchboard serve` child process.
struct Server {
    child: Child,
    http: String,
    grpc: String,
}

/// A test that fails mid-way does not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // What the server says on stderr, kept for a failure message.
        let mut stderr = child.stderr.take().unwrap();
        let said = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let mut http = None;
        let mut grpc = None;
        for part in line.split_whitespace() {
            if let Some(addr) = part.strip_prefix("http=") {
                http = Some(format!("http://{addr}"));
            }
            if let Some(addr) = part.strip_prefix("grpc=") {
                grpc = Some(format!("http://{addr}"));
            }
        }
        let Some(http) = http else {
            let _ = child.wait();
            let said = said.join().unwrap_or_default();
            panic!("no addresses in {line:?}; the server said: {said}");
        };
        Server {
            child,
            http,
            grpc: grpc.unwrap(),
        }
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

fn chat_started(chat_id: &str) -> String {
    format!(
        r#"{{"event_type":"chat_started","event_unique_id":"{chat_id}","license_id":"1067","lc_version":"2","chat":{{"id":"{chat_id}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V{chat_id}","name":"n"}}}}"#
    )
}

/// Posts unique chats from `clients` concurrent clients until the server dies; returns the
/// chat ids that were acknowledged (200).
async fn flood(http: &str, cycle: usize, clients: usize) -> Vec<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = client.clone();
        let url = format!("{http}/webhooks/livechat");
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let chat = format!("K{cycle}-{c}-{n}");
                match client.post(&url).body(chat_started(&chat)).send().await {
                    Ok(r) if r.status() == 200 => acked.push(chat),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the server is gone
                }
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acked.extend(result.unwrap());
    }
    acked
}

async fn all_events(grpc: &str, after: u64) -> Vec<v1::Event> {
    let mut client = SwitchboardClient::connect(grpc.to_owned()).await.unwrap();
    let mut stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AfterSequence(after)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    // The stream never ends on its own; stop when it has been quiet for a while.
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(500), stream.next_message()).await
    {
        events.push(event);
    }
    events
}

trait NextMessage {
    async fn next_message(&mut self) -> Option<Result<v1::Event, tonic::Status>>;
}

impl NextMessage for tonic::Streaming<v1::Event> {
    async fn next_message(&mut self) -> Option<Result<v1::Event, tonic::Status>> {
        self.message().await.transpose()
    }
}

/// The kill -9 test: several concurrent clients flood webhooks, the server is killed at a
/// pseudo-random moment, restarted, and every acknowledged webhook must be there exactly once,
/// with a gap-free log that can be resumed from any cursor, and its conversation readable.
/// `SWITCHBOARD_CRASH_CYCLES` sets the
/// number of cycles (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_kill_9() {
    let cycles: usize = std::env::var("SWITCHBOARD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked_total: Vec<String> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for cycle in 0..cycles {
        let server = Server::start(&data);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(100 + seed % 400);
        let http = server.http.clone();
        let flood = tokio::spawn(async move { flood(&http, cycle, 8).await });
        tokio::time::sleep(delay).await;
        server.kill_9();
        let acked = flood.await.unwrap();
        acked_total.extend(acked);
    }

    let server = Server::start(&data);
    let events = all_events(&server.grpc, 0).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "the log has no gap"
    );
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for event in &events {
        if let Some(id) = &event.conversation_id {
            *seen.entry(id.clone()).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "no webhook appears twice");
    for chat in &acked_total {
        assert_eq!(
            seen.get(&format!("livechat/{chat}")),
            Some(&1),
            "acknowledged {chat} is stored exactly once"
        );
    }
    assert!(!acked_total.is_empty(), "the flood acknowledged something");
    // Each acknowledged webhook's conversation reads back: the server writes conversations a
    // little after the log, and a restart rebuilds those a kill caught in memory.
    let mut client = SwitchboardClient::connect(server.grpc.clone())
        .await
        .unwrap();
    for chat in &acked_total {
        let id = format!("livechat/{chat}");
        let conversation = client
            .get_conversation(v1::GetConversationRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("acknowledged {id} reads back: {status}"))
            .into_inner();
        assert_eq!(conversation.id, id);
    }
    // A subscriber resuming from any cursor sees exactly the rest.
    for cursor in [
        0,
        events.len() as u64 / 3,
        events.len() as u64 / 2,
        events.len() as u64 - 1,
    ] {
        let rest = all_events(&server.grpc, cursor).await;
        let expected: Vec<u64> = (cursor + 1..=events.len() as u64).collect();
        let got: Vec<u64> = rest.iter().map(|e| e.sequence).collect();
        assert_eq!(got, expected, "resume after {cursor}");
    }
    println!(
        "{cycles} kill -9 cycles: {} acknowledged, {} events, all present once",
        acked_total.len(),
        events.len()
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM shuts down cleanly: {status:?}");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// The finder's index failing under a running server (here its directory is deleted, as a
/// failing disk would lose it) must not keep the process from exiting: tantivy's writer could
/// not be rolled back, and the next batch, larger than tantivy's queue, blocked forever on
/// threads that were gone. The server logged "switchboard stopped" and never exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_index_directory_is_lost_still_ingests_and_exits_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    std::fs::remove_dir_all(data.join("find")).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/livechat", server.http);
    // More documents than tantivy queues between its writer and its threads (10,000), so
    // that a batch after the failed one would fill the queue.
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..8 {
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            for n in 0..800 {
                let body = chat_started(&format!("L{c}-{n}"));
                let response = client.post(&url).body(body).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    // Time for the finder to read them and fail at least once more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_at_most(&mut server.child, Duration::from_secs(40));
    assert!(status.success(), "{status:?}");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` where mounting is not allowed (not root): the caller says so and skips.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk(path.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Waits for the child to exit, at most `limit`; kills it and fails past that.
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Hostile-input issue, finding 5: after a write failure (a full disk) the server must say it
/// is not ready, SIGTERM must end it within its grace, and a restart with room again must
/// recover every acknowledged webhook. Needs root to mount a small tmpfs (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_server_unready_sigterm_still_exits_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "6m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = disk.0.join("data");
    let mut server = Server::start(&data);
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/livechat", server.http);
    // Large visitor names: the disk fills after a few dozen webhooks. Pseudo-random letters,
    // because the store compresses what it keeps.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let filler: String = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..400 {
        let chat = format!("F{n}");
        let body = chat_started(&chat).replace("\"name\":\"n\"", &format!("\"name\":\"{filler}\""));
        let response = client.post(&url).body(body).send().await.unwrap();
        match response.status().as_u16() {
            200 => acked.push(chat),
            status => {
                refused = Some((status, response.text().await.unwrap()));
                break;
            }
        }
    }
    let (status, text) = refused.expect("the disk filled up");
    assert_eq!(status, 503, "{text}");
    assert!(!acked.is_empty());
    let ready = client
        .get(format!("{}/readyz", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let reason = ready.text().await.unwrap();
    assert!(reason.contains("a store write failed"), "{reason}");

    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    // The default grace is 10 s; the store gets what is left of it.
    wait_at_most(&mut server.child, Duration::from_secs(30));

    // Room again: the same files on a large disk.
    let roomy = dir.path().join("roomy");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&roomy)
        .status()
        .unwrap();
    assert!(copied.success());
    drop(disk);
    let server = Server::start(&roomy);
    let events = all_events(&server.grpc, 0).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    for chat in &acked {
        assert!(
            events.iter().any(|e| e
                .conversation_id
                .as_deref()
                .is_some_and(|id| id.ends_with(&format!("/{chat}")))),
            "acknowledged chat {chat} is missing after the restart"
        );
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// The quarantine from the command line, across `kill -9`: an authentic webhook no plugin can
/// map is answered 200, survives a crash, is listed, and a retry that still cannot map it
/// keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_webhooks_survive_kill_9_and_are_listed_and_retried_from_the_cli() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/livechat", server.http))
        .body(r#"{"event_type":"chat_started"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.kill_9();

    let server = Server::start(&data);
    let cli = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .args(["--server", &server.grpc])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = cli(&["quarantine", "list", "--bodies"]);
    assert!(listed.starts_with("1 held"), "{listed}");
    assert!(listed.contains("livechat"), "{listed}");
    assert!(
        listed.contains(r#"{"event_type":"chat_started"}"#),
        "{listed}"
    );
    let retried = cli(&["quarantine", "retry", "--all"]);
    assert!(retried.contains("released 0"), "{retried}");
    assert!(retried.contains("1 still failing"), "{retried}");
    let listed = cli(&["quarantine", "list"]);
    assert!(listed.contains("attempts=1"), "{listed}");
    assert!(server.terminate().success());
}
