//! The head across replicas: a dedicated connection LISTENs on the schema's channel; every
//! write transaction that appends NOTIFYs the new head, which PostgreSQL delivers at COMMIT.
//! The listener moves the store's head watch on each notification, reads the head itself
//! every `poll_interval` (a safety net, and the readiness check), and reconnects by itself.
//! An erasure notifies `erased <head>` before its head: every replica then drops its tail
//! cache (which may hold the erased events as they were); a session that starts (after a
//! lost connection, when a notification may have been missed) drops it too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use switchboard_core::Sequence;
use tokio::sync::{oneshot, watch};
use tokio_postgres::AsyncMessage;
use tracing::{info, warn};

use crate::config::Target;
use crate::error;
use crate::writer::advance;

/// The notification channel of the tables in `schema` (channels are per database, so each
/// schema gets its own).
pub(crate) fn channel(schema: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("switchboard_head_{hash:016x}")
}

/// Why the store cannot reach its database, if it cannot (set and cleared by the listener).
#[derive(Clone, Debug, Default)]
pub(crate) struct Health(Arc<Mutex<Option<String>>>);

impl Health {
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, reason: Option<String>) {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some() != reason.is_some() {
            match &reason {
                Some(reason) => warn!(reason, "the database is unreachable"),
                None => info!("the database is reachable again"),
            }
        }
        *current = reason;
    }
}

pub(crate) struct Listener {
    pub(crate) target: Target,
    pub(crate) channel: String,
    pub(crate) head: Arc<watch::Sender<Sequence>>,
    pub(crate) health: Health,
    pub(crate) poll_interval: Duration,
    /// The store's tail cache, dropped on erasures.
    pub(crate) tail: Arc<crate::tail::Tail>,
}

/// The payload prefix of an erasure's notification (`erased <head>`).
pub(crate) const ERASED: &str = "erased ";

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

impl Listener {
    /// Runs until `stop` turns true (or its sender is gone).
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut retry = RETRY_MIN;
        loop {
            if *stop.borrow() {
                return;
            }
            let (reason, was_up) = tokio::select! {
                ended = self.session() => ended,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            self.health.set(Some(reason));
            if was_up {
                retry = RETRY_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// One connection's life: LISTEN, read the head, then follow notifications and poll.
    /// Returns why it ended, and whether it had been up (listening, the head read).
    async fn session(&self) -> (String, bool) {
        let connect = self.target.config.connect(self.target.tls.clone()).await;
        let (client, mut connection) = match connect {
            Ok(pair) => pair,
            Err(e) => {
                let reason = format!("connecting to {}: {}", self.target.shown, error::chain(&e));
                return (reason, false);
            }
        };
        let mut was_up = false;
        // The connection's messages: notifications move the head; its end ends the session.
        let head = self.head.clone();
        let tail = self.tail.clone();
        let (ended_tx, mut ended) = oneshot::channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            let reason = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if let Some(to) = n.payload().strip_prefix(ERASED) {
                            tail.clear();
                            if let Ok(to) = to.parse::<u64>() {
                                advance(&head, to);
                            }
                        } else if let Ok(to) = n.payload().parse::<u64>() {
                            advance(&head, to);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        break format!("the listening connection failed: {}", error::chain(&e));
                    }
                    None => break "the listening connection closed".to_owned(),
                }
            };
            let _ = ended_tx.send(reason);
        });
        let result: Result<(), String> = async {
            client
                .batch_execute(&format!("LISTEN \"{}\"", self.channel))
                .await
                .map_err(|e| format!("LISTEN: {}", error::chain(&e)))?;
            // An erasure's notification may have been missed while not listening.
            self.tail.clear();
            let statement = client
                .prepare("SELECT head FROM sb_state WHERE id = 1")
                .await
                .map_err(|e| format!("reading the head: {}", error::chain(&e)))?;
            loop {
                let row = client
                    .query_one(&statement, &[])
                    .await
                    .map_err(|e| format!("reading the head: {}", error::chain(&e)))?;
                let read: i64 = row
                    .try_get(0)
                    .map_err(|e| format!("reading the head: {}", error::chain(&e)))?;
                advance(&self.head, read.max(0) as u64);
                self.health.set(None);
                was_up = true;
                tokio::select! {
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    reason = &mut ended => {
                        return Err(reason.unwrap_or_else(|_| "the listening connection closed".to_owned()));
                    }
                }
            }
        }
        .await;
        drop(client);
        driver.abort();
        let reason = match result {
            Err(reason) => reason,
            Ok(()) => "the listener stopped".to_owned(),
        };
        (reason, was_up)
    }
}
