//! The kit passes a well-behaved plugin and catches broken ones. The test plugins below share
//! one tiny body format (`{"conversation", "event": "message"|"closed", "id", "author",
//! "text", "sent_at"}`, secret token in `X-Switchboard-Token`) and differ in one bug each.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_core::verify::check_token;
use switchboard_core::{
    ConnectionConfig, ConnectionId, ConversationPatch, ConversationStatus, Error, EventKind,
    EventPayload, IncomingEvent, Message, Plugin, Role, Timestamp, WebhookRequest, WebhookSource,
};
use switchboard_testkit::{BLESS_ENV, Conformance, FixtureRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// Unwraps a field's type instead of checking it.
    PanicsOnMistypedText,
    /// Lets any request in.
    AcceptsAnySecret,
    /// Puts the receive time in its dedup keys.
    ClockInDedupKey,
    /// Treats a body it cannot read as an empty object.
    AcceptsGarbage,
    /// Gives different events one dedup key, one message key and one time, so that the
    /// conversation depends on the order they arrive in.
    OneKeyForEverything,
}

#[derive(Debug)]
struct KitSource {
    bug: Bug,
}

fn field<'a>(root: &'a Value, name: &str) -> Result<&'a Value, Error> {
    root.get(name)
        .ok_or_else(|| Error::invalid(format!("{name} is missing")))
}

fn text<'a>(root: &'a Value, name: &str) -> Result<&'a str, Error> {
    field(root, name)?
        .as_str()
        .ok_or_else(|| Error::invalid(format!("{name} must be a string")))
}

impl WebhookSource for KitSource {
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        if self.bug == Bug::AcceptsAnySecret || check_token(request, "webhook_secret")? {
            Ok(())
        } else {
            Err(Error::unauthenticated("no token: send X-Switchboard-Token"))
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        let root: Value = match serde_json::from_slice(request.body) {
            Ok(root) => root,
            Err(_) if self.bug == Bug::AcceptsGarbage => return Ok(Vec::new()),
            Err(e) => return Err(Error::invalid(format!("the body is not valid JSON: {e}"))),
        };
        let conversation = text(&root, "conversation")?;
        let event = text(&root, "event")?;
        let id = text(&root, "id")?;
        let sent_at = field(&root, "sent_at")?
            .as_i64()
            .and_then(Timestamp::from_secs)
            .ok_or_else(|| Error::invalid("sent_at is not a valid time in seconds"))?;
        let mut dedup_key = format!("{event}:{conversation}:{id}");
        let mut key = id.to_owned();
        let mut sent_at = sent_at;
        match self.bug {
            Bug::ClockInDedupKey => {
                dedup_key.push_str(&format!(":{}", request.received_at.as_millis()));
            }
            Bug::OneKeyForEverything => {
                dedup_key = conversation.to_owned();
                key = conversation.to_owned();
                sent_at = Timestamp::MIN;
            }
            _ => {}
        }
        let mut patch = ConversationPatch::new(conversation);
        let kind = match event {
            "message" => {
                let text = if self.bug == Bug::PanicsOnMistypedText {
                    root["text"].as_str().unwrap().to_owned()
                } else {
                    text(&root, "text")?.to_owned()
                };
                let author_role = match text_or(&root, "author")? {
                    Some("agent") => Role::Agent,
                    _ => Role::Visitor,
                };
                patch.messages.push(Message {
                    key,
                    author_role,
                    author_id: None,
                    author_name: None,
                    text,
                    attachments: Vec::new(),
                    sent_at,
                    automatic: false,
                    data: None,
                });
                EventKind::Message
            }
            "closed" => {
                patch.status = Some(ConversationStatus::Closed);
                patch.ended_at = Some(sent_at);
                EventKind::ChatEnded
            }
            other => return Err(Error::invalid(format!("unknown event {other:?}"))),
        };
        Ok(vec![IncomingEvent {
            dedup_key,
            kind,
            vendor_event: event.to_owned(),
            occurred_at: sent_at,
            payload: EventPayload::Conversation(patch),
        }])
    }
}

fn text_or<'a>(root: &'a Value, name: &str) -> Result<Option<&'a str>, Error> {
    match root.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("{name} must be a string"))),
    }
}

macro_rules! kit_plugin {
    ($factory:ident, $vendor:literal, $bug:expr) => {
        fn $factory(_: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
            Ok(Box::new(KitSource { bug: $bug }))
        }
        inventory::submit! {
            Plugin {
                vendor: $vendor,
                description: "a test plugin of the conformance kit",
                verification: "token",
                webhook: Some($factory),
                connector: None,
            }
        }
    };
}

kit_plugin!(good, "kitgood", Bug::None);
kit_plugin!(panics, "kitpanics", Bug::PanicsOnMistypedText);
kit_plugin!(lax, "kitlax", Bug::AcceptsAnySecret);
kit_plugin!(clock, "kitclock", Bug::ClockInDedupKey);
kit_plugin!(garbage, "kitgarbage", Bug::AcceptsGarbage);
kit_plugin!(one_key, "kitonekey", Bug::OneKeyForEverything);

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kit")
}

/// A copy of the test data in a temporary directory, so that blessing never rewrites the
/// committed golden files with a broken plugin's output.
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["fixtures", "golden"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(data().join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    dir
}

fn config(secret: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("kit").unwrap(), "kit")
        .with_secret("webhook_secret", secret)
}

fn kit(vendor: &str, dir: &Path) -> Conformance {
    Conformance::new(vendor, dir)
        .connection(config("kit-secret"))
        .wrong_connection(config("guess"))
        .strip_credentials(|req: &mut FixtureRequest| req.remove_header("x-switchboard-token"))
        .required_fields(&["/conversation", "/id", "/sent_at"])
}

/// Runs the kit and returns its report, or `None` if it passed.
fn report(kit: Conformance) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| kit.run()))
        .err()
        .map(|payload| match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(_) => "<a panic without a message>".to_owned(),
        })
}

fn blessing() -> bool {
    std::env::var(BLESS_ENV).is_ok_and(|v| v == "1")
}

#[track_caller]
fn assert_caught(vendor: &str, expected: &[&str]) {
    let dir = sandbox();
    let report = report(kit(vendor, dir.path()))
        .unwrap_or_else(|| panic!("the kit passed the broken plugin {vendor}"));
    for text in expected {
        assert!(
            report.contains(text),
            "the report lacks {text:?}:\n{report}"
        );
    }
}

#[test]
fn a_well_behaved_plugin_passes() {
    let sandbox = sandbox();
    let dir = if blessing() {
        // Blessing writes the committed golden files of the well-behaved plugin.
        data()
    } else {
        sandbox.path().to_owned()
    };
    if let Some(report) = report(kit("kitgood", &dir)) {
        panic!("the kit failed a well-behaved plugin:\n{report}");
    }
}

#[test]
fn a_plugin_that_panics_on_a_mistyped_field_is_caught() {
    assert_caught(
        "kitpanics",
        &[
            "malformed input",
            "/text (string) replaced by 12345: parse panicked",
        ],
    );
}

#[test]
fn a_plugin_that_accepts_any_secret_is_caught() {
    assert_caught(
        "kitlax",
        &[
            "wrong connection:",
            "stripped credentials:",
            "verify accepted the request but must fail with unauthenticated",
        ],
    );
}

#[test]
fn dedup_keys_that_depend_on_the_receive_time_are_caught() {
    assert_caught(
        "kitclock",
        &["[hello] redelivery", "appended 1 of 1 events"],
    );
}

#[test]
fn a_plugin_that_accepts_garbage_is_caught() {
    assert_caught(
        "kitgarbage",
        &[
            "truncated to 1 of 80 bytes: parse accepted it",
            "but must fail with invalid_argument",
        ],
    );
}

#[test]
fn order_dependent_events_are_caught() {
    assert_caught(
        "kitonekey",
        &[
            "permutations:",
            "conversation \"c1\": applying its events (fixture, dedup key) in the order",
        ],
    );
}

#[test]
fn a_wrong_golden_file_is_caught_or_rewritten_when_blessing() {
    let dir = sandbox();
    let golden = dir.path().join("golden/reply.json");
    let original = std::fs::read_to_string(&golden).unwrap();
    std::fs::write(
        &golden,
        original.replace("how can I help", "how may I help"),
    )
    .unwrap();
    let outcome = report(kit("kitgood", dir.path()));
    if blessing() {
        assert_eq!(outcome, None);
        assert_eq!(std::fs::read_to_string(&golden).unwrap(), original);
    } else {
        let report = outcome.expect("the kit passed a wrong golden file");
        assert!(report.contains("[reply] golden:"), "{report}");
        assert!(report.contains("expected:"), "{report}");
        assert!(report.contains("how may I help"), "{report}");
    }
}

#[test]
fn a_missing_plugin_or_missing_setup_is_reported() {
    let report = report(Conformance::new("nosuchvendor", data())).expect("must fail");
    assert!(report.contains("no connection given"), "{report}");
    assert!(report.contains("no plugin \"nosuchvendor\""), "{report}");
}

#[test]
fn fixtures_load_with_their_requests() {
    let fixtures = switchboard_testkit::fixtures::load(data().join("fixtures"));
    let names: Vec<&str> = fixtures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["bye", "hello", "reply"]);
    // Header names are lowercased so that plugins can look them up as the server gives them.
    assert_eq!(
        fixtures[1].headers,
        [("x-switchboard-token".to_owned(), "kit-secret".to_owned())]
    );
    assert!(fixtures[1].query.is_empty());
    assert!(fixtures[1].body.starts_with(b"{\"conversation\": \"c1\""));
}
