//! The suite catches broken backends: the sled store behind a wrapper that breaks one promise
//! at a time must fail the case that checks that promise (and pass every case without one).

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, Sequence, Ticket, TicketId,
};
use switchboard_store::{
    AppendReceipt, AppendRequest, Claim, ConversationPage, ConversationQuery, ErasurePlan,
    ErasureReport, QuarantineLimits, QuarantineTotals, Quarantined, Storage, StoreError, SyncState,
    TicketListPage, TicketListQuery, TicketUpdate,
};
use switchboard_store_contract::{Backend, cases};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    DropRaw,
    SkipAnEvent,
    IgnoreMaxBytes,
    IgnorePageToken,
    ReverseConversations,
    SmallDefaultPageSize,
    AlwaysClaimed,
    LeaseForAll,
    ForgetOnReopen,
    RacyTicketUpdate,
    HeadLags,
    AgentsReversed,
    SyncErrorIgnored,
    QuarantineFilterIgnored,
    EmptyVendorAccepted,
    NoMessagesInConversation,
    TicketStatusFilterIgnored,
    NotFoundAsRefused,
    ErasureOnlyRecorded,
    BadErasurePlanAccepted,
}

struct Faulty {
    inner: Mutex<Option<Arc<dyn Storage>>>,
    fault: Fault,
}

impl Faulty {
    fn inner(&self) -> Arc<dyn Storage> {
        self.inner
            .lock()
            .unwrap()
            .clone()
            .expect("a store reopened")
    }
}

#[async_trait]
impl Storage for Faulty {
    fn backend(&self) -> &'static str {
        "faulty-sled"
    }

    async fn append(&self, mut request: AppendRequest) -> Result<AppendReceipt, StoreError> {
        if self.fault == Fault::EmptyVendorAccepted && request.vendor.is_empty() {
            request.vendor = "made-up".into();
        }
        self.inner().append(request).await
    }

    async fn record_sync_error(&self, c: &ConnectionId, m: String) -> Result<(), StoreError> {
        if self.fault == Fault::SyncErrorIgnored {
            return Ok(());
        }
        self.inner().record_sync_error(c, m).await
    }

    async fn update_ticket(&self, update: TicketUpdate) -> Result<Ticket, StoreError> {
        match self.fault {
            Fault::RacyTicketUpdate => {
                let inner = self.inner();
                let mut ticket = inner
                    .get_ticket(&update.id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound("no ticket".into()))?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticket
                    .apply_change(&update.change, update.at)
                    .map_err(StoreError::Refused)?;
                let event = switchboard_core::IncomingEvent {
                    dedup_key: format!("racy:{}", uuid_like()),
                    kind: switchboard_core::EventKind::TicketUpdated,
                    vendor_event: "racy".into(),
                    occurred_at: ticket.updated_at,
                    payload: switchboard_core::EventPayload::Ticket(ticket.clone()),
                };
                let request =
                    AppendRequest::new(update.id.connection.clone(), update.vendor, vec![event]);
                inner.append(request).await?;
                Ok(ticket)
            }
            Fault::NotFoundAsRefused => match self.inner().update_ticket(update).await {
                Err(StoreError::NotFound(m)) => {
                    Err(StoreError::Refused(switchboard_core::Error::invalid(m)))
                }
                other => other,
            },
            _ => self.inner().update_ticket(update).await,
        }
    }

    async fn claim_idempotency_key(
        &self,
        c: &ConnectionId,
        key: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let claim = self.inner().claim_idempotency_key(c, key, lease).await?;
        Ok(if self.fault == Fault::AlwaysClaimed {
            Claim::Claimed
        } else {
            claim
        })
    }

    async fn release_idempotency_key(&self, c: &ConnectionId, key: &str) -> Result<(), StoreError> {
        self.inner().release_idempotency_key(c, key).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let held = self.inner().acquire_lease(name, holder, ttl).await?;
        Ok(held || self.fault == Fault::LeaseForAll)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner().release_lease(name, holder).await
    }

    fn head(&self) -> Sequence {
        let head = self.inner().head();
        match self.fault {
            Fault::HeadLags => Sequence(head.0.saturating_sub(1)),
            _ => head,
        }
    }

    fn subscribe_head(&self) -> watch::Receiver<Sequence> {
        self.inner().subscribe_head()
    }

    async fn read_events(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let max_bytes = if self.fault == Fault::IgnoreMaxBytes {
            usize::MAX
        } else {
            max_bytes
        };
        let mut events = self.inner().read_events(after, limit, max_bytes).await?;
        match self.fault {
            Fault::DropRaw => events.iter_mut().for_each(|e| e.raw = None),
            Fault::SkipAnEvent if events.len() >= 3 => {
                events.remove(1);
            }
            _ => {}
        }
        Ok(events)
    }

    async fn event_by_dedup_key(
        &self,
        c: &ConnectionId,
        key: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.inner().event_by_dedup_key(c, key).await
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut conversation = self.inner().get_conversation(id).await?;
        if self.fault == Fault::NoMessagesInConversation {
            conversation.iter_mut().for_each(|c| c.messages.clear());
        }
        Ok(conversation)
    }

    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        let mut query = query.clone();
        match self.fault {
            Fault::IgnorePageToken => query.page_token = None,
            Fault::SmallDefaultPageSize if query.page_size == 0 => query.page_size = 10,
            _ => {}
        }
        let mut page = self.inner().list_conversations(&query).await?;
        if self.fault == Fault::ReverseConversations {
            page.conversations.reverse();
        }
        Ok(page)
    }

    async fn conversation_count(&self) -> Result<u64, StoreError> {
        self.inner().conversation_count().await
    }

    async fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        self.inner().get_ticket(id).await
    }

    async fn list_tickets(&self, query: &TicketListQuery) -> Result<TicketListPage, StoreError> {
        let mut query = query.clone();
        match self.fault {
            Fault::SmallDefaultPageSize if query.page_size == 0 => query.page_size = 10,
            Fault::TicketStatusFilterIgnored => query.statuses.clear(),
            _ => {}
        }
        self.inner().list_tickets(&query).await
    }

    async fn list_agents(&self, c: &ConnectionId) -> Result<Vec<Agent>, StoreError> {
        let mut agents = self.inner().list_agents(c).await?;
        if self.fault == Fault::AgentsReversed {
            agents.reverse();
        }
        Ok(agents)
    }

    async fn sync_state(&self, c: &ConnectionId) -> Result<Option<SyncState>, StoreError> {
        self.inner().sync_state(c).await
    }

    async fn list_quarantine(
        &self,
        after: u64,
        limit: usize,
        connections: &[ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), StoreError> {
        let connections = if self.fault == Fault::QuarantineFilterIgnored {
            &[]
        } else {
            connections
        };
        self.inner()
            .list_quarantine(after, limit, connections)
            .await
    }

    async fn get_quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        self.inner().get_quarantined(id).await
    }

    async fn quarantine_totals(&self) -> Result<QuarantineTotals, StoreError> {
        self.inner().quarantine_totals().await
    }

    async fn erase_contact(&self, plan: ErasurePlan) -> Result<ErasureReport, StoreError> {
        match self.fault {
            // Records an erasure and erases nothing.
            Fault::ErasureOnlyRecorded => {
                let plan = plan.normalized()?;
                let receipt = self.inner().append(plan.record()).await?;
                Ok(ErasureReport {
                    conversations: plan.conversations.len() as u64,
                    tickets: plan.tickets.len() as u64,
                    events: plan.events.len() as u64,
                    sequence: receipt.appended[0],
                })
            }
            Fault::BadErasurePlanAccepted => match self.inner().erase_contact(plan).await {
                Err(_) => Ok(ErasureReport::default()),
                erased => erased,
            },
            _ => self.inner().erase_contact(plan).await,
        }
    }

    fn failure(&self) -> Option<String> {
        self.inner().failure()
    }

    fn is_ready(&self) -> bool {
        self.inner().is_ready()
    }

    async fn close_within(&self, limit: Duration) -> Result<bool, StoreError> {
        self.inner().close_within(limit).await
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

struct FaultyBackend {
    sled: common::Sled,
    fault: Fault,
    wrappers: Mutex<Vec<Arc<Faulty>>>,
}

impl FaultyBackend {
    fn new(fault: Fault) -> Self {
        FaultyBackend {
            sled: common::Sled::default(),
            fault,
            wrappers: Mutex::new(Vec::new()),
        }
    }

    fn wrap(&self, inner: Arc<dyn Storage>) -> Arc<dyn Storage> {
        let wrapper = Arc::new(Faulty {
            inner: Mutex::new(Some(inner)),
            fault: self.fault,
        });
        self.wrappers.lock().unwrap().push(wrapper.clone());
        wrapper
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn name(&self) -> &str {
        "faulty sled"
    }

    async fn fresh(&self) -> Arc<dyn Storage> {
        let inner = self.sled.fresh().await;
        self.wrap(inner)
    }

    async fn fresh_with_quarantine_limits(&self, limits: QuarantineLimits) -> Arc<dyn Storage> {
        let inner = self.sled.fresh_with_quarantine_limits(limits).await;
        self.wrap(inner)
    }

    async fn reopen(&self, store: Arc<dyn Storage>) -> Arc<dyn Storage> {
        let address = Arc::as_ptr(&store).cast::<()>() as usize;
        let wrapper = {
            let mut wrappers = self.wrappers.lock().unwrap();
            let index = wrappers
                .iter()
                .position(|w| Arc::as_ptr(w).cast::<()>() as usize == address)
                .expect("reopen of a store this backend did not open");
            wrappers.remove(index)
        };
        drop(store);
        let inner = wrapper.inner.lock().unwrap().take().expect("a store");
        drop(wrapper);
        if self.fault == Fault::ForgetOnReopen {
            inner
                .close_within(Duration::from_secs(30))
                .await
                .expect("close");
            drop(inner);
            let fresh = self.sled.fresh().await;
            return self.wrap(fresh);
        }
        let reopened = self.sled.reopen(inner).await;
        self.wrap(reopened)
    }
}

/// Runs a case against a backend with `fault` and fails unless the case fails.
fn caught<F, Fut>(fault: Fault, case: &str, run: F)
where
    F: FnOnce(Arc<FaultyBackend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let backend = Arc::new(FaultyBackend::new(fault));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        switchboard_store_contract::__run(case, run(backend));
    }));
    assert!(
        result.is_err(),
        "the case {case} passed against a backend with the fault {fault:?}"
    );
}

macro_rules! catches {
    ($($test:ident: $fault:ident => $case:ident;)*) => {
        $(
            #[test]
            fn $test() {
                caught(Fault::$fault, stringify!($case), |b| async move { cases::$case(b.as_ref()).await });
            }
        )*
    };
}

catches! {
    a_lost_raw_body_is_caught: DropRaw => append_then_read_events;
    a_gap_in_the_log_is_caught: SkipAnEvent => append_then_read_events;
    a_gap_under_concurrency_is_caught: SkipAnEvent => concurrent_appends_are_gap_free;
    an_ignored_max_bytes_is_caught: IgnoreMaxBytes => read_events_honours_limit_and_max_bytes;
    an_ignored_page_token_is_caught: IgnorePageToken => list_conversations_pages;
    a_wrong_order_is_caught: ReverseConversations => list_conversations_orders_newest_first;
    a_wrong_order_in_filters_is_caught: ReverseConversations => list_conversations_filters;
    a_wrong_default_page_size_is_caught: SmallDefaultPageSize => page_sizes_are_defaulted_and_capped;
    a_claim_that_never_blocks_is_caught: AlwaysClaimed => idempotency_claims;
    a_lease_everyone_holds_is_caught: LeaseForAll => job_leases;
    a_restart_that_loses_data_is_caught: ForgetOnReopen => everything_acknowledged_survives_reopen;
    a_restart_that_loses_dedup_is_caught: ForgetOnReopen => dedup_within_and_across_requests_and_restarts;
    a_restart_that_loses_the_quarantine_is_caught: ForgetOnReopen => quarantine_hold_attempt_release;
    lost_ticket_updates_are_caught: RacyTicketUpdate => concurrent_ticket_updates_lose_nothing;
    a_lagging_head_is_caught: HeadLags => head_watch_announces_appends;
    agents_out_of_order_are_caught: AgentsReversed => agents_upsert_and_delete;
    an_ignored_sync_error_is_caught: SyncErrorIgnored => sync_state_follows_pages_and_errors;
    an_ignored_quarantine_filter_is_caught: QuarantineFilterIgnored => quarantine_hold_attempt_release;
    an_accepted_empty_vendor_is_caught: EmptyVendorAccepted => bad_input_changes_nothing;
    a_conversation_without_messages_is_caught: NoMessagesInConversation => projections_merge_in_any_order;
    an_ignored_ticket_status_filter_is_caught: TicketStatusFilterIgnored => list_tickets_filters_and_pages;
    not_found_reported_as_refused_is_caught: NotFoundAsRefused => update_ticket_applies_and_refuses;
    an_erasure_that_erases_nothing_is_caught: ErasureOnlyRecorded => erasure_erases_the_person_and_keeps_the_log;
    an_accepted_bad_erasure_plan_is_caught: BadErasurePlanAccepted => a_bad_erasure_plan_changes_nothing;
    a_restart_that_loses_an_erasure_is_caught: ForgetOnReopen => erasure_erases_the_person_and_keeps_the_log;
}

/// The wrapper itself keeps every promise when it injects no fault.
#[test]
fn the_wrapper_without_a_fault_passes_every_case() {
    let backend = FaultyBackend::new(Fault::None);
    switchboard_store_contract::__run("run_all", async move {
        switchboard_store_contract::run_all(&backend).await;
    });
}
