//! A sandbox for end-to-end tests: the real server on `127.0.0.1:0` over real sled files in a
//! temp dir, with an HTTP client for webhooks and a tonic client for the API.

// Keep every plugin's inventory registration linked into the test binaries.
use switchboard_plugins as _;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchboard_core::ConnectionConfig;
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_server::{RunningServer, ServerConfig, ServerError};
use tonic::transport::Channel;

/// LiveChat's webhook secret in the sandbox (sent as the `X-Switchboard-Token` header), as
/// `plugins/livechat/fixtures/connection.toml` sets it.
pub const SECRET: &str = "lc-webhook-secret";

/// Every secret the sandbox configures (those of every plugin's `fixtures/connection.toml`,
/// but user names, `*_user`, such as LiveChat's `basic_user = "livechat"`); none may ever
/// appear in a response or a log. Iterate it: `for secret in ALL_SECRETS`.
pub const ALL_SECRETS: AllSecrets = AllSecrets;

/// The secrets of every plugin's test connection, read once; see [`ALL_SECRETS`].
#[derive(Debug, Clone, Copy)]
pub struct AllSecrets;

impl IntoIterator for AllSecrets {
    type Item = &'static str;
    type IntoIter = std::iter::Map<std::slice::Iter<'static, String>, fn(&String) -> &str>;

    fn into_iter(self) -> Self::IntoIter {
        static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
        SECRETS
            .get_or_init(|| {
                let secrets: Vec<String> = switchboard_plugins::test_connections()
                    .into_iter()
                    .flat_map(|(_, c)| c.secrets)
                    .filter(|(name, _)| !name.ends_with("_user"))
                    .map(|(_, value)| value)
                    .collect();
                assert!(
                    secrets.iter().any(|s| s == SECRET),
                    "{SECRET} is LiveChat's"
                );
                secrets
            })
            .iter()
            .map(String::as_str as fn(&String) -> &str)
    }
}

/// Changes the sandbox's server config before each start (and restart).
#[derive(Clone)]
pub struct Configure(Arc<dyn Fn(&mut ServerConfig) + Send + Sync>);

impl fmt::Debug for Configure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Configure(..)")
    }
}

/// A running server and clients for it.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    server: Option<RunningServer>,
    body_limit: usize,
    configure: Configure,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// Makes rustls' `ring` provider the process default, so that reqwest (built with rustls and
/// no provider of its own) can build clients.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The sandbox's connections: one per plugin with webhooks, id = vendor, verification on,
/// configured from the plugin's `fixtures/connection.toml` (the credentials its fixtures are
/// signed with).
pub fn connections() -> Vec<ConnectionConfig> {
    switchboard_plugins::test_connections()
        .into_iter()
        .map(|(_, connection)| connection.config())
        .collect()
}

/// Every vendor with a test connection (every plugin with webhooks), sorted.
pub fn vendors() -> Vec<String> {
    switchboard_plugins::test_connections()
        .into_iter()
        .map(|(_, connection)| connection.vendor)
        .collect()
}

/// The fixtures of the plugin registered as `vendor` (its crate's `fixtures/`).
pub fn fixtures(vendor: &str) -> Vec<switchboard_testkit::FixtureRequest> {
    let (krate, _) = switchboard_plugins::test_connection(vendor)
        .unwrap_or_else(|| panic!("no linked plugin crate has a test connection for {vendor:?}"));
    switchboard_testkit::fixtures::load(krate.fixtures_dir())
}

impl Sandbox {
    /// Starts a server with the default body limit.
    pub async fn start() -> Sandbox {
        Self::start_with_limit(switchboard_server::config::DEFAULT_BODY_LIMIT).await
    }

    /// Starts a server with the given webhook body limit.
    pub async fn start_with_limit(body_limit: usize) -> Sandbox {
        Self::try_start(body_limit, |_| {})
            .await
            .expect("server starts")
    }

    /// Starts a server whose config `configure` changes first (API keys, TLS, limits...);
    /// it is applied again on every restart.
    pub async fn start_with(
        configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> Sandbox {
        Self::try_start(switchboard_server::config::DEFAULT_BODY_LIMIT, configure)
            .await
            .expect("server starts")
    }

    /// Like [`Sandbox::start_with`], but returns the server's refusal instead of panicking.
    pub async fn try_start(
        body_limit: usize,
        configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> Result<Sandbox, ServerError> {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sandbox = Sandbox {
            dir,
            server: None,
            body_limit,
            configure: Configure(Arc::new(configure)),
            http: reqwest::Client::new(),
        };
        sandbox.try_boot().await?;
        Ok(sandbox)
    }

    /// The config the sandbox starts its server with.
    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig {
            data_dir: self.data_dir(),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            body_limit: self.body_limit,
            connections: connections(),
            ..ServerConfig::default()
        };
        (self.configure.0)(&mut config);
        config
    }

    async fn boot(&mut self) {
        self.try_boot().await.expect("server starts");
    }

    async fn try_boot(&mut self) -> Result<(), ServerError> {
        let registry = switchboard_plugins::registry().expect("registry");
        self.server = Some(switchboard_server::start(self.config(), &registry).await?);
        Ok(())
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.server().http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.server().grpc_addr
    }

    /// The bound address of `/metrics` when it has its own (`metrics_addr` configured).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server().metrics_addr
    }

    /// Where the store lives.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.server().http_addr)
    }

    /// The head of the log right now.
    pub fn head(&self) -> u64 {
        self.server().storage.head().0
    }

    /// A gRPC client.
    pub async fn client(&self) -> SwitchboardClient<Channel> {
        let url = format!("http://{}", self.server().grpc_addr);
        for _ in 0..50 {
            if let Ok(client) = SwitchboardClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {url}");
    }

    /// A raw channel to the gRPC port (for health and reflection clients).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.server().grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Stops the server gracefully and starts it again on the same data dir (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Posts a body to `/webhooks/{connection}` with extra headers and a query string.
    pub async fn post(
        &self,
        connection: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut url = format!("{}/webhooks/{connection}", self.http_base());
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Posts a fixture as the vendor would: its body, headers and query parameters.
    pub async fn post_fixture(
        &self,
        connection: &str,
        fixture: &switchboard_testkit::FixtureRequest,
    ) -> (u16, String) {
        let query: Vec<String> = fixture
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let headers: Vec<(&str, &str)> = fixture
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.post(connection, &query.join("&"), &headers, fixture.body.clone())
            .await
    }

    /// Reads every conversation matching the request by following page tokens.
    pub async fn list_all(
        &self,
        mut request: v1::ListConversationsRequest,
    ) -> Vec<v1::Conversation> {
        let mut client = self.client().await;
        let mut out = Vec::new();
        loop {
            let page = client
                .list_conversations(request.clone())
                .await
                .expect("list")
                .into_inner();
            out.extend(page.conversations);
            if page.next_page_token.is_empty() {
                return out;
            }
            request.page_token = page.next_page_token;
        }
    }

    /// Reads events after `after` until `count` have arrived (or panics after 10 s).
    pub async fn read_events(&self, after: u64, count: usize) -> Vec<v1::Event> {
        let mut client = self.client().await;
        let mut stream = client
            .stream_events(v1::StreamEventsRequest {
                start: Some(v1::stream_events_request::Start::AfterSequence(after)),
                ..Default::default()
            })
            .await
            .expect("stream")
            .into_inner();
        let mut events = Vec::new();
        while events.len() < count {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events arrive within 10 s")
                .expect("stream ok")
                .expect("stream open");
            events.push(next);
        }
        events
    }
}

/// Percent-encodes a query component.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The two LiveChat webhook bodies of seed 003, verbatim.
pub mod seed {
    /// `chat_started`.
    pub const CHAT_STARTED: &str = r#"{ "event_type": "chat_started", "event_unique_id": "7ddaabb", "token": "31aae354", "license_id": "1067", "lc_version": "2", "chat": { "id": "PO13", "started_timestamp": 1552126412, "url": "URL", "referer": "", "messages": [{ "user_type": "agent", "author_name": "NAME", "agent_id": "name@gmail.com", "text": "Hello. How may I help you?", "json": "", "timestamp": 1552126412 }], "attachments": [], "events": [], "agents": [{ "name": "AGENT NAME", "login": "name@gmail.com" }], "tags": [], "groups": [0] }, "visitor": { "id": "S1551", "name": "NAME", "email": "name@gmail.com", "country": "Japan", "city": "", "language": "en", "page_current": "URL", "timezone": "" }, "pre_chat_survey": [{ "id": "2001", "type": "name", "label": "Name:", "answer": "NAME" }, { "id": "2002", "type": "email", "label": "E-mail:", "answer": "name@gmail.com" }] }"#;
    /// `chat_ended`.
    pub const CHAT_ENDED: &str = r#"{ "event_type": "chat_ended", "event_unique_id": "349a820", "token": "f791db42", "license_id": "1067", "lc_version": "2", "chat": { "id": "PO13", "started_timestamp": 1552126412, "ended_timestamp": 1552126503, "url": "URL", "referer": "", "messages": [{ "user_type": "agent", "author_name": "NAME", "agent_id": "name@gmail.com", "text": "Hello. How may I help you?", "json": "", "timestamp": 1552126412 }, { "user_type": "visitor", "author_name": "NAME", "text": "hello! how's it going?", "json": "", "timestamp": 1552126451 }, { "user_type": "agent", "author_name": "AGENT NAME", "agent_id": "name@gmail.com", "text": "Hi, good.", "json": "{}", "timestamp": 1552126490 }], "attachments": [], "events": [{ "user_type": "visitor", "text": "NAME closed the chat.", "timestamp": 1552126503, "type": "closed" }], "agents": [{ "name": "NAME", "login": "name@gmail.com" }], "tags": [], "groups": [0] }, "visitor": { "id": "S1551", "name": "NAME", "email": "name@gmail.com", "country": "Japan", "city": "", "language": "en", "page_current": "URL", "timezone": "" }, "pre_chat_survey": [{ "id": "2001", "type": "name", "label": "Name:", "answer": "NAME" }, { "id": "2002", "type": "email", "label": "E-mail:", "answer":"name@gmail.com" }] }"#;

    /// A legacy `chat_started` for chat `id` with a unique event id, for load and crash tests.
    pub fn chat_started(chat_id: &str, event_id: &str) -> String {
        CHAT_STARTED
            .replace("\"PO13\"", &format!("\"{chat_id}\""))
            .replace("\"7ddaabb\"", &format!("\"{event_id}\""))
    }
}

/// The ticket of a `ManageTickets` reply; panics on any other reply.
pub fn ticket_of(response: v1::ManageTicketsResponse) -> v1::Ticket {
    match response.result {
        Some(v1::manage_tickets_response::Result::Ticket(ticket)) => ticket,
        other => panic!("expected a ticket, got {other:?}"),
    }
}
