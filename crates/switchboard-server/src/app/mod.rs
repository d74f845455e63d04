//! The application services: what Switchboard does, between the front doors and the store.
//!
//! The HTTP intake ([`crate::http`]) and the gRPC service ([`crate::grpc`]) are thin adapters:
//! they read their transport's request into plain Rust values, call one service here, and turn
//! the answer (or the [`switchboard_core::Error`]) into their transport's response. Benches,
//! fuzz targets and tests drive the same services without any transport.
//!
//! | service | does |
//! |---|---|
//! | [`ingest::Ingest`] | a webhook: verify, parse, quarantine what cannot be mapped, append |
//! | [`tickets::Tickets`] | hub-native tickets (updates run in the store) and vendor tickets (mirrored) |
//! | [`agents::Agents`] | agents at the vendor, mirrored as agent events |
//! | [`subscribe::Subscribe`] | a subscriber's events from a cursor: replay, then the live tail |
//! | [`sync::SyncService`] | pull-sync runs of a connection, page by page |
//! | [`quarantine::QuarantineService`] | verified webhooks no plugin can map, held and retried |
//! | [`find::Find`] | conversations by person, agent, tag and text; contacts, merge, split, erasure |
//!
//! Every service holds the store as `Arc<dyn Storage>` (the storage contract), never a
//! concrete backend, and speaks [`switchboard_core::Error`].
//!
//! ```no_run
//! # async fn run(
//! #     store: switchboard_store::Store,
//! #     connections: switchboard_server::Connections,
//! # ) -> Result<(), switchboard_core::Error> {
//! use std::sync::Arc;
//! use switchboard_server::app::tickets::CreateTicket;
//! use switchboard_server::app::{App, AppOptions};
//!
//! let app = App::new(Arc::new(store), connections, AppOptions::default());
//! let (connection, ticket) = app
//!     .tickets
//!     .create(CreateTicket {
//!         connection_id: "tencent".to_owned(),
//!         message: "My order did not arrive".to_owned(),
//!         requester_email: "jane@example.com".to_owned(),
//!         ..CreateTicket::default()
//!     })
//!     .await?;
//! println!("created {connection}/{}", ticket.external_id);
//! # Ok(()) }
//! ```

pub mod agents;
pub mod find;
pub mod ingest;
pub mod quarantine;
pub mod subscribe;
pub mod sync;
pub mod tickets;

use std::sync::Arc;

use switchboard_core::{ConnectionId, Error, IncomingEvent, Timestamp};
use switchboard_store::{AppendRequest, Storage};
use tokio::sync::watch;

use crate::connections::{Connection, Connections};

/// How [`App::new`] builds the services.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The vendors this server knows (filters naming another vendor are refused).
    pub vendors: Vec<&'static str>,
    /// Limits of event subscriptions.
    pub stream: subscribe::StreamOptions,
    /// Turns true at shutdown: subscriptions and sync runs end. `None`: never.
    pub shutdown: Option<watch::Receiver<bool>>,
    /// The sync runner, shared with the periodic sync so that one connection never syncs
    /// twice at once.
    pub sync_runner: sync::SyncRunner,
    /// The finder (`start` starts one over the backend's index). `None`: queries that need
    /// it are refused with FAILED_PRECONDITION; everything else works.
    pub finder: Option<Arc<switchboard_find::Finder>>,
}

impl Default for AppOptions {
    /// No known vendors, default stream limits, no shutdown signal, a sync runner of its own,
    /// no finder.
    fn default() -> Self {
        AppOptions {
            vendors: Vec::new(),
            stream: subscribe::StreamOptions::default(),
            shutdown: None,
            sync_runner: sync::SyncRunner::default(),
            finder: None,
        }
    }
}

/// Every application service over one store and one set of connections. Cheap to clone.
#[derive(Clone)]
pub struct App {
    storage: Arc<dyn Storage>,
    connections: Connections,
    vendors: Arc<Vec<&'static str>>,
    /// Keeps the shutdown signal of an app built without one open (a closed signal would
    /// read as "shutting down").
    _never: Option<Arc<watch::Sender<bool>>>,
    /// Webhook ingest.
    pub ingest: ingest::Ingest,
    /// Tickets.
    pub tickets: tickets::Tickets,
    /// Agents.
    pub agents: agents::Agents,
    /// Event subscriptions.
    pub subscribe: subscribe::Subscribe,
    /// Pull sync.
    pub sync: sync::SyncService,
    /// The quarantine.
    pub quarantine: quarantine::QuarantineService,
    /// Finding the customer: finder queries, contacts.
    pub find: find::Find,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.storage.backend())
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds every service over `storage` and `connections`.
    pub fn new(storage: Arc<dyn Storage>, connections: Connections, options: AppOptions) -> Self {
        let quarantine = quarantine::QuarantineService::new(storage.clone(), connections.clone());
        let vendors = Arc::new(options.vendors);
        let (shutdown, never) = match options.shutdown {
            Some(shutdown) => (shutdown, None),
            None => {
                let (never, shutdown) = watch::channel(false);
                (shutdown, Some(Arc::new(never)))
            }
        };
        let subscribe = subscribe::Subscribe::new(
            storage.clone(),
            vendors.clone(),
            shutdown.clone(),
            options.stream,
        );
        App {
            ingest: ingest::Ingest::new(storage.clone(), quarantine.clone()),
            tickets: tickets::Tickets::new(storage.clone(), connections.clone()),
            agents: agents::Agents::new(storage.clone(), connections.clone()),
            find: find::Find::new(storage.clone(), options.finder, subscribe.clone()),
            subscribe,
            sync: sync::SyncService::new(
                storage.clone(),
                connections.clone(),
                options.sync_runner,
                shutdown,
            ),
            quarantine,
            storage,
            connections,
            vendors,
            _never: never,
        }
    }

    /// The store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The vendors this server knows.
    pub fn vendors(&self) -> &[&'static str] {
        &self.vendors
    }

    /// Refuses a vendor this server does not know, naming the known ones.
    pub fn check_vendors(&self, vendors: &[String]) -> Result<(), Error> {
        check_vendors(&self.vendors, vendors)
    }
}

fn check_vendors(known: &[&'static str], vendors: &[String]) -> Result<(), Error> {
    for vendor in vendors {
        if !known.contains(&vendor.as_str()) {
            return Err(Error::invalid(format!(
                "unknown vendor {vendor:?}; known vendors: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// A configured connection by id; `field` names the request field in the error.
pub(crate) fn connection(
    connections: &Connections,
    id: &str,
    field: &str,
) -> Result<Arc<Connection>, Error> {
    if id.is_empty() {
        return Err(Error::invalid(format!(
            "{field} is required; ListConnections shows the configured ones"
        )));
    }
    connections.get(id).cloned().ok_or_else(|| {
        Error::not_found(format!(
            "no connection {id:?}; ListConnections shows the configured ones"
        ))
    })
}

/// Appends one event a service made itself (no webhook, no raw body); returns how many were
/// appended: 0 when its dedup key is already in the log.
pub(crate) async fn append_event(
    storage: &dyn Storage,
    connection: &ConnectionId,
    vendor: &str,
    event: IncomingEvent,
) -> Result<usize, Error> {
    let receipt = storage
        .append(AppendRequest {
            connection: connection.clone(),
            vendor: vendor.to_owned(),
            request_id: None,
            received_at: Timestamp::now(),
            raw: None,
            events: vec![event],
            sync: None,
            quarantine: None,
        })
        .await?;
    Ok(receipt.appended.len())
}
