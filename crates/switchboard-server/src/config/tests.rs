use switchboard_core::{Plugin, Secret};

use super::*;
use crate::auth::Scope;

static TEST_PLUGIN: Plugin = Plugin {
    vendor: "acme",
    description: "test vendor",
    verification: "token",
    webhook: None,
    connector: None,
};

fn registry() -> Registry {
    Registry::from_plugins([&TEST_PLUGIN]).unwrap()
}

#[test]
fn file_config_with_env_secret_override() {
    let text = r#"
        data_dir = "/var/lib/switchboard"
        [http]
        addr = "0.0.0.0:9000"
        body_limit_bytes = 2048
        [[connections]]
        id = "acme-eu"
        vendor = "acme"
        settings = { region = "eu" }
        secrets = { webhook_secret = "from-file" }
        rate_limit = { calls = 10, per_seconds = 60 }
    "#;
    let env = [
        (
            "SWITCHBOARD_SECRET__ACME_EU__WEBHOOK_SECRET".to_owned(),
            "from-env".to_owned(),
        ),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = ServerConfig::from_toml(text, &registry(), env).unwrap();
    assert_eq!(config.http_addr.port(), 9000);
    assert_eq!(config.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
    assert_eq!(config.body_limit, 2048);
    let connection = &config.connections[0];
    assert!(connection.verify);
    assert_eq!(connection.setting("region"), Some("eu"));
    assert_eq!(
        connection.secret("webhook_secret").map(Secret::expose),
        Some("from-env")
    );
    assert!(!config.embedded_default);
}

#[test]
fn no_connections_and_unmatched_secret_variables_are_warned_about_without_values() {
    let config = ServerConfig::from_toml("", &registry(), []).unwrap();
    let warnings = config_warnings(&config.connections, &[]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no [[connections]]"), "{warnings:?}");

    let text = "[[connections]]\nid = \"acme-eu\"\nvendor = \"acme\"\n";
    let config = ServerConfig::from_toml(text, &registry(), []).unwrap();
    let env = [
        (
            "SWITCHBOARD_SECRET__ACME_EU__WEBHOOK_SECRET".to_owned(),
            "matched".to_owned(),
        ),
        (
            "SWITCHBOARD_SECRET__ACME_US__WEBHOOK_SECRET".to_owned(),
            "hunter2".to_owned(),
        ),
        (
            "SWITCHBOARD_SECRET__ACME_EU__".to_owned(),
            "hunter3".to_owned(),
        ),
    ];
    let warnings = config_warnings(&config.connections, &env);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("SWITCHBOARD_SECRET__ACME_US__WEBHOOK_SECRET"));
    assert!(warnings[0].contains("SWITCHBOARD_SECRET__ACME_EU__<KEY>"));
    assert!(warnings[1].contains("SWITCHBOARD_SECRET__ACME_EU__ "));
    assert!(!warnings.concat().contains("hunter"), "{warnings:?}");
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let cases = [
        ("[[connections]]\nid = \"a\"\nvendor = \"zendesk\"", "acme"),
        (
            "[[connections]]\nid = \"a\"\nvendor = \"acme\"\n[[connections]]\nid = \"a\"\nvendor = \"acme\"",
            "twice",
        ),
        (
            "[[connections]]\nid = \"Bad Id\"\nvendor = \"acme\"",
            "invalid connection id",
        ),
        ("[htp]\naddr = \"x\"", "unknown field"),
        (
            "[[connections]]\nid = \"a\"\nvendor = \"acme\"\nrate_limit = { calls = 0, per_seconds = 1 }",
            "rate_limit",
        ),
    ];
    for (text, expected) in cases {
        let err = ServerConfig::from_toml(text, &registry(), []).unwrap_err();
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
}

#[test]
fn api_keys_limits_and_tls_are_read_and_checked() {
    let hash = crate::auth::key_hash_hex("sbk_test");
    let text = format!(
        r#"
        [grpc]
        addr = "0.0.0.0:50051"
        [[api_keys]]
        name = "backend"
        sha256 = "{hash}"
        scopes = ["conversations:read", "events:stream"]
        [tls]
        cert = "/etc/switchboard/cert.pem"
        key = "/etc/switchboard/key.pem"
        [limits]
        grpc_request_timeout_ms = 1500
        webhook_max_concurrent = 8
    "#
    );
    let config = ServerConfig::from_toml(&text, &registry(), []).unwrap();
    let key = &config.security.api_keys[0];
    assert_eq!(key.name, "backend");
    assert!(key.allows(Scope::EventsStream) && !key.allows(Scope::Admin));
    assert_eq!(
        config.limits.grpc_request_timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(config.limits.webhook_max_concurrent, 8);
    assert_eq!(
        config.limits.grpc_max_concurrent_requests,
        Limits::default().grpc_max_concurrent_requests
    );
    assert_eq!(
        config.tls.as_ref().map(|t| t.cert.clone()),
        Some(PathBuf::from("/etc/switchboard/cert.pem"))
    );
    config.check_exposure().unwrap();
    assert!(
        !format!("{config:?}").contains(&hash),
        "hashes are not printed"
    );

    let key = |name: &str, sha: &str, scopes: &str| {
        format!("[[api_keys]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscopes = {scopes}\n")
    };
    let other = crate::auth::key_hash_hex("sbk_other");
    let cases = [
        (key("a", "abc", "[\"admin\"]"), "64 hex digits"),
        (key("a", &hash, "[\"root\"]"), "unknown scope \"root\""),
        (key("a", &hash, "[]"), "no scopes"),
        (key("", &hash, "[\"admin\"]"), "empty name"),
        (
            key("a", &hash, "[\"admin\"]") + &key("a", &other, "[\"admin\"]"),
            "used twice",
        ),
        (
            key("a", &hash, "[\"admin\"]") + &key("b", &hash, "[\"admin\"]"),
            "same sha256",
        ),
        (
            "[limits]\nwebhook_max_concurrent = 0".to_owned(),
            "greater than 0",
        ),
        ("[limits]\nmax_everything = 1".to_owned(), "unknown field"),
    ];
    for (text, expected) in cases {
        let err = ServerConfig::from_toml(&text, &registry(), []).unwrap_err();
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
}

#[test]
fn the_bind_policy_refuses_open_non_loopback_addresses() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut config = ServerConfig::default();
    config.check_exposure().unwrap();
    config.grpc_addr = any;
    let err = config.check_exposure().unwrap_err().to_string();
    assert!(
        err.contains("api_keys") && err.contains("--allow-unauthenticated"),
        "{err}"
    );
    config.security.allow_unauthenticated = true;
    config.check_exposure().unwrap();

    let mut config = ServerConfig::embedded_default(&registry());
    config.http_addr = any;
    let err = config.check_exposure().unwrap_err().to_string();
    assert!(err.contains("verification off (acme)"), "{err}");
    config.security.allow_unverified_webhooks = true;
    config.check_exposure().unwrap();
    // Verified connections may take webhooks anywhere: the vendor's secret authenticates.
    let config = ServerConfig {
        http_addr: any,
        connections: vec![ConnectionConfig::new(
            ConnectionId::new("acme").unwrap(),
            "acme",
        )],
        ..ServerConfig::default()
    };
    config.check_exposure().unwrap();
}

#[test]
fn embedded_default_has_one_unverified_connection_per_plugin() {
    let config = ServerConfig::embedded_default(&registry());
    assert!(config.embedded_default);
    assert_eq!(config.connections.len(), 1);
    assert_eq!(config.connections[0].id.as_str(), "acme");
    assert!(!config.connections[0].verify);
    assert_eq!(config.http_addr.to_string(), DEFAULT_HTTP_ADDR);
}

#[test]
fn sync_intervals_are_read_per_connection_and_zero_is_refused() {
    let text = "[[connections]]\nid = \"a\"\nvendor = \"acme\"\nsync_interval_secs = 900\n\n[[connections]]\nid = \"b\"\nvendor = \"acme\"\n";
    let config = ServerConfig::from_toml(text, &registry(), []).unwrap();
    let a = ConnectionId::new("a").unwrap();
    assert_eq!(config.sync_intervals.len(), 1);
    assert_eq!(config.sync_intervals[&a], Duration::from_secs(900));
    let zero = text.replace("900", "0");
    let err = ServerConfig::from_toml(&zero, &registry(), [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sync_interval_secs"), "{err}");
}

#[test]
fn database_url_chooses_postgres_and_a_bad_one_is_one_line_without_its_password() {
    let config = ServerConfig::from_toml(
        "database_url = \"postgres://sb:s3cret@db:5432/switchboard?sslmode=require\"\n",
        &registry(),
        [],
    )
    .unwrap();
    let url = config.database_url.as_ref().expect("a database URL");
    assert_eq!(
        url.expose(),
        "postgres://sb:s3cret@db:5432/switchboard?sslmode=require"
    );
    assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
    assert!(
        ServerConfig::from_toml("", &registry(), [])
            .unwrap()
            .database_url
            .is_none()
    );

    let error = ServerConfig::from_toml(
        "database_url = \"mysql://sb:s3cret@db/switchboard\"\n",
        &registry(),
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("database_url in the config file"), "{error}");
    assert!(error.contains("not a PostgreSQL URL"), "{error}");
    assert!(
        !error.contains("s3cret") && !error.contains('\n'),
        "{error}"
    );

    let error = ServerConfig::from_toml("database_uri = \"postgres://db/x\"\n", &registry(), [])
        .unwrap_err()
        .to_string();
    assert!(error.contains("database_uri"), "{error}");
}

#[test]
fn the_sync_lease_ttl_is_configurable_and_must_be_positive() {
    let config =
        ServerConfig::from_toml("[limits]\nsync_lease_ttl_ms = 1500\n", &registry(), []).unwrap();
    assert_eq!(config.limits.sync_lease_ttl, Duration::from_millis(1500));
    let error = ServerConfig::from_toml("[limits]\nsync_lease_ttl_ms = 0\n", &registry(), [])
        .unwrap_err()
        .to_string();
    assert!(error.contains("sync_lease_ttl_ms"), "{error}");
}

#[test]
fn a_toml_error_is_one_line_that_never_echoes_the_file() {
    for text in [
        "database_uri = \"postgres://sb:s3cret@db/x\"\n",
        "data_dir = \"x\"\ndatabase_url = postgres://sb:s3cret@db/x\n",
        "[[connections]]\nid = \"a\"\nvendor = \"acme\"\nsecrets = { webhook_secret = \"s3cret\" \n",
    ] {
        let error = ServerConfig::from_toml(text, &registry(), [])
            .unwrap_err()
            .to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("line "), "{error}");
    }
    let error =
        ServerConfig::from_toml("data_dir = \"x\"\ndatabase_uri = \"y\"\n", &registry(), [])
            .unwrap_err()
            .to_string();
    assert!(error.contains("line 2, column 1"), "{error}");
    assert!(error.contains("unknown field `database_uri`"), "{error}");
    assert!(error.contains("`database_url`"), "{error}");
}

#[test]
fn the_system_connection_id_is_refused() {
    let text = "[[connections]]\nid = \"switchboard\"\nvendor = \"acme\"\n";
    let error = ServerConfig::from_toml(text, &registry(), []).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("\"switchboard\" is reserved"), "{message}");
    assert!(message.contains("choose another id"), "{message}");
    // Another id that merely contains it is fine.
    let text = "[[connections]]\nid = \"switchboard-eu\"\nvendor = \"acme\"\n";
    let config = ServerConfig::from_toml(text, &registry(), []).unwrap();
    assert_eq!(config.connections[0].id.as_str(), "switchboard-eu");
}
