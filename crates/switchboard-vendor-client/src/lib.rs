//! The HTTP client every vendor connector uses to call its vendor's API.
//!
//! One [`VendorClient`] per connection, cloned freely: every clone shares the connection's
//! [`RateLimiter`] (an exact sliding window: at most `calls` per `per_seconds` in any window).
//! Each call ([`VendorRequest`]) waits on the limiter before every attempt, retries with
//! exponential backoff and full jitter (or the vendor's `Retry-After`, at most
//! [`MAX_RETRY_AFTER`]), never retries other 4xx, and stops at the connection's deadline.
//! Idempotent requests (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, or a `POST`/`PATCH` marked
//! [`VendorRequest::idempotent`]) are retried on 429, 5xx, timeouts and connection errors; any
//! other request only when it certainly did not reach the vendor's logic (429, a connection
//! that could not be opened), so a slow ticket creation is never sent twice. Final answers are
//! mapped to Switchboard's [`Error`](switchboard_core::Error) as [`error_for`] does (with a
//! connection, [`VendorClient::error_for`]): messages name the connection, the vendor, the
//! status and the vendor's own message, never a credential.
//!
//! Metrics: `switchboard_vendor_api_calls_total{connection,vendor,status}` (status is the HTTP
//! code, `timeout` or `unreachable`), `switchboard_vendor_api_call_seconds{vendor}`,
//! `switchboard_vendor_api_retries_total{connection,vendor}` and
//! `switchboard_vendor_rate_limited_waits_total{connection,vendor}`. One `debug` event per
//! attempt (connection, vendor, method, path without the query, status, attempt, elapsed).
//!
//! ```no_run
//! use switchboard_core::{ConnectionConfig, ConnectionId, RateLimit};
//! use switchboard_vendor_client::{ClientSettings, Method, VendorClient};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConnectionConfig::new(ConnectionId::new("lc")?, "livechat")
//!     .with_secret("pat", "personal-access-token");
//! let limit = RateLimit { calls: 100, per_seconds: 60 };
//! let settings = ClientSettings::from_connection(&config, "https://api.livechatinc.com/v3.5", limit)?;
//! let client = VendorClient::new(&config, settings)?;
//! let agents: serde_json::Value = client
//!     .request(Method::POST, "/configuration/action/list_agents")
//!     .idempotent() // read-only: safe to retry after a timeout or a 5xx
//!     .basic_auth("account-id", config.required_secret("pat")?)
//!     .json(&serde_json::json!({}))
//!     .send_json()
//!     .await?;
//! # let _ = agents;
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod limiter;
mod request;
mod settings;
mod tls;

pub use crate::client::VendorClient;
pub use crate::error::error_for;
pub use crate::limiter::RateLimiter;
pub use crate::request::{MAX_RETRY_AFTER, VendorRequest, VendorResponse};
pub use crate::settings::{
    CLIENT_SETTING_KEYS, ClientSettings, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX,
    DEFAULT_DEADLINE, DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT,
};
pub use reqwest::Method;
pub use switchboard_core::RateLimit;
