//! Switchboard's server: the application services ([`app`]), the two front doors that adapt
//! them to HTTP ([`http`]: webhook intake) and gRPC ([`grpc`]), configuration, and the
//! start-up and shutdown of everything over one store.
//!
//! [`start`] opens the store (PostgreSQL when the config names a `database_url`, so that
//! several replicas can share it; else the embedded sled store at `data_dir`) and hands it to
//! the services as `Arc<dyn Storage>` (the storage contract); nothing past start-up knows
//! which backend it is.
//!
//! **Architecture Invariant:** the server knows no vendor. Everything vendor-specific reaches it
//! through the plugin registry; adding a vendor changes nothing here.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_core::Registry;
//! use switchboard_server::{ServerConfig, start};
//!
//! let registry = Registry::from_inventory()?;
//! let config = ServerConfig::embedded_default(&registry);
//! let server = start(config, &registry).await?;
//! println!("webhooks on http://{}", server.http_addr);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod auth;
pub mod config;
pub mod conn;
pub mod connections;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod status_shape;
pub mod tls;

/// The quarantine service (it lives in [`app::quarantine`]).
pub use app::quarantine;
/// Pull sync (it lives in [`app::sync`]).
pub use app::sync;

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_core::Registry;
use switchboard_find::tantivy_index::TantivyIndex;
use switchboard_find::{FindIndex, Finder, FinderOptions};
use switchboard_proto::v1::switchboard_server::SwitchboardServer;
use switchboard_store::{Storage, Store, StoreError};
use switchboard_store_postgres::{PgOptions, PgStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use crate::config::{ConfigError, ServerConfig};
pub use crate::connections::{Connection, Connections};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or closed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A plugin refused a connection's configuration.
    #[error("{0}")]
    Connection(switchboard_core::Error),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using it?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A front door failed while running.
    #[error("{0} server failed: {1}")]
    Serve(&'static str, String),
    /// The configuration breaks the bind policy or is otherwise unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The finder's index cannot be opened.
    #[error("cannot open the finder's index: {0}")]
    Find(#[from] switchboard_find::IndexError),
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The bound HTTP address (useful with port 0).
    pub http_addr: SocketAddr,
    /// The bound gRPC address (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// The bound address of `/metrics` when it has one of its own (`[http] metrics_addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// The store the services hold (sled, or PostgreSQL with a `database_url`).
    pub storage: Arc<dyn Storage>,
    /// The sled store when the server runs on it (for what needs the concrete backend:
    /// benches' direct reads); `None` on PostgreSQL.
    pub sled: Option<Store>,
    /// The application services both front doors adapt.
    pub app: app::App,
    /// The finder: the index of conversations by person, agent, tag and text, and contacts,
    /// fed from the log.
    pub finder: Arc<Finder>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<Result<(), std::io::Error>>,
    metrics: Option<JoinHandle<Result<(), std::io::Error>>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    syncs: Vec<JoinHandle<()>>,
    shutdown_grace: std::time::Duration,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("backend", &self.storage.backend())
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// Waits for a front door to stop until `until`, then stops it.
async fn drain<E: std::fmt::Display>(
    name: &'static str,
    mut task: JoinHandle<Result<(), E>>,
    until: tokio::time::Instant,
) -> Result<(), ServerError> {
    match tokio::time::timeout_at(until, &mut task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(ServerError::Serve(name, e.to_string())),
        Ok(Err(e)) => Err(ServerError::Serve(name, e.to_string())),
        Err(_) => {
            warn!(
                front = name,
                "connections still open at the end of the shutdown grace; closing them"
            );
            task.abort();
            Ok(())
        }
    }
}

/// How long shutdown waits for periodic syncs to finish their page in flight before it stops
/// them (a stopped page is simply pulled again next time: its cursor was not saved).
const SYNC_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The least time shutdown gives the store to close, whatever is left of the grace.
const STORE_CLOSE_MIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Where the embedded store's finder index lives: a directory beside the sled files.
pub fn find_index_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("find")
}

/// Opens the finder's index for the store `start` opened: tantivy in [`find_index_dir`] with
/// the sled store, the tables in the shared database with PostgreSQL.
fn open_find_index(
    config: &ServerConfig,
    pg: Option<&PgStore>,
) -> Result<Arc<dyn FindIndex>, ServerError> {
    match pg {
        Some(store) => Ok(Arc::new(store.find_index())),
        None => Ok(Arc::new(TantivyIndex::open(&find_index_dir(
            &config.data_dir,
        ))?)),
    }
}

/// Opens the server's store: PostgreSQL when the config names a `database_url` (migrated at
/// open, under an advisory lock, so replicas starting together apply each migration once),
/// else sled at `data_dir`. The sled store is returned too, for benches' direct reads.
async fn open_store(
    config: &ServerConfig,
) -> Result<(Arc<dyn Storage>, Option<Store>, Arc<dyn FindIndex>), ServerError> {
    let quarantine = switchboard_store::QuarantineLimits {
        max_entries: config.limits.quarantine_max_entries as u64,
        max_bytes: config.limits.quarantine_max_bytes as u64,
    };
    match &config.database_url {
        Some(url) => {
            let store = PgStore::open_with(
                url.expose(),
                PgOptions {
                    quarantine,
                    ..PgOptions::default()
                },
            )
            .await?;
            info!(backend = store.backend(), database = %url, schema = store.schema(), "store open");
            let index = open_find_index(config, Some(&store))?;
            Ok((Arc::new(store), None, index))
        }
        None => {
            let store = Store::open_with(
                &config.data_dir,
                switchboard_store::StoreOptions {
                    quarantine,
                    ..switchboard_store::StoreOptions::default()
                },
            )?;
            info!(backend = store.backend(), data_dir = %config.data_dir.display(), "store open");
            if store.needs_compaction()? {
                warn!(
                    data_dir = %config.data_dir.display(),
                    "a contact was erased since the store was last compacted: its files may still \
                     hold old versions of the erased values (no read returns them); stop the \
                     server and run `switchboard compact` to drop them"
                );
            }
            let index = open_find_index(config, None)?;
            Ok((Arc::new(store.clone()), Some(store), index))
        }
    }
}

/// Applies the PostgreSQL migrations this build ships to the database at `url` and returns
/// how many it applied (what `switchboard migrate` runs; `start` applies them too). Safe while
/// replicas start: they wait for each other on an advisory lock.
pub async fn migrate(url: &config::DatabaseUrl) -> Result<usize, ServerError> {
    Ok(PgStore::migrate(url.expose()).await?)
}

/// Rewrites the embedded store at `data_dir` (the server stopped) so that its files hold each
/// key's current value once: after an erasure, none of the erased values remains on disk
/// (sled keeps old versions of rewritten values in its files until then). What
/// `switchboard compact` runs. A store open in another process is refused.
pub fn compact(
    data_dir: &std::path::Path,
) -> Result<switchboard_store::CompactReport, ServerError> {
    Ok(Store::compact(data_dir)?)
}

/// Opens the store, builds the connections, binds both front doors and starts serving.
///
/// Refuses to start when the configuration breaks the bind policy
/// ([`ServerConfig::check_exposure`]) or the TLS files are unusable.
pub async fn start(
    config: ServerConfig,
    registry: &Registry,
) -> Result<RunningServer, ServerError> {
    config.check_exposure()?;
    metrics::install();
    metrics::register_connections(
        config
            .connections
            .iter()
            .map(|c| (c.id.as_str(), c.vendor.as_str())),
    );
    if config.embedded_default {
        warn!(
            "running on the embedded default: webhook verification is OFF for every connection; \
             anything posted to /webhooks/VENDOR is accepted. Use --config for production"
        );
        if config.http_addr.ip().is_loopback() && config.grpc_addr.ip().is_loopback() {
            info!(
                http = %config.http_addr,
                grpc = %config.grpc_addr,
                "embedded default: listening on loopback only, unreachable from other machines"
            );
        }
    }
    for connection in config.connections.iter().filter(|c| !c.verify) {
        warn!(connection = %connection.id, "webhook verification is off for this connection");
    }
    let keys = auth::KeyRing::new(config.security.api_keys.clone());
    if keys.is_empty() {
        warn!(grpc = %config.grpc_addr, "gRPC authentication is off: no [[api_keys]] configured");
    } else if config.tls.is_none() && !config.grpc_addr.ip().is_loopback() {
        warn!(
            grpc = %config.grpc_addr,
            "API keys travel in clear text: configure [tls] or terminate TLS in front of switchboard"
        );
    }
    // ring is the process's one rustls provider: the TLS front doors use it, and so does every
    // HTTP client in the process (reqwest is built without a provider of its own).
    tls::install_default_provider();
    let tls = match &config.tls {
        Some(tls_config) => Some(tls::TlsMaterial::load(tls_config)?),
        None => None,
    };
    let connections = Connections::build(&config.connections, registry, &config.sync_intervals)
        .map_err(ServerError::Connection)?;
    for connection in connections.iter() {
        if let Some(reason) = connection.verification_warning() {
            warn!(
                connection = %connection.config.id,
                vendor = connection.plugin.vendor,
                reason = %reason,
                "WEBHOOKS OF THIS CONNECTION ARE NOT AUTHENTICATED BY ANY SECRET"
            );
        }
    }
    let (storage, sled, find_index) = open_store(&config).await?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let limits = config.limits.clone();

    let sync_runner = sync::SyncRunner::with_lease_ttl(limits.sync_lease_ttl);
    let finder = Finder::start(
        storage.clone(),
        find_index,
        FinderOptions {
            holder: format!("finder-{}", uuid::Uuid::new_v4()),
            ..FinderOptions::default()
        },
    );
    let app = app::App::new(
        storage.clone(),
        connections.clone(),
        app::AppOptions {
            vendors: registry.vendors(),
            stream: app::subscribe::StreamOptions {
                max_subscribers: limits.max_stream_subscribers,
                subscriber_buffer_bytes: limits.stream_subscriber_buffer_bytes,
                total_buffer_bytes: limits.stream_total_buffer_bytes,
                stall_timeout: limits.stream_stall_timeout,
            },
            shutdown: Some(shutdown_rx.clone()),
            sync_runner: sync_runner.clone(),
            finder: Some(finder.clone()),
        },
    );
    let router = http::router(http::HttpState {
        app: app.clone(),
        body_limit: config.body_limit,
        body_timeout: limits.webhook_body_timeout,
        permits: limits::WebhookLimit::new(
            limits.webhook_max_concurrent,
            limits.webhook_retry_after,
        ),
        body_reads: conn::PeerBodyReads::new(limits.webhook_max_body_reads_per_peer),
        serve_metrics: config.metrics_addr.is_none(),
    });
    if let Ok(totals) = app.quarantine.totals().await {
        metrics::quarantine_entries(totals.entries);
        if totals.entries > 0 {
            warn!(
                entries = totals.entries,
                "the quarantine holds webhooks no plugin could map: `switchboard quarantine list`"
            );
        }
    }
    let conn_limits = conn::HttpConnLimits {
        header_read_timeout: limits.http_header_read_timeout,
        idle_timeout: limits.connection_idle_timeout,
        http2_max_streams: u32::try_from(limits.webhook_http2_max_streams).unwrap_or(u32::MAX),
        http2_keepalive_interval: limits.grpc_keepalive_interval,
    };
    let stop_signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_stop = stop_signal(shutdown_rx.clone());
    let http = match &tls {
        Some(material) => {
            let listener = tls::TlsListener::new(
                http_listener,
                material.http.clone(),
                limits.tls_handshake_timeout,
            )
            .map_err(|source| ServerError::Bind {
                addr: http_addr,
                source,
            })?;
            tokio::spawn(conn::serve_http(listener, router, conn_limits, http_stop))
        }
        None => {
            use axum::serve::ListenerExt;
            let listener = http_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(conn::serve_http(listener, router, conn_limits, http_stop))
        }
    };
    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            let stop = stop_signal(shutdown_rx.clone());
            let task = tokio::spawn(conn::serve_http(
                listener,
                http::metrics_router(),
                conn_limits,
                stop,
            ));
            info!(metrics = %bound, "metrics served on their own address");
            Some((bound, task))
        }
        None => None,
    };

    let syncs = sync::spawn_periodic(
        &sync_runner,
        &storage,
        connections.iter().cloned(),
        &shutdown_rx,
    );
    let service = grpc::SwitchboardService::new(app.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SwitchboardServer<grpc::SwitchboardService>>()
        .await;
    // Both reflection versions: grpcurl asks v1, stock Python and Postman clients v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchboard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServerError::Serve("grpc", e.to_string()))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServerError::Serve("grpc", e.to_string()))?;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.grpc_keepalive_timeout))
        .max_concurrent_streams(u32::try_from(limits.grpc_max_concurrent_streams).ok());
    if let Some(material) = &tls {
        builder = builder
            .tls_config(material.grpc(limits.tls_handshake_timeout))
            .map_err(|e| ServerError::Serve("grpc", format!("TLS setup failed: {e}")))?;
    }
    let switchboard = SwitchboardServer::new(service)
        .max_decoding_message_size(limits.grpc_max_decode_message_bytes)
        .max_encoding_message_size(limits.grpc_max_encode_message_bytes);
    let router = builder
        .layer(status_shape::StatusShapeLayer)
        .layer(metrics::GrpcObserveLayer)
        .layer(auth::AuthLayer::new(keys))
        .layer(limits::GrpcLimitLayer::new(
            limits.grpc_max_concurrent_requests,
            limits.grpc_request_timeout,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(switchboard);
    // TCP_NODELAY: without it every small response waits for the peer's delayed ACK (40 ms).
    let idle = limits.connection_idle_timeout;
    let incoming = futures::StreamExt::map(
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
        move |accepted| accepted.map(|tcp| conn::IdleTimeout::new(tcp, idle)),
    );
    let mut grpc_shutdown = shutdown_rx;
    let grpc = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    info!(
        http = %http_addr,
        grpc = %grpc_addr,
        tls = tls.is_some(),
        api_keys = config.security.api_keys.len(),
        backend = storage.backend(),
        "switchboard serving"
    );
    let (metrics_addr, metrics) = metrics_server.unzip();
    Ok(RunningServer {
        http_addr,
        grpc_addr,
        metrics_addr,
        metrics,
        storage,
        sled,
        app,
        finder,
        shutdown,
        http,
        grpc,
        syncs,
        shutdown_grace: limits.shutdown_grace,
    })
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (each webhook is either acknowledged
    /// after its data is durable or not at all), ends streams, and closes the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        // One deadline for all periodic syncs: each ends after its page in flight.
        let drain_until = tokio::time::Instant::now() + SYNC_DRAIN;
        for mut task in self.syncs {
            if tokio::time::timeout_at(drain_until, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        // In-flight requests finish; a stream whose client stopped reading cannot hold the
        // server up past the grace (webhooks in flight are acknowledged or not at all, and a
        // redelivery of one cut here appends nothing).
        let grace_until = tokio::time::Instant::now() + self.shutdown_grace;
        let http = drain("http", self.http, grace_until).await;
        let grpc = drain("grpc", self.grpc, grace_until).await;
        if let Some(metrics) = self.metrics {
            drain("metrics", metrics, grace_until).await?;
        }
        // A store on a failed disk may never finish its last flush: it gets what is left of
        // the grace (at least a few seconds), never more.
        // The finder stops after its batch in flight (its index holds whole batches only; a
        // batch cut short is redone at the next start), within what is left of the grace.
        let finder_until = grace_until.max(tokio::time::Instant::now() + STORE_CLOSE_MIN);
        if tokio::time::timeout_at(finder_until, self.finder.shutdown())
            .await
            .is_err()
        {
            warn!("the finder did not finish its batch in time; the next start redoes it");
        }
        let close_limit = grace_until
            .saturating_duration_since(tokio::time::Instant::now())
            .max(STORE_CLOSE_MIN);
        self.app.storage().close_within(close_limit).await?;
        http?;
        grpc?;
        info!("switchboard stopped");
        Ok(())
    }

    /// Waits until either front door stops on its own (an error), or `signal` resolves.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
        signal.await;
        info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}
