//! The plugin conformance kit: every vendor plugin runs [`Conformance`] from its
//! `tests/conformance.rs`, and end-to-end tests load the same fixtures with [`fixtures::load`]
//! to post them to a real server.
//!
//! A plugin crate keeps its fixtures in `fixtures/<name>.json` (the body, byte for byte, as the
//! vendor sends it) with an optional `fixtures/<name>.request.json`
//! (`{"headers": {"name": "value"}, "query": {"Param": "value"}}`), and the reviewed output in
//! `golden/<name>.json`: the pretty-printed `Vec<IncomingEvent>` that `parse` returns for that
//! request received at [`fixture_received_at`]. Set `SWITCHBOARD_BLESS=1` to rewrite the golden
//! files, then review them like code.
//!
//! [`Conformance::run`] checks, collecting every failure before it panics with one report:
//! - the vendor is in [`switchboard_core::Registry::from_inventory`] with a webhook factory that
//!   accepts a connection with verification off and nothing configured, and refuses one with
//!   verification on and no secrets (unless the source it builds declares
//!   [`switchboard_core::WebhookSource::public_verification_only`]);
//! - every fixture verifies with the right connection, through at least one constant-time
//!   comparison of [`switchboard_core::verify`] (see
//!   [`switchboard_core::verify::constant_time_comparisons`]), parses, equals its golden file,
//!   parses twice to the same events, and has non-empty dedup keys unique within the request;
//! - every event says what its kind may say: a `chat_ended` is not open, queued or unknown, a
//!   `chat_started` neither closed, missed, offline nor ended, a `message` carries a message, a
//!   `rating` a rating, nothing ends before it starts, and payloads match kinds;
//! - across all fixtures, one dedup key never names two different events (kind, time and
//!   payload);
//! - all of a conversation's events, folded into one conversation, hold no two messages with
//!   the same author, time and content under different keys (a transcript's copy of a message
//!   must merge with the message's own event);
//! - a real `switchboard-store` appends nothing when every fixture is delivered again an hour
//!   later;
//! - every conversation's events, from all fixtures, shuffled and repeated (proptest, fixed
//!   seed), fold with [`switchboard_core::Conversation::apply`] to the same conversation;
//! - malformed bodies derived from each fixture (truncations, empty body, invalid UTF-8, nesting
//!   10,000 deep, mistyped values, absurd numbers and times, every string replaced by an empty,
//!   a multibyte and a 64 KiB string, each required field removed) never
//!   make `verify` or `parse` panic, and where the body is certainly malformed `parse` fails with
//!   `InvalidArgument`;
//! - the body as stored (`raw_for_storage`) keeps none of the connection's secrets (user names,
//!   `*_user`, aside), and `fixtures/connection.toml`, if there, agrees with the connection;
//! - the wrong connection and stripped credentials fail verification with `Unauthenticated`;
//! - `reply` does not panic.

mod conformance;
pub mod fake;
pub mod fixtures;
mod mutate;
mod report;

pub use crate::conformance::Conformance;
pub use crate::fixtures::FixtureRequest;

use switchboard_core::Timestamp;

/// Makes rustls' `ring` provider the process default. The workspace builds reqwest with rustls
/// and no provider of its own, so a test that builds a `reqwest::Client` calls this first
/// ([`fake::FakeServer::start`] does).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The environment variable that makes [`Conformance::run`] rewrite golden files.
pub const BLESS_ENV: &str = "SWITCHBOARD_BLESS";

/// The receive time the kit gives every fixture request: 2024-01-01T00:00:00Z. Golden files
/// are made with it, so events that take their time from the receive time are reproducible.
pub fn fixture_received_at() -> Timestamp {
    Timestamp::from_secs(1_704_067_200).unwrap_or(Timestamp::MIN)
}
