//! The conformance suite every plugin runs from its `tests/conformance.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use proptest::strategy::{Just, Strategy};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use switchboard_core::verify::constant_time_comparisons;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Conversation, ConversationId, ConversationPatch,
    ConversationStatus, Error, ErrorCode, EventKind, EventPayload, IncomingEvent, IngestSummary,
    Registry, Timestamp, WebhookFactory, WebhookRequest, WebhookSource,
};
use switchboard_store::{AppendRequest, Store};

use crate::fixtures::{self, FixtureRequest};
use crate::mutate::{self, Expect};
use crate::report::{Report, first_difference};
use crate::{BLESS_ENV, fixture_received_at};

/// How many shuffled, repeated orders of each conversation's events are folded.
const PERMUTATION_CASES: u32 = 64;

/// The setting and the secret no plugin declares, which its factory must refuse.
const UNKNOWN_SETTING: &str = "conformance_misspelt_setting";
const UNKNOWN_SECRET: &str = "conformance_misspelt_secret";

type Strip = Box<dyn Fn(&mut FixtureRequest)>;

/// The conformance suite for one plugin. Build it with the plugin's vendor name and crate
/// directory, give it the connections and hooks, then [`Conformance::run`] it:
///
/// ```no_run
/// use switchboard_core::{ConnectionConfig, ConnectionId};
///
/// let id = ConnectionId::new("livechat").unwrap();
/// switchboard_testkit::Conformance::new("livechat", env!("CARGO_MANIFEST_DIR"))
///     .connection(ConnectionConfig::new(id.clone(), "livechat").with_secret("webhook_secret", "s"))
///     .wrong_connection(ConnectionConfig::new(id, "livechat").with_secret("webhook_secret", "x"))
///     .strip_credentials(|req: &mut switchboard_testkit::FixtureRequest| {
///         req.remove_header("x-switchboard-token");
///     })
///     .required_fields(&["/event_type"])
///     .run();
/// ```
///
/// Fixtures are read from `<crate_dir>/fixtures`, golden files from `<crate_dir>/golden`; with
/// `SWITCHBOARD_BLESS=1` the golden files are rewritten instead of compared. `run` collects
/// every failure and then panics once with a report of all of them.
pub struct Conformance {
    vendor: String,
    crate_dir: PathBuf,
    connection: Option<ConnectionConfig>,
    wrong_connection: Option<ConnectionConfig>,
    strip: Option<Strip>,
    required: Vec<String>,
}

impl fmt::Debug for Conformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("vendor", &self.vendor)
            .field("crate_dir", &self.crate_dir)
            .field("connection", &self.connection)
            .field("wrong_connection", &self.wrong_connection)
            .field("strip_credentials", &self.strip.is_some())
            .field("required_fields", &self.required)
            .finish()
    }
}

impl Conformance {
    /// The suite for the plugin registered as `vendor`, whose crate is at `crate_dir`
    /// (pass `env!("CARGO_MANIFEST_DIR")`).
    pub fn new(vendor: &str, crate_dir: impl AsRef<Path>) -> Self {
        Conformance {
            vendor: vendor.to_owned(),
            crate_dir: crate_dir.as_ref().to_owned(),
            connection: None,
            wrong_connection: None,
            strip: None,
            required: Vec::new(),
        }
    }

    /// The connection every fixture request must verify against (the right secrets). Defaults
    /// to the one `fixtures/connection.toml` describes.
    pub fn connection(mut self, config: ConnectionConfig) -> Self {
        self.connection = Some(config);
        self
    }

    /// A connection with wrong secrets: every fixture request must fail verification with
    /// `Unauthenticated`. Defaults to the connection of `fixtures/connection.toml` with every
    /// secret changed (when it has secrets).
    pub fn wrong_connection(mut self, config: ConnectionConfig) -> Self {
        self.wrong_connection = Some(config);
        self
    }

    /// Removes the credentials from a request (a header, a query parameter, a body field, see
    /// [`FixtureRequest::remove_header`] and friends): every stripped fixture request must
    /// fail verification with `Unauthenticated`.
    pub fn strip_credentials(mut self, strip: impl Fn(&mut FixtureRequest) + 'static) -> Self {
        self.strip = Some(Box::new(strip));
        self
    }

    /// JSON pointers (`/chat/id`) of fields a body cannot do without: in every fixture that has
    /// one, removing it must make `parse` fail with `InvalidArgument`.
    pub fn required_fields(mut self, pointers: &[&str]) -> Self {
        self.required = pointers.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Runs every check and panics with a report of all failures, if any.
    ///
    /// # Panics
    /// When any check fails, with one message listing every failure.
    pub fn run(self) {
        let crate_dir = self.crate_dir.display().to_string();
        let finished = Run::new(self).execute();
        if !finished.report.is_empty() {
            panic!("{}", finished.report.render(&finished.vendor, &crate_dir));
        }
    }
}

/// What a run found.
struct Finished {
    vendor: String,
    report: Report,
}

/// One fixture and what the plugin made of it.
struct Parsed {
    fixture: FixtureRequest,
    events: Option<Vec<IncomingEvent>>,
}

struct Run {
    kit: Conformance,
    report: Report,
    connection: ConnectionConfig,
    bless: bool,
    blessed: Vec<String>,
}

impl Run {
    fn new(mut kit: Conformance) -> Self {
        let mut report = Report::default();
        // Without .connection(), the test connection of fixtures/connection.toml; without
        // .wrong_connection(), the same with every secret changed.
        let file = match load_test_connection(&kit.crate_dir) {
            Some(Ok(file)) => Some(file),
            Some(Err(e)) => {
                report.fail(None, "test connection", e);
                None
            }
            None => None,
        };
        if kit.connection.is_none() {
            kit.connection = file.as_ref().and_then(TestConnectionFile::config);
        }
        if kit.wrong_connection.is_none() {
            kit.wrong_connection = file.as_ref().and_then(TestConnectionFile::wrong_config);
        }
        let connection = match &kit.connection {
            Some(config) => config.clone(),
            None => {
                report.fail(
                    None,
                    "setup",
                    "no connection given: call .connection(config) with the secrets the fixtures are signed with, or write them in fixtures/connection.toml",
                );
                let mut config = default_connection(&kit.vendor);
                config.verify = false;
                config
            }
        };
        if kit.wrong_connection.is_none() {
            report.fail(
                None,
                "setup",
                "no wrong connection given: call .wrong_connection(config) with wrong secrets (or settings)",
            );
        }
        if kit.strip.is_none() {
            report.fail(
                None,
                "setup",
                "no credential stripper given: call .strip_credentials(|req| ...) to remove what verification checks",
            );
        }
        Run {
            kit,
            report,
            connection,
            bless: std::env::var(BLESS_ENV).is_ok_and(|v| v == "1"),
            blessed: Vec::new(),
        }
    }

    fn finish(self) -> Finished {
        if !self.blessed.is_empty() {
            eprintln!(
                "blessed {} golden file(s) of {}: {}; review them before committing",
                self.blessed.len(),
                self.kit.vendor,
                self.blessed.join(", ")
            );
        }
        Finished {
            vendor: self.kit.vendor,
            report: self.report,
        }
    }

    fn execute(mut self) -> Finished {
        let Some(factory) = self.check_registry() else {
            return self.finish();
        };
        self.check_missing_secrets(factory);
        self.check_unknown_keys(factory);
        self.check_test_connection();
        let source = match guarded(|| factory(&self.connection)) {
            Ok(Ok(source)) => source,
            Ok(Err(e)) => {
                self.report.fail(
                    None,
                    "factory",
                    format!(
                        "the webhook factory refused the connection given to .connection(): {e}"
                    ),
                );
                return self.finish();
            }
            Err(panic) => {
                self.report.fail(
                    None,
                    "factory",
                    format!("the webhook factory panicked: {panic}"),
                );
                return self.finish();
            }
        };
        let fixtures_dir = self.kit.crate_dir.join("fixtures");
        let fixtures = match guarded(|| fixtures::load(&fixtures_dir)) {
            Ok(fixtures) => fixtures,
            Err(panic) => {
                self.report.fail(None, "fixtures", panic);
                return self.finish();
            }
        };
        if fixtures.is_empty() {
            self.report.fail(
                None,
                "fixtures",
                format!(
                    "{} holds no fixtures: add the vendor's webhook bodies as <name>.json",
                    fixtures_dir.display()
                ),
            );
            return self.finish();
        }

        let mut parsed = Vec::with_capacity(fixtures.len());
        for fixture in fixtures {
            let events = self.check_fixture(source.as_ref(), &fixture);
            self.check_malformed(source.as_ref(), &fixture);
            self.check_verification(factory, source.as_ref(), &fixture);
            parsed.push(Parsed { fixture, events });
        }
        self.check_stale_golden(&parsed);
        self.check_reply(source.as_ref());
        self.check_event_kinds(&parsed);
        self.check_dedup_collisions(&parsed);
        self.check_permutations(&parsed);
        self.check_duplicate_messages(&parsed);
        self.check_redelivery(source.as_ref(), &parsed);
        self.finish()
    }

    /// The vendor is registered, has a webhook factory, and the factory accepts the embedded
    /// default's connection (verification off, nothing configured).
    fn check_registry(&mut self) -> Option<WebhookFactory> {
        let vendor = self.kit.vendor.clone();
        let registry = match Registry::from_inventory() {
            Ok(registry) => registry,
            Err(e) => {
                self.report.fail(None, "registry", e.to_string());
                return None;
            }
        };
        let Some(plugin) = registry.get(&vendor) else {
            self.report.fail(
                None,
                "registry",
                format!(
                    "no plugin {vendor:?} in Registry::from_inventory() (found {:?}): submit a Plugin with inventory::submit! and reference the crate from the test (use switchboard_plugin_x as _;)",
                    registry.vendors()
                ),
            );
            return None;
        };
        let Some(factory) = plugin.webhook else {
            self.report.fail(
                None,
                "registry",
                format!("plugin {vendor:?} has no webhook factory (Plugin::webhook is None)"),
            );
            return None;
        };
        let mut open = default_connection(&vendor);
        open.verify = false;
        match guarded(|| factory(&open)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.report.fail(
                None,
                "registry",
                format!(
                    "the webhook factory must accept a connection with verify = false and no settings or secrets (the embedded default), but said: {e}"
                ),
            ),
            Err(panic) => self.report.fail(
                None,
                "registry",
                format!("the webhook factory panicked on the embedded default connection: {panic}"),
            ),
        }
        Some(factory)
    }

    /// Verify, parse, golden, determinism and dedup keys of one fixture.
    fn check_fixture(
        &mut self,
        source: &dyn WebhookSource,
        fixture: &FixtureRequest,
    ) -> Option<Vec<IncomingEvent>> {
        let name = fixture.name.as_str();
        let connection = self.connection.clone();
        let request = fixture.webhook_request(&connection, fixture_received_at());
        let comparisons = constant_time_comparisons();
        match guarded(|| source.verify(&request)) {
            Ok(Ok(())) => {
                let public_only = guarded(|| source.public_verification_only(&self.connection))
                    .ok()
                    .flatten()
                    .is_some();
                if self.connection.verify
                    && !public_only
                    && constant_time_comparisons() == comparisons
                {
                    self.report.fail(
                        Some(name),
                        "constant time",
                        "verify accepted the request without a single comparison through switchboard_core::verify (constant_time_eq, check_token, check_basic_auth or a Scheme): compare secrets, tokens and signatures with those, never with ==",
                    );
                }
            }
            Ok(Err(e)) => self.report.fail(
                Some(name),
                "verify",
                format!(
                    "verification with the right connection failed ({}): {e}",
                    e.code
                ),
            ),
            Err(panic) => {
                self.report
                    .fail(Some(name), "verify", format!("verify panicked: {panic}"))
            }
        }
        let events = match guarded(|| source.parse(&request)) {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                self.report.fail(
                    Some(name),
                    "parse",
                    format!("parse failed ({}): {e}", e.code),
                );
                return None;
            }
            Err(panic) => {
                self.report
                    .fail(Some(name), "parse", format!("parse panicked: {panic}"));
                return None;
            }
        };
        match guarded(|| source.parse(&request)) {
            Ok(Ok(again)) if again == events => {}
            Ok(Ok(again)) => self.report.fail(
                Some(name),
                "determinism",
                format!(
                    "parsing the same request twice gave different events: {}",
                    first_difference(&pretty(&events), &pretty(&again))
                ),
            ),
            Ok(Err(e)) => self.report.fail(
                Some(name),
                "determinism",
                format!("the second parse of the same request failed: {e}"),
            ),
            Err(panic) => self.report.fail(
                Some(name),
                "determinism",
                format!("the second parse of the same request panicked: {panic}"),
            ),
        }
        let mut keys = HashSet::new();
        for (i, event) in events.iter().enumerate() {
            if event.dedup_key.is_empty() {
                self.report.fail(
                    Some(name),
                    "dedup keys",
                    format!("event {i} ({}) has an empty dedup key", event.vendor_event),
                );
            } else if !keys.insert(event.dedup_key.as_str()) {
                self.report.fail(
                    Some(name),
                    "dedup keys",
                    format!(
                        "dedup key {:?} appears twice in one request: the store would drop the second event",
                        event.dedup_key
                    ),
                );
            }
            if Timestamp::from_millis(event.occurred_at.as_millis()).is_none() {
                self.report.fail(
                    Some(name),
                    "timestamps",
                    format!("event {i} has occurred_at out of range"),
                );
            }
        }
        self.check_stored_body(source, &request, name);
        self.check_golden(name, &events);
        Some(events)
    }

    fn check_golden(&mut self, name: &str, events: &[IncomingEvent]) {
        let actual = pretty(events);
        let dir = self.kit.crate_dir.join("golden");
        let path = dir.join(format!("{name}.json"));
        if self.bless {
            let written = std::fs::create_dir_all(&dir).and_then(|()| {
                if std::fs::read_to_string(&path).ok().as_deref() == Some(actual.as_str()) {
                    Ok(false)
                } else {
                    std::fs::write(&path, &actual).map(|()| true)
                }
            });
            match written {
                Ok(true) => self.blessed.push(name.to_owned()),
                Ok(false) => {}
                Err(e) => self.report.fail(
                    Some(name),
                    "golden",
                    format!("cannot write {}: {e}", path.display()),
                ),
            }
            return;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => self.report.fail(
                Some(name),
                "golden",
                format!(
                    "the events differ from {}; if the change is intended, rerun with {BLESS_ENV}=1 and review the diff\n{}",
                    path.display(),
                    first_difference(&expected, &actual)
                ),
            ),
            Err(e) => self.report.fail(
                Some(name),
                "golden",
                format!(
                    "cannot read {} ({e}): create it with {BLESS_ENV}=1 and review it",
                    path.display()
                ),
            ),
        }
    }

    fn check_stale_golden(&mut self, parsed: &[Parsed]) {
        let dir = self.kit.crate_dir.join("golden");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let names: HashSet<&str> = parsed.iter().map(|p| p.fixture.name.as_str()).collect();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if names.contains(name) {
                continue;
            }
            if self.bless {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    self.report.fail(
                        None,
                        "golden",
                        format!("cannot remove the stale {}: {e}", entry.path().display()),
                    );
                }
            } else {
                self.report.fail(
                    None,
                    "golden",
                    format!(
                        "{} has no fixture: remove it, or rerun with {BLESS_ENV}=1",
                        entry.path().display()
                    ),
                );
            }
        }
    }

    /// Malformed bodies derived from the fixture: never a panic; `InvalidArgument` where the
    /// body is certainly malformed.
    fn check_malformed(&mut self, source: &dyn WebhookSource, fixture: &FixtureRequest) {
        let name = fixture.name.as_str();
        for mutation in mutate::mutations(&fixture.body, &self.kit.required) {
            let mut mutated = fixture.clone();
            mutated.body = mutation.body;
            let request = mutated.webhook_request(&self.connection, fixture_received_at());
            if let Err(panic) = guarded(|| source.verify(&request)) {
                self.report.fail(
                    Some(name),
                    "malformed input",
                    format!("{}: verify panicked: {panic}", mutation.label),
                );
            }
            match (guarded(|| source.parse(&request)), mutation.expect) {
                (Err(panic), _) => self.report.fail(
                    Some(name),
                    "malformed input",
                    format!("{}: parse panicked: {panic}", mutation.label),
                ),
                (Ok(Err(e)), _) if e.code != ErrorCode::InvalidArgument => self.report.fail(
                    Some(name),
                    "malformed input",
                    format!(
                        "{}: parse failed with {} instead of invalid_argument: {e}",
                        mutation.label, e.code
                    ),
                ),
                (Ok(Err(_)), _) => {}
                (Ok(Ok(events)), Expect::Invalid) => self.report.fail(
                    Some(name),
                    "malformed input",
                    format!(
                        "{}: parse accepted it ({} events) but must fail with invalid_argument",
                        mutation.label,
                        events.len()
                    ),
                ),
                (Ok(Ok(events)), Expect::NoPanic) => {
                    if events.iter().any(|e| e.dedup_key.is_empty()) {
                        self.report.fail(
                            Some(name),
                            "malformed input",
                            format!("{}: accepted with an empty dedup key", mutation.label),
                        );
                    }
                }
            }
        }
    }

    /// The wrong connection and stripped credentials fail verification with `Unauthenticated`.
    fn check_verification(
        &mut self,
        factory: WebhookFactory,
        source: &dyn WebhookSource,
        fixture: &FixtureRequest,
    ) {
        let name = fixture.name.as_str();
        if let Some(wrong) = self.kit.wrong_connection.clone() {
            // A plugin may keep settings from its config, so the source is built from the
            // wrong connection too.
            match guarded(|| factory(&wrong)) {
                Ok(Ok(wrong_source)) => {
                    let request = fixture.webhook_request(&wrong, fixture_received_at());
                    let outcome = guarded(|| wrong_source.verify(&request));
                    self.expect_unauthenticated(name, "wrong connection", outcome);
                }
                Ok(Err(e)) => self.report.fail(
                    Some(name),
                    "wrong connection",
                    format!("the factory refused the wrong connection, so verify could not be tested: {e}"),
                ),
                Err(panic) => self.report.fail(
                    Some(name),
                    "wrong connection",
                    format!("the factory panicked on the wrong connection: {panic}"),
                ),
            }
        }
        if let Some(strip) = &self.kit.strip {
            let mut stripped = fixture.clone();
            match guarded(|| strip(&mut stripped)) {
                Ok(()) => {
                    let request = stripped.webhook_request(&self.connection, fixture_received_at());
                    let outcome = guarded(|| source.verify(&request));
                    self.expect_unauthenticated(name, "stripped credentials", outcome);
                }
                Err(panic) => self.report.fail(
                    Some(name),
                    "stripped credentials",
                    format!("the strip_credentials hook panicked: {panic}"),
                ),
            }
        }
    }

    fn expect_unauthenticated(
        &mut self,
        name: &str,
        check: &'static str,
        outcome: Result<Result<(), Error>, String>,
    ) {
        match outcome {
            Ok(Err(e)) if e.code == ErrorCode::Unauthenticated => {}
            Ok(Err(e)) => self.report.fail(
                Some(name),
                check,
                format!(
                    "verify failed with {} instead of unauthenticated: {e}",
                    e.code
                ),
            ),
            Ok(Ok(())) => self.report.fail(
                Some(name),
                check,
                "verify accepted the request but must fail with unauthenticated",
            ),
            Err(panic) => self
                .report
                .fail(Some(name), check, format!("verify panicked: {panic}")),
        }
    }

    /// With verification on and no secrets, the factory refuses the connection (or builds a
    /// source that declares its verification public-only): a connection that would accept
    /// anything must not start.
    fn check_missing_secrets(&mut self, factory: WebhookFactory) {
        let mut empty = default_connection(&self.kit.vendor);
        empty.verify = true;
        let mut no_secrets = self.connection.clone();
        no_secrets.verify = true;
        no_secrets.secrets.clear();
        for (what, config) in [
            ("no settings and no secrets", empty),
            (
                "the settings of .connection() but none of its secrets",
                no_secrets,
            ),
        ] {
            match guarded(|| factory(&config)) {
                Ok(Err(_)) => {}
                Ok(Ok(source)) => {
                    let public_only = guarded(|| source.public_verification_only(&config))
                        .ok()
                        .flatten();
                    if public_only.is_none() {
                        self.report.fail(
                            None,
                            "missing secrets",
                            format!(
                                "the webhook factory accepted a connection with verify = true and {what}: it MUST refuse it (config.required_secret(...)?), or the connection accepts any request"
                            ),
                        );
                    }
                }
                Err(panic) => self.report.fail(
                    None,
                    "missing secrets",
                    format!(
                        "the webhook factory panicked on a connection with verify = true and {what}: {panic}"
                    ),
                ),
            }
        }
    }

    /// A setting or a secret the plugin does not know makes the webhook factory refuse the
    /// connection, naming the key and never the secret's value: a misspelt key must stop
    /// start-up, not fail every webhook with a 401 at run time. Skipped when the factory
    /// refuses `.connection()` itself (reported by the `factory` check).
    fn check_unknown_keys(&mut self, factory: WebhookFactory) {
        if !matches!(guarded(|| factory(&self.connection)), Ok(Ok(_))) {
            return;
        }
        let value = "conformance-secret-value-5f0e";
        let setting = self
            .connection
            .clone()
            .with_setting(UNKNOWN_SETTING, "conformance");
        let secret = self.connection.clone().with_secret(UNKNOWN_SECRET, value);
        for (kind, key, config) in [
            ("setting", UNKNOWN_SETTING, setting),
            ("secret", UNKNOWN_SECRET, secret),
        ] {
            match guarded(|| factory(&config)) {
                Ok(Err(e)) => {
                    if !e.message.contains(key) {
                        self.report.fail(
                            None,
                            "unknown keys",
                            format!(
                                "the webhook factory refused the unknown {kind} `{key}` without naming it: {e}"
                            ),
                        );
                    }
                    if e.message.contains(value) {
                        self.report.fail(
                            None,
                            "unknown keys",
                            format!(
                                "the webhook factory's refusal of the unknown secret `{key}` quotes its value"
                            ),
                        );
                    }
                }
                Ok(Ok(_)) => self.report.fail(
                    None,
                    "unknown keys",
                    format!(
                        "the webhook factory accepted the unknown {kind} `{key}`: declare the plugin's settings and secrets as serde structs with #[serde(deny_unknown_fields)] and call config.typed::<Settings, Secrets>()? first in every factory (docs/plugins.md), so that a misspelt key stops start-up instead of failing every webhook with a 401"
                    ),
                ),
                Err(panic) => self.report.fail(
                    None,
                    "unknown keys",
                    format!("the webhook factory panicked on the unknown {kind} `{key}`: {panic}"),
                ),
            }
        }
    }

    /// `fixtures/connection.toml`, where the end-to-end tests, the fuzz targets and the bench
    /// read the connection the fixtures verify against, agrees with `.connection()`.
    fn check_test_connection(&mut self) {
        let path = self.kit.crate_dir.join(TEST_CONNECTION_FILE);
        // A malformed file was reported when the run started.
        let Some(Ok(file)) = load_test_connection(&self.kit.crate_dir) else {
            return;
        };
        let given = &self.connection;
        let secrets: BTreeMap<String, String> = given
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        if file.vendor != given.vendor || file.settings != given.settings || file.secrets != secrets
        {
            self.report.fail(
                None,
                "test connection",
                format!(
                    "{} differs from .connection() (vendor, settings or secrets): the end-to-end tests, the fuzz targets and the bench use the file, so give both the same values",
                    path.display()
                ),
            );
        }
    }

    /// The body as stored (`raw_for_storage`) keeps none of the connection's secrets.
    fn check_stored_body(
        &mut self,
        source: &dyn WebhookSource,
        request: &WebhookRequest<'_>,
        name: &str,
    ) {
        let raw = match guarded(|| source.raw_for_storage(request)) {
            Ok(raw) => raw,
            Err(panic) => {
                self.report.fail(
                    Some(name),
                    "stored body",
                    format!("raw_for_storage panicked: {panic}"),
                );
                return;
            }
        };
        for (key, secret) in &self.connection.secrets {
            // User names (`basic_user = "livechat"`) are not secret and may well be in a body.
            if key.ends_with("_user") || secret.expose().is_empty() {
                continue;
            }
            if raw.contains(secret.expose()) {
                self.report.fail(
                    Some(name),
                    "stored body",
                    format!(
                        "the body as stored keeps the secret {key:?}: drop the field that carries it in raw_for_storage (self.raw_without_fields(request, &[...]))"
                    ),
                );
            }
        }
    }

    /// What each kind of event may say: an end does not open, a start does not end, a
    /// message event carries a message, a rating a rating.
    fn check_event_kinds(&mut self, parsed: &[Parsed]) {
        for p in parsed {
            let name = p.fixture.name.as_str();
            for (i, event) in p.events.iter().flatten().enumerate() {
                for problem in kind_problems(event) {
                    self.report.fail(
                        Some(name),
                        "event kinds",
                        format!(
                            "event {i} ({}, {:?}, dedup key {:?}) {problem}",
                            event.kind.as_str(),
                            event.vendor_event,
                            event.dedup_key
                        ),
                    );
                }
            }
        }
    }

    /// Across all fixtures, one dedup key never names two different events: the store keeps
    /// the first it sees and drops the other as a redelivery.
    fn check_dedup_collisions(&mut self, parsed: &[Parsed]) {
        let mut seen: BTreeMap<&str, (&str, String)> = BTreeMap::new();
        for p in parsed {
            let name = p.fixture.name.as_str();
            for event in p.events.iter().flatten() {
                // The vendor event may differ: the same message may come in a message webhook
                // and again in a transcript webhook, as one event with one key.
                let content = pretty(&(event.kind, event.occurred_at, &event.payload));
                match seen.get(event.dedup_key.as_str()) {
                    Some((first, earlier)) if *earlier != content => {
                        let detail = format!(
                            "dedup key {:?} names two different events, in {first} and here: the store keeps whichever arrives first and drops the other as a redelivery; derive the key from what identifies the event (its id, its type); {}",
                            event.dedup_key,
                            first_difference(earlier, &content)
                        );
                        self.report.fail(Some(name), "dedup key collisions", detail);
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(event.dedup_key.as_str(), (name, content));
                    }
                }
            }
        }
    }

    /// All of a conversation's fixtures folded into one conversation hold each message once:
    /// no two message keys for the same author, time and content (a transcript's copy of a
    /// message must get the key the message's own event gave it).
    fn check_duplicate_messages(&mut self, parsed: &[Parsed]) {
        let mut folded: BTreeMap<&str, Conversation> = BTreeMap::new();
        for p in parsed {
            for event in p.events.iter().flatten() {
                if let EventPayload::Conversation(patch) = &event.payload {
                    folded
                        .entry(patch.external_id.as_str())
                        .or_insert_with(|| {
                            Conversation::new(
                                ConversationId::new(
                                    self.connection.id.clone(),
                                    patch.external_id.as_str(),
                                ),
                                self.kit.vendor.clone(),
                            )
                        })
                        .apply(patch, event.occurred_at, &event.dedup_key);
                }
            }
        }
        for (external_id, conversation) in folded {
            let mut by_content: BTreeMap<String, &str> = BTreeMap::new();
            for (key, message) in &conversation.messages {
                let m = &message.value;
                if m.text.is_empty() && m.attachments.is_empty() && m.data.is_none() {
                    continue;
                }
                let content = pretty(&(
                    m.author_role,
                    &m.author_id,
                    m.sent_at,
                    &m.text,
                    &m.attachments,
                    &m.data,
                ));
                if let Some(other) = by_content.insert(content, key.as_str()) {
                    self.report.fail(
                        None,
                        "duplicate messages",
                        format!(
                            "conversation {external_id:?}: messages {other:?} and {key:?} have the same author, time and content: one message under two keys (a transcript's copy must get the key its own event gave it)"
                        ),
                    );
                }
            }
        }
    }

    fn check_reply(&mut self, source: &dyn WebhookSource) {
        let summary = IngestSummary {
            appended: 1,
            duplicates: 0,
        };
        let error = Error::invalid("the body is not valid JSON");
        if let Err(panic) = guarded(|| {
            source.reply(Ok(&summary));
            source.reply(Err(&error));
        }) {
            self.report
                .fail(None, "reply", format!("reply panicked: {panic}"));
        }
    }

    /// Any order of a conversation's events, with repeats, folds to the same conversation.
    fn check_permutations(&mut self, parsed: &[Parsed]) {
        type Applied<'a> = (&'a ConversationPatch, Timestamp, &'a str, &'a str);
        let mut by_conversation: BTreeMap<&str, Vec<Applied<'_>>> = BTreeMap::new();
        for p in parsed {
            for event in p.events.iter().flatten() {
                if let EventPayload::Conversation(patch) = &event.payload {
                    by_conversation
                        .entry(patch.external_id.as_str())
                        .or_default()
                        .push((
                            patch,
                            event.occurred_at,
                            event.dedup_key.as_str(),
                            p.fixture.name.as_str(),
                        ));
                }
            }
        }
        for (external_id, events) in by_conversation {
            let id = ConversationId::new(self.connection.id.clone(), external_id);
            let fold = |order: &[usize]| {
                let mut conversation = Conversation::new(id.clone(), self.kit.vendor.clone());
                for &i in order {
                    let (patch, at, key, _) = events[i];
                    conversation.apply(patch, at, key);
                }
                conversation
            };
            let n = events.len();
            let in_order: Vec<usize> = (0..n).collect();
            let expected = fold(&in_order);
            let config = Config {
                cases: PERMUTATION_CASES,
                failure_persistence: None,
                ..Config::default()
            };
            let mut runner =
                TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
            let strategy = (
                Just(in_order.clone()),
                proptest::collection::vec(0..n, 0..=n),
            )
                .prop_map(|(mut order, repeats)| {
                    order.extend(repeats);
                    order
                })
                .prop_shuffle();
            let outcome = runner.run(&strategy, |order| {
                if fold(&order) == expected {
                    Ok(())
                } else {
                    Err(TestCaseError::fail("folds differ"))
                }
            });
            match outcome {
                Ok(()) => {}
                Err(TestError::Fail(_, order)) => {
                    let keys: Vec<String> = order
                        .iter()
                        .map(|&i| format!("{} {}", events[i].3, events[i].2))
                        .collect();
                    self.report.fail(
                        None,
                        "permutations",
                        format!(
                            "conversation {external_id:?}: applying its events (fixture, dedup key) in the order {keys:?} gives another conversation than the fixture order: {}\n(events that share a dedup key must carry the same content; see Conversation::apply)",
                            first_difference(&pretty(&expected), &pretty(&fold(&order)))
                        ),
                    );
                }
                Err(TestError::Abort(reason)) => self.report.fail(
                    None,
                    "permutations",
                    format!("conversation {external_id:?}: the property run aborted: {reason}"),
                ),
            }
        }
    }

    /// Every fixture appended to a real store, then delivered again later: the redelivery
    /// appends nothing.
    fn check_redelivery(&mut self, source: &dyn WebhookSource, parsed: &[Parsed]) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                self.report.fail(
                    None,
                    "redelivery",
                    format!("cannot start a tokio runtime: {e}"),
                );
                return;
            }
        };
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                self.report.fail(
                    None,
                    "redelivery",
                    format!("cannot create a temporary directory for the store: {e}"),
                );
                return;
            }
        };
        let store = match Store::open(dir.path()) {
            Ok(store) => store,
            Err(e) => {
                self.report
                    .fail(None, "redelivery", format!("cannot open a store: {e}"));
                return;
            }
        };
        let first_time = fixture_received_at();
        // An hour later: dedup keys must not depend on when a request arrived.
        let later =
            Timestamp::from_millis(first_time.as_millis() + 3_600_000).unwrap_or(first_time);
        for (round, received_at) in [(1, first_time), (2, later)] {
            for p in parsed.iter().filter(|p| p.events.is_some()) {
                let name = p.fixture.name.as_str();
                let request = p.fixture.webhook_request(&self.connection, received_at);
                let events = match guarded(|| source.parse(&request)) {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => {
                        self.report.fail(
                            Some(name),
                            "redelivery",
                            format!("parsing the fixture received at {received_at} failed: {e}"),
                        );
                        continue;
                    }
                    Err(panic) => {
                        self.report.fail(
                            Some(name),
                            "redelivery",
                            format!(
                                "parsing the fixture received at {received_at} panicked: {panic}"
                            ),
                        );
                        continue;
                    }
                };
                let count = events.len();
                let append = AppendRequest {
                    connection: self.connection.id.clone(),
                    vendor: self.kit.vendor.clone(),
                    request_id: Some(format!("{name}-{round}")),
                    received_at,
                    raw: Some(String::from_utf8_lossy(&p.fixture.body).into_owned()),
                    events,
                    sync: None,
                    quarantine: None,
                };
                match runtime.block_on(store.append(append)) {
                    Ok(receipt) if round == 1 => {
                        if receipt.appended.len() + receipt.duplicates != count {
                            self.report.fail(
                                Some(name),
                                "redelivery",
                                format!(
                                    "the store accounted for {} of {count} events",
                                    receipt.appended.len() + receipt.duplicates
                                ),
                            );
                        }
                    }
                    Ok(receipt) if receipt.appended.is_empty() => {}
                    Ok(receipt) => {
                        let appended = receipt.appended.len();
                        self.report.fail(
                            Some(name),
                            "redelivery",
                            format!(
                                "delivering the same body again an hour later appended {appended} of {count} events: their dedup keys depend on something other than the body (the receive time?)"
                            ),
                        );
                    }
                    Err(e) => self.report.fail(
                        Some(name),
                        "redelivery",
                        format!("the store refused the events: {e}"),
                    ),
                }
            }
        }
        if let Err(e) = runtime.block_on(store.close()) {
            self.report
                .fail(None, "redelivery", format!("closing the store failed: {e}"));
        }
    }
}

/// The file beside the fixtures that describes the connection they verify against.
const TEST_CONNECTION_FILE: &str = "fixtures/connection.toml";

/// `fixtures/connection.toml` (read by `switchboard-plugins` for the e2e tests, the fuzz
/// targets and the bench).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestConnectionFile {
    vendor: String,
    #[serde(default)]
    #[allow(dead_code)] // reason: read by the fuzz targets, only allowed here
    credential_fields: Vec<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

impl TestConnectionFile {
    fn config(&self) -> Option<ConnectionConfig> {
        let mut config = ConnectionConfig::new(ConnectionId::new(&self.vendor).ok()?, &self.vendor);
        for (key, value) in &self.settings {
            config = config.with_setting(key, value.clone());
        }
        for (key, value) in &self.secrets {
            config = config.with_secret(key, value.clone());
        }
        Some(config)
    }

    /// The same connection with every secret changed, if it has secrets.
    fn wrong_config(&self) -> Option<ConnectionConfig> {
        if self.secrets.is_empty() {
            return None;
        }
        let mut config = self.config()?;
        for (key, value) in &self.secrets {
            config = config.with_secret(key, format!("{value}-wrong"));
        }
        Some(config)
    }
}

/// `<crate_dir>/fixtures/connection.toml`, if there is one.
fn load_test_connection(crate_dir: &Path) -> Option<Result<TestConnectionFile, String>> {
    let path = crate_dir.join(TEST_CONNECTION_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        toml::from_str(&text)
            .map_err(|e| format!("{} is not a test connection: {e}", path.display())),
    )
}

/// What is wrong with an event for its kind, if anything.
fn kind_problems(event: &IncomingEvent) -> Vec<String> {
    use ConversationStatus::{Closed, Missed, Offline, Open, Queued, Unknown};
    let mut problems = Vec::new();
    let conversation_kind = matches!(
        event.kind,
        EventKind::ChatStarted
            | EventKind::Message
            | EventKind::ChatEnded
            | EventKind::ChatMissed
            | EventKind::OfflineMessage
            | EventKind::Rating
            | EventKind::ChatUpdated
    );
    let patch = match &event.payload {
        EventPayload::Conversation(patch) => patch,
        EventPayload::Ticket(_) => {
            if !matches!(
                event.kind,
                EventKind::TicketCreated | EventKind::TicketUpdated
            ) {
                problems
                    .push("carries a ticket but is not ticket_created or ticket_updated".into());
            }
            return problems;
        }
        EventPayload::Agent { .. } => {
            if event.kind != EventKind::AgentUpdated {
                problems.push("carries an agent but is not agent_updated".into());
            }
            return problems;
        }
        EventPayload::Vendor { .. } => {
            if event.kind != EventKind::VendorEvent {
                problems.push("carries a vendor payload but is not vendor_event".into());
            }
            return problems;
        }
        EventPayload::Contact(_) => {
            problems.push("carries a contact change, which only Switchboard itself writes".into());
            return problems;
        }
    };
    if !conversation_kind {
        problems.push("carries a conversation patch but is not a conversation kind".into());
        return problems;
    }
    let status = patch.status;
    let forbidden: &[ConversationStatus] = match event.kind {
        EventKind::ChatStarted => &[Closed, Missed, Offline],
        EventKind::ChatEnded => &[Open, Queued, Unknown],
        EventKind::ChatMissed => &[Open, Queued, Closed, Offline, Unknown],
        EventKind::OfflineMessage => &[Open, Queued, Closed, Missed, Unknown],
        _ => &[Unknown],
    };
    if let Some(status) = status.filter(|s| forbidden.contains(s)) {
        problems.push(format!(
            "carries the status {}, which a {} event cannot mean",
            status.as_str(),
            event.kind.as_str()
        ));
    }
    if event.kind == EventKind::ChatStarted && patch.ended_at.is_some() {
        problems.push("carries ended_at: a start does not end the conversation".into());
    }
    if event.kind == EventKind::Message && patch.messages.is_empty() {
        problems.push("carries no message".into());
    }
    if event.kind == EventKind::Rating && patch.rating.is_none() {
        problems.push("carries no rating".into());
    }
    if let (Some(started), Some(ended)) = (patch.started_at, patch.ended_at)
        && ended < started
    {
        problems.push(format!("ends ({ended}) before it starts ({started})"));
    }
    problems
}

fn default_connection(vendor: &str) -> ConnectionConfig {
    let id = ConnectionId::new(vendor).unwrap_or_else(|_| {
        ConnectionId::new("conformance").unwrap_or_else(|e| unreachable!("{e}"))
    });
    ConnectionConfig::new(id, vendor)
}

/// Events as golden files hold them: pretty JSON and a trailing newline.
fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        Err(e) => format!("<cannot serialize: {e}>\n"),
    }
}

thread_local! {
    /// Set while the kit calls into plugin code, so that expected panics print nothing.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs, once, a panic hook that stays silent on threads inside [`guarded`] and defers
/// to the previous hook everywhere else.
fn install_quiet_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(location));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs plugin code, turning a panic into its message (with its location).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let was_quiet = QUIET.with(|q| q.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        match LAST_PANIC.with(|last| last.borrow_mut().take()) {
            Some(location) if !location.is_empty() => format!("{message} (at {location})"),
            _ => message,
        }
    })
}
