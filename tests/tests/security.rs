//! Security and limits, end to end: API keys and scopes on every RPC, the bind policy, TLS on
//! both front doors, and load shedding that answers at once instead of queueing.

use std::time::{Duration, Instant};

use switchboard_e2e::{ALL_SECRETS, SECRET, Sandbox, seed};
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_server::auth::{ApiKey, Scope, generate_key, key_hash_hex, parse_hash};
use tokio::io::AsyncWriteExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn api_key(name: &str, key: &str, scopes: &[Scope]) -> ApiKey {
    ApiKey {
        name: name.to_owned(),
        sha256: parse_hash(&key_hash_hex(key)).unwrap(),
        scopes: scopes.iter().copied().collect(),
    }
}

/// Sends `authorization` exactly as given (or not at all).
#[derive(Clone)]
struct SendAuthorization(Option<String>);

impl tonic::service::Interceptor for SendAuthorization {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        Ok(request)
    }
}

type Client =
    SwitchboardClient<tonic::service::interceptor::InterceptedService<Channel, SendAuthorization>>;

fn client_with(channel: Channel, authorization: Option<String>) -> Client {
    SwitchboardClient::with_interceptor(channel, SendAuthorization(authorization))
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    ListConversations,
    GetConversation,
    StreamEvents,
    ManageTickets,
    ListConnections,
    SyncConnection,
    ManageAgents,
}

impl Rpc {
    const ALL: [Rpc; 7] = [
        Rpc::ListConversations,
        Rpc::GetConversation,
        Rpc::StreamEvents,
        Rpc::ManageTickets,
        Rpc::ListConnections,
        Rpc::SyncConnection,
        Rpc::ManageAgents,
    ];

    fn scope(self) -> Scope {
        match self {
            Rpc::ListConversations | Rpc::GetConversation => Scope::ConversationsRead,
            Rpc::StreamEvents => Scope::EventsStream,
            Rpc::ManageTickets => Scope::TicketsManage,
            Rpc::ListConnections | Rpc::SyncConnection | Rpc::ManageAgents => Scope::Admin,
        }
    }

    /// Calls the RPC; `Ok` with a text rendering of the answer, or the status.
    async fn call(self, client: &mut Client) -> Result<String, tonic::Status> {
        Ok(match self {
            Rpc::ListConversations => format!(
                "{:?}",
                client
                    .list_conversations(v1::ListConversationsRequest::default())
                    .await?
            ),
            Rpc::GetConversation => format!(
                "{:?}",
                client
                    .get_conversation(v1::GetConversationRequest {
                        id: "livechat/none".to_owned(),
                        view: 0,
                    })
                    .await?
            ),
            Rpc::StreamEvents => {
                let mut stream = client
                    .stream_events(v1::StreamEventsRequest {
                        start: Some(v1::stream_events_request::Start::FromBeginning(true)),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                // Nothing is stored: the stream stays open and quiet.
                let _ = tokio::time::timeout(Duration::from_millis(50), stream.message()).await;
                "stream".to_owned()
            }
            Rpc::ManageTickets => format!(
                "{:?}",
                client
                    .manage_tickets(v1::ManageTicketsRequest::default())
                    .await?
            ),
            Rpc::ListConnections => format!(
                "{:?}",
                client
                    .list_connections(v1::ListConnectionsRequest {})
                    .await?
            ),
            Rpc::SyncConnection => {
                let _ = client
                    .sync_connection(v1::SyncConnectionRequest::default())
                    .await?;
                "sync".to_owned()
            }
            Rpc::ManageAgents => format!(
                "{:?}",
                client
                    .manage_agents(v1::ManageAgentsRequest::default())
                    .await?
            ),
        })
    }
}

#[tokio::test]
async fn every_rpc_needs_a_valid_key_with_its_scope_and_health_stays_open() {
    let keys: Vec<(Scope, String)> = Scope::ALL.iter().map(|s| (*s, generate_key())).collect();
    let configured: Vec<ApiKey> = keys
        .iter()
        .map(|(scope, key)| api_key(&format!("key-{scope}"), key, &[*scope]))
        .collect();
    let sandbox = Sandbox::start_with(move |config| {
        config.security.api_keys = configured.clone();
    })
    .await;
    let channel = sandbox.channel().await;

    for rpc in Rpc::ALL {
        // No key, a malformed header, a wrong key: UNAUTHENTICATED, with what to do.
        for (authorization, expected) in [
            (None, "missing API key"),
            (Some("Basic dXNlcjpwYXNz".to_owned()), "malformed"),
            (
                Some(format!("Bearer {}", generate_key())),
                "unknown API key",
            ),
        ] {
            let status = rpc
                .call(&mut client_with(channel.clone(), authorization.clone()))
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc:?} {authorization:?}"
            );
            assert!(status.message().contains(expected), "{rpc:?}: {status:?}");
        }
        for (scope, key) in &keys {
            let mut client = client_with(channel.clone(), Some(format!("Bearer {key}")));
            let result = rpc.call(&mut client).await;
            if *scope == rpc.scope() || *scope == Scope::Admin {
                if let Err(status) = &result {
                    assert!(
                        !matches!(
                            status.code(),
                            Code::Unauthenticated | Code::PermissionDenied
                        ),
                        "{rpc:?} with {scope}: {status:?}"
                    );
                }
            } else {
                let status = result.unwrap_err();
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{rpc:?} with {scope}"
                );
                let needed = rpc.scope().as_str();
                assert!(
                    status.message().contains(needed)
                        && status.message().contains(&format!("key-{scope}")),
                    "{status:?}"
                );
                assert!(!status.message().contains(key.as_str()));
            }
        }
    }

    // Health stays open for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, 1, "SERVING");

    // ListConnections (admin) never shows a secret.
    let admin = &keys.iter().find(|(s, _)| *s == Scope::Admin).unwrap().1;
    let listed = Rpc::ListConnections
        .call(&mut client_with(channel, Some(format!("Bearer {admin}"))))
        .await
        .unwrap();
    for secret in ALL_SECRETS {
        assert!(!listed.contains(secret), "ListConnections shows {secret}");
    }
}

#[tokio::test]
async fn the_bind_policy_refuses_an_open_grpc_port_unless_allowed() {
    let any = "0.0.0.0:0".parse().unwrap();
    let err = Sandbox::try_start(1024 * 1024, move |config| config.grpc_addr = any)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve gRPC on 0.0.0.0:0") && err.contains("[[api_keys]]"),
        "{err}"
    );

    // Explicitly allowed: it starts (and answers on loopback).
    let mut sandbox = Sandbox::start_with(move |config| {
        config.grpc_addr = any;
        config.security.allow_unauthenticated = true;
    })
    .await;
    assert!(sandbox.grpc_addr().ip().is_unspecified());
    let port = sandbox.grpc_addr().port();
    let mut client = SwitchboardClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    client
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .unwrap();
    sandbox.stop().await;

    // With a key configured it starts, and the key is required.
    let key = generate_key();
    let configured = vec![api_key("ops", &key, &[Scope::Admin])];
    let mut sandbox = Sandbox::start_with(move |config| {
        config.grpc_addr = any;
        config.security.api_keys = configured.clone();
    })
    .await;
    let port = sandbox.grpc_addr().port();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = Rpc::ListConnections
        .call(&mut client_with(channel.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    Rpc::ListConnections
        .call(&mut client_with(channel, Some(format!("Bearer {key}"))))
        .await
        .unwrap();
    sandbox.stop().await;

    // Webhooks on an open address are fine when every connection verifies; an unverified
    // connection there is refused.
    let mut sandbox = Sandbox::start_with(move |config| config.http_addr = any).await;
    sandbox.stop().await;
    let err = Sandbox::try_start(1024 * 1024, move |config| {
        config.http_addr = any;
        config.connections[0].verify = false;
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("verification off (livechat)"), "{err}");
}

struct Pem {
    _dir: tempfile::TempDir,
    cert: String,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to a temp dir; returns the
/// config that uses it.
fn self_signed() -> (Pem, switchboard_server::config::TlsConfig) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = certified.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let config = switchboard_server::config::TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    (Pem { _dir: dir, cert }, config)
}

#[tokio::test]
async fn tls_on_both_front_doors() {
    let (pem, tls) = self_signed();
    let sandbox = Sandbox::start_with(move |config| config.tls = Some(tls.clone())).await;
    let grpc = sandbox.grpc_addr();

    // A client that trusts the certificate talks gRPC.
    let channel = Channel::from_shared(format!("https://localhost:{}", grpc.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pem.cert))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SwitchboardClient::new(channel);
    client
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .unwrap();

    // A plain-text client gets nowhere.
    let plain = async {
        let mut client = SwitchboardClient::connect(format!("http://{grpc}")).await?;
        client
            .list_conversations(v1::ListConversationsRequest::default())
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), plain)
            .await
            .is_ok_and(|r| r.is_err()),
        "plain text must fail"
    );

    // HTTPS webhooks with a client that trusts the certificate.
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.cert.as_bytes()).unwrap()])
        .resolve("localhost", sandbox.http_addr())
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/webhooks/livechat",
        sandbox.http_addr().port()
    );
    let response = https
        .post(&url)
        .header("x-switchboard-token", SECRET)
        .body(seed::CHAT_STARTED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert!(sandbox.head() >= 1, "the webhook is stored");
    // Plain HTTP on the TLS port fails.
    let plain = sandbox
        .http
        .post(format!("http://{}/webhooks/livechat", sandbox.http_addr()))
        .body(seed::CHAT_STARTED)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

/// The store permits are taken only once a body has arrived (see `hostile.rs`), so what a slow
/// body holds is its address's body-read slot: with one slot per address, the next webhook from
/// that address is shed at once.
#[tokio::test]
async fn a_full_webhook_limit_answers_429_at_once() {
    let sandbox = Sandbox::start_with(|config| {
        config.limits.webhook_max_body_reads_per_peer = 1;
    })
    .await;
    // One webhook in flight that never finishes its body holds the address's only slot.
    let mut stuck = tokio::net::TcpStream::connect(sandbox.http_addr())
        .await
        .unwrap();
    stuck
        .write_all(
            b"POST /webhooks/livechat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let url = format!("{}/webhooks/livechat", sandbox.http_base());
    let deadline = Instant::now() + Duration::from_secs(5);
    let (response, took) = loop {
        let started = Instant::now();
        let response = sandbox
            .http
            .post(&url)
            .header("x-switchboard-token", SECRET)
            .body(seed::CHAT_STARTED)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            break (response, started.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "never shed: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(took < Duration::from_millis(500), "shed in {took:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    assert!(
        body["reason"].as_str().unwrap().contains("limit of 1"),
        "{body}"
    );
    assert_eq!(sandbox.head(), 0, "nothing stored by a shed webhook");
    // Health is never shed.
    let health = sandbox
        .http
        .get(format!("{}/healthz", sandbox.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Once the stuck request goes away, webhooks are served again.
    drop(stuck);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = sandbox
            .post(
                "livechat",
                "",
                &[("x-switchboard-token", SECRET)],
                seed::CHAT_STARTED,
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a unary call whose request never finishes: it holds a permit until the deadline.
fn hold_a_unary_call(channel: Channel) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<
            v1::ListConversationsRequest,
            v1::ListConversationsResponse,
        >::default();
        let path =
            http::uri::PathAndQuery::from_static("/switchboard.v1.Switchboard/ListConversations");
        let never = tokio_stream::pending::<v1::ListConversationsRequest>();
        grpc.client_streaming(tonic::Request::new(never), path, codec)
            .await
            .map(|_| ())
    })
}

#[tokio::test]
async fn a_full_grpc_limit_answers_resource_exhausted_at_once_and_calls_have_a_deadline() {
    let sandbox = Sandbox::start_with(|config| {
        config.limits.grpc_max_concurrent_requests = 1;
        config.limits.grpc_request_timeout = Duration::from_millis(1500);
    })
    .await;
    let held_at = Instant::now();
    let held = hold_a_unary_call(sandbox.channel().await);
    let mut client = sandbox.client().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let (status, took) = loop {
        let started = Instant::now();
        let result = client
            .list_conversations(v1::ListConversationsRequest::default())
            .await;
        if let Err(status) = result {
            break (status, started.elapsed());
        }
        assert!(Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit of 1"), "{status:?}");
    assert!(took < Duration::from_millis(300), "shed in {took:?}");
    // Streams are not counted: StreamEvents still opens.
    client
        .stream_events(v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AtHead(true)),
            ..Default::default()
        })
        .await
        .unwrap();
    // The held call ends at the deadline, and the permit comes back.
    let status = held.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let waited = held_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    client
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .unwrap();
}
