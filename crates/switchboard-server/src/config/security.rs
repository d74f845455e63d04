//! API keys (`[[api_keys]]`, checked: unique names and keys, known scopes) and the bind
//! policy that refuses to expose an unauthenticated door on a non-loopback address.

use std::collections::BTreeSet;

use super::{ApiKeySection, ConfigError, ServerConfig};
use crate::auth::{ApiKey, Scope};

/// API keys and the bind policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// gRPC API keys; empty means gRPC is not authenticated (allowed on loopback only, unless
    /// `allow_unauthenticated`).
    pub api_keys: Vec<ApiKey>,
    /// Serve gRPC on a non-loopback address without API keys.
    pub allow_unauthenticated: bool,
    /// Serve webhooks of connections with `verify = false` on a non-loopback address.
    pub allow_unverified_webhooks: bool,
}

pub(super) fn api_keys(sections: &[ApiKeySection]) -> Result<Vec<ApiKey>, ConfigError> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for section in sections {
        let name = section.name.trim();
        if name.is_empty() {
            return Err(ConfigError::Invalid(
                "an [[api_keys]] entry has an empty name; give every key a name".to_owned(),
            ));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(ConfigError::Invalid(format!(
                "API key name {name:?} is used twice; names must be unique"
            )));
        }
        let sha256 = crate::auth::parse_hash(section.sha256.trim())
            .map_err(|e| ConfigError::Invalid(format!("API key {name:?}: {e}")))?;
        if let Some(other) = keys.iter().find(|k| k.sha256 == sha256) {
            return Err(ConfigError::Invalid(format!(
                "API keys {:?} and {name:?} have the same sha256; give each its own key",
                other.name
            )));
        }
        if section.scopes.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "API key {name:?} has no scopes; give it at least one of: {}",
                Scope::ALL.map(Scope::as_str).join(", ")
            )));
        }
        let scopes = section
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| ConfigError::Invalid(format!("API key {name:?}: {e}")))?;
        keys.push(ApiKey {
            name: name.to_owned(),
            sha256,
            scopes,
        });
    }
    Ok(keys)
}

impl ServerConfig {
    /// The bind policy: refuses gRPC on a non-loopback address with no API key, and webhooks
    /// of connections with `verify = false` on a non-loopback address, unless allowed.
    /// [`crate::start`] calls it before binding anything.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.grpc_addr.ip().is_loopback()
            && self.security.api_keys.is_empty()
            && !self.security.allow_unauthenticated
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve gRPC on {} without authentication: anyone who can reach it \
                 could read every conversation. Add an [[api_keys]] entry (`switchboard keys new` \
                 makes one), bind gRPC to 127.0.0.1, or, if something in front of it \
                 authenticates, set [grpc] allow_unauthenticated = true or pass \
                 --allow-unauthenticated",
                self.grpc_addr
            )));
        }
        if !self.http_addr.ip().is_loopback() && !self.security.allow_unverified_webhooks {
            let unverified: Vec<&str> = self
                .connections
                .iter()
                .filter(|c| !c.verify)
                .map(|c| c.id.as_str())
                .collect();
            if !unverified.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "refusing to take webhooks on {} for connections with verification off ({}): \
                     anyone who can reach it could post fake events. Configure their secrets and \
                     verify = true, bind HTTP to 127.0.0.1, or set [http] allow_unverified = true \
                     or pass --allow-unauthenticated",
                    self.http_addr,
                    unverified.join(", ")
                )));
            }
        }
        Ok(())
    }
}
