//! A newcomer's first hour, through the real binary: the README's config starts as pasted,
//! start-up warns about what is probably a mistake, both reflection versions answer,
//! `/metrics` is complete before the first event, the CLI's output is consistent and fits,
//! a foreign or busy data directory is refused in words, and so is a misspelt setting or secret.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `switchboard serve`; its stderr is collected by a thread.
struct Server {
    child: Child,
    http: String,
    /// `127.0.0.1:PORT`, no scheme.
    grpc: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Server {
    /// Starts `serve` with `args` in `cwd`, with the given extra environment, on free ports.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .current_dir(cwd)
            .arg("serve")
            .args(args)
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(key))
                .map(str::to_owned)
        };
        let (Some(http), Some(grpc)) = (addr("http="), addr("grpc=")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not start: {line:?}; stderr: {}",
                stderr.join().unwrap()
            );
        };
        Server {
            child,
            http: format!("http://{http}"),
            grpc,
            stderr,
        }
    }

    /// SIGTERM, wait, and the server's stderr.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        self.stderr.join().unwrap()
    }

    /// Runs a client command against this server, `--server HOST:PORT` without a scheme.
    fn cli(&self, args: &[&str]) -> String {
        let output = run_for_at_most(
            Command::new(BIN).args(args).args(["--server", &self.grpc]),
            Duration::from_secs(30),
        );
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }
}

/// Runs a command, killing it if it takes longer than `limit` (then panics).
fn run_for_at_most(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {output:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_output(cwd: &Path, args: &[&str]) -> Output {
    run_for_at_most(
        Command::new(BIN)
            .current_dir(cwd)
            .arg("serve")
            .args(args)
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]),
        Duration::from_secs(30),
    )
}

/// The first ```toml block after `## Configuration` in README.md.
fn readme_config() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Configuration")
        .expect("a Configuration section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = section[start..].find("```").unwrap();
    section[start..start + end].to_owned()
}

#[test]
fn the_readme_config_starts_as_pasted_without_root_and_on_loopback() {
    let config = readme_config();
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let setting = line.split('#').next().unwrap();
        assert!(
            !setting.contains("\"...\""),
            "a placeholder in the config: {line}"
        );
        if setting.trim_start().starts_with("addr") {
            assert!(setting.contains("\"127.0.0.1:"), "not loopback: {line}");
        }
        if setting.trim_start().starts_with("data_dir") {
            assert!(setting.contains("\"./"), "not a relative data dir: {line}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), &config).unwrap();
    let server = Server::start(dir.path(), &["--config", "switchboard.toml"], &[]);
    let connections = server.cli(&["connections"]);
    for id in ["livechat-eu", "smartsupp", "livetex", "tencent"] {
        assert!(
            connections
                .lines()
                .any(|l| l.starts_with(&format!("{id} "))),
            "{connections}"
        );
    }
    // `connections` is readable in a terminal: short lines, details indented.
    for line in connections.lines() {
        assert!(line.chars().count() <= 100, "a line too long: {line:?}");
    }
    assert!(
        connections.contains("\n    verification: on"),
        "{connections}"
    );
    server.stop();
    assert!(
        dir.path().join("switchboard-data").join("db").exists(),
        "the store is in ./switchboard-data"
    );
}

#[test]
fn the_readme_says_how_to_install_the_binary_and_how_grpcurl_sends_a_key() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo install --path crates/switchboard-cli --locked"),
        "install command"
    );
    assert!(readme.contains("target/release/switchboard"));
    let manifest =
        std::fs::read_to_string(repo_root().join("crates/switchboard-cli/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"switchboard\""),
        "that crate builds `switchboard`"
    );
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let msrv = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("rust-version in Cargo.toml");
    assert!(
        readme.contains(&format!("The minimum Rust is {msrv}.")),
        "README states rust-version {msrv}"
    );
    let grpcurl = readme
        .lines()
        .find(|l| l.contains("grpcurl") && l.contains(" list"))
        .expect("a grpcurl example");
    assert!(
        grpcurl.contains("-H 'authorization: Bearer "),
        "the grpcurl example sends the key: {grpcurl}"
    );
}

#[test]
fn start_up_warns_about_no_connections_and_unmatched_secret_variables_by_name_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let server = Server::start(
        dir.path(),
        &["--config", "empty.toml"],
        &[(
            "SWITCHBOARD_SECRET__LIVECHAT_EUU__WEBHOOK_SECRET",
            "hunter2-typo",
        )],
    );
    let stderr = server.stop();
    assert!(stderr.contains("no [[connections]]"), "{stderr}");
    assert!(
        stderr.contains("SWITCHBOARD_SECRET__LIVECHAT_EUU__WEBHOOK_SECRET"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "a secret in the log: {stderr}");
    // Logs into a pipe or a file carry no colour codes.
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in a redirected log: {stderr:?}"
    );
}

#[test]
fn secret_variables_without_a_config_are_warned_about_by_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--data-dir", "data"],
        &[(
            "SWITCHBOARD_SECRET__LIVECHAT__WEBHOOK_SECRET",
            "hunter2-default",
        )],
    );
    let stderr = server.stop();
    assert!(
        stderr.contains("SWITCHBOARD_SECRET__LIVECHAT__WEBHOOK_SECRET is ignored"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "a secret in the log: {stderr}");
}

#[test]
fn a_missing_secret_names_the_variable_that_would_supply_it() {
    let dir = tempfile::tempdir().unwrap();
    for (vendor, variable) in [
        ("livetex", "SWITCHBOARD_SECRET__VENDOR_MAIN__WEBHOOK_SECRET"),
        (
            "livechat",
            "SWITCHBOARD_SECRET__VENDOR_MAIN__WEBHOOK_SECRET",
        ),
        ("smartsupp", "SWITCHBOARD_SECRET__VENDOR_MAIN__APP_SECRET"),
    ] {
        std::fs::write(
            dir.path().join("one.toml"),
            format!("[[connections]]\nid = \"vendor-main\"\nvendor = \"{vendor}\"\n"),
        )
        .unwrap();
        let output = serve_output(dir.path(), &["--config", "one.toml"]);
        assert!(!output.status.success(), "{vendor}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{vendor}: {stderr}");
    }
}

#[test]
fn a_data_dir_full_of_other_files_is_refused_and_a_busy_store_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("Cargo.toml"), "[package]").unwrap();
    let output = serve_output(dir.path(), &["--data-dir", "project"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`Cargo.toml`"), "{stderr}");
    assert!(stderr.contains("empty directory"), "{stderr}");
    assert!(!project.join("db").exists(), "no store was created there");

    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let output = serve_output(dir.path(), &["--data-dir", "data"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("in use by another process"), "{stderr}");
    for debug_text in ["Os {", "kind:", "code:"] {
        assert!(!stderr.contains(debug_text), "Rust debug text: {stderr}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_both_v1_and_v1alpha_clients() {
    use tonic_reflection::pb::{v1, v1alpha};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let url = format!("http://{}", server.grpc);

    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"switchboard.v1.Switchboard"), "{names:?}");

    let mut stable = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = stable
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(
            answer.message_response,
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(_))
        ),
        "{answer:?}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_list_every_series_at_zero_before_the_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let text = reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let zero = |series: &str| {
        assert!(
            text.lines().any(|l| l == format!("{series} 0")),
            "{series} is not at zero:\n{text}"
        );
    };
    for series in [
        "switchboard_stream_subscribers",
        "switchboard_stream_subscribers_refused_total",
        "switchboard_stream_subscribers_stalled_total",
        "switchboard_stream_events_sent_total",
        "switchboard_quarantine_entries",
        "switchboard_quarantine_full_total",
        "switchboard_events_appended_total",
        "switchboard_store_unreadable_records_total",
        "switchboard_load_shed_total{front=\"http\"}",
        "switchboard_load_shed_total{front=\"grpc\"}",
    ] {
        zero(series);
    }
    // The embedded default's connections, each at zero.
    for connection in ["livechat", "livetex", "smartsupp", "tencent"] {
        zero(&format!(
            "switchboard_webhooks_total{{connection=\"{connection}\",outcome=\"accepted\"}}"
        ));
        zero(&format!(
            "switchboard_quarantined_total{{connection=\"{connection}\"}}"
        ));
        zero(&format!(
            "switchboard_sync_records_total{{connection=\"{connection}\"}}"
        ));
    }
    zero("switchboard_grpc_requests_total{method=\"ListConversations\",code=\"OK\"}");
    zero("switchboard_vendor_api_retries_total{connection=\"livechat\",vendor=\"livechat\"}");
    // Histograms: described, with empty buckets.
    for name in [
        "switchboard_ingest_seconds",
        "switchboard_stream_lag_events",
        "switchboard_grpc_request_seconds",
        "switchboard_store_batch_size",
        "switchboard_store_commit_seconds",
        "switchboard_vendor_api_call_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} is not described:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}_count")) && l.ends_with(" 0")),
            "{name} has no empty histogram:\n{text}"
        );
    }
    server.stop();
}

async fn post(http: &str, body: String) {
    let response = reqwest::Client::new()
        .post(format!("{http}/webhooks/livechat"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("plugins/livechat/fixtures").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_output_uses_the_filter_names_shows_files_aligns_columns_and_stops_at_the_head() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    for name in [
        "v3_incoming_chat.json",
        "v3_incoming_event_file.json",
        "v3_chat_deactivated.json",
    ] {
        post(&server.http, fixture(name)).await;
    }
    let long_id = "L".repeat(48);
    post(
        &server.http,
        format!(
            r#"{{"event_type":"chat_started","event_unique_id":"{long_id}","license_id":"1067","lc_version":"2","chat":{{"id":"{long_id}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V1","name":"n"}}}}"#
        ),
    )
    .await;

    let shown = server.cli(&["conversations", "get", "livechat/PJ0MRSHTDG"]);
    let first = shown.lines().next().unwrap();
    assert!(first.ends_with(" closed"), "{shown}");
    assert!(!shown.contains("CONVERSATION_STATUS"), "{shown}");
    assert!(shown.contains("[file invoice-1042.pdf]"), "{shown}");

    let listed = server.cli(&["conversations", "list"]);
    let lines: Vec<&str> = listed.lines().collect();
    let column = lines[0].find("vendor").unwrap();
    for line in &lines[1..] {
        assert_eq!(
            line.find(" livechat ").map(|at| at + 1),
            Some(column),
            "columns out of line:\n{listed}"
        );
    }
    assert!(listed.contains(&format!("livechat/{long_id} ")), "{listed}");

    // --until-head ends by itself, with every event, filters applied.
    let all = server.cli(&["tail", "--until-head", "--json"]);
    let events: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 4, "{all}");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"chat_started"), "{kinds:?}");
    assert!(kinds.iter().all(|k| !k.contains("EVENT_KIND")), "{kinds:?}");
    let started = server.cli(&["tail", "--until-head", "--kind", "chat_started"]);
    assert_eq!(
        started.lines().count(),
        kinds.iter().filter(|k| **k == "chat_started").count(),
        "{started}"
    );
    let head = events.last().unwrap()["sequence"].as_u64().unwrap();
    let none = server.cli(&["tail", "--until-head", "--after", &head.to_string()]);
    assert_eq!(none, "", "nothing after the head");
    let messages = server.cli(&["tail", "--until-head", "--kind", "message"]);
    assert!(messages.contains("[file invoice-1042.pdf]"), "{messages}");

    // A server's refusal is one line: its message and the status name, no transport text.
    let output = Command::new(BIN)
        .args([
            "conversations",
            "get",
            "livechat/NOPE",
            "--server",
            &server.grpc,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("(NOT_FOUND)"), "{stderr}");
    assert!(!stderr.contains("code: '"), "{stderr}");

    // A scheme other than http(s) is refused with what to write, not blamed on the server.
    let output = Command::new(BIN)
        .args(["connections", "--server", "grpc://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://HOST:PORT"), "{stderr}");
    assert!(
        !stderr.contains("is `switchboard serve` running"),
        "{stderr}"
    );
    server.stop();
}

#[test]
fn top_level_help_lists_every_command() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "serve",
            "tail",
            "conversations",
            "contacts",
            "connections",
            "sync",
            "quarantine",
            "migrate",
            "compact",
            "plugins",
            "keys",
            "help"
        ],
        "{text}"
    );
    // Nothing above the list names only some of them.
    let about = text.lines().next().unwrap();
    assert!(!about.contains("plugins"), "{about}");
    for command in &commands[..commands.len() - 1] {
        let output = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{command} --help");
    }
}

/// `.ci/run` with a stand-in `cargo` and `rustup` (every step passes but the ones named): CI
/// passes only when the minimum-Rust check passes, cargo-deny is installed and its check passes.
#[test]
fn ci_fails_when_cargo_deny_cannot_be_installed_or_fails_or_the_minimum_rust_fails() {
    let script = repo_root().join(".ci/run");
    let run = |install_ok: bool, deny_ok: bool, msrv_ok: bool| {
        let bin = tempfile::tempdir().unwrap();
        let dir = bin.path().display();
        let fake_cargo = format!(
            "#!/bin/sh\necho \"$@\" >> \"{dir}/calls\"\ncase \"$1\" in\n  install) [ {install} = 1 ] && printf '#!/bin/sh\\nexit 0\\n' > \"{dir}/cargo-deny\" && chmod +x \"{dir}/cargo-deny\" && exit 0; exit 1;;\n  deny) exit {deny};;\n  +*) exit {msrv};;\n  *) exit 0;;\nesac\n",
            install = u8::from(install_ok),
            deny = u8::from(!deny_ok),
            msrv = u8::from(!msrv_ok),
        );
        std::fs::write(bin.path().join("cargo"), fake_cargo).unwrap();
        std::fs::write(bin.path().join("rustup"), "#!/bin/sh\nexit 0\n").unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(bin.path().join("cargo"))
            .arg(bin.path().join("rustup"))
            .status()
            .unwrap();
        let output = Command::new("bash")
            .arg(&script)
            .env("PATH", format!("{dir}:/usr/bin:/bin"))
            // A database named: `.ci/run` sets none up (its tests run through the stand-in).
            .env(
                "SWITCHBOARD_TEST_DATABASE_URL",
                "postgres://stand-in@127.0.0.1:1/none",
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let calls = std::fs::read_to_string(bin.path().join("calls")).unwrap_or_default();
        (output.status.success(), stdout.contains("CI passed"), calls)
    };
    let (ok, passed, _) = run(false, true, true);
    assert!(!ok && !passed, "cargo-deny not installable");
    let (ok, passed, _) = run(true, false, true);
    assert!(!ok && !passed, "cargo deny check failed");
    let (ok, passed, _) = run(true, true, false);
    assert!(!ok && !passed, "the minimum Rust check failed");
    let (ok, passed, calls) = run(true, true, true);
    assert!(ok && passed, "everything passes: {calls}");
    assert!(
        calls.contains("+1.88 check --workspace --all-targets --locked"),
        "the rust-version's toolchain checks the workspace: {calls}"
    );
    assert!(calls.contains("deny check"), "{calls}");
}

#[test]
fn a_misspelt_key_stops_start_up_with_one_line_naming_it_and_the_allowed_names() {
    let dir = tempfile::tempdir().unwrap();
    const VALUE: &str = "typo-value-0c41e9";
    let value = VALUE;
    // Each config is valid but for the one misspelt key; the environment variable case is a
    // secret that only the environment brings.
    /// The vendor, its keys in the config, extra environment, what the error must say.
    type Case = (
        &'static str,
        String,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 4] = [
        (
            "livechat",
            format!(
                "secrets = {{ webhok_secret = \"{value}\", basic_user = \"u\", basic_password = \"p\" }}"
            ),
            &[],
            &[
                "unknown secret `webhok_secret`",
                "`webhook_secret`",
                "`personal_access_token`",
            ],
        ),
        (
            "tencent",
            "settings = { sdk_app_id = \"1400187352\", sign_max_age = \"120\" }".to_owned(),
            &[],
            &[
                "unknown setting `sign_max_age`",
                "`sdk_app_id`",
                "`sign_max_age_secs`",
            ],
        ),
        (
            "livetex",
            format!(
                "settings = {{ page_sise = \"10\" }}\nsecrets = {{ webhook_secret = \"{value}\" }}"
            ),
            &[],
            &[
                "unknown setting `page_sise`",
                "`page_size`",
                "`chats_fields`",
            ],
        ),
        (
            "smartsupp",
            format!("secrets = {{ webhook_secret = \"{value}\" }}"),
            &[("SWITCHBOARD_SECRET__VENDOR_MAIN__APP_SECRETT", VALUE)],
            &[
                "unknown secret `app_secrett`",
                "`app_secret`",
                "SWITCHBOARD_SECRET__VENDOR_MAIN__APP_SECRETT",
            ],
        ),
    ];
    for (vendor, keys, env, expected) in cases {
        std::fs::write(
            dir.path().join("one.toml"),
            format!("[[connections]]\nid = \"vendor-main\"\nvendor = \"{vendor}\"\n{keys}\n"),
        )
        .unwrap();
        let output = run_for_at_most(
            Command::new(BIN)
                .current_dir(dir.path())
                .args(["serve", "--config", "one.toml"])
                .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
                .env("RUST_BACKTRACE", "1")
                .envs(env.iter().copied()),
            Duration::from_secs(30),
        );
        assert!(!output.status.success(), "{vendor}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(errors.len(), 1, "{vendor}: {stderr}");
        for text in expected {
            assert!(
                errors[0].contains(text),
                "{vendor}: no {text:?} in {stderr}"
            );
        }
        assert!(errors[0].contains("vendor-main"), "{vendor}: {stderr}");
        assert!(
            !stderr.contains(value),
            "{vendor}: a secret in the output: {stderr}"
        );
        assert!(!stderr.contains("stack backtrace"), "{vendor}: {stderr}");
    }
}
