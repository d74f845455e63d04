//! The real `switchboard` binary as replicas on one PostgreSQL database: `switchboard migrate`
//! applies the migrations once, two `serve --database-url` processes (one given the URL by the
//! flag, one by `SWITCHBOARD_DATABASE_URL`) share the log, and one of them killed with SIGKILL
//! in the middle of a flood loses nothing it acknowledged, read back through the other, which
//! kept serving.
//!
//! The database comes from `SWITCHBOARD_TEST_DATABASE_URL`. Unset: the test prints that it
//! skipped and passes. Set but unreachable: it fails. It works in a schema of its own.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const URL_VARIABLE: &str = "SWITCHBOARD_TEST_DATABASE_URL";

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but the database cannot be reached ({url}): {e}")
        });
    tokio::spawn(connection);
    client
}

/// A `switchboard serve` on the database.
struct Replica {
    child: Child,
    http: String,
    grpc: String,
}

impl Replica {
    /// `by_env`: the URL in `SWITCHBOARD_DATABASE_URL` instead of `--database-url`; `log`: a
    /// file for its log at level info (else no log).
    fn start(url: &str, by_env: bool, log: Option<&std::path::Path>) -> Replica {
        let mut command = Command::new(BIN);
        command.args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ]);
        if by_env {
            command.env("SWITCHBOARD_DATABASE_URL", url);
        } else {
            command
                .args(["--database-url", url])
                .env_remove("SWITCHBOARD_DATABASE_URL");
        }
        match log {
            Some(path) => command
                .env("RUST_LOG", "info")
                .stderr(std::fs::File::create(path).unwrap()),
            None => command.env("RUST_LOG", "warn").stderr(Stdio::null()),
        };
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = |prefix: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(prefix))
                .map(|addr| format!("http://{addr}"))
                .unwrap_or_else(|| panic!("no addresses in {line:?}"))
        };
        Replica {
            http: addr("http="),
            grpc: addr("grpc="),
            child,
        }
    }

    fn kill_9(&mut self) {
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

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat_started(chat_id: &str) -> String {
    format!(
        r#"{{"event_type":"chat_started","event_unique_id":"{chat_id}","license_id":"1067","lc_version":"2","chat":{{"id":"{chat_id}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V{chat_id}","name":"n"}}}}"#
    )
}

/// `url` with a password (its own, or one added) and that password.
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (userinfo, host) = rest.split_once('@').expect("the test URL names a user");
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_owned(), password.to_owned()),
        None => {
            let password = "sb-replica-test-pw-5c1e".to_owned();
            (format!("{scheme}://{userinfo}:{password}@{host}"), password)
        }
    }
}

fn migrate(url: &str) -> String {
    let output = Command::new(BIN)
        .args(["migrate", "--database-url", url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_replicas_on_one_database_lose_nothing_when_one_is_killed_mid_flood() {
    let base = match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped binary_replicas: {URL_VARIABLE} is not set (README.md, Tests)"
            );
            return;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let schema = format!("sbcli_{}", std::process::id());
    let admin = admin(&base).await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
    // The URL's password must never reach a log: give it one when it has none (a trust login
    // ignores it).
    let (url, password) = with_password(&url);

    let first = migrate(&url);
    assert!(first.starts_with("applied 3 migrations"), "{first}");
    assert!(!first.contains(&password), "{first}");
    let again = migrate(&url);
    assert!(again.contains("no migration applied"), "{again}");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("survivor.log");
    let survivor = Replica::start(&url, true, Some(&log));
    let mut doomed = Replica::start(&url, false, None);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for c in 0..8 {
        let (client, url) = (client.clone(), format!("{}/webhooks/livechat", doomed.http));
        flood.spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let chat = format!("B{c}-{n}");
                match client.post(&url).body(chat_started(&chat)).send().await {
                    Ok(r) if r.status() == 200 => acked.push(chat),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // killed
                }
            }
            acked
        });
    }
    // The survivor takes webhooks while the other one floods and dies.
    let steady = {
        let (client, url) = (
            client.clone(),
            format!("{}/webhooks/livechat", survivor.http),
        );
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..40 {
                let chat = format!("S{n}");
                let response = client.post(&url).body(chat_started(&chat)).send().await;
                assert_eq!(response.unwrap().status(), 200, "the survivor took {chat}");
                acked.push(chat);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill_9();
    let mut acked = Vec::new();
    while let Some(chats) = flood.join_next().await {
        acked.extend(chats.unwrap());
    }
    acked.extend(steady.await.unwrap());
    assert!(
        acked.iter().any(|c| c.starts_with('B')),
        "the flood got acknowledgements"
    );

    let head: i64 = admin
        .query_one(&format!("SELECT head FROM {schema}.sb_state"), &[])
        .await
        .unwrap()
        .get(0);
    let mut grpc = SwitchboardClient::connect(survivor.grpc.clone())
        .await
        .unwrap();
    let mut stream = grpc
        .stream_events(v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AfterSequence(0)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < head as usize {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("stream open");
        events.push(event);
    }
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=head as u64).collect::<Vec<_>>(), "gap-free");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for event in &events {
        if let Some(id) = &event.conversation_id {
            *seen.entry(id.clone()).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "no webhook twice");
    for chat in &acked {
        assert_eq!(
            seen.get(&format!("livechat/{chat}")),
            Some(&1),
            "acknowledged {chat} is stored exactly once"
        );
    }
    println!(
        "binary replicas: {} acknowledged, {head} events, all present once",
        acked.len()
    );
    assert!(
        survivor.terminate().success(),
        "SIGTERM drains the survivor"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("store open"), "{logged}");
    assert!(
        logged.contains(":***@"),
        "the URL is logged redacted: {logged}"
    );
    assert!(!logged.contains(&password), "the password leaked: {logged}");
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
