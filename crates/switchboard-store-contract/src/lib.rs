//! The storage contract's test suite: the cases every [`Storage`] backend runs, so that the
//! sled store and the PostgreSQL backend keep the same promises (see
//! `switchboard_store::Storage` and its module docs).
//!
//! A backend's test file implements [`Backend`] (a fresh empty store, and the same data opened
//! again after a close) and expands [`contract_tests!`], which makes one `#[test]` per case:
//!
//! ```ignore
//! struct MyBackend { /* what a fresh store needs */ }
//!
//! #[async_trait::async_trait]
//! impl switchboard_store_contract::Backend for MyBackend { /* fresh, fresh_with_quarantine_limits, reopen */ }
//!
//! switchboard_store_contract::contract_tests!(MyBackend::new());
//! ```
//!
//! Every case is also a `pub async fn` in [`cases`], and [`run_all`] runs them in turn.
//! Cases use connection ids that start with `contract-`; each starts from a fresh store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use switchboard_store::{QuarantineLimits, Storage};

pub mod cases;
mod support;

/// What a backend's test gives the suite: stores to run the cases against.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's name, for messages (`sled`, `postgres`).
    fn name(&self) -> &str {
        "backend"
    }

    /// A new, empty store with the backend's default options.
    async fn fresh(&self) -> Arc<dyn Storage>;

    /// A new, empty store whose quarantine is bounded by `limits` (the quarantine cases fill
    /// it). Everything else as [`Backend::fresh`].
    async fn fresh_with_quarantine_limits(&self, limits: QuarantineLimits) -> Arc<dyn Storage>;

    /// Closes `store` and opens the same data again, with the same options: what a restart
    /// does. The suite passes its only handle (every clone it made is dropped before).
    async fn reopen(&self, store: Arc<dyn Storage>) -> Arc<dyn Storage>;
}

/// How long one case may take before it counts as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

macro_rules! case_list {
    ($($case:ident),* $(,)?) => {
        /// The name of every case, in the order [`run_all`] runs them.
        pub const CASE_NAMES: &[&str] = &[$(stringify!($case)),*];

        /// Runs every case against `backend`, one after another (each on a fresh store).
        /// [`contract_tests!`] is better for a test file: it reports each case apart.
        pub async fn run_all(backend: &dyn Backend) {
            $(
                eprintln!("storage contract on {}: {}", backend.name(), stringify!($case));
                cases::$case(backend).await;
            )*
        }
    };
}

case_list!(
    a_fresh_store_is_empty,
    append_then_read_events,
    unusual_text_round_trips,
    dedup_within_and_across_requests_and_restarts,
    concurrent_appends_are_gap_free,
    head_watch_announces_appends,
    read_events_honours_limit_and_max_bytes,
    everything_acknowledged_survives_reopen,
    close_stops_writes,
    event_by_dedup_key_finds_the_first_event,
    projections_merge_in_any_order,
    list_conversations_filters,
    list_conversations_orders_newest_first,
    list_conversations_pages,
    page_sizes_are_defaulted_and_capped,
    tickets_are_last_writer_wins,
    list_tickets_filters_and_pages,
    update_ticket_applies_and_refuses,
    concurrent_ticket_updates_lose_nothing,
    idempotency_claims,
    job_leases,
    agents_upsert_and_delete,
    sync_state_follows_pages_and_errors,
    quarantine_hold_attempt_release,
    quarantine_refuses_past_its_limits,
    bad_input_changes_nothing,
    erasure_erases_the_person_and_keeps_the_log,
    a_bad_erasure_plan_changes_nothing,
    erasure_among_concurrent_appends_is_serialized,
);

/// Runs one case on a runtime of its own (used by [`contract_tests!`]); a case that does not
/// finish within [`CASE_TIMEOUT`] fails.
#[doc(hidden)]
pub fn __run(case: &str, future: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("building the tokio runtime for a contract case");
    runtime.block_on(async {
        if tokio::time::timeout(CASE_TIMEOUT, future).await.is_err() {
            panic!(
                "the contract case {case} did not finish within {} s (a hang?)",
                CASE_TIMEOUT.as_secs()
            );
        }
    });
}

/// Expands to one `#[test]` per contract case, each building its backend with `$backend`
/// (evaluated inside the case's tokio runtime, so it may `.await`), plus one test that checks
/// the list is complete. Attributes before the expression go on every case's test (e.g.
/// `#[ignore = "needs a database"]`).
///
/// ```ignore
/// switchboard_store_contract::contract_tests!(SledBackend::default());
/// switchboard_store_contract::contract_tests!(
///     #[ignore = "needs SWITCHBOARD_TEST_POSTGRES"]
///     PgBackend::connect().await
/// );
/// ```
#[macro_export]
macro_rules! contract_tests {
    (#[$meta:meta] $($rest:tt)+) => {
        $crate::contract_tests!(@attrs [#[$meta]] $($rest)+);
    };
    (@attrs [$($attrs:tt)*] #[$meta:meta] $($rest:tt)+) => {
        $crate::contract_tests!(@attrs [$($attrs)* #[$meta]] $($rest)+);
    };
    (@attrs [$($attrs:tt)*] $backend:expr) => {
        $crate::__contract_tests!(
            [$($attrs)*] $backend;
            a_fresh_store_is_empty,
            append_then_read_events,
            unusual_text_round_trips,
            dedup_within_and_across_requests_and_restarts,
            concurrent_appends_are_gap_free,
            head_watch_announces_appends,
            read_events_honours_limit_and_max_bytes,
            everything_acknowledged_survives_reopen,
            close_stops_writes,
            event_by_dedup_key_finds_the_first_event,
            projections_merge_in_any_order,
            list_conversations_filters,
            list_conversations_orders_newest_first,
            list_conversations_pages,
            page_sizes_are_defaulted_and_capped,
            tickets_are_last_writer_wins,
            list_tickets_filters_and_pages,
            update_ticket_applies_and_refuses,
            concurrent_ticket_updates_lose_nothing,
            idempotency_claims,
            job_leases,
            agents_upsert_and_delete,
            sync_state_follows_pages_and_errors,
            quarantine_hold_attempt_release,
            quarantine_refuses_past_its_limits,
            bad_input_changes_nothing,
            erasure_erases_the_person_and_keeps_the_log,
            a_bad_erasure_plan_changes_nothing,
            erasure_among_concurrent_appends_is_serialized,
        );
    };
    ($backend:expr) => {
        $crate::contract_tests!(@attrs [] $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ([$($meta:tt)*] $backend:expr; $($case:ident),* $(,)?) => {
        $crate::__contract_tests!(@each [$($meta)*] $backend; $($case,)*);

        #[test]
        fn contract_tests_cover_every_case() {
            let generated: &[&str] = &[$(stringify!($case)),*];
            assert_eq!(
                generated,
                $crate::CASE_NAMES,
                "contract_tests! and CASE_NAMES list different cases"
            );
        }
    };
    (@each [$($meta:tt)*] $backend:expr; $case:ident, $($rest:ident,)*) => {
        #[test]
        $($meta)*
        fn $case() {
            $crate::__run(stringify!($case), async {
                let backend = $backend;
                $crate::cases::$case(&backend).await;
            });
        }

        $crate::__contract_tests!(@each [$($meta)*] $backend; $($rest,)*);
    };
    (@each [$($meta:tt)*] $backend:expr;) => {};
}
