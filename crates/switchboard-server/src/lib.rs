//! Switchboard's server: the HTTP webhook intake, the gRPC service, configuration and the
//! start-up and shutdown of both over one store.
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

pub mod config;
pub mod connections;
pub mod grpc;
pub mod http;
pub mod sync;

use std::net::SocketAddr;

use switchboard_core::Registry;
use switchboard_proto::v1::switchboard_server::SwitchboardServer;
use switchboard_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
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
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound HTTP address (useful with port 0).
    pub http_addr: SocketAddr,
    /// The bound gRPC address (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// The store, shared with the front doors.
    pub store: Store,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<Result<(), std::io::Error>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Opens the store, builds the connections, binds both front doors and starts serving.
pub async fn start(
    config: ServerConfig,
    registry: &Registry,
) -> Result<RunningServer, ServerError> {
    if config.embedded_default {
        warn!(
            "running on the embedded default: webhook verification is OFF for every connection; \
             anything posted to /webhooks/VENDOR is accepted. Use --config for production"
        );
    }
    for connection in config.connections.iter().filter(|c| !c.verify) {
        warn!(connection = %connection.id, "webhook verification is off for this connection");
    }
    let connections =
        Connections::build(&config.connections, registry).map_err(ServerError::Connection)?;
    let store = Store::open(&config.data_dir)?;
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

    let router = http::router(http::HttpState {
        store: store.clone(),
        connections: connections.clone(),
        body_limit: config.body_limit,
    });
    let mut http_shutdown = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|s| *s).await;
            })
            .await
    });

    let service = grpc::SwitchboardService::new(
        store.clone(),
        connections,
        registry.vendors(),
        shutdown_rx.clone(),
    );
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SwitchboardServer<grpc::SwitchboardService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchboard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Serve("grpc", e.to_string()))?;
    let mut grpc_shutdown = shutdown_rx;
    let grpc = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(SwitchboardServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async move {
                let _ = grpc_shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    info!(http = %http_addr, grpc = %grpc_addr, data_dir = %config.data_dir.display(), "switchboard serving");
    Ok(RunningServer {
        http_addr,
        grpc_addr,
        store,
        shutdown,
        http,
        grpc,
    })
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (each webhook is either acknowledged
    /// after its data is durable or not at all), ends streams, and closes the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        match self.http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::Serve("http", e.to_string())),
            Err(e) => return Err(ServerError::Serve("http", e.to_string())),
        }
        match self.grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::Serve("grpc", e.to_string())),
            Err(e) => return Err(ServerError::Serve("grpc", e.to_string())),
        }
        self.store.close().await?;
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
