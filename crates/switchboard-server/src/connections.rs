//! The running connections: each configured vendor account with its plugin's webhook source
//! and connector built once at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, Error, Plugin, Registry, WebhookSource,
};

/// One connection, ready to take webhooks.
pub struct Connection {
    /// Its configuration.
    pub config: ConnectionConfig,
    /// Its vendor's plugin.
    pub plugin: &'static Plugin,
    /// Built from `plugin.webhook`, if the vendor pushes webhooks.
    pub webhook: Option<Box<dyn WebhookSource>>,
    /// Built from `plugin.connector`, if the vendor has an API and the connection is
    /// configured for it.
    pub connector: Option<Box<dyn Connector>>,
    /// Why the plugin refused to build the connector (e.g. the API credentials are not
    /// configured): webhooks still work, pull sync and vendor tickets do not.
    pub connector_error: Option<String>,
    /// How often `serve` syncs this connection on its own (`None`: only on request).
    pub sync_interval: Option<Duration>,
}

impl Connection {
    /// Why this connection's webhooks are verified by public values alone, if they are (see
    /// [`WebhookSource::public_verification_only`]); `None` when verification is off
    /// altogether (that has its own warning) or a secret is checked.
    pub fn verification_warning(&self) -> Option<String> {
        if !self.config.verify {
            return None;
        }
        self.webhook
            .as_ref()
            .and_then(|source| source.public_verification_only(&self.config))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.config.id)
            .field("vendor", &self.plugin.vendor)
            .finish()
    }
}

/// All connections by id.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    by_id: Arc<BTreeMap<ConnectionId, Arc<Connection>>>,
}

impl Connections {
    /// Builds every connection's webhook source and connector. A webhook source the plugin
    /// refuses stops start-up with the plugin's reason; a refused connector only disables pull
    /// sync and vendor tickets for that connection (webhooks need no API credentials), with a
    /// warning and the reason shown by `ListConnections`.
    /// `sync_intervals` gives the periodic sync interval of the connections that have one.
    pub fn build(
        configs: &[ConnectionConfig],
        registry: &Registry,
        sync_intervals: &BTreeMap<ConnectionId, Duration>,
    ) -> Result<Self, Error> {
        let mut by_id = BTreeMap::new();
        for config in configs {
            let plugin = registry.get(&config.vendor).ok_or_else(|| {
                Error::invalid(format!(
                    "connection {}: no plugin for vendor {:?}; known vendors: {}",
                    config.id,
                    config.vendor,
                    registry.vendors().join(", ")
                ))
            })?;
            let webhook = plugin.webhook.map(|build| build(config)).transpose()?;
            let (connector, connector_error) = match plugin.connector.map(|build| build(config)) {
                None => (None, None),
                Some(Ok(connector)) => (Some(connector), None),
                Some(Err(error)) => {
                    warn!(
                        connection = %config.id,
                        vendor = %config.vendor,
                        reason = %error.message,
                        "pull sync and vendor tickets are off for this connection"
                    );
                    (None, Some(error.message))
                }
            };
            by_id.insert(
                config.id.clone(),
                Arc::new(Connection {
                    config: config.clone(),
                    plugin,
                    webhook,
                    connector,
                    connector_error,
                    sync_interval: sync_intervals.get(&config.id).copied(),
                }),
            );
        }
        Ok(Connections {
            by_id: Arc::new(by_id),
        })
    }

    /// Connections built elsewhere (tests and benches with connectors of their own); a later
    /// connection with the same id replaces an earlier one.
    pub fn new(connections: impl IntoIterator<Item = Connection>) -> Self {
        Connections {
            by_id: Arc::new(
                connections
                    .into_iter()
                    .map(|c| (c.config.id.clone(), Arc::new(c)))
                    .collect(),
            ),
        }
    }

    /// A connection by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Connection>> {
        let id = ConnectionId::new(id).ok()?;
        self.by_id.get(&id)
    }

    /// All connections, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Connection>> {
        self.by_id.values()
    }
}
