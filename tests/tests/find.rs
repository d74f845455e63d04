//! Finding the customer end to end: the real server on sled files in a temp dir, webhooks
//! posted over HTTP from the plugins' cited fixtures, a real tonic client. Each finder filter
//! of `ListConversations`; one person through two vendors as one contact; merge and split;
//! erasure, checked through every API, across a restart, and in the bytes of the data dir.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use switchboard_e2e::{SECRET, Sandbox, fixtures, seed};
use switchboard_proto::v1;
use tonic::Code;

const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

/// Jana's e-mail as the LiveChat visitor gives it (Smartsupp's fixture has it lowercase).
const JANA_LIVECHAT_EMAIL: &str = "Jana@Example.CZ";
const JANA_EMAIL: &str = "jana@example.cz";

/// LiveChat's seed `chat_started` (visitor S1551, agent name@gmail.com, "Hello. How may I help
/// you?") with Jana as the visitor and the tag `vip`. LiveChat verifies by a header token, so
/// the body may change.
fn livechat_jana() -> String {
    let body = seed::CHAT_STARTED
        .replace(
            r#""id": "S1551", "name": "NAME", "email": "name@gmail.com""#,
            &format!(r#""id": "S1551", "name": "Jana N.", "email": "{JANA_LIVECHAT_EMAIL}""#),
        )
        .replace(
            r#""answer": "name@gmail.com""#,
            &format!(r#""answer": "{JANA_LIVECHAT_EMAIL}""#),
        )
        .replace(r#""tags": []"#, r#""tags": ["vip"]"#);
    assert!(body.contains(JANA_LIVECHAT_EMAIL) && body.contains("\"vip\""));
    body
}

/// A fixture of `vendor` by name.
fn fixture(vendor: &str, name: &str) -> switchboard_testkit::FixtureRequest {
    fixtures(vendor)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {vendor}/{name}"))
}

/// Posts Jana through LiveChat and Smartsupp (`conversation.contact_replied`: Jana Nováková,
/// jana@example.cz, +420 601 123 456, Czech text), Svetlana through LiveTex (a lead:
/// +7 900 765-43-21, Cyrillic text, agent 502) and a Tencent user's Chinese message.
async fn post_people(sandbox: &Sandbox) {
    let (status, text) = sandbox
        .post("livechat", "", &[TOKEN], livechat_jana())
        .await;
    assert_eq!(status, 200, "{text}");
    for (vendor, name) in [
        ("smartsupp", "callback_contact_replied"),
        ("livetex", "conversation_with_lead"),
        ("tencent", "a02_seed_chatbot_user_send_msg"),
    ] {
        let (status, text) = sandbox.post_fixture(vendor, &fixture(vendor, name)).await;
        assert_eq!(status, 200, "{vendor}/{name}: {text}");
    }
}

/// Waits until the finder's index has read the log through its head; returns that position.
async fn caught_up(sandbox: &Sandbox) -> u64 {
    let head = sandbox.head();
    let mut client = sandbox.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client
            .list_contacts(v1::ListContactsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect("list contacts")
            .into_inner();
        if answer.indexed_through >= head {
            return answer.indexed_through;
        }
        assert!(
            Instant::now() < deadline,
            "the finder read the log through {} of {head} in 30 s",
            answer.indexed_through
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of the one conversation of `connection`.
async fn only_conversation(sandbox: &Sandbox, connection: &str) -> String {
    let found = sandbox
        .list_all(v1::ListConversationsRequest {
            connection_ids: vec![connection.to_owned()],
            ..Default::default()
        })
        .await;
    assert_eq!(found.len(), 1, "{connection}: {found:?}");
    found[0].id.clone()
}

/// Every page of a finder query: the ids in list order, checking that each page says how far
/// the index had read.
async fn find(sandbox: &Sandbox, mut request: v1::ListConversationsRequest) -> Vec<String> {
    let mut client = sandbox.client().await;
    let mut ids = Vec::new();
    loop {
        let page = client
            .list_conversations(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e}"))
            .into_inner();
        assert!(page.indexed_through > 0, "{request:?}: no indexed_through");
        ids.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        request.page_token = page.next_page_token;
    }
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}

fn set(ids: Vec<String>) -> Vec<String> {
    let mut ids = ids;
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_finds_its_conversations_and_combines_with_the_others() {
    let sandbox = Sandbox::start().await;
    post_people(&sandbox).await;
    let livechat = only_conversation(&sandbox, "livechat").await;
    let smartsupp = only_conversation(&sandbox, "smartsupp").await;
    let livetex = only_conversation(&sandbox, "livetex").await;
    let tencent = only_conversation(&sandbox, "tencent").await;
    caught_up(&sandbox).await;
    let query = |f: fn(&mut v1::ListConversationsRequest)| {
        let mut request = v1::ListConversationsRequest::default();
        f(&mut request);
        request
    };

    // E-mail: normalized on both sides (case), across vendors.
    let by_email = find(
        &sandbox,
        query(|r| r.emails = vec![" JANA@example.cz ".into()]),
    )
    .await;
    assert_eq!(set(by_email), sorted(&[&livechat, &smartsupp]));
    // Phone: E.164 whatever the spacing; only numbers in international form.
    let by_phone = find(&sandbox, query(|r| r.phones = vec!["+420601123456".into()])).await;
    assert_eq!(by_phone, [smartsupp.as_str()]);
    let by_phone = find(
        &sandbox,
        query(|r| r.phones = vec!["+7 (900) 765 43 21".into()]),
    )
    .await;
    assert_eq!(by_phone, [livetex.as_str()]);
    // Several values in one list: any of them.
    let either = find(
        &sandbox,
        query(|r| r.phones = vec!["+420 601 123 456".into(), "+79007654321".into()]),
    )
    .await;
    assert_eq!(set(either), sorted(&[&smartsupp, &livetex]));
    // Visitor id, as the vendor gives it.
    assert_eq!(
        find(&sandbox, query(|r| r.visitor_ids = vec!["S1551".into()])).await,
        [livechat.as_str()]
    );
    // Agent ids: LiveChat's login, LiveTex's employee id.
    assert_eq!(
        find(
            &sandbox,
            query(|r| r.agent_ids = vec!["name@gmail.com".into()])
        )
        .await,
        [livechat.as_str()]
    );
    assert_eq!(
        find(&sandbox, query(|r| r.agent_ids = vec!["502".into()])).await,
        [livetex.as_str()]
    );
    // Tag.
    assert_eq!(
        find(&sandbox, query(|r| r.tags = vec!["vip".into()])).await,
        [livechat.as_str()]
    );
    assert!(
        find(&sandbox, query(|r| r.tags = vec!["no-such-tag".into()]))
            .await
            .is_empty()
    );
    // Free text: case- and accent-insensitive, Latin, Cyrillic and Chinese.
    assert_eq!(
        find(&sandbox, query(|r| r.text = "VRATIT zbozi".into())).await,
        [smartsupp.as_str()]
    );
    assert_eq!(
        find(&sandbox, query(|r| r.text = "Возврата".into())).await,
        [livetex.as_str()]
    );
    assert_eq!(
        find(&sandbox, query(|r| r.text = "退费".into())).await,
        [tencent.as_str()]
    );
    assert_eq!(
        find(&sandbox, query(|r| r.text = "how may".into())).await,
        [livechat.as_str()]
    );
    // The visitor's name is text too.
    assert_eq!(
        find(&sandbox, query(|r| r.text = "novakova".into())).await,
        [smartsupp.as_str()]
    );
    // Every word must match.
    assert!(
        find(&sandbox, query(|r| r.text = "zbozi возврата".into()))
            .await
            .is_empty()
    );
    // Lists and text together, and with the store's own filters.
    assert_eq!(
        find(
            &sandbox,
            query(|r| {
                r.emails = vec![JANA_EMAIL.into()];
                r.text = "hello".into();
            })
        )
        .await,
        [livechat.as_str()]
    );
    assert_eq!(
        find(
            &sandbox,
            query(|r| {
                r.emails = vec![JANA_EMAIL.into()];
                r.connection_ids = vec!["smartsupp".into()];
            })
        )
        .await,
        [smartsupp.as_str()]
    );
    assert_eq!(
        find(
            &sandbox,
            query(|r| {
                r.emails = vec![JANA_EMAIL.into()];
                r.vendors = vec!["livechat".into()];
            })
        )
        .await,
        [livechat.as_str()]
    );
    // Pages of one, with the same opaque tokens, give the same answer in the same order.
    let whole = find(&sandbox, query(|r| r.emails = vec![JANA_EMAIL.into()])).await;
    let paged = find(
        &sandbox,
        query(|r| {
            r.emails = vec![JANA_EMAIL.into()];
            r.page_size = 1;
        }),
    )
    .await;
    assert_eq!(paged, whole);
    // Newest first, as the store lists: Smartsupp's 2024 chat before LiveChat's 2019 one.
    assert_eq!(whole, [smartsupp.as_str(), livechat.as_str()]);

    // A query with no finder filter is the store's: indexed_through is 0.
    let mut client = sandbox.client().await;
    let plain = client
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(plain.conversations.len(), 4);
    assert_eq!(plain.indexed_through, 0);

    // Bad values are refused, naming the field.
    let err = client
        .list_conversations(query(|r| r.emails = vec!["  ".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("emails"), "{}", err.message());
}

/// Reads a contact by id.
async fn contact(sandbox: &Sandbox, id: &str) -> v1::ContactView {
    let mut client = sandbox.client().await;
    client
        .get_contact(v1::GetContactRequest {
            id: id.to_owned(),
            limit: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
        .into_inner()
}

/// The contacts with `email`.
async fn contacts_by_email(sandbox: &Sandbox, email: &str) -> Vec<v1::Contact> {
    let mut client = sandbox.client().await;
    client
        .list_contacts(v1::ListContactsRequest {
            email: email.to_owned(),
            ..Default::default()
        })
        .await
        .expect("list contacts")
        .into_inner()
        .contacts
}

fn conversation_ids(view: &v1::ContactView) -> Vec<String> {
    view.conversations.iter().map(|c| c.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_through_two_vendors_is_one_contact_and_merge_and_split_are_kept() {
    let mut sandbox = Sandbox::start().await;
    post_people(&sandbox).await;
    let livechat = only_conversation(&sandbox, "livechat").await;
    let smartsupp = only_conversation(&sandbox, "smartsupp").await;
    let livetex = only_conversation(&sandbox, "livetex").await;
    caught_up(&sandbox).await;

    // Jana's e-mail links her LiveChat and Smartsupp visitors: one contact, both chats,
    // newest first.
    let jana = contacts_by_email(&sandbox, "JANA@example.cz").await;
    assert_eq!(jana.len(), 1, "{jana:?}");
    let jana = jana[0].clone();
    assert!(jana.emails.contains(&JANA_EMAIL.to_owned()), "{jana:?}");
    assert!(
        jana.phones.contains(&"+420601123456".to_owned()),
        "{jana:?}"
    );
    assert!(
        jana.visitor_ids.contains(&"livechat/S1551".to_owned()),
        "{jana:?}"
    );
    assert!(
        jana.visitor_ids.iter().any(|v| v.starts_with("smartsupp/")),
        "{jana:?}"
    );
    assert!(jana.names.iter().any(|n| n == "Jana Nováková"), "{jana:?}");
    let view = contact(&sandbox, &jana.id).await;
    assert_eq!(
        conversation_ids(&view),
        [smartsupp.as_str(), livechat.as_str()]
    );
    assert!(view.indexed_through > 0);
    // The same contact by phone and by visitor id; by name.
    let mut client = sandbox.client().await;
    for request in [
        v1::ListContactsRequest {
            phone: "+420 601 123 456".into(),
            ..Default::default()
        },
        v1::ListContactsRequest {
            visitor_id: "livechat/S1551".into(),
            ..Default::default()
        },
        v1::ListContactsRequest {
            name: "novakova".into(),
            ..Default::default()
        },
    ] {
        let found = client
            .list_contacts(request.clone())
            .await
            .expect("list")
            .into_inner();
        let ids: Vec<&str> = found.contacts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [jana.id.as_str()], "{request:?}");
    }
    // Conversations of the contact.
    let of_jana = find(
        &sandbox,
        v1::ListConversationsRequest {
            contact_ids: vec![jana.id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_jana, [smartsupp.as_str(), livechat.as_str()]);

    // Svetlana (LiveTex) is someone else.
    let svetlana = client
        .list_contacts(v1::ListContactsRequest {
            phone: "+79007654321".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .contacts;
    assert_eq!(svetlana.len(), 1, "{svetlana:?}");
    let svetlana = svetlana[0].clone();
    assert_ne!(svetlana.id, jana.id);

    // Merge: Svetlana's identities and conversation move to Jana's contact.
    let merged = client
        .merge_contacts(v1::MergeContactsRequest {
            into: jana.id.clone(),
            from: svetlana.id.clone(),
        })
        .await
        .expect("merge")
        .into_inner();
    let merged_contact = merged.contact.clone().expect("contact");
    assert_eq!(merged_contact.id, jana.id);
    assert!(
        merged_contact.phones.contains(&"+79007654321".to_owned()),
        "{merged_contact:?}"
    );
    caught_up(&sandbox).await;
    let view = contact(&sandbox, &jana.id).await;
    assert_eq!(
        set(conversation_ids(&view)),
        sorted(&[&smartsupp, &livechat, &livetex])
    );
    let of_jana = find(
        &sandbox,
        v1::ListConversationsRequest {
            contact_ids: vec![jana.id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(set(of_jana), sorted(&[&smartsupp, &livechat, &livetex]));
    // The merged contact's id answers with the contact it is part of now; lists leave it out.
    let gone = contact(&sandbox, &svetlana.id).await;
    assert_eq!(
        gone.contact.as_ref().map(|c| c.id.clone()),
        Some(jana.id.clone()),
        "{gone:?}"
    );
    let listed = client
        .list_contacts(v1::ListContactsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .contacts;
    assert!(listed.iter().all(|c| c.id != svetlana.id), "{listed:?}");
    // Merging a contact into itself, or an unknown one, is refused and changes nothing.
    let err = client
        .merge_contacts(v1::MergeContactsRequest {
            into: jana.id.clone(),
            from: jana.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let head = sandbox.head();
    let err = client
        .merge_contacts(v1::MergeContactsRequest {
            into: jana.id.clone(),
            from: "c999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(sandbox.head(), head, "a refused merge appends nothing");

    // Split: Svetlana's phone leaves again, with her conversation, for a new contact.
    let split = client
        .split_contact(v1::SplitContactRequest {
            contact_id: jana.id.clone(),
            identities: svetlana.identities.clone(),
        })
        .await
        .expect("split")
        .into_inner();
    let kept = split.contact.expect("kept").contact.expect("contact");
    let new = split
        .split_off
        .expect("split off")
        .contact
        .expect("contact");
    assert_eq!(kept.id, jana.id);
    assert_ne!(new.id, jana.id);
    assert!(new.phones.contains(&"+79007654321".to_owned()), "{new:?}");
    assert!(
        !kept.phones.contains(&"+79007654321".to_owned()),
        "{kept:?}"
    );
    caught_up(&sandbox).await;
    let jana_view = contact(&sandbox, &jana.id).await;
    assert_eq!(
        conversation_ids(&jana_view),
        [smartsupp.as_str(), livechat.as_str()]
    );
    let new_view = contact(&sandbox, &new.id).await;
    assert_eq!(conversation_ids(&new_view), [livetex.as_str()]);
    // An identity the contact does not have is refused.
    let err = client
        .split_contact(v1::SplitContactRequest {
            contact_id: jana.id.clone(),
            identities: vec!["email:nobody@example.com".into()],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::FailedPrecondition),
        "{err:?}"
    );

    // Both are events in the log, on the system connection.
    let events = sandbox.read_events(0, sandbox.head() as usize).await;
    let kinds: Vec<(String, v1::EventKind)> = events
        .iter()
        .filter(|e| e.connection_id == "switchboard")
        .map(|e| (e.connection_id.clone(), e.kind()))
        .collect();
    assert_eq!(
        kinds.iter().map(|(_, k)| *k).collect::<Vec<_>>(),
        [v1::EventKind::ContactMerged, v1::EventKind::ContactSplit],
        "{kinds:?}"
    );

    // A restart keeps it all (the index is on disk; the log says the same).
    sandbox.restart().await;
    caught_up(&sandbox).await;
    assert_eq!(
        conversation_ids(&contact(&sandbox, &jana.id).await),
        [smartsupp.as_str(), livechat.as_str()]
    );
    assert_eq!(
        conversation_ids(&contact(&sandbox, &new.id).await),
        [livetex.as_str()]
    );

    // Deleting the index rebuilds it from the log, to the same contacts.
    sandbox.stop().await;
    std::fs::remove_dir_all(switchboard_server::find_index_dir(&sandbox.data_dir()))
        .expect("remove the index");
    sandbox.restart().await;
    caught_up(&sandbox).await;
    assert_eq!(
        conversation_ids(&contact(&sandbox, &jana.id).await),
        [smartsupp.as_str(), livechat.as_str()]
    );
    assert_eq!(
        conversation_ids(&contact(&sandbox, &new.id).await),
        [livetex.as_str()]
    );
}

/// Personal values of Jana's that the fixtures carry, as given and as the finder folds them.
const JANA_VALUES: [&str; 9] = [
    "Jana@Example.CZ",
    "jana@example.cz",
    "Nováková",
    "novakova",
    "Jana N.",
    "+420 601 123 456",
    "+420601123456",
    "mohu vrátit zboží",
    "Vrácení zboží",
];

/// The text around the first `needle` in `text`, for a failure message.
fn around(text: &str, needle: &str) -> String {
    let Some(at) = text.find(needle) else {
        return String::new();
    };
    let from = at.saturating_sub(300);
    let to = at + needle.len() + 300;
    text.char_indices()
        .filter(|(i, _)| (from..to).contains(i))
        .map(|(_, c)| c)
        .collect()
}

/// Whether `needle` occurs in `bytes`, or in any zstd frame in them (the store compresses its
/// log entries and larger headers, the index its document store): a value kept compressed is
/// still kept.
fn holds(bytes: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    if contains(bytes) {
        return true;
    }
    const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(4).position(|w| w == MAGIC) {
        let start = at + offset;
        if let Ok(decoder) = zstd::stream::read::Decoder::new(&bytes[start..]) {
            let mut out = Vec::new();
            // A frame cut short or not a frame at all still yields what it decoded.
            let _ =
                std::io::Read::read_to_end(&mut std::io::Read::take(decoder, 64 << 20), &mut out);
            if contains(&out) {
                return true;
            }
        }
        at = start + 1;
    }
    false
}

/// Every file under `dir` that holds `needle` (see [`holds`]).
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if holds(&std::fs::read(&path).expect("read file"), needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Everything the API shows of the store: every conversation in full, every event from the
/// beginning, every contact; as one text to search.
async fn everything_served(sandbox: &Sandbox) -> String {
    let mut client = sandbox.client().await;
    let mut text = String::new();
    for c in sandbox
        .list_all(v1::ListConversationsRequest {
            view: v1::ConversationView::Full as i32,
            ..Default::default()
        })
        .await
    {
        let full = client
            .get_conversation(v1::GetConversationRequest {
                id: c.id.clone(),
                view: v1::ConversationView::Full as i32,
            })
            .await
            .expect("get")
            .into_inner();
        text.push_str(&format!("{c:?}\n{full:?}\n"));
    }
    for event in sandbox.read_events(0, sandbox.head() as usize).await {
        text.push_str(&format!("{event:?}\n"));
    }
    let tickets = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::List(
                v1::ListTickets::default(),
            )),
        })
        .await
        .expect("tickets")
        .into_inner();
    text.push_str(&format!("{tickets:?}\n"));
    let contacts = client
        .list_contacts(v1::ListContactsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("contacts")
        .into_inner()
        .contacts;
    for c in contacts {
        let view = contact(sandbox, &c.id).await;
        text.push_str(&format!("{c:?}\n{view:?}\n"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_in_any_api_nor_in_the_data_dir() {
    let mut sandbox = Sandbox::start().await;
    post_people(&sandbox).await;
    let livechat = only_conversation(&sandbox, "livechat").await;
    let smartsupp = only_conversation(&sandbox, "smartsupp").await;
    let livetex = only_conversation(&sandbox, "livetex").await;
    caught_up(&sandbox).await;
    let jana = contacts_by_email(&sandbox, JANA_EMAIL).await;
    assert_eq!(jana.len(), 1, "{jana:?}");
    let jana = jana[0].id.clone();
    // A hub-native ticket Jana asked for by e-mail joins her contact.
    let mut client = sandbox.client().await;
    let ticket = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::Create(
                v1::CreateTicket {
                    connection_id: "smartsupp".into(),
                    message: "Reklamace: mohu vrátit zboží?".into(),
                    requester_email: JANA_LIVECHAT_EMAIL.into(),
                    requester_name: Some("Jana Nováková".into()),
                    subject: "Vrácení zboží".into(),
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("ticket")
        .into_inner();
    let Some(v1::manage_tickets_response::Result::Ticket(ticket)) = ticket.result else {
        panic!("no ticket: {ticket:?}");
    };
    caught_up(&sandbox).await;
    let view = contact(&sandbox, &jana).await;
    let tickets: Vec<&str> = view.tickets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(tickets, [ticket.id.as_str()]);

    // Before: the API serves Jana's values (the check below can see them).
    let before = everything_served(&sandbox).await;
    for value in ["Jana@Example.CZ", "Nováková", "mohu vrátit zboží"] {
        assert!(
            before.contains(value),
            "{value} is served before the erasure"
        );
    }

    let head = sandbox.head();
    let report = client
        .erase_contact(v1::EraseContactRequest {
            contact_id: jana.clone(),
        })
        .await
        .expect("erase")
        .into_inner();
    assert_eq!(report.contact_id, jana);
    assert_eq!(report.conversations, 2, "{report:?}");
    assert_eq!(report.tickets, 1, "{report:?}");
    assert!(report.events >= 3, "{report:?}");
    assert_eq!(report.sequence, head + 1, "{report:?}");
    caught_up(&sandbox).await;

    // No API returns the erased values; the rest is still there.
    let after = everything_served(&sandbox).await;
    for value in JANA_VALUES {
        assert!(
            !after.contains(value),
            "{value:?} is still served: {}",
            around(&after, value)
        );
    }
    assert!(after.contains("Светлана"), "Svetlana's data is kept");
    for request in [
        v1::ListConversationsRequest {
            emails: vec![JANA_EMAIL.into()],
            ..Default::default()
        },
        v1::ListConversationsRequest {
            text: "zbozi".into(),
            ..Default::default()
        },
        v1::ListConversationsRequest {
            phones: vec!["+420601123456".into()],
            ..Default::default()
        },
    ] {
        assert!(
            find(&sandbox, request.clone()).await.is_empty(),
            "{request:?}"
        );
    }
    assert_eq!(
        find(
            &sandbox,
            v1::ListConversationsRequest {
                text: "возврата".into(),
                ..Default::default()
            }
        )
        .await,
        [livetex.as_str()]
    );
    assert!(contacts_by_email(&sandbox, JANA_EMAIL).await.is_empty());
    let erased = contact(&sandbox, &jana).await;
    let erased_contact = erased.contact.clone().expect("contact");
    assert!(erased_contact.erased_at.is_some(), "{erased:?}");
    assert!(erased_contact.names.is_empty() && erased_contact.emails.is_empty());
    // The conversations stay, with their sequences, without the person.
    for id in [&livechat, &smartsupp] {
        let c = client
            .get_conversation(v1::GetConversationRequest {
                id: id.clone(),
                view: v1::ConversationView::Full as i32,
            })
            .await
            .expect("still there")
            .into_inner();
        let text = format!("{c:?}");
        for value in JANA_VALUES {
            assert!(!text.contains(value), "{value:?} in {text}");
        }
    }
    // The log stays gap-free and says that an erasure happened (and nothing personal).
    let events = sandbox.read_events(0, sandbox.head() as usize).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=sandbox.head()).collect::<Vec<_>>());
    let erasure = events
        .iter()
        .find(|e| e.kind() == v1::EventKind::ContactErased)
        .expect("a contact_erased event");
    assert_eq!(erasure.sequence, report.sequence);
    assert_eq!(erasure.connection_id, "switchboard");
    assert!(erasure.payload_json.contains(&jana), "{erasure:?}");

    // A restart keeps it all.
    sandbox.restart().await;
    caught_up(&sandbox).await;
    let after_restart = everything_served(&sandbox).await;
    for value in JANA_VALUES {
        assert!(
            !after_restart.contains(value),
            "{value:?} is served after a restart"
        );
    }

    // And the data dir, stopped and compacted as the README says (`switchboard compact`:
    // sled keeps old versions of rewritten values in its files until then), holds none of
    // them (compressed or not), while it holds Svetlana's, which were not erased.
    sandbox.stop().await;
    let data = sandbox.data_dir();
    switchboard_server::compact(&data).expect("compact");
    assert!(
        !files_holding(&data, "Светлана").is_empty(),
        "the search sees data that was kept"
    );
    let mut left: BTreeSet<String> = BTreeSet::new();
    for value in JANA_VALUES {
        for file in files_holding(&data, value) {
            left.insert(format!("{value:?} in {file}"));
        }
    }
    assert!(
        left.is_empty(),
        "erased values left in the data dir: {left:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_contact_requests_are_refused_with_a_reason_and_change_nothing() {
    let sandbox = Sandbox::start().await;
    post_people(&sandbox).await;
    caught_up(&sandbox).await;
    let head = sandbox.head();
    let jana = contacts_by_email(&sandbox, JANA_EMAIL).await[0].id.clone();
    let mut client = sandbox.client().await;
    // Contacts by a filter that is not what it says.
    let err = client
        .list_contacts(v1::ListContactsRequest {
            visitor_id: "no-slash".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("CONNECTION/VISITOR_ID"),
        "{}",
        err.message()
    );
    let err = client
        .list_contacts(v1::ListContactsRequest {
            email: "not an e-mail".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = client
        .list_contacts(v1::ListContactsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Filters together all hold.
    let both = client
        .list_contacts(v1::ListContactsRequest {
            email: JANA_EMAIL.into(),
            name: "novakova".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(both.contacts.len(), 1);
    let neither = client
        .list_contacts(v1::ListContactsRequest {
            email: JANA_EMAIL.into(),
            name: "svetlana".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(neither.contacts.is_empty(), "{neither:?}");
    // Missing or unknown ids.
    let err = client
        .get_contact(v1::GetContactRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get_contact(v1::GetContactRequest {
            id: "c999999".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for (from, says) in [(String::new(), "from"), (jana.clone(), "itself")] {
        let err = client
            .merge_contacts(v1::MergeContactsRequest {
                into: jana.clone(),
                from,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(says), "{}", err.message());
    }
    let err = client
        .split_contact(v1::SplitContactRequest {
            contact_id: jana.clone(),
            identities: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("identities"), "{}", err.message());
    let err = client
        .erase_contact(v1::EraseContactRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("contact_id"), "{}", err.message());
    let err = client
        .erase_contact(v1::EraseContactRequest {
            contact_id: "c999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Nothing was appended, and Jana is whole.
    assert_eq!(sandbox.head(), head);
    assert_eq!(contact(&sandbox, &jana).await.conversations.len(), 2);
}

// ---- PostgreSQL: two replicas on one database ------------------------------------------------

/// The PostgreSQL tests' database; unset: they say they skipped and pass.
const URL_VARIABLE: &str = "SWITCHBOARD_TEST_DATABASE_URL";

fn database_url(test: &str) -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: {URL_VARIABLE} is not set");
            None
        }
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but the database cannot be reached: {e}")
        });
    tokio::spawn(connection);
    client
}

/// A replica on the database at `url`, with the sandbox's connections.
async fn replica(url: &str) -> Sandbox {
    let url = switchboard_server::config::DatabaseUrl::parse(url, URL_VARIABLE).expect("a URL");
    Sandbox::start_with(move |config| config.database_url = Some(url.clone())).await
}

/// The schema's dump as text (pg_dump's plain format).
fn dump(url: &str, schema: &str) -> String {
    let output = Command::new("pg_dump")
        .arg("--dbname")
        .arg(url)
        .arg("--schema")
        .arg(schema)
        .output()
        .expect("running pg_dump (installed with the PostgreSQL client)");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a text dump")
}

/// Whether the dump holds `value` as text or as the hex of a bytea.
fn dump_holds(dump: &str, value: &str) -> bool {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    dump.contains(value) || dump.contains(&hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_every_replica_finds_merges_splits_and_erases_the_same_contacts() {
    let Some(base) = database_url("on_postgresql_every_replica_finds") else {
        return;
    };
    let schema = format!("sbfind_{}", uuid::Uuid::new_v4().simple());
    admin(&base)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("creating the test's schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
    let mut a = replica(&url).await;
    let mut b = replica(&url).await;

    // Webhooks to A; every query on B (whichever replica's finder holds the find lease).
    post_people(&a).await;
    let livechat = only_conversation(&b, "livechat").await;
    let smartsupp = only_conversation(&b, "smartsupp").await;
    let livetex = only_conversation(&b, "livetex").await;
    let tencent = only_conversation(&b, "tencent").await;
    caught_up(&a).await;
    caught_up(&b).await;
    for (request, expected) in [
        (
            v1::ListConversationsRequest {
                emails: vec!["JANA@example.cz".into()],
                ..Default::default()
            },
            vec![smartsupp.clone(), livechat.clone()],
        ),
        (
            v1::ListConversationsRequest {
                phones: vec!["+7 900 765-43-21".into()],
                ..Default::default()
            },
            vec![livetex.clone()],
        ),
        (
            v1::ListConversationsRequest {
                visitor_ids: vec!["S1551".into()],
                agent_ids: vec!["name@gmail.com".into()],
                tags: vec!["vip".into()],
                ..Default::default()
            },
            vec![livechat.clone()],
        ),
        (
            v1::ListConversationsRequest {
                text: "VRATIT zbozi".into(),
                ..Default::default()
            },
            vec![smartsupp.clone()],
        ),
        (
            v1::ListConversationsRequest {
                text: "Возврата".into(),
                ..Default::default()
            },
            vec![livetex.clone()],
        ),
        (
            v1::ListConversationsRequest {
                text: "退费".into(),
                ..Default::default()
            },
            vec![tencent.clone()],
        ),
        (
            v1::ListConversationsRequest {
                emails: vec![JANA_EMAIL.into()],
                page_size: 1,
                ..Default::default()
            },
            vec![smartsupp.clone(), livechat.clone()],
        ),
    ] {
        assert_eq!(find(&b, request.clone()).await, expected, "{request:?}");
        assert_eq!(find(&a, request.clone()).await, expected, "{request:?}");
    }

    // One contact for Jana on both replicas; Svetlana another.
    let jana = contacts_by_email(&b, JANA_EMAIL).await;
    assert_eq!(jana.len(), 1, "{jana:?}");
    let jana = jana[0].clone();
    assert_eq!(
        contacts_by_email(&a, JANA_EMAIL).await,
        std::slice::from_ref(&jana)
    );
    assert_eq!(
        conversation_ids(&contact(&b, &jana.id).await),
        [smartsupp.as_str(), livechat.as_str()]
    );
    let mut client_a = a.client().await;
    let mut client_b = b.client().await;
    let svetlana = client_a
        .list_contacts(v1::ListContactsRequest {
            phone: "+79007654321".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .contacts;
    assert_eq!(svetlana.len(), 1, "{svetlana:?}");
    let svetlana = svetlana[0].clone();

    // Merge on B, seen on A; split on A, seen on B.
    client_b
        .merge_contacts(v1::MergeContactsRequest {
            into: jana.id.clone(),
            from: svetlana.id.clone(),
        })
        .await
        .expect("merge");
    caught_up(&a).await;
    assert_eq!(
        set(conversation_ids(&contact(&a, &jana.id).await)),
        sorted(&[&smartsupp, &livechat, &livetex])
    );
    let split = client_a
        .split_contact(v1::SplitContactRequest {
            contact_id: jana.id.clone(),
            identities: svetlana.identities.clone(),
        })
        .await
        .expect("split")
        .into_inner();
    let new = split
        .split_off
        .expect("split off")
        .contact
        .expect("contact");
    caught_up(&b).await;
    assert_eq!(
        conversation_ids(&contact(&b, &jana.id).await),
        [smartsupp.as_str(), livechat.as_str()]
    );
    assert_eq!(
        conversation_ids(&contact(&b, &new.id).await),
        [livetex.as_str()]
    );

    // Both replicas have served Jana's events (and keep them converted for subscribers).
    for replica in [&a, &b] {
        let before = everything_served(replica).await;
        assert!(before.contains("Nováková"), "served before the erasure");
    }
    let before = dump(&url, &schema);
    for value in ["Jana@Example.CZ", "Nováková", "mohu vrátit zboží"] {
        assert!(
            dump_holds(&before, value),
            "{value} is in the database before"
        );
    }

    // Erase on B: no replica serves Jana's values afterwards, the database holds none of them.
    let report = client_b
        .erase_contact(v1::EraseContactRequest {
            contact_id: jana.id.clone(),
        })
        .await
        .expect("erase")
        .into_inner();
    assert_eq!(report.conversations, 2, "{report:?}");
    caught_up(&a).await;
    caught_up(&b).await;
    for (name, replica) in [("A", &a), ("B", &b)] {
        let after = everything_served(replica).await;
        for value in JANA_VALUES {
            assert!(
                !after.contains(value),
                "{value:?} is still served by {name}: {}",
                around(&after, value)
            );
        }
        assert!(after.contains("Светлана"), "{name} keeps Svetlana's data");
        assert!(
            find(
                replica,
                v1::ListConversationsRequest {
                    text: "zbozi".into(),
                    ..Default::default()
                }
            )
            .await
            .is_empty()
        );
    }
    let after = dump(&url, &schema);
    assert!(
        dump_holds(&after, "Светлана"),
        "the dump holds what was kept"
    );
    let left: Vec<&str> = JANA_VALUES
        .into_iter()
        .filter(|value| dump_holds(&after, value))
        .collect();
    assert!(
        left.is_empty(),
        "erased values left in the database: {left:?}"
    );

    a.stop().await;
    b.stop().await;
    admin(&base)
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("dropping the test's schema");
}
