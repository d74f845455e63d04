//! The LiveTex plugin against the shared conformance kit.

use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_plugin_livetex as _;
use switchboard_testkit::FixtureRequest;

fn config(webhook_key: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
        .with_secret("webhook_key", webhook_key)
}

#[test]
fn livetex_passes_the_conformance_kit() {
    switchboard_testkit::Conformance::new("livetex", env!("CARGO_MANIFEST_DIR"))
        .connection(config("lt-7f3c9a2e51d04b8c"))
        .wrong_connection(config("lt-not-the-key"))
        .strip_credentials(|req: &mut FixtureRequest| {
            req.remove_body_field("webHookKey");
        })
        .required_fields(&[
            "/event",
            "/created_at",
            "/message",
            "/message/id",
            "/dialog",
            "/dialog/chat_id",
            "/dialog/conversation_id",
            "/dialog/created_at",
            "/dialog/messages/0/id",
            "/dialog/messages/0/created_at",
            "/dialog/messages/0/creator",
            "/lead",
            "/lead/lead_id",
            "/lead/created_at",
            "/conversation",
            "/conversation/conversation_id",
            "/conversation/conversation_creation_time",
        ])
        .run();
}
