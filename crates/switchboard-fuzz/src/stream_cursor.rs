//! The stream-cursor target: the gRPC `StreamEvents` request (where to start: `after_sequence`,
//! `at_time`, ...; and its filters) on the real service over a small store, plus the parsers of
//! client-supplied ids and time strings.

use std::sync::OnceLock;
use std::time::Duration;

use switchboard_core::{
    ConnectionId, ConversationId, ConversationStatus, Event, EventKind, TicketStatus, Timestamp,
};
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_proto::v1::stream_events_request::Start;
use switchboard_proto::v1::switchboard_server::Switchboard;
use switchboard_server::Connections;
use switchboard_server::app::{App, AppOptions};
use switchboard_server::grpc::SwitchboardService;
use tokio_stream::StreamExt as _;

use crate::input::{Reader, text};
use crate::page_token::{Fixture, fixture};

/// Vendors the service knows.
const VENDORS: [&str; 2] = ["livechat", "tencent"];
/// How long one expected event may take to arrive before the target calls the stream stuck.
const STALL: Duration = Duration::from_secs(10);

struct Service {
    service: SwitchboardService,
    events: Vec<Event>,
    /// Kept so the service's shutdown signal never fires.
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let Fixture { store, .. } = fixture();
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let events = store
            .read_events(switchboard_core::Sequence::ZERO, usize::MAX)
            .unwrap_or_else(|e| panic!("cannot read the fixture store's log: {e}"));
        Service {
            service: SwitchboardService::new(App::new(
                std::sync::Arc::new(store.clone()),
                Connections::default(),
                AppOptions {
                    vendors: VENDORS.to_vec(),
                    shutdown: Some(shutdown_rx),
                    ..AppOptions::default()
                },
            )),
            events,
            _shutdown: shutdown,
        }
    })
}

/// The `StreamEventsRequest` decoded from fuzzer bytes, and the text lines left over.
fn request(reader: &mut Reader<'_>) -> (v1::StreamEventsRequest, Vec<String>) {
    let selector = reader.byte();
    let start = match selector % 6 {
        0 => None,
        1 => Some(Start::FromBeginning(reader.byte() & 1 != 0)),
        // Mostly sequences near the log, sometimes any u64.
        2 => Some(Start::AfterSequence(u64::from(reader.byte() % 64))),
        3 => Some(Start::AfterSequence(reader.u64())),
        4 => Some(Start::AtHead(reader.byte() & 1 != 0)),
        _ => {
            let near = reader.byte() & 1 != 0;
            let (seconds, nanos) = if near {
                // Around the fixture store's receive times (2024-01-01, a minute apart).
                let offset = i64::from(reader.byte() as i8);
                (
                    1_704_067_200 + offset * 30,
                    i32::from(reader.byte()) * 4_000_000,
                )
            } else {
                (reader.i64(), reader.i32())
            };
            Some(Start::AtTime(prost_types::Timestamp { seconds, nanos }))
        }
    };
    let mut request = v1::StreamEventsRequest {
        start,
        ..v1::StreamEventsRequest::default()
    };
    for _ in 0..reader.byte() % 4 {
        // Mostly real kinds and UNSPECIFIED, sometimes values no kind has.
        let raw = reader.byte() as i8;
        request.kinds.push(i32::from(raw % 16));
    }
    let mut lines = Vec::new();
    for line in reader.rest().split(|&b| b == b'\n') {
        let line = text(line).into_owned();
        if let Some(id) = line.strip_prefix('c') {
            request.connection_ids.push(id.to_owned());
        } else if let Some(vendor) = line.strip_prefix('v') {
            request.vendors.push(vendor.to_owned());
        } else if let Some(id) = line.strip_prefix('k') {
            request.conversation_ids.push(id.to_owned());
        }
        lines.push(line);
    }
    (request, lines)
}

/// What the service must answer: an error code, or the sequence to start after and the filter.
enum Expected {
    Refused(tonic::Code),
    Events(Vec<u64>),
}

fn expected(request: &v1::StreamEventsRequest, events: &[Event]) -> Expected {
    let head = events.last().map_or(0, |e| e.sequence.0);
    if request
        .vendors
        .iter()
        .any(|v| !VENDORS.contains(&v.as_str()))
    {
        return Expected::Refused(tonic::Code::InvalidArgument);
    }
    // UNSPECIFIED is refused, and so is a number no kind has (the server checks the raw field:
    // prost's `kinds()` would drop it and widen the filter to every kind).
    if request
        .kinds
        .iter()
        .any(|&k| v1::EventKind::try_from(k).map_or(true, |k| k == v1::EventKind::Unspecified))
    {
        return Expected::Refused(tonic::Code::InvalidArgument);
    }
    let kinds: Vec<EventKind> = request
        .kinds
        .iter()
        .filter_map(|&k| v1::EventKind::try_from(k).ok())
        .filter_map(convert::from_kind)
        .collect();
    let Ok(conversations) = request
        .conversation_ids
        .iter()
        .map(|id| ConversationId::parse(id))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Expected::Refused(tonic::Code::InvalidArgument);
    };
    let Ok(connections) = request
        .connection_ids
        .iter()
        .map(|id| ConnectionId::new(id.clone()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Expected::Refused(tonic::Code::InvalidArgument);
    };
    let after = match &request.start {
        None | Some(Start::FromBeginning(_)) => 0,
        Some(Start::AfterSequence(after)) if *after > head => {
            return Expected::Refused(tonic::Code::OutOfRange);
        }
        Some(Start::AfterSequence(after)) => *after,
        Some(Start::AtHead(_)) => head,
        Some(Start::AtTime(t)) => match convert::from_timestamp(t) {
            None => return Expected::Refused(tonic::Code::InvalidArgument),
            Some(at) => events.iter().take_while(|e| e.received_at < at).count() as u64,
        },
    };
    Expected::Events(
        events
            .iter()
            .filter(|e| e.sequence.0 > after)
            .filter(|e| connections.is_empty() || connections.contains(&e.connection))
            .filter(|e| request.vendors.is_empty() || request.vendors.contains(&e.vendor))
            .filter(|e| kinds.is_empty() || kinds.contains(&e.incoming.kind))
            .filter(|e| {
                conversations.is_empty()
                    || e.conversation_id()
                        .is_some_and(|c| conversations.contains(&c))
            })
            .map(|e| e.sequence.0)
            .collect(),
    )
}

/// Parses a client-supplied string every way a client string is parsed, checking that what
/// parses prints back to something that parses to the same value.
fn strings(line: &str) {
    if let Some(t) = Timestamp::parse_rfc3339(line) {
        let printed = t.to_rfc3339();
        assert_eq!(
            Timestamp::parse_rfc3339(&printed),
            Some(t),
            "{line:?} parsed to {t:?}, printed as {printed:?}, which does not parse back"
        );
    }
    if let Some(t) = Timestamp::parse_sql_utc(line) {
        assert!(t >= Timestamp::MIN && t <= Timestamp::MAX);
    }
    if let Ok(secs) = line.parse::<f64>()
        && let Some(t) = Timestamp::from_secs_f64(secs)
    {
        assert!(t >= Timestamp::MIN && t <= Timestamp::MAX);
    }
    if let Ok(id) = ConversationId::parse(line) {
        assert_eq!(id.to_string(), line, "{line:?} parsed to {id:?}");
    }
    if let Ok(id) = ConnectionId::new(line) {
        assert_eq!(id.as_str(), line);
    }
    if let Some(kind) = EventKind::parse(line) {
        assert_eq!(kind.as_str(), line);
    }
    if let Some(status) = ConversationStatus::parse(line) {
        assert_eq!(status.as_str(), line);
    }
    if let Some(status) = TicketStatus::parse(line) {
        assert_eq!(status.as_str(), line);
    }
}

/// Opens an event stream with a start and filters decoded from `data` and checks the answer
/// against a model of the documented behaviour: refused with the right code, or exactly the
/// matching events after the right cursor, in order. Every line of the rest of `data` also goes
/// through the id and time parsers.
///
/// # Panics
/// If the service or a parser panics or an invariant fails.
pub fn stream_cursor(data: &[u8]) {
    let Fixture { runtime, .. } = fixture();
    let service = service();
    let mut reader = Reader::new(data);
    let (request, lines) = request(&mut reader);
    for line in &lines {
        strings(line);
    }
    let expected = expected(&request, &service.events);
    let described = format!("{request:?}");
    runtime.block_on(async {
        let answer = service
            .service
            .stream_events(tonic::Request::new(request))
            .await;
        match (answer, expected) {
            (Err(status), Expected::Refused(code)) => assert_eq!(
                status.code(),
                code,
                "{described} was refused with {status:?}, expected {code:?}"
            ),
            (Err(status), Expected::Events(_)) => {
                panic!("{described} was refused with {status:?}, expected a stream")
            }
            (Ok(_), Expected::Refused(code)) => {
                panic!("{described} was answered with a stream, expected {code:?}")
            }
            (Ok(response), Expected::Events(sequences)) => {
                let mut stream = response.into_inner();
                for want in sequences {
                    let got = tokio::time::timeout(STALL, stream.next())
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{described}: event {want} did not arrive within {STALL:?}")
                        })
                        .unwrap_or_else(|| panic!("{described}: the stream ended before {want}"))
                        .unwrap_or_else(|e| panic!("{described}: error before {want}: {e:?}"));
                    assert_eq!(got.sequence, want, "{described}: wrong event");
                }
                // Let the reader task run: nothing else may be sent.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                if let Ok(extra) = tokio::time::timeout(Duration::ZERO, stream.next()).await {
                    panic!("{described}: unexpected item after the expected events: {extra:?}");
                }
            }
        }
    });
}
