//! An acknowledged append survives `kill -9`.
//!
//! The test re-executes its own binary as a child (selected by [`CHILD_DIR`]) that appends in a
//! loop from several tasks and prints each acknowledged dedup key. The parent kills it with
//! SIGKILL mid-stream, reopens the store and checks every acknowledged key. The child holds
//! changed conversations in memory for an hour, so none of them is written when it dies: the
//! reopened store rebuilds them from the log.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{conn, message, request, ts};
use switchboard_core::{ConversationId, Sequence};
use switchboard_store::{Store, StoreOptions, SyncUpdate};

/// Set in the child: the store directory to append to.
const CHILD_DIR: &str = "SWITCHBOARD_STORE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_appends_survive_kill_9";
/// The parent kills the child after this many acknowledgements.
const KILL_AFTER: usize = 300;

#[test]
fn acknowledged_appends_survive_kill_9() {
    kill_9(TEST_NAME, StoreOptions::default().sled_flush_interval);
}

/// The same with sled never flushed after open: every acknowledged group is in sled's file
/// only through the journal, replayed at the next open (see the store's docs: Durability).
#[test]
fn acknowledged_appends_survive_kill_9_when_sled_was_never_flushed() {
    kill_9(
        "acknowledged_appends_survive_kill_9_when_sled_was_never_flushed",
        Duration::from_secs(3600),
    );
}

/// Set in the child: its `sled_flush_interval`, in milliseconds.
const CHILD_SLED_FLUSH: &str = "SWITCHBOARD_STORE_CRASH_CHILD_SLED_FLUSH_MS";

fn kill_9(test_name: &str, sled_flush: Duration) {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let millis = std::env::var(CHILD_SLED_FLUSH).unwrap().parse().unwrap();
        run_child(Path::new(&dir), Duration::from_millis(millis));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SLED_FLUSH, sled_flush.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < KILL_AFTER {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(key) = line.strip_prefix("ACK ") {
                    acknowledged.push(key.to_owned());
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "the child stopped acknowledging after {} appends: {e}",
                    acknowledged.len()
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    reader.join().unwrap();
    acknowledged.extend(
        lines
            .try_iter()
            .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned)),
    );
    assert!(acknowledged.len() >= KILL_AFTER);

    let store = Store::open(dir.path()).unwrap();
    let head = store.head();
    let events = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence.0).collect();
    assert_eq!(
        sequences,
        (1..=head.0).collect::<Vec<_>>(),
        "the log has a gap"
    );
    let mut logged: HashMap<&str, usize> = HashMap::new();
    for event in &events {
        *logged.entry(event.incoming.dedup_key.as_str()).or_default() += 1;
    }
    assert!(logged.values().all(|&n| n == 1), "a key was appended twice");
    for key in &acknowledged {
        assert_eq!(
            logged.get(key.as_str()),
            Some(&1),
            "acknowledged {key} was lost"
        );
    }
    // The cursor and the record count were saved in the same batches as the events: they
    // name an event that is in the log and count exactly the events that are.
    let state = store.sync_state(&conn("lc")).unwrap().unwrap();
    assert!(logged.contains_key(state.cursor.as_deref().unwrap()));
    assert_eq!(state.records_pulled, head.0);
    // Every acknowledged message is in its conversation, rebuilt from the log at open, and
    // each conversation counts exactly the events the log holds for it.
    let mut per_chat: HashMap<String, u64> = HashMap::new();
    for key in logged.keys() {
        let task = key.split('-').next().unwrap().trim_start_matches('t');
        *per_chat.entry(format!("chat-{task}")).or_default() += 1;
    }
    for key in &acknowledged {
        let task = key.split('-').next().unwrap().trim_start_matches('t');
        let id = ConversationId::new(conn("lc"), format!("chat-{task}"));
        let conversation = store.get_conversation(&id).unwrap().unwrap();
        assert!(
            conversation.messages.contains_key(key.as_str()),
            "acknowledged message {key} is not in {id}"
        );
    }
    for (chat, events) in &per_chat {
        let id = ConversationId::new(conn("lc"), chat.clone());
        let conversation = store.get_conversation(&id).unwrap().unwrap();
        assert_eq!(conversation.event_count, *events, "{id} counts its events");
        assert_eq!(conversation.messages.len() as u64, *events);
    }
    assert_eq!(store.conversation_count().unwrap(), per_chat.len() as u64);
    eprintln!(
        "kill -9 after {} acknowledged appends; {} events survived",
        acknowledged.len(),
        head.0
    );
}

/// Appends from 8 tasks until killed (or for 30 s, so that it never outlives a dead parent).
fn run_child(dir: &Path, sled_flush_interval: Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = StoreOptions {
            projection_interval: Duration::from_secs(3600),
            projection_max_conversations: usize::MAX,
            sled_flush_interval,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir, options).unwrap();
        let stop = Instant::now() + Duration::from_secs(30);
        let mut tasks = Vec::new();
        for task in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < stop {
                    let key = format!("t{task}-{i}");
                    let mut page = request(
                        "lc",
                        "livechat",
                        vec![message(&key, &format!("chat-{task}"), 1_000, &key)],
                    );
                    page.raw = Some(format!("{{\"key\":\"{key}\"}}"));
                    page.sync = Some(SyncUpdate {
                        cursor: key.clone(),
                        records: 1,
                        at: ts(1_000),
                    });
                    store.append(page).await.unwrap();
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "ACK {key}").unwrap();
                    stdout.flush().unwrap();
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}
