//! Every vendor end to end: each plugin's real-shaped fixtures posted to the running server,
//! every resulting conversation read back through ListConversations and StreamEvents.

use std::collections::{BTreeMap, BTreeSet};

use switchboard_e2e::{ALL_SECRETS, Sandbox, fixtures, vendors};
use switchboard_proto::v1;

#[tokio::test]
async fn one_body_per_vendor_reads_back_through_list_and_stream() {
    let sandbox = Sandbox::start().await;
    // Every plugin with webhooks, from the registry (each has a fixtures/connection.toml).
    let vendors = vendors();
    let registered = switchboard_plugins::registry().expect("registry");
    for plugin in registered.plugins().iter().filter(|p| p.webhook.is_some()) {
        assert!(
            vendors.iter().any(|v| v == plugin.vendor),
            "{} has webhooks but no fixtures/connection.toml",
            plugin.vendor
        );
    }
    for vendor in &vendors {
        let vendor = vendor.as_str();
        let all = fixtures(vendor);
        assert!(!all.is_empty(), "{vendor} has fixtures");
        for fixture in &all {
            let (status, body) = sandbox.post_fixture(vendor, fixture).await;
            assert_eq!(status, 200, "{vendor}/{}: {body}", fixture.name);
            if vendor == "tencent" {
                assert_eq!(
                    body,
                    r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
                );
            }
        }
    }

    let head = sandbox.head();
    let events = sandbox.read_events(0, head as usize).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    // Credentials sent in bodies (LiveChat v3 `secret_key`, LiveTex `webHookKey`) are not kept.
    assert!(events.iter().any(|e| e.raw.is_some()));
    for event in &events {
        let stored = format!(
            "{} {}",
            event.raw.as_deref().unwrap_or(""),
            event.payload_json
        );
        for secret in ALL_SECRETS {
            assert!(
                !stored.contains(secret),
                "event {} ({}) stores a credential",
                event.sequence,
                event.vendor
            );
        }
    }
    let mut from_stream: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in &events {
        if let Some(id) = &event.conversation_id {
            from_stream
                .entry(event.vendor.clone())
                .or_default()
                .insert(id.clone());
        }
    }
    for vendor in &vendors {
        assert!(
            from_stream.get(vendor).is_some_and(|ids| !ids.is_empty()),
            "{vendor} produced conversation events"
        );
    }

    // Every conversation seen on the stream is listed, and nothing else.
    let listed = sandbox
        .list_all(v1::ListConversationsRequest {
            page_size: 7,
            ..Default::default()
        })
        .await;
    let listed_ids: BTreeSet<String> = listed.iter().map(|c| c.id.clone()).collect();
    let streamed_ids: BTreeSet<String> = from_stream.values().flatten().cloned().collect();
    assert_eq!(listed_ids, streamed_ids);
    assert_eq!(listed.len(), listed_ids.len(), "each listed once");

    // One query across two vendors.
    let mixed = sandbox
        .list_all(v1::ListConversationsRequest {
            vendors: vec!["smartsupp".into(), "tencent".into()],
            ..Default::default()
        })
        .await;
    let mixed_ids: BTreeSet<String> = mixed.iter().map(|c| c.id.clone()).collect();
    let expected: BTreeSet<String> = ["smartsupp", "tencent"]
        .iter()
        .flat_map(|v| from_stream[*v].iter().cloned())
        .collect();
    assert_eq!(mixed_ids, expected);
    assert!(
        mixed
            .iter()
            .all(|c| c.vendor == "smartsupp" || c.vendor == "tencent")
    );

    // Each one reads back in full.
    let mut client = sandbox.client().await;
    for id in &listed_ids {
        let conversation = client
            .get_conversation(v1::GetConversationRequest {
                id: id.clone(),
                view: v1::ConversationView::Full as i32,
            })
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .into_inner();
        assert_eq!(&conversation.id, id);
        assert_eq!(
            conversation.message_count as usize,
            conversation.messages.len()
        );
    }

    // The seed's Smartsupp chat is closed with its messages and rating.
    let smartsupp_closed = mixed
        .iter()
        .filter(|c| c.vendor == "smartsupp" && c.status() == v1::ConversationStatus::Closed)
        .count();
    assert!(smartsupp_closed >= 1);
    let missed = sandbox
        .list_all(v1::ListConversationsRequest {
            statuses: vec![
                v1::ConversationStatus::Missed as i32,
                v1::ConversationStatus::Offline as i32,
            ],
            ..Default::default()
        })
        .await;
    let vendors_with_missed: BTreeSet<&str> = missed.iter().map(|c| c.vendor.as_str()).collect();
    assert!(
        vendors_with_missed.contains("smartsupp"),
        "{vendors_with_missed:?}"
    );
    assert!(
        vendors_with_missed.contains("livetex"),
        "leads are offline conversations"
    );

    // Posting everything again appends nothing.
    for vendor in &vendors {
        for fixture in &fixtures(vendor) {
            let (status, body) = sandbox.post_fixture(vendor, fixture).await;
            assert_eq!(status, 200, "{vendor}/{}: {body}", fixture.name);
        }
    }
    assert_eq!(
        sandbox.head(),
        head,
        "redelivery of every fixture appends nothing"
    );
}

#[tokio::test]
async fn tencent_failures_use_tencent_reply_shape() {
    let sandbox = Sandbox::start().await;
    let fixture = fixtures("tencent").into_iter().next().unwrap();
    let mut wrong = fixture.clone();
    for (k, v) in &mut wrong.query {
        if k == "SdkAppid" {
            *v = "999".into();
        }
    }
    let (status, body) = sandbox.post_fixture("tencent", &wrong).await;
    assert_eq!(status, 401);
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["ActionStatus"], "FAIL");
    assert_ne!(reply["ErrorCode"], 0);
    assert!(!reply["ErrorInfo"].as_str().unwrap().is_empty());
    assert_eq!(sandbox.head(), 0);
}
