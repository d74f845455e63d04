//! Every shipped plugin, linked in one place. The binary, the end-to-end tests, the bench and
//! the fuzz targets depend on this crate instead of on each plugin, and take their vendor lists
//! from [`registry`]:
//!
//! ```
//! let registry = switchboard_plugins::registry().unwrap();
//! assert!(registry.vendors().contains(&"livechat"));
//! ```
//!
//! Adding a vendor is one line in this crate's `Cargo.toml`:
//! `switchboard-plugin-<vendor> = { path = "../../plugins/<vendor>" }`. The build script links
//! every `switchboard-plugin-*` dependency (an `extern crate ... as _;` each, so that the
//! linker keeps its `inventory::submit!`) and lists it in [`CRATES`].
//!
//! Each plugin crate describes, in `fixtures/connection.toml`, the connection its fixtures
//! verify against ([`TestConnection`]): the end-to-end tests, the fuzz targets and the bench
//! configure their connections from it, so that they need no list of vendors or secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, ConnectionId, Registry, RegistryError};

/// A plugin crate this crate links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginCrate {
    /// The crate's name (`switchboard-plugin-livechat`).
    pub name: &'static str,
    /// Its directory at build time, where its `fixtures/` and `golden/` are: for tests and
    /// tools run from the source tree.
    pub dir: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// The file, in a plugin crate, that describes the connection its fixtures verify against.
pub const TEST_CONNECTION_FILE: &str = "fixtures/connection.toml";

impl PluginCrate {
    /// `<dir>/fixtures`.
    pub fn fixtures_dir(&self) -> PathBuf {
        Path::new(self.dir).join("fixtures")
    }

    /// Its `fixtures/connection.toml`.
    ///
    /// # Errors
    /// When the file is missing or is not a [`TestConnection`], with the path and the reason.
    pub fn test_connection(&self) -> Result<TestConnection, String> {
        let path = Path::new(self.dir).join(TEST_CONNECTION_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {} ({e}): every plugin crate describes the connection its fixtures verify against there",
                path.display()
            )
        })?;
        let connection: TestConnection =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        ConnectionId::new(&connection.vendor)
            .map_err(|e| format!("{}: vendor: {e}", path.display()))?;
        Ok(connection)
    }
}

/// What `fixtures/connection.toml` holds: the connection a plugin's fixtures verify against,
/// with the same values as its `tests/conformance.rs` gives `.connection()`:
///
/// ```toml
/// vendor = "livechat"
/// # top-level body fields that carry a credential: raw_for_storage must remove them
/// credential_fields = ["secret_key"]
///
/// [settings]
///
/// [secrets]
/// webhook_secret = "lc-webhook-secret"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConnection {
    /// The vendor, as the plugin registers it; also the connection id.
    pub vendor: String,
    /// Top-level body fields that carry a credential, which `raw_for_storage` must remove.
    #[serde(default)]
    pub credential_fields: Vec<String>,
    /// Settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Secrets (test values, never real ones).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

impl TestConnection {
    /// The connection: id = vendor, verification on, the settings and secrets set.
    ///
    /// # Panics
    /// If the vendor is not a valid connection id ([`PluginCrate::test_connection`] checks it).
    pub fn config(&self) -> ConnectionConfig {
        let id = ConnectionId::new(&self.vendor)
            .unwrap_or_else(|e| panic!("vendor {:?}: {e}", self.vendor));
        let mut config = ConnectionConfig::new(id, &self.vendor);
        for (key, value) in &self.settings {
            config = config.with_setting(key, value);
        }
        for (key, value) in &self.secrets {
            config = config.with_secret(key, value);
        }
        config
    }
}

/// Every linked plugin crate with its test connection, sorted by vendor.
///
/// # Panics
/// If a crate's `fixtures/connection.toml` is missing or malformed: it is test data, and the
/// tests that call this cannot run without it.
pub fn test_connections() -> Vec<(&'static PluginCrate, TestConnection)> {
    let mut all: Vec<_> = CRATES
        .iter()
        .map(|krate| {
            let connection = krate
                .test_connection()
                .unwrap_or_else(|e| panic!("{}: {e}", krate.name));
            (krate, connection)
        })
        .collect();
    all.sort_by(|a, b| a.1.vendor.cmp(&b.1.vendor));
    all
}

/// The crate and test connection of the plugin registered as `vendor`.
///
/// # Panics
/// As [`test_connections`].
pub fn test_connection(vendor: &str) -> Option<(&'static PluginCrate, TestConnection)> {
    test_connections()
        .into_iter()
        .find(|(_, connection)| connection.vendor == vendor)
}

/// The registry of every plugin linked into the program: the shipped ones (this crate links
/// them all) and any other the program links itself.
///
/// # Errors
/// When two plugins claim one vendor name or a name is not a valid connection id.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::from_inventory()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_vendor_with_webhooks_has_one_test_connection() {
        let registry = registry().unwrap();
        let connections = test_connections();
        let vendors: Vec<&str> = connections.iter().map(|(_, c)| c.vendor.as_str()).collect();
        let with_webhooks: Vec<&str> = registry
            .plugins()
            .iter()
            .filter(|p| p.webhook.is_some())
            .map(|p| p.vendor)
            .collect();
        assert_eq!(vendors, with_webhooks);
        for (krate, connection) in connections {
            let factory = registry.get(&connection.vendor).unwrap().webhook.unwrap();
            if let Err(e) = factory(&connection.config()) {
                panic!(
                    "{}: the factory refuses its test connection: {e}",
                    krate.name
                );
            }
        }
    }

    #[test]
    fn every_linked_crate_registers_a_plugin() {
        let registry = registry().unwrap();
        let vendors = registry.vendors();
        assert_eq!(vendors.len(), CRATES.len(), "{vendors:?} from {CRATES:?}");
        for krate in CRATES {
            assert!(krate.name.starts_with("switchboard-plugin-"), "{krate:?}");
            assert!(
                Path::new(krate.dir).join("Cargo.toml").is_file(),
                "{krate:?}"
            );
        }
    }
}
