//! Erasure in the database: a `pg_dump` of the store's schema holds every value of the person
//! before `erase_contact` (so the check can fail) and none after it, while the other person's
//! values stay. Values are looked for as text and as hex (bytea columns, the raw bodies, are
//! dumped as hex).
//!
//! Needs `SWITCHBOARD_TEST_DATABASE_URL` and `pg_dump`; without the variable the test says it
//! skipped and passes (as tests/postgres.rs does).

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Sequence;
use switchboard_store::Storage;
use switchboard_store_postgres::PgStore;

const URL_VARIABLE: &str = "SWITCHBOARD_TEST_DATABASE_URL";

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but the database cannot be reached: {e}")
        });
    tokio::spawn(connection);
    client
}

/// The schema's dump as text (pg_dump's plain format).
fn dump(url: &str, schema: &str) -> String {
    let output = std::process::Command::new("pg_dump")
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

/// Which of `values` the dump holds, as text or as the hex of a bytea.
fn found_in(dump: &str, values: &[String]) -> Vec<String> {
    values
        .iter()
        .filter(|value| {
            let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
            dump.contains(value.as_str()) || dump.contains(&hex)
        })
        .cloned()
        .collect()
}

/// A fresh schema and the URL whose connections use it.
async fn fresh_schema(admin: &tokio_postgres::Client, url: &str) -> (String, String) {
    let schema = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{separator}options=-csearch_path%3D{schema}");
    (schema, store_url)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn another_replica_drops_the_erased_events_from_its_tail_cache() {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        eprintln!("skipped: {URL_VARIABLE} is not set (see the crate's README)");
        return;
    };
    runtime().block_on(async {
        let admin = admin(&url).await;
        let (schema, store_url) = fresh_schema(&admin, &url).await;
        let a: Arc<dyn Storage> = Arc::new(PgStore::open(&store_url).await.unwrap());
        let b = PgStore::open(&store_url).await.unwrap();
        let fixture = switchboard_store_contract::cases::erasure_fixture(&a).await;
        let head = a.head();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.head() < head {
            assert!(
                std::time::Instant::now() < deadline,
                "replica B never saw the appends"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // B reads the log: its tail cache now holds the events as they are.
        let read = b
            .read_events(Sequence::ZERO, 100, usize::MAX)
            .await
            .unwrap();
        assert_eq!(read.len() as u64, head.0);
        let cached = b
            .read_events_cached(Sequence::ZERO, 100, usize::MAX)
            .expect("B's tail cache holds what it read");
        assert!(format!("{cached:?}").contains(&fixture.personal[0]));

        let report = a.erase_contact(fixture.plan.clone()).await.unwrap();
        // B's cache is dropped by the erasure's notification: soon no read of B serves the
        // person's data, cached or not.
        let holds = |events: &[switchboard_core::Event]| {
            let text = format!("{events:?}");
            fixture.personal.iter().any(|v| text.contains(v.as_str()))
        };
        loop {
            // The events before the erasure only: a range the cache held.
            let cached = b.read_events_cached(Sequence::ZERO, head.0 as usize, usize::MAX);
            if b.head() >= report.sequence && !cached.as_deref().is_some_and(holds) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replica B still serves the erased events from its tail cache"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let read = b
            .read_events(Sequence::ZERO, 100, usize::MAX)
            .await
            .unwrap();
        assert_eq!(read.len() as u64, report.sequence.0);
        assert!(!holds(&read), "B reads the erased log");
        a.close_within(Duration::from_secs(10)).await.unwrap();
        b.close_within(Duration::from_secs(10)).await.unwrap();
        drop((a, b));
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

#[test]
fn after_erasure_a_dump_of_the_database_holds_none_of_the_erased_values() {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        eprintln!("skipped: {URL_VARIABLE} is not set (see the crate's README)");
        return;
    };
    runtime().block_on(async {
        let admin = admin(&url).await;
        let (schema, store_url) = fresh_schema(&admin, &url).await;
        let store: Arc<dyn Storage> = Arc::new(PgStore::open(&store_url).await.unwrap());
        let fixture = switchboard_store_contract::cases::erasure_fixture(&store).await;
        let mut personal = fixture.personal.clone();
        personal.push(fixture.personal_long.clone());

        let before = dump(&url, &schema);
        assert_eq!(
            found_in(&before, &personal),
            personal,
            "before the erasure the dump holds every value of the person"
        );
        assert_eq!(found_in(&before, &fixture.others), fixture.others);

        store.erase_contact(fixture.plan.clone()).await.unwrap();
        let after = dump(&url, &schema);
        assert_eq!(
            found_in(&after, &personal),
            Vec::<String>::new(),
            "after the erasure the dump holds values of the person"
        );
        assert_eq!(
            found_in(&after, &fixture.others),
            fixture.others,
            "the other person's values stay"
        );
        store.close_within(Duration::from_secs(10)).await.unwrap();
        drop(store);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}
