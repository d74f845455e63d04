//! Finding the customer with the real binary: `switchboard serve` on a temp data dir, the
//! plugins' fixtures posted over HTTP, then `conversations list --email/--text`,
//! `contacts list/get`, `contacts erase` (refused without a terminal and without --yes, asked
//! for on a terminal, done with --yes) and `compact`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A `switchboard serve` child; killed when dropped.
struct Serve {
    child: Child,
    http: String,
    grpc: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// The embedded default (one connection per vendor, id = vendor, verification off) on
    /// `data_dir`.
    fn start(data_dir: &Path) -> Serve {
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
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the addresses");
        let addr = |prefix: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(prefix))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {prefix} in {line:?}"))
        };
        Serve {
            http: format!("http://{}", addr("http=")),
            grpc: format!("http://{}", addr("grpc=")),
            child,
        }
    }

    /// Stops it with SIGTERM (a graceful shutdown) and waits.
    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(self.child.wait().expect("wait").success());
    }

    /// Runs a client command against this server: (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(BIN)
            .args(args)
            .args(["--server", &self.grpc])
            .stdin(Stdio::null())
            .output()
            .expect("the binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs a client command until its output holds `wanted` (the finder follows the log a
    /// moment behind); returns that output.
    fn run_until(&self, args: &[&str], wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out, err) = self.run(args);
            if ok && out.contains(wanted) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{args:?} never showed {wanted:?}: {out}{err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fixture body of the plugin of `vendor`, as it is in its `fixtures/` folder.
fn fixture(vendor: &str, name: &str) -> Vec<u8> {
    let (krate, _) = switchboard_plugins::test_connection(vendor).expect("a linked plugin");
    std::fs::read(krate.fixtures_dir().join(format!("{name}.json"))).expect("the fixture")
}

async fn post(http: &str, connection: &str, body: Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{http}/webhooks/{connection}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), 200, "{connection}");
}

/// The contact id (`c<sequence>`) at the start of the first line of `contacts list`.
fn first_contact(list: &str) -> String {
    let id = list
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        id.starts_with('c') && id[1..].parse::<u64>().is_ok(),
        "{list}"
    );
    id
}

/// `switchboard contacts erase ID` on a terminal (a pseudo-terminal made by `script`), with
/// `typed` typed at the prompt: (success, everything the terminal showed).
fn erase_on_a_terminal(server: &Serve, id: &str, typed: &str) -> (bool, String) {
    let command = format!("{BIN} contacts erase {id} --server {}", server.grpc);
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // Type after the prompt is up (a terminal discards nothing typed early, but be plain).
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(typed.as_bytes()).expect("typed");
    stdin.flush().expect("flushed");
    let output = child.wait_with_output().expect("script ends");
    drop(stdin);
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_a_customer_look_at_the_contact_and_erase_it_with_confirmation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Serve::start(&data);
    // Jana Nováková (jana@example.cz, Czech text) through Smartsupp; a LiveChat visitor
    // (name@gmail.com, "Hello. How may I help you?") who is someone else.
    post(
        &server.http,
        "smartsupp",
        fixture("smartsupp", "callback_contact_replied"),
    )
    .await;
    post(
        &server.http,
        "livechat",
        fixture("livechat", "legacy_chat_started"),
    )
    .await;

    // conversations list --email / --text.
    let by_email = server.run_until(
        &["conversations", "list", "--email", "JANA@example.cz"],
        "smartsupp/",
    );
    assert!(!by_email.contains("livechat/PO13"), "{by_email}");
    assert!(by_email.contains("found by the index"), "{by_email}");
    let by_text = server.run_until(
        &["conversations", "list", "--text", "vratit ZBOZI"],
        "smartsupp/",
    );
    assert!(!by_text.contains("livechat/PO13"), "{by_text}");
    let by_text = server.run_until(
        &["conversations", "list", "--text", "how may"],
        "livechat/PO13",
    );
    assert!(!by_text.contains("smartsupp/"), "{by_text}");
    let (ok, out, err) = server.run(&["conversations", "list", "--email", "not-an-email"]);
    assert!(!ok, "{out}");
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");

    // contacts list / get.
    let list = server.run_until(
        &["contacts", "list", "--email", "jana@example.cz"],
        "jana@example.cz",
    );
    let jana = first_contact(&list);
    let (ok, view, err) = server.run(&["contacts", "get", &jana]);
    assert!(ok, "{err}");
    for shown in [
        "jana@example.cz",
        "Jana Nováková",
        "+420601123456",
        "smartsupp/",
    ] {
        assert!(view.contains(shown), "{shown} not in {view}");
    }
    assert!(!view.contains("livechat/PO13"), "{view}");
    let (ok, _, err) = server.run(&["contacts", "get", "c999999"]);
    assert!(!ok);
    assert!(err.contains("NOT_FOUND"), "{err}");

    // Erase without a terminal and without --yes: refused before anything is asked of the
    // server, and nothing changes.
    let (ok, out, err) = server.run(&["contacts", "erase", &jana]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--yes") && err.contains("no terminal"),
        "{err}"
    );
    let (_, view, _) = server.run(&["contacts", "get", &jana]);
    assert!(view.contains("jana@example.cz"), "{view}");

    // On a terminal, a wrong id typed at the prompt erases nothing.
    let (ok, shown) = erase_on_a_terminal(&server, &jana, "c0\n");
    assert!(!ok, "{shown}");
    assert!(shown.contains("Type the contact id"), "{shown}");
    assert!(shown.contains("did not match"), "{shown}");
    let (_, view, _) = server.run(&["contacts", "get", &jana]);
    assert!(view.contains("jana@example.cz"), "{view}");

    // The id typed at the prompt erases.
    let (ok, shown) = erase_on_a_terminal(&server, &jana, &format!("{jana}\n"));
    assert!(ok, "{shown}");
    assert!(
        shown.contains(&format!("erased {jana}: 1 conversations")),
        "{shown}"
    );

    // Gone from every answer; the other visitor stays.
    let (ok, view, err) = server.run(&["contacts", "get", &jana]);
    assert!(ok, "{err}");
    for gone in ["jana@example.cz", "Nováková", "+420601123456"] {
        assert!(!view.contains(gone), "{gone} in {view}");
    }
    assert!(view.contains("(erased"), "{view}");
    let (ok, out, _) = server.run(&["conversations", "list", "--email", "jana@example.cz"]);
    assert!(ok && !out.contains("smartsupp/"), "{out}");
    let (ok, out, _) = server.run(&["conversations", "list", "--text", "zbozi"]);
    assert!(ok && !out.contains("smartsupp/"), "{out}");
    let (_, out, _) = server.run(&["conversations", "list", "--text", "how may"]);
    assert!(out.contains("livechat/PO13"), "{out}");
    // Erasing it again is refused.
    let (ok, _, err) = server.run(&["contacts", "erase", &jana, "--yes"]);
    assert!(!ok);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");

    // compact refuses a running store, then rewrites the stopped one.
    let (ok, _, err) = server.run(&["compact", "--data-dir", &data.to_string_lossy()]);
    assert!(!ok, "compact of a store in use");
    assert!(!err.contains("panicked"), "{err}");
    server.stop();
    let output = Command::new(BIN)
        .args(["compact", "--data-dir"])
        .arg(&data)
        .output()
        .expect("compact runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("compacted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_with_yes_needs_no_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Serve::start(&dir.path().join("data"));
    post(
        &server.http,
        "smartsupp",
        fixture("smartsupp", "callback_contact_replied"),
    )
    .await;
    let list = server.run_until(
        &["contacts", "list", "--phone", "+420 601 123 456"],
        "jana@example.cz",
    );
    let jana = first_contact(&list);
    let (ok, out, err) = server.run(&["contacts", "erase", &jana, "--yes"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("erased {jana}: 1 conversations")),
        "{out}"
    );
    let (ok, out, _) = server.run(&["contacts", "list", "--phone", "+420601123456"]);
    assert!(ok, "{out}");
    assert!(out.contains("no contacts"), "{out}");
}
