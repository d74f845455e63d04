//! Schema migrations: SQL files in `migrations/`, embedded in the binary by refinery and
//! applied at open under an advisory lock, so replicas starting together apply each once.

use switchboard_store::StoreError;
use tokio_postgres::Client;
use tracing::info;

use crate::error;

refinery::embed_migrations!("migrations");

/// The advisory lock key of migrations in `schema`: one per schema, so that databases with
/// several Switchboard schemas (tests) do not wait on each other.
fn lock_key(schema: &str) -> i64 {
    // FNV-1a, stable across builds.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"switchboard-migrations:".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// The schema the connection's tables live in (the first of its search_path that exists).
pub(crate) async fn current_schema(client: &Client) -> Result<String, StoreError> {
    let row = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(|e| error::pg("reading the current schema", e))?;
    row.try_get::<_, Option<String>>(0)
        .map_err(|e| error::pg("reading the current schema", e))?
        .ok_or_else(|| {
            StoreError::InvalidArgument(
                "the database URL's search_path names no existing schema; create the schema, or drop the search_path option".into(),
            )
        })
}

/// Applies every migration not yet applied, holding a session advisory lock meanwhile.
/// Returns how many were applied.
pub(crate) async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let schema = current_schema(client).await?;
    let key = lock_key(&schema);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(|e| error::pg("waiting for the migration lock", e))?;
    let result = migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await;
    // The lock goes with the session anyway; unlocking early lets the next replica go on.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(|e| error::pg("releasing the migration lock", e));
    let report = result.map_err(|e| migration_error(&schema, e))?;
    unlocked?;
    let applied = report.applied_migrations().len();
    if applied > 0 {
        info!(schema, applied, "database schema migrated");
    }
    Ok(applied)
}

/// What a failed migration run means for the operator.
fn migration_error(schema: &str, error: refinery::Error) -> StoreError {
    use refinery::error::Kind;
    match error.kind() {
        Kind::MissingVersion(migration) => StoreError::Commit(format!(
            "the database schema {schema} has migration {migration}, which this build does not know: a newer switchboard migrated it; run that release or a newer one"
        )),
        Kind::DivergentVersion(applied, ours) => StoreError::Commit(format!(
            "the database schema {schema} has migration {applied} applied, but this build's is {ours}; it was migrated by another build"
        )),
        Kind::Connection(context, source) => {
            match source.downcast_ref::<tokio_postgres::Error>() {
                // A lost connection is Unavailable; a refused statement, Commit.
                Some(pg) if pg.code().is_none() => StoreError::Unavailable(format!(
                    "migrating the database schema {schema}: {context}: {}",
                    error::chain(pg)
                )),
                _ => StoreError::Commit(format!(
                    "migrating the database schema {schema}: {context}: {}",
                    error::chain(source.as_ref())
                )),
            }
        }
        _ => StoreError::Commit(format!(
            "migrating the database schema {schema}: {}",
            error::chain(&error)
        )),
    }
}
