use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_plugin_tencent as _; // keeps its inventory::submit! linked

fn config(sdk_app_id: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("tencent").unwrap(), "tencent")
        .with_setting("sdk_app_id", sdk_app_id)
}

#[test]
fn tencent_passes_the_conformance_kit() {
    switchboard_testkit::Conformance::new("tencent", env!("CARGO_MANIFEST_DIR"))
        .connection(config("1400187352"))
        .wrong_connection(config("1400000000"))
        .strip_credentials(|req: &mut switchboard_testkit::FixtureRequest| {
            req.remove_query("SdkAppid");
            req.remove_query("token");
            req.remove_query("Sign");
            req.remove_query("RequestTime");
            req.remove_header("x-switchboard-token");
        })
        .required_fields(&[
            "/SessionId",
            "/Event",
            "/EventTime",
            "/MsgBody/0/MsgType",
            "/MsgBody/0/MsgContent",
        ])
        .run();
}
