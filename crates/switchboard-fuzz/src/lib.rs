//! Fuzz targets for Switchboard's hostile inputs, as plain functions: the cargo-fuzz project in
//! `fuzz/` calls them from libFuzzer (nightly), and `tests/props.rs` runs them on stable as
//! property tests over mutated fixtures, plus every file in `fuzz/corpus` and
//! `fuzz/regressions` as regression cases. See `docs/fuzzing.md`.
//!
//! Every target takes arbitrary bytes, decodes them deterministically into a structured input
//! and panics if, and only if, the code under test panics or breaks an invariant:
//! - [`webhook`]: a plugin's `verify`, `parse`, `raw_for_storage` and `reply`;
//! - [`page_token`]: listing conversations and tickets with client-supplied page tokens;
//! - [`stream_cursor`]: `StreamEvents` starts (`after_sequence`, `at_time`...) and filters,
//!   and the parsers of client-supplied ids and times.

pub mod corpus;
pub mod input;
mod page_token;
mod stream_cursor;
mod webhook;

pub use crate::page_token::page_token;
pub use crate::stream_cursor::stream_cursor;
pub use crate::webhook::{
    VendorSpec, WebhookOutcome, check_webhook, vendor_names, vendor_specs, webhook,
};

/// Every fuzz target's name, as in `fuzz/corpus/<name>/` (and `fuzz/fuzz_targets/<name>.rs` for
/// libFuzzer): `webhook_<vendor>` for every plugin with webhooks (from the registry, through
/// `switchboard-plugins`), then `page_token` and `stream_cursor`.
pub fn targets() -> Vec<String> {
    let mut targets = corpus::webhook_targets();
    targets.extend(["page_token".to_owned(), "stream_cursor".to_owned()]);
    targets
}

/// Runs the target called `target` (see [`targets`]) on `data`.
///
/// # Panics
/// As the target does, or if there is no such target.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "page_token" => page_token(data),
        "stream_cursor" => stream_cursor(data),
        _ => match target.strip_prefix("webhook_") {
            Some(vendor) => webhook(vendor, data),
            None => panic!("no fuzz target {target:?}; use one of {:?}", targets()),
        },
    }
}
