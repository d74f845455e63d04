//! The gRPC API through a real tonic client: validation, tickets, connections, health.

use switchboard_e2e::{ALL_SECRETS, SECRET, Sandbox, seed, ticket_of};
use switchboard_proto::v1;
use switchboard_proto::v1::manage_tickets_request::Operation;
use switchboard_proto::v1::manage_tickets_response::Result as Reply;
use tonic::Code;

const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

#[tokio::test]
async fn bad_requests_get_invalid_argument_or_not_found_with_a_reason() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;

    let err = client
        .list_conversations(v1::ListConversationsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_size"), "{}", err.message());

    // Enum numbers the server does not know are refused, not silently dropped (which would
    // turn the filter into "everything").
    let err = client
        .list_conversations(v1::ListConversationsRequest {
            statuses: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("statuses: 42"), "{}", err.message());
    let err = client
        .stream_events(v1::StreamEventsRequest {
            kinds: vec![99],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kinds: 99"), "{}", err.message());
    let err = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(Operation::List(v1::ListTickets {
                statuses: vec![7],
                ..Default::default()
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client
        .list_conversations(v1::ListConversationsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    let err = client
        .list_conversations(v1::ListConversationsRequest {
            vendors: vec!["zendesk".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("livechat"),
        "lists the known vendors: {}",
        err.message()
    );

    let err = client
        .list_conversations(v1::ListConversationsRequest {
            started: Some(v1::TimeRange {
                start: Some(prost_types::Timestamp {
                    seconds: 200,
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: 100,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client
        .get_conversation(v1::GetConversationRequest {
            id: "no-slash".into(),
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client
        .get_conversation(v1::GetConversationRequest {
            id: "livechat/missing".into(),
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AfterSequence(99)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());

    let err = client
        .manage_tickets(v1::ManageTicketsRequest { operation: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn list_filters_and_pages_across_connections() {
    let sandbox = Sandbox::start().await;
    for i in 0..7 {
        let body = seed::chat_started(&format!("CHAT{i}"), &format!("evt{i}"));
        let (status, text) = sandbox.post("livechat", "", &[TOKEN], body).await;
        assert_eq!(status, 200, "{text}");
    }
    let (status, _) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_ENDED)
        .await;
    assert_eq!(status, 200);

    let all = sandbox
        .list_all(v1::ListConversationsRequest {
            page_size: 3,
            ..Default::default()
        })
        .await;
    let mut ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "paging returns each conversation once");

    let closed = sandbox
        .list_all(v1::ListConversationsRequest {
            statuses: vec![v1::ConversationStatus::Closed as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].id, "livechat/PO13");

    let by_vendor = sandbox
        .list_all(v1::ListConversationsRequest {
            vendors: vec!["livechat".into()],
            connection_ids: vec!["livechat".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(by_vendor.len(), 8);
    let none = sandbox
        .list_all(v1::ListConversationsRequest {
            vendors: vec!["tencent".into()],
            ..Default::default()
        })
        .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn tickets_are_created_read_updated_listed_and_streamed() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;
    let create = v1::CreateTicket {
        connection_id: "smartsupp".into(),
        message: "My order did not arrive".into(),
        requester_email: "ann@example.com".into(),
        requester_name: Some("Ann".into()),
        subject: "Order 42".into(),
        idempotency_key: Some("order-42".into()),
        attributes: [("order_ref".to_owned(), "SO-42".to_owned())].into(),
        ..Default::default()
    };
    let created = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Create(create.clone())),
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(created.origin(), v1::TicketOrigin::HubNative);
    assert_eq!(created.status(), v1::TicketStatus::Open);
    assert!(created.id.starts_with("smartsupp/"));
    assert_eq!(created.attributes["order_ref"], "SO-42");

    let retried = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Create(create)),
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(
        retried.id, created.id,
        "the same idempotency key gives the same ticket"
    );

    let updated = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Update(v1::UpdateTicket {
                    id: created.id.clone(),
                    status: v1::TicketStatus::Solved as i32,
                    message: Some("Resent the parcel".into()),
                    ..Default::default()
                })),
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(updated.status(), v1::TicketStatus::Solved);
    assert_eq!(updated.events.len(), 2);

    let fetched = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Get(v1::GetTicket {
                    id: created.id.clone(),
                })),
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(fetched, updated);

    let list = match client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(Operation::List(v1::ListTickets {
                statuses: vec![v1::TicketStatus::Solved as i32],
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner()
        .result
    {
        Some(Reply::List(list)) => list,
        other => panic!("expected a list, got {other:?}"),
    };
    assert_eq!(list.tickets.len(), 1);
    assert_eq!(list.tickets[0].id, created.id);

    let events = sandbox.read_events(0, 2).await;
    assert_eq!(events[0].kind(), v1::EventKind::TicketCreated);
    assert_eq!(events[1].kind(), v1::EventKind::TicketUpdated);
    assert_eq!(events[1].ticket_id.as_deref(), Some(created.id.as_str()));
    assert_eq!(sandbox.head(), 2, "the retried create appended nothing");

    let err = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(Operation::Create(v1::CreateTicket {
                connection_id: "nope".into(),
                message: "x".into(),
                requester_email: "a@b.c".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(Operation::Create(v1::CreateTicket {
                connection_id: "smartsupp".into(),
                message: "x".into(),
                requester_email: "not-an-email".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("requester_email"));
    let err = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(Operation::Get(v1::GetTicket {
                id: "smartsupp/hub-missing".into(),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn connections_are_listed_without_secrets() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;
    let response = client
        .list_connections(v1::ListConnectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = response.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, switchboard_e2e::vendors());
    for connection in &response.connections {
        assert_eq!(
            connection.webhook_path,
            format!("/webhooks/{}", connection.id)
        );
        assert!(connection.verification_enabled);
        assert!(!connection.verification.is_empty());
    }
    let text = format!("{response:?}");
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "no secret in ListConnections");
    }
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let sandbox = Sandbox::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(sandbox.channel().await);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "switchboard.v1.Switchboard".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
