//! The LiveTex plugin against the shared conformance kit.

use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_plugin_livetex as _;
use switchboard_testkit::FixtureRequest;

fn config(token: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
        .with_secret("webhook_secret", token)
}

#[test]
fn livetex_passes_the_conformance_kit() {
    switchboard_testkit::Conformance::new("livetex", env!("CARGO_MANIFEST_DIR"))
        .connection(config("lt-7f3c9a2e51d04b8c"))
        .wrong_connection(config("lt-not-the-key"))
        .strip_credentials(|req: &mut FixtureRequest| {
            req.remove_query("token");
            req.remove_header("x-switchboard-token");
        })
        .required_fields(&[
            "/Conversation",
            "/Conversation/id",
            "/Conversation/chats/0/id",
            "/Conversation/chats/0/created_at",
            "/Conversation/chats/0/messages/0/id",
            "/Conversation/chats/0/messages/0/created_at",
            "/Conversation/chats/1/employee/id",
            "/Conversation/leads/0/id",
            "/Conversation/leads/0/created_at",
            "/employee/0/id",
        ])
        .run();
}
