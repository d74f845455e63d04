//! StreamEvents: replay then live tail, no gap and no repeat, across restarts, slow readers.

use std::time::Duration;

use switchboard_e2e::{SECRET, Sandbox, seed};
use switchboard_proto::v1;
use switchboard_proto::v1::stream_events_request::Start;

const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

async fn post_chats(sandbox: &Sandbox, range: std::ops::Range<usize>) {
    for i in range {
        let body = seed::chat_started(&format!("C{i}"), &format!("e{i}"));
        let (status, text) = sandbox.post("livechat", "", &[TOKEN], body).await;
        assert_eq!(status, 200, "{text}");
    }
}

fn assert_consecutive(events: &[v1::Event], first: u64) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (first..first + events.len() as u64).collect();
    assert_eq!(sequences, expected, "no gap, no repeat");
}

#[tokio::test]
async fn replay_then_live_tail_has_no_gap_and_no_repeat() {
    let sandbox = Sandbox::start().await;
    post_chats(&sandbox, 0..5).await;
    let replayed = sandbox.head();
    let mut client = sandbox.client().await;
    let mut stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(Start::FromBeginning(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Live events arrive while the replay is being read.
    let writer = async { post_chats(&sandbox, 5..15).await };
    let reader = async {
        let mut events = Vec::new();
        while events.len() < 15 {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("no stall")
                .unwrap()
                .unwrap();
            events.push(event);
        }
        events
    };
    let ((), events) = tokio::join!(writer, reader);
    assert!(replayed >= 5);
    assert_consecutive(&events, 1);
}

#[tokio::test]
async fn a_subscriber_resumes_after_a_restart_from_its_cursor() {
    let mut sandbox = Sandbox::start().await;
    post_chats(&sandbox, 0..6).await;
    let first = sandbox.read_events(0, 3).await;
    let cursor = first.last().unwrap().sequence;
    sandbox.restart().await;
    post_chats(&sandbox, 6..9).await;
    let head = sandbox.head();
    assert!(head >= 9, "nine chats, at least one event each");
    let rest = sandbox.read_events(cursor, (head - cursor) as usize).await;
    assert_consecutive(&rest, cursor + 1);
    assert_eq!(rest.last().map(|e| e.sequence), Some(head));
}

#[tokio::test]
async fn filters_and_at_head() {
    let sandbox = Sandbox::start().await;
    post_chats(&sandbox, 0..3).await;
    let mut client = sandbox.client().await;
    let mut stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(Start::AtHead(true)),
            kinds: vec![v1::EventKind::ChatEnded as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    post_chats(&sandbox, 3..5).await;
    let (status, _) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_ENDED)
        .await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind(), v1::EventKind::ChatEnded);
    assert!(event.sequence > 5, "started at the head, not before");
}

#[tokio::test]
async fn a_slow_subscriber_gets_every_event() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;
    let mut stream = client
        .stream_events(v1::StreamEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Far more than the per-subscriber buffer arrives before the subscriber reads anything.
    let total = 600;
    let bodies = (0..total).map(|i| seed::chat_started(&format!("S{i}"), &format!("s{i}")));
    let posts = futures_like_join(&sandbox, bodies.collect()).await;
    assert!(posts.iter().all(|s| *s == 200));
    let head = sandbox.head();
    assert!(head >= total as u64);
    let mut events = Vec::new();
    while (events.len() as u64) < head {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("no stall")
            .unwrap()
            .unwrap();
        events.push(event);
        if events.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_consecutive(&events, 1);
}

async fn futures_like_join(sandbox: &Sandbox, bodies: Vec<String>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for chunk in bodies.chunks(32) {
        let mut tasks = tokio::task::JoinSet::new();
        for body in chunk {
            let client = sandbox.http.clone();
            let url = format!("{}/webhooks/livechat", sandbox.http_base());
            let body = body.clone();
            tasks.spawn(async move {
                client
                    .post(url)
                    .header(TOKEN.0, TOKEN.1)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            });
        }
        while let Some(status) = tasks.join_next().await {
            statuses.push(status.unwrap());
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stopped_reading_cannot_hold_up_shutdown() {
    let mut sandbox = Sandbox::start_with(|config| {
        config.limits.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let sandbox_ref = &sandbox;
    let posts = (0..1200).map(|i| async move {
        let body = seed::chat_started(&format!("stall-{i}"), &format!("e-{i}"));
        sandbox_ref.post("livechat", "", &[TOKEN], body).await
    });
    use futures::StreamExt;
    let answers: Vec<(u16, String)> = futures::stream::iter(posts)
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
    }
    let mut client = sandbox.client().await;
    // Subscribe from the beginning and never read: the server's buffers fill up.
    let stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(Start::FromBeginning(true)),
            ..v1::StreamEventsRequest::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(15), sandbox.stop())
        .await
        .expect("shutdown finishes despite the stalled subscriber");
    drop(stream);
}
