//! What every PostgreSQL test target shares: the database from the environment (or a skip
//! line), per-test schemas, and a plain admin connection.

use std::io::Write as _;
use std::sync::Mutex;

/// The variable naming the test database.
pub const URL_VARIABLE: &str = "SWITCHBOARD_TEST_DATABASE_URL";

/// The test database's URL; `None` (with a note) when the variable is unset.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // Once per run past the harness's capture (so a plain `cargo test` shows it), and
            // per test in its captured output.
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "switchboard-store-postgres: {URL_VARIABLE} is not set; the PostgreSQL tests (this target) are skipped (see the crate's README)"
                );
            });
            eprintln!("skipped {test}: {URL_VARIABLE} is not set (see the crate's README)");
            None
        }
    }
}

/// `url` with the search_path of its connections set to `schema`.
pub fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A plain connection for the tests' own statements (creating and dropping schemas).
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but the database cannot be reached ({url}): {e}")
        });
    tokio::spawn(connection);
    client
}

/// Schemas of one test: created on demand, dropped by [`Schemas::drop_all`].
pub struct Schemas {
    url: String,
    made: Mutex<Vec<String>>,
}

impl Schemas {
    pub fn new(url: String) -> Self {
        Schemas {
            url,
            made: Mutex::new(Vec::new()),
        }
    }

    /// A new, empty schema; returns the URL whose connections use it.
    pub async fn fresh(&self) -> String {
        let schema = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        admin(&self.url)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("creating a test schema");
        self.made.lock().unwrap().push(schema.clone());
        with_schema(&self.url, &schema)
    }

    pub async fn drop_all(&self) {
        let schemas = std::mem::take(&mut *self.made.lock().unwrap());
        let client = admin(&self.url).await;
        for schema in schemas {
            client
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .expect("dropping a test schema");
        }
    }
}
