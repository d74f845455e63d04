//! Hostile input, end to end: what a client sends must never break stored data, hide the
//! server's answer behind a transport error, or be mistaken for the server's own fault.
//! Each test is named after the finding it guards (the hostile-input issue).

use switchboard_e2e::{SECRET, Sandbox};
use switchboard_proto::v1;
use tonic::Code;

/// An unknown v3 LiveChat action (kept whole as a vendor event) whose payload nests `depth`
/// levels below the body.
fn deep_v3_body(depth: usize, id: &str) -> String {
    let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    format!(
        r#"{{"webhook_id":"w1","secret_key":"{SECRET}","action":"brand_new_action","organization_id":"o1","payload":{{"id":"{id}","deep":{deep}}},"additional_data":{{}}}}"#
    )
}

/// Finding 1: a body nested 118-127 deep passed the parser but made stored records
/// undecodable (ListConversations, GetConversation and StreamEvents after a restart failed).
/// Now such a body is refused with a reason, and what is accepted always reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_body_is_refused_and_everything_accepted_reads_back() {
    let mut sandbox = Sandbox::start().await;
    for depth in [70, 120, 126] {
        let (status, body) = sandbox
            .post(
                "livechat",
                "",
                &[],
                deep_v3_body(depth, &format!("d{depth}")),
            )
            .await;
        assert_eq!(status, 400, "depth {depth}: {body}");
        assert!(body.contains("levels deep"), "{body}");
    }
    // A legitimately nested body is taken, and is readable after a restart (from sled).
    let (status, body) = sandbox
        .post("livechat", "", &[], deep_v3_body(50, "ok"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sandbox
        .post(
            "livechat",
            "",
            &[("authorization", "Basic bGl2ZWNoYXQ6aHVudGVyMi1iYXNpYw==")],
            switchboard_e2e::seed::CHAT_STARTED,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let head = sandbox.head();
    sandbox.restart().await;
    let events = sandbox.read_events(0, head as usize).await;
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    assert!(events.iter().any(|e| e.vendor_event == "brand_new_action"));
    let listed = sandbox
        .list_all(v1::ListConversationsRequest::default())
        .await;
    assert!(!listed.is_empty());
    let mut client = sandbox.client().await;
    for conversation in listed {
        client
            .get_conversation(v1::GetConversationRequest {
                id: conversation.id,
                ..Default::default()
            })
            .await
            .expect("every listed conversation reads back");
    }
}

/// Finding 8: a 3 MB value in a request field was echoed whole in `grpc-message`, so the client
/// saw a transport error instead of its status. Now the echo is cut and the code arrives.
#[tokio::test]
async fn a_huge_field_gets_its_status_with_a_bounded_message() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;
    let huge = "z".repeat(3 << 20);
    let status = client
        .get_conversation(v1::GetConversationRequest {
            id: format!("livechat/{huge}"),
            ..Default::default()
        })
        .await
        .expect_err("no such conversation");
    assert_eq!(status.code(), Code::NotFound, "{}", &status.message()[..80]);
    assert!(status.message().len() < 2048, "{}", status.message().len());
    let status = client
        .list_conversations(v1::ListConversationsRequest {
            connection_ids: vec![huge.clone()],
            ..Default::default()
        })
        .await
        .expect_err("not a connection id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 2048);
    // And over HTTP: the webhook's error body stays small.
    let (status, body) = sandbox.post(&"c".repeat(20_000), "", &[], "{}").await;
    assert_eq!(status, 404);
    assert!(body.len() < 2048, "{}", body.len());
}

/// Sends bytes as they are, to put a message that is not protobuf on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::chunk(src).to_vec();
        bytes::Buf::advance(src, bytes.len());
        Ok(Some(bytes))
    }
}

/// Finding 8, second part: a request that is not a valid protobuf message is the client's
/// fault (INVALID_ARGUMENT), not the server's (INTERNAL).
#[tokio::test]
async fn a_request_that_is_not_protobuf_is_invalid_argument() {
    let sandbox = Sandbox::start().await;
    let mut grpc = tonic::client::Grpc::new(sandbox.channel().await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/switchboard.v1.Switchboard/GetConversation");
    // Field 1 (the id, a string) whose length varint never ends.
    let status = grpc
        .unary(
            tonic::Request::new(vec![0x0a, 0x80, 0x80, 0x80]),
            path,
            RawCodec,
        )
        .await
        .expect_err("not a message");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("protobuf"), "{status:?}");
}

/// A TCP connection to `to` from another loopback address (`127.0.0.2`): another peer.
async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind a second loopback address");
    socket.connect(to).await.expect("connect")
}

/// Finding 3: slow senders took every webhook permit (the permit was taken before the body
/// was read), so legitimate webhooks got 429 for as long as they trickled. Now a body is read
/// before a permit is taken, and one address may only have so many bodies in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_cannot_take_the_permits_of_legitimate_webhooks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = Sandbox::start_with(|config| {
        config.limits.webhook_max_concurrent = 4;
        config.limits.webhook_max_body_reads_per_peer = 3;
    })
    .await;
    // Ten slow senders from another address: each sends its headers and one byte of body.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut stream = connect_from("127.0.0.2", sandbox.http_addr()).await;
        stream
            .write_all(
                b"POST /webhooks/livechat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                  content-length: 100000\r\n\r\n{",
            )
            .await
            .expect("write");
        slow.push(stream);
    }
    // Those beyond that address's three slots are answered 429 at once (the three that hold
    // a slot would only get their 408 after the 10 s body timeout).
    let answers = futures::future::join_all(slow.iter_mut().map(|stream| async move {
        let mut buf = [0u8; 12];
        match tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(n)) => buf[..n].starts_with(b"HTTP/1.1 429"),
            _ => false,
        }
    }))
    .await;
    assert_eq!(answers.iter().filter(|shed| **shed).count(), 7);
    // A vendor from another address is served while they trickle.
    for n in 0..8 {
        let (status, body) = sandbox
            .post(
                "livechat",
                "",
                &[("x-switchboard-token", SECRET)],
                switchboard_e2e::seed::chat_started(&format!("S{n}"), &format!("s{n}")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Finding 4: a connection that sent nothing was never closed, on either port. Now silent
/// connections and slow headers are cut after their limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_slow_headers_are_closed_on_both_ports() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = Sandbox::start_with(|config| {
        config.limits.connection_idle_timeout = std::time::Duration::from_millis(500);
        config.limits.http_header_read_timeout = std::time::Duration::from_millis(400);
    })
    .await;
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
        let mut buf = [0u8; 1024];
        let until = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                // A 408 or an error answer may come first; the close follows.
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
    let limit = std::time::Duration::from_secs(5);
    let mut http = tokio::net::TcpStream::connect(sandbox.http_addr())
        .await
        .expect("connect");
    let mut grpc = tokio::net::TcpStream::connect(sandbox.grpc_addr())
        .await
        .expect("connect");
    let mut slow_headers = tokio::net::TcpStream::connect(sandbox.http_addr())
        .await
        .expect("connect");
    slow_headers
        .write_all(b"POST /webhooks/livechat HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let (a, b, c) = tokio::join!(
        closed_within(&mut http, limit),
        closed_within(&mut grpc, limit),
        async {
            // A header line every 200 ms: active, but the headers never end.
            for _ in 0..20 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if slow_headers.write_all(b"x-a: b\r\n").await.is_err() {
                    return true;
                }
            }
            closed_within(&mut slow_headers, std::time::Duration::from_millis(100)).await
        }
    );
    assert!(a, "a silent HTTP connection stayed open");
    assert!(b, "a silent gRPC connection stayed open");
    assert!(c, "headers trickling for 4 s were not cut");
    // A client that uses its connection is not disturbed.
    let (status, _) = sandbox.post("livechat", "", &[], "{}").await;
    assert_ne!(status, 0);
}

/// Finding 2: subscribers that never read pinned unbounded memory. Now each subscriber's queue
/// is bounded in bytes; one that leaves it full past the stall limit is ended with
/// RESOURCE_EXHAUSTED and resumes from its cursor with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_ended_and_resumes_with_nothing_lost() {
    let sandbox = Sandbox::start_with(|config| {
        config.limits.stream_subscriber_buffer_bytes = 64 * 1024;
        config.limits.stream_stall_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    // About 6 MB of events: far more than the client's HTTP/2 windows and the budget.
    let filler = "y".repeat(60_000);
    for n in 0..100 {
        let body = switchboard_e2e::seed::chat_started(&format!("B{n}"), &format!("b{n}"))
            .replace("\"NAME\"", &format!("\"{filler}\""));
        let (status, text) = sandbox
            .post("livechat", "", &[("x-switchboard-token", SECRET)], body)
            .await;
        assert_eq!(status, 200, "{text}");
    }
    let head = sandbox.head();
    let mut client = sandbox.client().await;
    let mut stream = client
        .stream_events(v1::StreamEventsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    // Not reading for a while.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(event))) => received.push(event.sequence),
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream neither went on nor ended"),
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert!(ended.message().contains("after_sequence"), "{ended:?}");
    assert!(
        (received.len() as u64) < head,
        "the stalled stream was not cut"
    );
    assert_eq!(
        received,
        (1..=received.len() as u64).collect::<Vec<_>>(),
        "what was sent is in order with no gap"
    );
    // Resuming from the last sequence received delivers the rest.
    let rest = sandbox
        .read_events(
            received.last().copied().unwrap_or(0),
            (head - received.len() as u64) as usize,
        )
        .await;
    assert_eq!(rest.last().map(|e| e.sequence), Some(head));
}

/// Finding 7: a Tencent connection without a secret is open to anyone who knows the public
/// SdkAppid. It is still allowed (Tencent's token is optional), but `ListConnections` (and so
/// `switchboard connections`) says so, and connections with a secret carry no warning.
#[tokio::test]
async fn a_connection_verified_by_public_values_alone_is_flagged() {
    let sandbox = Sandbox::start_with(|config| {
        let mut signed = config
            .connections
            .iter()
            .find(|c| c.vendor == "tencent")
            .expect("a tencent connection")
            .clone();
        signed.id = switchboard_core::ConnectionId::new("tencent-signed").expect("id");
        signed = signed.with_secret("webhook_secret", "tencent-token-1");
        config.connections.push(signed);
    })
    .await;
    let mut client = sandbox.client().await;
    let connections = client
        .list_connections(v1::ListConnectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .connections;
    let warning = |id: &str| {
        connections
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("connection {id}"))
            .verification_warning
            .clone()
    };
    let open = warning("tencent").expect("the tencent connection without a secret is flagged");
    assert!(open.contains("SdkAppid"), "{open}");
    assert!(open.contains("webhook_secret"), "{open}");
    assert_eq!(warning("tencent-signed"), None);
    for vendor in ["livechat", "livetex", "smartsupp"] {
        assert_eq!(warning(vendor), None, "{vendor}");
    }
}

/// Finding 3, HTTP/2: one connection cannot open more than `webhook_http2_max_streams` streams
/// at once (the server says so in its SETTINGS), so three connections cannot hold 600 slots.
#[tokio::test]
async fn webhook_connections_cap_concurrent_http2_streams() {
    let sandbox = Sandbox::start_with(|config| {
        config.limits.webhook_http2_max_streams = 7;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(sandbox.http_addr())
        .await
        .expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client = client.ready().await.expect("ready");
    // One request, so that the server's SETTINGS have been read.
    let request = http::Request::get(format!("http://{}/healthz", sandbox.http_addr()))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    assert_eq!(response.await.expect("answer").status(), 200);
    assert_eq!(client.current_max_send_streams(), 7);
}
