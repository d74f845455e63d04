//! The PostgreSQL backend of the storage contract ([`switchboard_store::Storage`]): several
//! `switchboard serve` replicas share one database and keep every guarantee of the contract
//! across them. See the crate's README for the schema and what each guarantee rests on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_store::StoreError> {
//! use switchboard_store::Storage;
//! use switchboard_store_postgres::PgStore;
//!
//! // Migrates the schema (under an advisory lock) and starts the head listener.
//! let store = PgStore::open("postgres://switchboard:secret@db:5432/switchboard?sslmode=require").await?;
//! let mut head = store.subscribe_head(); // moves on commits of every replica
//! # let _ = head.changed().await;
//! store.close_within(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! # How the guarantees are kept
//!
//! - **One gap-free sequence in commit order.** Every write transaction (appends, ticket
//!   updates, sync errors) first locks the one row of `sb_state` (`SELECT ... FOR UPDATE`),
//!   takes its sequences from the head it holds, and writes the new head before COMMIT. The
//!   lock is held until COMMIT, so writers of all replicas run one after another: N+1 is
//!   handed out only after the transaction that took N committed (or rolled back, leaving
//!   nothing, so no gap). A reader's snapshot therefore always holds a prefix `1..=H` of the
//!   log; a later commit can never bring a lower sequence. Within a replica, concurrent
//!   appends are grouped by one writer task into one transaction (group commit), so the lock
//!   is taken once per group, not per webhook.
//! - **Dedup** is the unique key `(connection, dedup_key)` of `sb_events`: checked under the
//!   lock, enforced by the key, permanent.
//! - **Projections** are written in the same transaction as the events:
//!   conversations merged with [`switchboard_core::Conversation::apply`] after
//!   `SELECT ... FOR UPDATE`, their messages in rows of their own (an event reads and writes
//!   only the messages it carries); tickets last-writer-wins by (`updated_at`, sequence);
//!   agents by the latest event; sync cursors and quarantine changes with their page or
//!   request.
//! - **Commands in the store.** [`Storage::update_ticket`] reads the ticket under a row lock,
//!   applies [`switchboard_core::Ticket::apply_change`] and appends the result in one
//!   transaction; idempotency claims are rows with a lease on the database's clock, taken
//!   with one `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`.
//! - **The head across replicas.** A write transaction that appended runs
//!   `pg_notify(channel, head)`; PostgreSQL delivers it at COMMIT, in commit order. A
//!   dedicated connection per store LISTENs and moves [`Storage::subscribe_head`]'s watch;
//!   it reads the head every [`PgOptions::poll_interval`] as a safety net, and reconnects by
//!   itself. [`Storage::read_events`] never returns a sequence past the head this store has
//!   seen. The newest events read are kept decoded in a tail cache
//!   ([`Storage::read_events_cached`]), so subscribers tailing the log cost one query per
//!   head move, not one each.
//! - **Unreachable database.** Every failure to reach PostgreSQL, a statement timeout or a
//!   pool timeout is [`StoreError::Unavailable`]; [`Storage::is_ready`] is false while the
//!   listener cannot reach the database. The pool drops broken connections and opens new ones
//!   on demand.

mod config;
mod erase;
mod error;
mod find;
mod listen;
mod read;
mod rows;
mod schema;
mod tail;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, Sequence, Ticket, TicketId,
};
use switchboard_store::{
    AppendReceipt, AppendRequest, Claim, ConversationPage, ConversationQuery, ErasurePlan,
    ErasureReport, QuarantineTotals, Quarantined, Storage, StoreError, SyncState, TicketListPage,
    TicketListQuery, TicketUpdate,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::IsolationLevel;
use tracing::{info, warn};

pub use crate::config::PgOptions;
use crate::config::Target;
pub use crate::find::PgFindIndex;
use crate::listen::{Health, Listener};
use crate::writer::{Command, Writer};

/// The PostgreSQL store: cheap to clone (an `Arc` inside). Its tasks (the writer, the head
/// listener) stop after [`Storage::close_within`] or when the last handle is dropped.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    shown: String,
    schema: String,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: Arc<watch::Sender<Sequence>>,
    health: Health,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    tail: Arc<tail::Tail>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.inner.shown)
            .field("schema", &self.inner.schema)
            .field("head", &self.head())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection outside the pool (migrations, the first read of the head).
async fn connect(target: &Target) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "connecting to {}: {}",
                target.shown,
                error::chain(&e)
            ))
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %error::chain(&e), "a database connection ended with an error");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Opens the store at `url` with [`PgOptions::default`]: see [`PgStore::open_with`].
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, PgOptions::default()).await
    }

    /// Connects to `url`, applies the migrations this build ships (waiting for another
    /// replica migrating at the same time), reads the head and starts the writer and the head
    /// listener. A database that cannot be reached is [`StoreError::Unavailable`]; a URL that
    /// does not parse, [`StoreError::InvalidArgument`].
    pub async fn open_with(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let target = config::target(url, &options)?;
        let mut client = connect(&target).await?;
        schema::migrate(&mut client).await?;
        let schema = schema::current_schema(&client).await?;
        let row = client
            .query_one("SELECT head FROM sb_state WHERE id = 1", &[])
            .await
            .map_err(|e| error::pg("reading the head", e))?;
        let head: i64 = row
            .try_get(0)
            .map_err(|e| error::pg("reading the head", e))?;
        drop(client);

        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let connect_timeout = target
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| StoreError::InvalidArgument(format!("the database pool: {e}")))?;

        let channel = listen::channel(&schema);
        let (head_tx, _) = watch::channel(Sequence(head.max(0) as u64));
        let head_tx = Arc::new(head_tx);
        let health = Health::default();
        let (stop, stop_rx) = watch::channel(false);
        let tail = Arc::new(tail::Tail::new(
            options.tail_cache_events,
            options.tail_cache_bytes,
        ));
        let listener = Listener {
            tail: tail.clone(),
            target: target.clone(),
            channel: channel.clone(),
            head: head_tx.clone(),
            health: health.clone(),
            poll_interval: options.poll_interval,
        };
        tokio::spawn(listener.run(stop_rx));
        let (commands_tx, commands_rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let writer = Writer {
            pool: pool.clone(),
            head: head_tx.clone(),
            channel,
            max_batch: options.max_batch,
            quarantine: options.quarantine,
        };
        let writer = tokio::spawn(writer.run(commands_rx));
        info!(database = %target.shown, schema, head, "PostgreSQL store opened");
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                shown: target.shown,
                schema,
                commands: Mutex::new(Some(commands_tx)),
                writer: Mutex::new(Some(writer)),
                head: head_tx,
                health,
                stop,
                closed: AtomicBool::new(false),
                tail,
            }),
        })
    }

    /// Applies the migrations this build ships to the database at `url` and returns how many
    /// it applied (0 when the schema is current): what `switchboard migrate` runs. Safe while
    /// replicas start: they wait for each other on an advisory lock.
    pub async fn migrate(url: &str) -> Result<usize, StoreError> {
        let target = config::target(url, &PgOptions::default())?;
        let mut client = connect(&target).await?;
        schema::migrate(&mut client).await
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    async fn client(&self) -> Result<Object, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        self.inner.pool.get().await.map_err(error::pool)
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        let sender = lock(&self.inner.commands)
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(command).await.map_err(|_| StoreError::Closed)
    }

    /// Runs `read` in a read-only REPEATABLE READ transaction: one snapshot for reads that
    /// take several statements.
    async fn snapshot<T>(
        &self,
        read: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| error::pg("starting a read", e))?;
        let value = read(&tx).await?;
        tx.commit()
            .await
            .map_err(|e| error::pg("ending a read", e))?;
        Ok(value)
    }
}

#[async_trait]
impl Storage for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, StoreError> {
        request.validate()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append { request, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn record_sync_error(
        &self,
        connection: &ConnectionId,
        message: String,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SyncError {
            connection: connection.clone(),
            message,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn update_ticket(&self, update: TicketUpdate) -> Result<Ticket, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::UpdateTicket {
            update: Box::new(update),
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO sb_claims (connection, key, expires_at) VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (connection, key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE sb_claims.expires_at <= clock_timestamp() \
                 RETURNING 1",
            )
            .await
            .map_err(|e| error::pg("claiming an idempotency key", e))?;
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let row = client
            .query_opt(&statement, &[&connection.as_str(), &key.as_bytes(), &lease])
            .await
            .map_err(|e| error::pg("claiming an idempotency key", e))?;
        Ok(if row.is_some() {
            Claim::Claimed
        } else {
            Claim::Busy
        })
    }

    async fn release_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM sb_claims WHERE connection = $1 AND key = $2")
            .await
            .map_err(|e| error::pg("releasing an idempotency key", e))?;
        client
            .execute(&statement, &[&connection.as_str(), &key.as_bytes()])
            .await
            .map_err(|e| error::pg("releasing an idempotency key", e))?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // Taken when free, run out, or already ours (a renewal); the row lock of the upsert
        // makes racing holders take turns, and only one of them finds it free.
        let statement = client
            .prepare_cached(
                "INSERT INTO sb_leases (name, holder, expires_at) VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE sb_leases.holder = EXCLUDED.holder OR sb_leases.expires_at <= clock_timestamp() \
                 RETURNING 1",
            )
            .await
            .map_err(|e| error::pg("taking a lease", e))?;
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let row = client
            .query_opt(&statement, &[&name, &holder, &ttl])
            .await
            .map_err(|e| error::pg("taking a lease", e))?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM sb_leases WHERE name = $1 AND holder = $2")
            .await
            .map_err(|e| error::pg("releasing a lease", e))?;
        client
            .execute(&statement, &[&name, &holder])
            .await
            .map_err(|e| error::pg("releasing a lease", e))?;
        Ok(())
    }

    fn head(&self) -> Sequence {
        *self.inner.head.borrow()
    }

    fn subscribe_head(&self) -> watch::Receiver<Sequence> {
        self.inner.head.subscribe()
    }

    async fn read_events(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let head = self.head();
        if let Some(events) = self.inner.tail.read(after, limit, max_bytes, head) {
            return Ok(events);
        }
        let client = self.client().await?;
        // An erasure while this reads clears the tail: what this read is then not kept.
        let epoch = self.inner.tail.epoch();
        let read = read::events(&client, after, head, limit, max_bytes).await?;
        self.inner.tail.keep_since(epoch, &read);
        Ok(read.into_iter().map(|(event, _)| event).collect())
    }

    fn read_events_cached(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        self.inner.tail.read(after, limit, max_bytes, self.head())
    }

    async fn event_by_dedup_key(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        let client = self.client().await?;
        read::event_by_dedup_key(&client, connection, dedup_key).await
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.snapshot(async |tx| read::conversation(tx, id).await)
            .await
    }

    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.snapshot(async |tx| read::list_conversations(tx, query).await)
            .await
    }

    async fn conversation_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        read::conversation_count(&client).await
    }

    async fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        let client = self.client().await?;
        read::ticket(&client, id).await
    }

    async fn list_tickets(&self, query: &TicketListQuery) -> Result<TicketListPage, StoreError> {
        let client = self.client().await?;
        read::list_tickets(&client, query).await
    }

    async fn list_agents(&self, connection: &ConnectionId) -> Result<Vec<Agent>, StoreError> {
        let client = self.client().await?;
        read::agents(&client, connection).await
    }

    async fn sync_state(&self, connection: &ConnectionId) -> Result<Option<SyncState>, StoreError> {
        let client = self.client().await?;
        read::sync_state(&client, connection).await
    }

    async fn list_quarantine(
        &self,
        after: u64,
        limit: usize,
        connections: &[ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), StoreError> {
        let client = self.client().await?;
        read::list_quarantine(&client, after, limit, connections).await
    }

    async fn get_quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        let client = self.client().await?;
        read::quarantined(&client, id).await
    }

    async fn quarantine_totals(&self) -> Result<QuarantineTotals, StoreError> {
        let client = self.client().await?;
        read::quarantine_totals(&client).await
    }

    async fn erase_contact(&self, plan: ErasurePlan) -> Result<ErasureReport, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        // Cleared before (no read started from here keeps older events) and after (nothing
        // read meanwhile stays).
        self.inner.tail.clear();
        let channel = listen::channel(&self.inner.schema);
        let erased = erase::erase(&self.inner.pool, &channel, &self.inner.head, plan).await;
        self.inner.tail.clear();
        erased
    }

    fn failure(&self) -> Option<String> {
        self.inner.health.get()
    }

    fn is_ready(&self) -> bool {
        !self.inner.closed.load(Ordering::SeqCst)
            && lock(&self.inner.writer)
                .as_ref()
                .is_some_and(|writer| !writer.is_finished())
            && self.inner.health.get().is_none()
    }

    async fn close_within(&self, limit: Duration) -> Result<bool, StoreError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Closing the channel lets the writer finish what it was sent and stop; every answer
        // it gave was after COMMIT, so nothing acknowledged is lost however this ends.
        lock(&self.inner.commands).take();
        let writer = lock(&self.inner.writer).take();
        let finished = match writer {
            Some(mut writer) => match tokio::time::timeout(limit, &mut writer).await {
                Ok(_) => true,
                Err(_) => {
                    warn!(
                        limit_ms = limit.as_millis() as u64,
                        "the PostgreSQL store's writer did not finish in time; leaving it"
                    );
                    writer.abort();
                    false
                }
            },
            None => true,
        };
        self.inner.stop.send_replace(true);
        self.inner.pool.close();
        Ok(finished)
    }
}
