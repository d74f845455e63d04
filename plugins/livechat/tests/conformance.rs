//! The LiveChat plugin against the shared conformance kit.

use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_plugin_livechat as _;
use switchboard_testkit::FixtureRequest;

fn config(secret: &str, basic_password: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livechat").unwrap(), "livechat")
        .with_secret("webhook_secret", secret)
        .with_secret("basic_user", "livechat")
        .with_secret("basic_password", basic_password)
}

#[test]
fn livechat_passes_the_conformance_kit() {
    switchboard_testkit::Conformance::new("livechat", env!("CARGO_MANIFEST_DIR"))
        .connection(config("lc-webhook-secret", "hunter2-basic"))
        .wrong_connection(config("not-the-secret", "not-the-password"))
        .strip_credentials(|req: &mut FixtureRequest| {
            req.remove_header("x-switchboard-token");
            req.remove_header("authorization");
            req.remove_query("token");
            req.remove_body_field("secret_key");
        })
        .required_fields(&[
            "/event_type",
            "/chat/id",
            "/chat/started_timestamp",
            "/chat/ended_timestamp",
            "/chat/messages/0/timestamp",
            "/chat/events/0/timestamp",
            "/visitor/id",
            "/ticket/id",
            "/action",
            "/payload",
            "/payload/chat_id",
            "/payload/chat/id",
            "/payload/chat/thread/id",
            "/payload/chat/thread/created_at",
            "/payload/chat/thread/events/0/id",
            "/payload/chat/users/0/id",
            "/payload/event/id",
            "/payload/event/type",
            "/payload/event/created_at",
            "/payload/tag",
            "/payload/user/id",
        ])
        .run();
}

/// The documented samples of every v3.5 and v3.6 webhook action
/// (`fixtures/docs/v3.x/fixtures`, sources in `fixtures/SOURCES.md`): each is verified and
/// mapped (the unmodelled actions kept as vendor events), with golden files in
/// `fixtures/docs/v3.x/golden`. One kit per version, since both versions' samples describe the
/// same chat with different contents. Only `action` and `payload` are required here: an
/// unmodelled action is kept whatever else it carries.
#[test]
fn livechat_maps_every_documented_webhook_sample() {
    for version in ["v3.5", "v3.6"] {
        let dir = format!("{}/fixtures/docs/{version}", env!("CARGO_MANIFEST_DIR"));
        switchboard_testkit::Conformance::new("livechat", dir)
            .connection(config("lc-webhook-secret", "hunter2-basic"))
            .wrong_connection(config("not-the-secret", "not-the-password"))
            .strip_credentials(|req: &mut FixtureRequest| {
                req.remove_header("x-switchboard-token");
                req.remove_header("authorization");
                req.remove_query("token");
                req.remove_body_field("secret_key");
            })
            .required_fields(&["/action", "/payload"])
            .run();
    }
}
