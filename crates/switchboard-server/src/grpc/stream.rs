//! `StreamEvents`: the request's start and filters decoded, then a subscription of
//! [`crate::app::subscribe`] streamed as it is.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use switchboard_core::{ConversationId, Sequence};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{connection_ids, invalid, known_enums, status, timestamp};
use crate::app::subscribe::{Filter, Refused, Start};

/// The stream `StreamEvents` answers with.
pub(super) type EventStream =
    Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send + 'static>>;

impl SwitchboardService {
    pub(super) async fn stream_events_rpc(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let kinds = known_enums(
            &r.kinds,
            "kinds",
            convert::from_kind,
            "EVENT_KIND_UNSPECIFIED is not a kind",
        )?;
        let conversations = r
            .conversation_ids
            .iter()
            .map(|id| {
                ConversationId::parse(id).map_err(|e| invalid(format!("conversation_ids: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = Filter {
            connections: connection_ids(&r.connection_ids, "connection_ids")?,
            vendors: r.vendors.clone(),
            kinds,
            conversations,
        };
        let start = match &r.start {
            None | Some(v1::stream_events_request::Start::FromBeginning(_)) => Start::FromBeginning,
            Some(v1::stream_events_request::Start::AfterSequence(after)) => {
                Start::After(Sequence(*after))
            }
            Some(v1::stream_events_request::Start::AtHead(_)) => Start::AtHead,
            Some(v1::stream_events_request::Start::AtTime(t)) => {
                Start::AtTime(timestamp(t, "at_time")?)
            }
        };
        let subscription = self
            .app
            .subscribe
            .open(start, filter)
            .await
            .map_err(|refused| match refused {
                beyond @ Refused::BeyondHead { .. } => Status::out_of_range(beyond.to_string()),
                Refused::Error(error) => status(&error),
            })?;
        let events = subscription.map(|item| item.map_err(|error| status(&error)));
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_proto::v1::switchboard_server::Switchboard;
    use switchboard_store::Store;

    use super::*;
    use crate::Connections;
    use crate::app::subscribe::StreamOptions;
    use crate::app::{App, AppOptions};

    #[tokio::test]
    async fn subscribers_over_the_cap_are_refused_at_once_and_a_freed_slot_is_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let service = SwitchboardService::new(App::new(
            Arc::new(store.clone()),
            Connections::default(),
            AppOptions {
                shutdown: Some(shutdown_rx),
                stream: StreamOptions {
                    max_subscribers: 2,
                    ..StreamOptions::default()
                },
                ..AppOptions::default()
            },
        ));
        let open = || service.stream_events(Request::new(v1::StreamEventsRequest::default()));
        let first = open().await.expect("first subscriber");
        let second = open().await.expect("second subscriber");
        let refused = open().await.err().expect("a third subscriber is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("limit of 2 StreamEvents subscribers"),
            "{}",
            refused.message()
        );

        // Going away frees the slot: the caught-up reader notices the closed channel.
        drop(first);
        let mut third = None;
        for _ in 0..200 {
            match open().await {
                Ok(stream) => {
                    third = Some(stream);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        assert!(
            third.is_some(),
            "the slot of a gone subscriber is never freed"
        );
        assert_eq!(
            open().await.err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );

        drop((second, third));
        let _ = shutdown.send(true);
        store.close().await.expect("close");
    }
}
