//! The webhook target: one plugin's `verify`, `parse`, `raw_for_storage` and `reply` on
//! arbitrary requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use switchboard_plugins::TestConnection;

use switchboard_core::{
    ConnectionConfig, ConnectionId, Error, ErrorCode, IncomingEvent, IngestSummary, Timestamp,
    WebhookRequest, WebhookSource,
};

use crate::input::FuzzRequest;

/// What the fuzz targets know of one vendor, from its plugin crate's `fixtures/connection.toml`
/// (see `switchboard_plugins::TestConnection`): the connection its fixtures verify against and
/// the body fields that carry a credential and must never reach storage.
#[derive(Debug, Clone)]
pub struct VendorSpec {
    /// The plugin's vendor name.
    pub vendor: &'static str,
    /// The plugin crate's fixtures, the seeds of its target.
    pub fixtures_dir: PathBuf,
    /// Its test connection.
    pub connection: TestConnection,
}

/// Every vendor with a webhook target (every linked plugin with a `fixtures/connection.toml`,
/// that is every plugin with webhooks), sorted by name.
pub fn vendor_specs() -> &'static [VendorSpec] {
    static SPECS: OnceLock<Vec<VendorSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        switchboard_plugins::test_connections()
            .into_iter()
            .map(|(krate, connection)| VendorSpec {
                vendor: Box::leak(connection.vendor.clone().into_boxed_str()),
                fixtures_dir: krate.fixtures_dir(),
                connection,
            })
            .collect()
    })
}

impl VendorSpec {
    /// The spec of a vendor, if it has a target.
    pub fn get(vendor: &str) -> Option<&'static VendorSpec> {
        vendor_specs().iter().find(|v| v.vendor == vendor)
    }

    /// The connection the vendor's fixtures verify against: verification on, the secrets set.
    pub fn verifying_connection(&self) -> ConnectionConfig {
        self.connection.config()
    }

    /// The connection the embedded default creates: verification off, nothing configured.
    pub fn default_connection(&self) -> ConnectionConfig {
        let mut config = ConnectionConfig::new(connection_id(self.vendor), self.vendor);
        config.verify = false;
        config
    }
}

fn connection_id(vendor: &str) -> ConnectionId {
    ConnectionId::new(vendor)
        .unwrap_or_else(|e| panic!("the vendor name {vendor:?} is not a connection id: {e}"))
}

/// A connection with its webhook source, built once.
struct Built {
    config: ConnectionConfig,
    source: Box<dyn WebhookSource>,
}

struct Vendor {
    spec: &'static VendorSpec,
    built: Vec<Built>,
}

fn vendors() -> &'static BTreeMap<&'static str, Vendor> {
    static VENDOR_SOURCES: OnceLock<BTreeMap<&'static str, Vendor>> = OnceLock::new();
    VENDOR_SOURCES.get_or_init(|| {
        let registry = switchboard_plugins::registry()
            .unwrap_or_else(|e| panic!("the plugin registry cannot be built: {e}"));
        vendor_specs()
            .iter()
            .map(|spec| {
                let plugin = registry.get(spec.vendor).unwrap_or_else(|| {
                    panic!(
                        "no plugin for {:?} is linked; add its crate to crates/switchboard-plugins/Cargo.toml",
                        spec.vendor
                    )
                });
                let factory = plugin
                    .webhook
                    .unwrap_or_else(|| panic!("the {} plugin has no webhook factory", spec.vendor));
                let built = [spec.verifying_connection(), spec.default_connection()]
                    .into_iter()
                    .map(|config| {
                        let source = factory(&config).unwrap_or_else(|e| {
                            panic!(
                                "the {} webhook factory refused {config:?}: {}",
                                spec.vendor, e.message
                            )
                        });
                        Built { config, source }
                    })
                    .collect();
                (spec.vendor, Vendor { spec, built })
            })
            .collect()
    })
}

/// The vendor names with a webhook target, sorted.
pub fn vendor_names() -> Vec<&'static str> {
    vendor_specs().iter().map(|v| v.vendor).collect()
}

/// Runs one vendor's webhook source on `data` (decoded by [`FuzzRequest::decode`]), with the
/// verifying connection and with the embedded default's (verification off): `verify`, `parse`
/// (twice), `raw_for_storage` and `reply` for every outcome.
///
/// # Panics
/// If any of them panics, or an invariant fails: `parse` errors are `InvalidArgument`; `parse`
/// is deterministic; parsed events have non-empty dedup keys and survive a JSON round trip; the
/// stored raw body has no credential field; replies carry a valid HTTP status. And, as a caller
/// error, if `vendor` has no target (see [`vendor_names`]).
pub fn webhook(vendor: &str, data: &[u8]) {
    check_webhook(vendor, data);
}

/// What one connection made of a request: whether it verified, and the number of events or
/// the error code of `parse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookOutcome {
    /// The connection's id and whether it has verification on.
    pub verifying: bool,
    /// Whether `verify` passed.
    pub verified: bool,
    /// What `parse` gave.
    pub parsed: Result<usize, ErrorCode>,
}

/// [`webhook`], returning what each connection (the verifying one first, then the embedded
/// default's) made of the request, so tests can check the targets reach the parsers.
///
/// # Panics
/// As [`webhook`].
pub fn check_webhook(vendor: &str, data: &[u8]) -> Vec<WebhookOutcome> {
    let vendor = vendors().get(vendor).unwrap_or_else(|| {
        panic!(
            "no webhook fuzz target for {vendor:?}; use one of {:?}",
            vendor_names()
        )
    });
    let input = FuzzRequest::decode(data);
    let mut outcomes = Vec::new();
    for built in &vendor.built {
        let request = WebhookRequest {
            connection: &built.config,
            headers: &input.headers,
            query: &input.query,
            body: &input.body,
            received_at: received_at(),
        };
        outcomes.push(check_one(vendor.spec, built.source.as_ref(), &request));
    }
    outcomes
}

/// The receive time of every request: 2024-01-01T00:00:00Z, as the conformance kit's.
fn received_at() -> Timestamp {
    Timestamp::from_secs(1_704_067_200).unwrap_or(Timestamp::MIN)
}

fn check_one(
    spec: &VendorSpec,
    source: &dyn WebhookSource,
    request: &WebhookRequest<'_>,
) -> WebhookOutcome {
    let verified = source.verify(request);
    if let Err(error) = &verified {
        check_reply(source, Err(error));
    }
    let parsed = source.parse(request);
    match &parsed {
        Err(error) => {
            assert_eq!(
                error.code,
                ErrorCode::InvalidArgument,
                "{}: parse failed with {:?} ({}); a malformed body must be InvalidArgument",
                spec.vendor,
                error.code,
                error.message
            );
            check_reply(source, Err(error));
        }
        Ok(events) => {
            check_events(spec, events);
            let again = source.parse(request);
            assert!(
                again.as_ref() == Ok(events),
                "{}: parsing the same request twice gave different results",
                spec.vendor
            );
            check_raw(spec, &source.raw_for_storage(request));
            let summary = IngestSummary {
                appended: events.len(),
                duplicates: 0,
            };
            check_reply(source, Ok(&summary));
            check_reply(
                source,
                Ok(&IngestSummary {
                    appended: 0,
                    duplicates: events.len(),
                }),
            );
        }
    }
    WebhookOutcome {
        verifying: request.connection.verify,
        verified: verified.is_ok(),
        parsed: parsed.as_ref().map(Vec::len).map_err(|e| e.code),
    }
}

fn check_events(spec: &VendorSpec, events: &[IncomingEvent]) {
    for event in events {
        assert!(
            !event.dedup_key.is_empty(),
            "{}: an event of kind {} has an empty dedup key",
            spec.vendor,
            event.kind
        );
    }
    let json = serde_json::to_string(events).unwrap_or_else(|e| {
        panic!(
            "{}: parsed events do not serialize to JSON: {e}",
            spec.vendor
        )
    });
    let back: Vec<IncomingEvent> = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!(
            "{}: parsed events do not deserialize from their own JSON: {e}\n{json}",
            spec.vendor
        )
    });
    let (before, after) = (
        serde_json::to_value(events).unwrap_or_default(),
        serde_json::to_value(&back).unwrap_or_default(),
    );
    // Exact: the workspace enables serde_json's `float_roundtrip`, so a float in vendor data
    // keeps every bit from the body to the store (docs/fuzzing.md, finding 1).
    assert!(
        before == after,
        "{}: parsed events change through a JSON round trip:\n{json}",
        spec.vendor
    );
}

fn check_raw(spec: &VendorSpec, raw: &str) {
    let fields = &spec.connection.credential_fields;
    if fields.is_empty() {
        return;
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_str(raw) {
        for field in fields {
            assert!(
                !object.contains_key(field),
                "{}: raw_for_storage kept the credential field {field:?}",
                spec.vendor
            );
        }
    }
}

fn check_reply(source: &dyn WebhookSource, outcome: Result<&IngestSummary, &Error>) {
    let reply = source.reply(outcome);
    assert!(
        (100..=599).contains(&reply.status),
        "reply status {} is not an HTTP status",
        reply.status
    );
    assert!(!reply.content_type.is_empty(), "reply has no content type");
}
