use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_plugin_smartsupp as _; // keeps its inventory::submit! linked

fn config(token: &str, app_secret: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("smartsupp").unwrap(), "smartsupp")
        .with_secret("webhook_secret", token)
        .with_secret("app_secret", app_secret)
}

#[test]
fn smartsupp_passes_the_conformance_kit() {
    switchboard_testkit::Conformance::new("smartsupp", env!("CARGO_MANIFEST_DIR"))
        .connection(config("hook-token-6c1f", "app-secret-93b7e0"))
        .wrong_connection(config("hook-token-wrong", "app-secret-wrong"))
        .strip_credentials(|req: &mut switchboard_testkit::FixtureRequest| {
            req.remove_header("x-switchboard-token");
            req.remove_header("x-smartsupp-hmac");
            req.remove_query("token");
        })
        .required_fields(&[
            // POST hook
            "/accountId",
            "/beginAt",
            "/endAt",
            "/channel",
            "/channel/id",
            "/visitor",
            "/messages",
            "/messages/0/type",
            "/messages/0/content",
            "/messages/0/sentAt",
            // event callbacks (`type` may be absent: a body with a string `event` is a callback)
            "/event",
            "/timestamp",
            "/data",
            "/data/conversation/id",
            "/data/message/id",
            "/data/agent/id",
        ])
        .run();
}
