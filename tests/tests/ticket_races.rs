//! Concurrent updates of one hub-native ticket: every change lands, none overwrites another.

use switchboard_e2e::{Sandbox, ticket_of};
use switchboard_proto::v1;
use switchboard_proto::v1::manage_tickets_request::Operation;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_ticket_all_land() {
    let sandbox = Sandbox::start().await;
    let mut client = sandbox.client().await;
    let ticket = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Create(v1::CreateTicket {
                    connection_id: "tencent".to_owned(),
                    message: "first".to_owned(),
                    requester_email: "a@example.com".to_owned(),
                    subject: "race".to_owned(),
                    ..v1::CreateTicket::default()
                })),
            })
            .await
            .expect("create")
            .into_inner(),
    );
    const UPDATES: usize = 24;
    let mut tasks = Vec::new();
    for i in 0..UPDATES {
        let mut client = sandbox.client().await;
        let id = ticket.id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .manage_tickets(v1::ManageTicketsRequest {
                    operation: Some(Operation::Update(v1::UpdateTicket {
                        id,
                        message: Some(format!("reply {i}")),
                        ..v1::UpdateTicket::default()
                    })),
                })
                .await
                .expect("update");
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    let after = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(Operation::Get(v1::GetTicket {
                    id: ticket.id.clone(),
                })),
            })
            .await
            .expect("get")
            .into_inner(),
    );
    let mut replies: Vec<&str> = after
        .events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.starts_with("reply "))
        .collect();
    replies.sort_unstable();
    replies.dedup();
    assert_eq!(replies.len(), UPDATES, "every update's message is kept");
}
