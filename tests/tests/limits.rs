//! Limits set in the config reach the running server: a webhook sender too slow to deliver its
//! body gets 408 and stores nothing, and StreamEvents subscribers beyond the cap are refused.

use std::time::{Duration, Instant};

use switchboard_e2e::Sandbox;
use switchboard_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test]
async fn a_webhook_body_that_never_finishes_gets_408_and_stores_nothing() {
    let sandbox = Sandbox::start_with(|config| {
        config.limits.webhook_body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(sandbox.http_addr())
        .await
        .expect("connect");
    let head = "POST /webhooks/tencent?SdkAppid=1400187352 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"Sess";
    socket.write_all(head.as_bytes()).await.expect("send");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the status line and headers arrived (the server answers, then may close).
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("the server answers a stalled body")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sandbox.head(), 0, "nothing stored");
}

#[tokio::test]
async fn stream_subscribers_beyond_the_configured_cap_are_refused() {
    let sandbox = Sandbox::start_with(|config| config.limits.max_stream_subscribers = 2).await;
    let request = || v1::StreamEventsRequest {
        start: Some(v1::stream_events_request::Start::AtHead(true)),
        ..v1::StreamEventsRequest::default()
    };
    let mut client = sandbox.client().await;
    let first = client.stream_events(request()).await.expect("first");
    let second = client.stream_events(request()).await.expect("second");
    let third = client
        .stream_events(request())
        .await
        .expect_err("over the cap");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(
        third.message().contains("subscribers"),
        "{}",
        third.message()
    );
    drop((first, second));
    // The slots free up once the streams are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.stream_events(request()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "slots were not freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
}
