//! [`VendorClient`]: one per connection, cheap to clone, every clone shares one rate limiter.

use std::fmt;
use std::sync::Arc;

use reqwest::Method;
use switchboard_core::{ConnectionConfig, Error, Secret};

use crate::request::final_status_error;
use crate::settings::who;
use crate::{ClientSettings, RateLimiter, VendorRequest, VendorResponse, tls};

/// The HTTP client for one connection's vendor API.
///
/// Clones share the connection pool and the [`RateLimiter`], so the sync, tickets and agents
/// parts of a connector stay within the vendor's limit together. It holds no credentials of its
/// own: each [`VendorRequest`] adds its auth, and `Debug` never prints any.
#[derive(Clone)]
pub struct VendorClient {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) connection: String,
    pub(crate) vendor: String,
    /// `connection ID (vendor)`, the prefix of every error message.
    pub(crate) who: String,
    pub(crate) settings: ClientSettings,
    pub(crate) http: reqwest::Client,
    pub(crate) limiter: RateLimiter,
    /// The connection's secrets, removed from any vendor message that echoes one.
    pub(crate) secrets: Vec<Secret>,
}

impl fmt::Debug for VendorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("VendorClient")
            .field("connection", &inner.connection)
            .field("vendor", &inner.vendor)
            .field("base_url", &inner.settings.base_url)
            .field("rate_limit", &inner.settings.rate_limit)
            .field("request_timeout", &inner.settings.request_timeout)
            .field("deadline", &inner.settings.deadline)
            .field("max_attempts", &inner.settings.max_attempts)
            .finish_non_exhaustive()
    }
}

impl VendorClient {
    /// A client for `config`'s connection with a new rate limiter of `settings.rate_limit`.
    pub fn new(config: &ConnectionConfig, settings: ClientSettings) -> Result<VendorClient, Error> {
        let limiter = RateLimiter::new(settings.rate_limit);
        VendorClient::with_limiter(config, settings, limiter)
    }

    /// A client that shares `limiter` (e.g. with a client built earlier for the same
    /// connection). `settings.rate_limit` is ignored in favour of the limiter's own.
    pub fn with_limiter(
        config: &ConnectionConfig,
        mut settings: ClientSettings,
        limiter: RateLimiter,
    ) -> Result<VendorClient, Error> {
        settings.rate_limit = limiter.limit();
        settings.validate(config)?;
        let who = who(config);
        let https = settings.base_url.starts_with("https://");
        let tls = tls::client_config(https)
            .map_err(|reason| Error::failed_precondition(format!("{who}: {reason}")))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.request_timeout)
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                Error::internal(format!("{who}: cannot build the HTTP client ({error})"))
            })?;
        Ok(VendorClient {
            inner: Arc::new(ClientInner {
                connection: config.id.to_string(),
                vendor: config.vendor.clone(),
                who,
                settings,
                http,
                limiter,
                secrets: config.secrets.values().cloned().collect(),
            }),
        })
    }

    /// A request to `base_url` + `path` (a leading `/` is added when missing).
    pub fn request(&self, method: Method, path: &str) -> VendorRequest {
        VendorRequest::new(self.clone(), method, path)
    }

    /// The error for a vendor's non-2xx answer (from [`VendorRequest::send_raw`]), mapped and
    /// worded as [`VendorRequest::send`] does: prefixed with the connection, and with the
    /// connection's secrets and `extra_secrets` (e.g. a refresh token sent in a form) replaced
    /// by `[redacted]` wherever the vendor echoes them, as is or form-encoded. Use it rather
    /// than [`error_for`](crate::error_for) on any raw answer.
    pub fn error_for(&self, response: &VendorResponse, extra_secrets: &[&Secret]) -> Error {
        let mut secrets = self.inner.secrets.clone();
        secrets.extend(extra_secrets.iter().map(|&secret| secret.clone()));
        final_status_error(self, &secrets, response)
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The rate limiter every clone shares.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The connection id.
    pub fn connection(&self) -> &str {
        &self.inner.connection
    }

    /// The vendor name.
    pub fn vendor(&self) -> &str {
        &self.inner.vendor
    }
}
