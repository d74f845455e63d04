//! The kit passes a well-behaved plugin and catches broken ones. The test plugins below share
//! one tiny body format (`{"conversation", "event": "message"|"closed"|"transcript", "id",
//! "author", "text", "sent_at", "messages": [{"id", "author", "text", "sent_at"}]}`, secret
//! token in `X-Switchboard-Token`) and differ in one bug each.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_core::verify::{TOKEN_HEADER, check_token};
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
    /// Compares the token with `==` instead of in constant time.
    ComparesWithEq,
    /// The factory builds a source with verification on and no secret to check.
    AcceptsMissingSecret,
    /// Maps the end of a chat to status open.
    EndOpens,
    /// Keys a transcript's messages by their position, so that they duplicate the messages
    /// their own events delivered instead of merging with them.
    DuplicatesTranscriptMessages,
    /// Leaves the event type out of the dedup key, so two different messages of one
    /// conversation share a key.
    OneDedupKeyTwoContents,
    /// Cuts a preview of the text at byte 3, which panics inside a multibyte character.
    SlicesTextBytes,
    /// Stores the request with its headers, the token among them.
    StoresHeaders,
    /// The factory does not check the keys, so a misspelt secret is accepted.
    AcceptsUnknownKeys,
}

/// The settings of the kit's test plugins.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KitSettings {
    /// A setting the plugins do not read.
    #[allow(dead_code)] // reason: declared so that the factory refuses other keys, never read
    region: Option<String>,
}

/// The secrets of the kit's test plugins.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KitSecrets {
    /// The token of `X-Switchboard-Token`.
    #[allow(dead_code)] // reason: declared so that the factory refuses other keys, never read
    webhook_secret: Option<switchboard_core::Secret>,
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
        if self.bug == Bug::ComparesWithEq {
            let expected = request.connection.secret("webhook_secret");
            return match (request.header(TOKEN_HEADER), expected) {
                (Some(sent), Some(expected)) if sent == expected.expose() => Ok(()),
                _ => Err(Error::unauthenticated("the webhook token does not match")),
            };
        }
        if self.bug == Bug::AcceptsAnySecret || check_token(request, "webhook_secret")? {
            Ok(())
        } else {
            Err(Error::unauthenticated("no token: send X-Switchboard-Token"))
        }
    }

    fn raw_for_storage(&self, request: &WebhookRequest<'_>) -> String {
        let body = String::from_utf8_lossy(request.body).into_owned();
        if self.bug == Bug::StoresHeaders {
            serde_json::json!({"headers": request.headers, "body": body}).to_string()
        } else {
            body
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
        let mut dedup_key = if self.bug == Bug::OneDedupKeyTwoContents {
            format!("{conversation}:{event}")
        } else {
            format!("{event}:{conversation}:{id}")
        };
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
                if self.bug == Bug::SlicesTextBytes && text.len() > 3 {
                    let preview = &text[..3];
                    patch
                        .attributes
                        .insert("preview".to_owned(), preview.to_owned());
                    patch.attributes.clear();
                }
                patch.messages.push(message(key, &root, text, sent_at)?);
                EventKind::Message
            }
            "closed" => {
                patch.status = Some(if self.bug == Bug::EndOpens {
                    ConversationStatus::Open
                } else {
                    ConversationStatus::Closed
                });
                patch.ended_at = Some(sent_at);
                EventKind::ChatEnded
            }
            "transcript" => {
                let items = field(&root, "messages")?
                    .as_array()
                    .ok_or_else(|| Error::invalid("messages must be an array"))?;
                for (i, item) in items.iter().enumerate() {
                    let sent_at = field(item, "sent_at")?
                        .as_i64()
                        .and_then(Timestamp::from_secs)
                        .ok_or_else(|| Error::invalid("sent_at is not a valid time in seconds"))?;
                    let key = if self.bug == Bug::DuplicatesTranscriptMessages {
                        format!("{id}-{i}")
                    } else {
                        text(item, "id")?.to_owned()
                    };
                    let text = text(item, "text")?.to_owned();
                    patch.messages.push(message(key, item, text, sent_at)?);
                }
                EventKind::ChatUpdated
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

fn message(key: String, item: &Value, text: String, sent_at: Timestamp) -> Result<Message, Error> {
    let author_role = match text_or(item, "author")? {
        Some("agent") => Role::Agent,
        _ => Role::Visitor,
    };
    Ok(Message {
        key,
        author_role,
        author_id: None,
        author_name: None,
        text,
        attachments: Vec::new(),
        sent_at,
        automatic: false,
        data: None,
    })
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
        fn $factory(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
            if $bug != Bug::AcceptsUnknownKeys {
                config.typed::<KitSettings, KitSecrets>()?;
            }
            if config.verify && $bug != Bug::AcceptsMissingSecret {
                config.required_secret("webhook_secret")?;
            }
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
kit_plugin!(eq, "kiteq", Bug::ComparesWithEq);
kit_plugin!(no_secret, "kitnosecret", Bug::AcceptsMissingSecret);
kit_plugin!(end_opens, "kitendopens", Bug::EndOpens);
kit_plugin!(
    duplicates,
    "kitduplicates",
    Bug::DuplicatesTranscriptMessages
);
kit_plugin!(collides, "kitcollides", Bug::OneDedupKeyTwoContents);
kit_plugin!(slices, "kitslices", Bug::SlicesTextBytes);
kit_plugin!(stores, "kitstores", Bug::StoresHeaders);
kit_plugin!(unknown_keys, "kitunknownkeys", Bug::AcceptsUnknownKeys);

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
fn assert_caught(vendor: &str, expected: &[&str]) -> String {
    let dir = sandbox();
    caught_in(vendor, dir.path(), expected)
}

#[track_caller]
fn caught_in(vendor: &str, dir: &Path, expected: &[&str]) -> String {
    let report = report(kit(vendor, dir))
        .unwrap_or_else(|| panic!("the kit passed the broken plugin {vendor}"));
    for text in expected {
        assert!(
            report.contains(text),
            "the report lacks {text:?}:\n{report}"
        );
    }
    report
}

/// A sandbox whose golden files hold what the broken plugin makes of the fixtures, as if its
/// author had blessed them without reviewing: the kit must catch the bug anyway.
fn reblessed(bug: Bug) -> tempfile::TempDir {
    let dir = sandbox();
    let source = KitSource { bug };
    let connection = config("kit-secret");
    for fixture in switchboard_testkit::fixtures::load(dir.path().join("fixtures")) {
        let request =
            fixture.webhook_request(&connection, switchboard_testkit::fixture_received_at());
        let events = source.parse(&request).unwrap();
        let golden = serde_json::to_string_pretty(&events).unwrap() + "\n";
        std::fs::write(
            dir.path().join(format!("golden/{}.json", fixture.name)),
            golden,
        )
        .unwrap();
    }
    dir
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
fn a_token_compared_with_eq_is_caught() {
    assert_caught(
        "kiteq",
        &[
            "[hello] constant time:",
            "verify accepted the request without a single comparison through switchboard_core::verify",
        ],
    );
}

#[test]
fn a_factory_that_accepts_verification_without_a_secret_is_caught() {
    let report = assert_caught(
        "kitnosecret",
        &[
            "missing secrets:",
            "accepted a connection with verify = true and no settings and no secrets",
            "accepted a connection with verify = true and the settings of .connection() but none of its secrets",
        ],
    );
    // Its webhooks themselves are fine.
    assert!(!report.contains("[hello]"), "{report}");
}

#[test]
fn a_factory_that_accepts_a_misspelt_key_is_caught() {
    let report = assert_caught(
        "kitunknownkeys",
        &[
            "unknown keys:",
            "accepted the unknown setting `conformance_misspelt_setting`",
            "accepted the unknown secret `conformance_misspelt_secret`",
        ],
    );
    // Its webhooks themselves are fine.
    assert!(!report.contains("[hello]"), "{report}");
}

#[test]
fn an_end_that_opens_the_chat_is_caught_even_with_blessed_golden_files() {
    let dir = reblessed(Bug::EndOpens);
    let report = caught_in(
        "kitendopens",
        dir.path(),
        &[
            "[bye] event kinds:",
            "carries the status open, which a chat_ended event cannot mean",
        ],
    );
    assert!(!report.contains("golden:"), "{report}");
}

#[test]
fn a_transcript_message_duplicated_instead_of_merged_is_caught_even_with_blessed_golden_files() {
    let dir = reblessed(Bug::DuplicatesTranscriptMessages);
    let report = caught_in(
        "kitduplicates",
        dir.path(),
        &[
            "duplicate messages:",
            "conversation \"c1\": messages \"m1\" and \"t1-0\" have the same author, time and content",
            "messages \"m2\" and \"t1-1\"",
        ],
    );
    assert!(!report.contains("golden:"), "{report}");
}

#[test]
fn one_dedup_key_for_two_contents_is_caught() {
    let dir = reblessed(Bug::OneDedupKeyTwoContents);
    let report = caught_in(
        "kitcollides",
        dir.path(),
        &[
            "[reply] dedup key collisions:",
            "dedup key \"c1:message\" names two different events, in hello and here",
        ],
    );
    assert!(!report.contains("golden:"), "{report}");
}

#[test]
fn byte_slicing_that_panics_on_multibyte_text_is_caught() {
    assert_caught(
        "kitslices",
        &[
            "malformed input",
            "/text = \"\u{e9}\u{e9}\u{e9}\u{e9}\" (2-byte characters, byte 3 inside one): parse panicked",
            "is not a char boundary",
        ],
    );
}

#[test]
fn a_stored_body_that_keeps_a_secret_is_caught() {
    assert_caught(
        "kitstores",
        &[
            "[hello] stored body:",
            "the body as stored keeps the secret \"webhook_secret\"",
        ],
    );
}

#[test]
fn a_test_connection_file_that_disagrees_with_the_conformance_test_is_caught() {
    let dir = sandbox();
    let path = dir.path().join("fixtures/connection.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("kit-secret", "other-secret")).unwrap();
    caught_in(
        "kitgood",
        dir.path(),
        &["test connection:", "differs from .connection()"],
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
    let empty = tempfile::tempdir().unwrap();
    let report = report(Conformance::new("nosuchvendor", empty.path())).expect("must fail");
    assert!(report.contains("no connection given"), "{report}");
    assert!(report.contains("no wrong connection given"), "{report}");
    assert!(report.contains("no plugin \"nosuchvendor\""), "{report}");
}

#[test]
fn the_connections_default_to_fixtures_connection_toml() {
    let dir = sandbox();
    let bare = |vendor: &str| {
        Conformance::new(vendor, dir.path())
            .strip_credentials(|req: &mut FixtureRequest| req.remove_header("x-switchboard-token"))
            .required_fields(&["/conversation", "/id", "/sent_at"])
    };
    if let Some(report) = report(bare("kitgood")) {
        panic!("the kit failed a well-behaved plugin with the file's connections:\n{report}");
    }
    // The wrong connection is the file's with every secret changed.
    let lax = report(bare("kitlax")).expect("the kit passed a plugin that accepts any secret");
    assert!(lax.contains("wrong connection:"), "{lax}");
    assert!(!lax.contains("setup:"), "{lax}");
}

#[test]
fn fixtures_load_with_their_requests() {
    let fixtures = switchboard_testkit::fixtures::load(data().join("fixtures"));
    let names: Vec<&str> = fixtures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["bye", "hello", "reply", "transcript"]);
    // Header names are lowercased so that plugins can look them up as the server gives them.
    assert_eq!(
        fixtures[1].headers,
        [("x-switchboard-token".to_owned(), "kit-secret".to_owned())]
    );
    assert!(fixtures[1].query.is_empty());
    assert!(fixtures[1].body.starts_with(b"{\"conversation\": \"c1\""));
}
