//! The LiveTex pull connector: logs in to the Web API with the account's login and password
//! (OAuth2 password grant, `POST https://web-api.livetex.ru/oauth2/token`, answer
//! `{"results": {"access_token", "token_type", "expires_in"}}`), then pages through
//! `/chats/list` and `/leads/list` (`?offset=N&q=...`, answer `{"results": [...], "total": N}`,
//! 50 records a page) by creation time.
//!
//! Sources: support.livetex.ru/hc/ru/articles/360007021797 («Передача данных во внешние
//! системы: Web API»), LiveTex's API schema (`splusminusx/api-schema-tools` at a3177dbe:
//! `schema/merged/Methods/{Chats,Leads}.json`, `implementation/Methods/Oauth2.json`), and a
//! public integration calling `web-api.livetex.ru` the same way; the README lists each rule
//! as documented or assumed. The fake in `switchboard_testkit::fake::livetex` follows the same
//! documents.

use std::fmt;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, Error, IncomingEvent, RateLimit, Secret, SyncPage,
    Timestamp, async_trait,
};
use switchboard_vendor_client::{ClientSettings, VendorClient, VendorResponse};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::fields::{Fields, msk_text};
use crate::{chat_to_events, lead_to_events};

/// Where the connector calls when the connection sets no `base_url`: the Web API's host.
pub const DEFAULT_BASE_URL: &str = "https://web-api.livetex.ru";
/// LiveTex publishes no API rate limit that we know of, so the connector stays well below any
/// plausible one: 60 calls per 60 s (one a second on average). Override it with the
/// connection's `rate_limit`.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    calls: 60,
    per_seconds: 60,
};
/// The connection setting holding the LiveTex account's login.
pub const LOGIN_SETTING: &str = "login";
/// The connection secret holding the LiveTex account's password.
pub const PASSWORD_SECRET: &str = "password";
/// The connection setting for records per page (`limit`, 1 to [`MAX_PAGE_SIZE`]).
pub const PAGE_SIZE_SETTING: &str = "page_size";
/// The page size LiveTex serves when asked for none (`limit` "По умолчанию – 50").
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest `limit` LiveTex accepts (`{"max": 100}` in the schema).
pub const MAX_PAGE_SIZE: usize = 100;
/// The settings holding the `fields` parameter sent with each list (LiveTex's comma-separated
/// list of fields to return), verbatim; unset: LiveTex's default fields.
const FIELDS_SETTINGS: [(Table, &str); 2] = [
    (Table::Chats, "chats_fields"),
    (Table::Leads, "leads_fields"),
];
/// The token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/token";

/// The longest a cached token is renewed ahead of its expiry.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);

/// The two lists, in the order a sync goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Table {
    Chats,
    Leads,
}

impl Table {
    const ALL: [Table; 2] = [Table::Chats, Table::Leads];

    fn path(self) -> &'static str {
        match self {
            Table::Chats => "/chats/list",
            Table::Leads => "/leads/list",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Chats => "chats",
            Table::Leads => "leads",
        }
    }

    fn events(self, row: &Value) -> Result<Vec<IncomingEvent>, Error> {
        match self {
            Table::Chats => chat_to_events(row),
            Table::Leads => lead_to_events(row),
        }
    }

    fn next(self) -> Option<Table> {
        match self {
            Table::Chats => Some(Table::Leads),
            Table::Leads => None,
        }
    }
}

/// Where one list's sync stands: the `created_at` of the last record read and how many
/// records with exactly that `created_at` were read (the `offset` to ask for next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TablePosition {
    /// RFC 3339; `None`: from the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// Records at `from` already read.
    #[serde(default)]
    skip: u64,
    /// RFC 3339: the `created_at` of the earliest chat read in this pass that was still open
    /// (`is_closed` not true). When the list is finished the next pass starts there again, so
    /// the chat is pulled until it has closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_from: Option<String>,
}

/// How far back (before the newest chat read) an open chat still makes the next pass start
/// again at it: three days. A chat open longer than that (abandoned in the operator's panel)
/// is left to the webhook.
const REOPEN_WINDOW_MILLIS: i64 = 3 * 24 * 3600 * 1000;

impl TablePosition {
    /// Where the next pass starts once this list is finished: the earliest chat still open
    /// when read (if it is within [`REOPEN_WINDOW_MILLIS`] of the newest record), else the
    /// last second read. Either way from its first record (`skip` 0), so a record created in
    /// that second after this read is not skipped.
    fn finish(&mut self) {
        self.skip = 0;
        let Some(open) = self.open_from.take() else {
            return;
        };
        let newest = self.from.as_deref().and_then(Timestamp::parse_rfc3339);
        let open_at = Timestamp::parse_rfc3339(&open);
        if let (Some(newest), Some(open_at)) = (newest, open_at)
            && newest.as_millis() - open_at.as_millis() <= REOPEN_WINDOW_MILLIS
        {
            self.from = Some(open);
        }
    }
}

/// The version of the cursor's JSON this build writes and reads.
const CURSOR_VERSION: u32 = 2;

/// The sync cursor, saved as JSON:
/// `{"v":2,"table":"chats","chats":{"from":"…","skip":3},"leads":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    v: u32,
    /// The list the next page comes from.
    table: Table,
    #[serde(default)]
    chats: TablePosition,
    #[serde(default)]
    leads: TablePosition,
}

impl Cursor {
    fn start(since: Option<Timestamp>) -> Cursor {
        let position = TablePosition {
            from: since.map(Timestamp::to_rfc3339),
            skip: 0,
            open_from: None,
        };
        Cursor {
            v: CURSOR_VERSION,
            table: Table::Chats,
            chats: position.clone(),
            leads: position,
        }
    }

    fn parse(text: &str, connection: &ConnectionId) -> Result<Cursor, Error> {
        let cursor: Cursor = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "the saved LiveTex sync cursor of connection {connection} is unreadable ({e}): \
                 restart the sync from scratch"
            ))
        })?;
        if cursor.v != CURSOR_VERSION {
            return Err(Error::invalid(format!(
                "the saved LiveTex sync cursor of connection {connection} has version {}, \
                 this build reads version {CURSOR_VERSION}: restart the sync from scratch",
                cursor.v
            )));
        }
        for table in Table::ALL {
            let position = cursor.position(table);
            for from in position.from.iter().chain(position.open_from.iter()) {
                if Timestamp::parse_rfc3339(from).is_none() {
                    return Err(Error::invalid(format!(
                        "the saved LiveTex sync cursor of connection {connection} has a bad \
                         time `{from}` for {}: restart the sync from scratch",
                        table.name()
                    )));
                }
            }
        }
        Ok(cursor)
    }

    fn position(&self, table: Table) -> &TablePosition {
        match table {
            Table::Chats => &self.chats,
            Table::Leads => &self.leads,
        }
    }

    fn position_mut(&mut self, table: Table) -> &mut TablePosition {
        match table {
            Table::Chats => &mut self.chats,
            Table::Leads => &mut self.leads,
        }
    }

    fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One page of a list as the API answers it: `{"results": [...], "total": N}`. Anything else
/// is an error, never an empty last page.
#[derive(Debug)]
struct ListPage {
    results: Vec<Value>,
    total: u64,
}

impl ListPage {
    fn read(body: &Value, table: Table, connection: &ConnectionId) -> Result<ListPage, Error> {
        let results = body.get("results").and_then(Value::as_array);
        let total = body.get("total").and_then(Value::as_u64);
        match (results, total) {
            (Some(results), Some(total)) => Ok(ListPage {
                results: results.clone(),
                total,
            }),
            _ => Err(Error::unavailable(format!(
                "LiveTex answered {} of connection {connection} without a `results` array and a \
                 `total` count ({}): the sync stops here rather than take it for an empty page; \
                 check that `base_url` points at the LiveTex Web API",
                table.path(),
                describe(body)
            ))),
        }
    }
}

/// What an unexpected answer looked like, without its values (they may hold personal data).
fn describe(body: &Value) -> String {
    match body {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
            format!("an object with the keys {keys:?}")
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Null => "null".to_owned(),
        _ => "a scalar".to_owned(),
    }
}

/// The token endpoint's success answer: `{"results": {...}}` as the Web API sends it, or the
/// bare RFC 6749 object.
#[derive(Deserialize)]
struct TokenEnvelope {
    #[serde(default)]
    results: Option<TokenAnswer>,
    #[serde(flatten)]
    bare: Option<TokenAnswer>,
}

/// The token itself.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token and when to renew it.
struct Token {
    access: Secret,
    renew_at: Option<Instant>,
}

/// A LiveTex connection's connector: one [`VendorClient`] (rate limit, retries, deadline) and
/// one cached OAuth2 token.
pub struct LiveTexConnector {
    connection: ConnectionId,
    login: String,
    password: Secret,
    page_size: usize,
    fields: Vec<(Table, String)>,
    client: VendorClient,
    token: Mutex<Option<Token>>,
}

impl fmt::Debug for LiveTexConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTexConnector")
            .field("connection", &self.connection)
            .field("login", &self.login)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// The plugin's [`switchboard_core::ConnectorFactory`].
///
/// # Errors
/// As [`LiveTexConnector::new`], and for a setting or secret not in [`crate::Settings`] or
/// [`crate::Secrets`].
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
    crate::keys::check(config)?;
    Ok(Box::new(LiveTexConnector::new(config)?))
}

impl LiveTexConnector {
    /// The connector of a connection: the setting `login`, the secret `password`, and
    /// optionally `base_url`, `page_size` (1 to 100, default 50), `chats_fields`,
    /// `leads_fields`, `request_timeout_ms`, `deadline_ms`, `max_attempts` and `rate_limit`
    /// (default [`DEFAULT_RATE_LIMIT`]).
    ///
    /// # Errors
    /// [`switchboard_core::ErrorCode::InvalidArgument`] naming the connection and what to set
    /// when `login` or `password` is missing or a setting is malformed.
    pub fn new(config: &ConnectionConfig) -> Result<Self, Error> {
        // Both missing: one error naming both, not one at a time.
        let (login, password) = match (
            config.required_setting(LOGIN_SETTING),
            config.required_secret(PASSWORD_SECRET),
        ) {
            (Ok(login), Ok(password)) => (login.to_owned(), password.clone()),
            (Err(login), Err(password)) => {
                return Err(Error::invalid(format!(
                    "{}; and {}",
                    login.message, password.message
                )));
            }
            (Err(error), _) | (_, Err(error)) => return Err(error),
        };
        let page_size = match config.setting(PAGE_SIZE_SETTING) {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(Error::invalid(format!(
                        "connection {} (livetex): `{PAGE_SIZE_SETTING}` is `{text}`: \
                         set an integer from 1 to {MAX_PAGE_SIZE}",
                        config.id
                    )));
                }
            },
        };
        let fields = FIELDS_SETTINGS
            .iter()
            .filter_map(|(table, key)| {
                config
                    .setting(key)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*table, v.to_owned()))
            })
            .collect();
        let settings =
            ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)?;
        let client = VendorClient::new(config, settings)?;
        Ok(LiveTexConnector {
            connection: config.id.clone(),
            login,
            password,
            page_size,
            fields,
            client,
            token: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, else a new login.
    async fn access_token(&self) -> Result<Secret, Error> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.access.clone());
        }
        let token = self.login().await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// Logs in again after the API refused `rejected`, unless another call did meanwhile.
    async fn renew_after_rejection(&self, rejected: &Secret) -> Result<Secret, Error> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.access != *rejected
        {
            return Ok(token.access.clone());
        }
        let token = self.login().await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// The password grant: `POST /oauth2/token` with the form
    /// `grant_type=password&username=<login>&password=<password>`. A refusal (400 or 401) is a
    /// failed precondition naming the login; the password is never in an error or a log.
    async fn login(&self) -> Result<Token, Error> {
        let form = vec![
            ("grant_type", "password".to_owned()),
            ("username", self.login.clone()),
            ("password", self.password.expose().to_owned()),
        ];
        // Logging in again only issues another token: safe to retry after a timeout or a 5xx.
        let response = self
            .client
            .request(Method::POST, TOKEN_PATH)
            .form(&form)
            .idempotent()
            .send_raw()
            .await?;
        let outcome = match response.status {
            200..=299 => "granted",
            400 | 401 | 403 => "refused",
            _ => "failed",
        };
        metrics::counter!(
            "switchboard_livetex_token_requests_total",
            "connection" => self.connection.to_string(),
            "grant" => "password",
            "outcome" => outcome,
        )
        .increment(1);
        match response.status {
            200..=299 => {}
            400 | 401 | 403 => {
                tracing::warn!(
                    connection = %self.connection,
                    status = response.status,
                    "livetex refused the login"
                );
                return Err(Error::failed_precondition(format!(
                    "LiveTex refused the login `{}` and password of connection {} (status {}): \
                     check the `{LOGIN_SETTING}` setting and the `{PASSWORD_SECRET}` secret (the \
                     e-mail and password of the LiveTex personal account)",
                    self.login, self.connection, response.status
                )));
            }
            // The answer may echo the form, password included.
            _ => return Err(self.client.error_for(&response, &[&self.password])),
        }
        let envelope: TokenEnvelope = serde_json::from_slice(&response.body).map_err(|_| {
            Error::unavailable(format!(
                "LiveTex answered the login of connection {} without a token \
                 (`{{\"results\": {{\"access_token\": ...}}}}` expected): check that `base_url` \
                 points at the LiveTex Web API",
                self.connection
            ))
        })?;
        let Some(answer) = envelope.results.or(envelope.bare) else {
            return Err(Error::unavailable(format!(
                "LiveTex answered the login of connection {} without an access token: check \
                 that `base_url` points at the LiveTex Web API",
                self.connection
            )));
        };
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(Error::unavailable(format!(
                "LiveTex issued a `{kind}` token to connection {}, not a bearer token: \
                     check that `base_url` points at the LiveTex Web API",
                self.connection
            )));
        }
        if answer.access_token.is_empty() {
            return Err(Error::unavailable(format!(
                "LiveTex issued an empty access token to connection {}: retry later",
                self.connection
            )));
        }
        let renew_at = answer.expires_in.map(|secs| {
            let lifetime = Duration::from_secs(secs);
            let margin = (lifetime / 5).min(MAX_RENEW_MARGIN);
            Instant::now() + (lifetime - margin)
        });
        tracing::debug!(connection = %self.connection, "livetex token issued");
        Ok(Token {
            access: Secret::new(answer.access_token),
            renew_at,
        })
    }

    /// `GET path?query` with the bearer token; on `401` logs in again and tries once more.
    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        let token = self.access_token().await?;
        let response = self.get(path, query, &token).await?;
        let (response, token) = if response.status == 401 {
            tracing::info!(connection = %self.connection, path, "livetex token rejected; logging in again");
            let token = self.renew_after_rejection(&token).await?;
            (self.get(path, query, &token).await?, token)
        } else {
            (response, token)
        };
        match response.status {
            200..=299 => serde_json::from_slice(&response.body).map_err(|_| {
                Error::unavailable(format!(
                    "LiveTex answered {path} of connection {} with a body that is not JSON: \
                     check that `base_url` points at the LiveTex Web API",
                    self.connection
                ))
            }),
            401 | 403 => Err(Error::failed_precondition(format!(
                "LiveTex refused the access token of connection {} even after a new login \
                 (status {}): check that the account `{}` may use the Web API",
                self.connection, response.status, self.login
            ))),
            _ => Err(self.client.error_for(&response, &[&token, &self.password])),
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        token: &Secret,
    ) -> Result<VendorResponse, Error> {
        self.client
            .request(Method::GET, path)
            .query(query)
            .bearer(token)
            .send_raw()
            .await
    }

    /// One page of `table` from `position` (`q=created_at>=<from>`, oldest first,
    /// `offset=<skip>`); updates `position` to just after it. Returns the events, whether the
    /// list has nothing more, and how many records came.
    async fn table_page(
        &self,
        table: Table,
        position: &mut TablePosition,
    ) -> Result<(Vec<IncomingEvent>, bool, u64), Error> {
        let offset = position.skip;
        let mut query = vec![
            ("offset", offset.to_string()),
            ("limit", self.page_size.to_string()),
            ("sort", "created_at:a".to_owned()),
        ];
        if let Some(from) = position.from.as_deref().and_then(Timestamp::parse_rfc3339) {
            query.push(("q", format!("created_at>={}", msk_text(from))));
        }
        if let Some((_, fields)) = self.fields.iter().find(|(t, _)| *t == table) {
            query.push(("fields", fields.clone()));
        }
        let body = self.get_json(table.path(), &query).await?;
        let page = ListPage::read(&body, table, &self.connection)?;
        let fetched = u64::try_from(page.results.len()).unwrap_or(u64::MAX);
        let mut events = Vec::new();
        for row in &page.results {
            let created_at = created_at(table, row)?;
            let created_text = created_at.to_rfc3339();
            if position.from.as_deref() == Some(created_text.as_str()) {
                position.skip += 1;
            } else {
                position.from = Some(created_text);
                position.skip = 1;
            }
            let still_open = table == Table::Chats
                && row.get("is_closed").and_then(Value::as_bool) != Some(true);
            if still_open
                && position
                    .open_from
                    .as_deref()
                    .and_then(Timestamp::parse_rfc3339)
                    .is_none_or(|earliest| created_at < earliest)
            {
                position.open_from = Some(created_at.to_rfc3339());
            }
            match table.events(row) {
                Ok(mut row_events) => events.append(&mut row_events),
                Err(error) => {
                    let id = row.get("id").map(Value::to_string);
                    tracing::warn!(
                        connection = %self.connection,
                        table = table.name(),
                        id = id.as_deref().unwrap_or(""),
                        %error,
                        "livetex record skipped: it does not map to events"
                    );
                    metrics::counter!(
                        "switchboard_livetex_records_skipped_total",
                        "connection" => self.connection.to_string(),
                        "table" => table.name(),
                    )
                    .increment(1);
                }
            }
        }
        let finished =
            page.results.len() < self.page_size || offset.saturating_add(fetched) >= page.total;
        Ok((events, finished, fetched))
    }
}

/// A record's `created_at`, which the cursor is made of.
fn created_at(table: Table, row: &Value) -> Result<Timestamp, Error> {
    let fields = Fields::of(row, table.name())?;
    fields.required_time("created_at").map_err(|e| {
        Error::unavailable(format!(
            "LiveTex sent a {} record without a usable `created_at` ({}): the sync cannot \
             keep its place without it; check that `base_url` points at the LiveTex Web API",
            table.name(),
            e.message
        ))
    })
}

#[async_trait]
impl Connector for LiveTexConnector {
    /// Pages through chats, then leads, each by `created_at` (see the README's "Cursor"). A
    /// page with no records moves on to the next list within the same call; `done` once the
    /// leads have nothing more. The cursor then points at the last second seen in each list
    /// (position 0), or for chats at the earliest chat still open when read, so the next run
    /// re-reads from there (appending nothing for what did not change) and everything after.
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        since: Option<Timestamp>,
    ) -> Result<SyncPage, Error> {
        let mut cursor = match cursor.filter(|c| !c.is_empty()) {
            Some(text) => Cursor::parse(text, &self.connection)?,
            None => Cursor::start(since),
        };
        loop {
            let table = cursor.table;
            let mut position = cursor.position(table).clone();
            let (events, finished, fetched) = self.table_page(table, &mut position).await?;
            tracing::debug!(
                connection = %self.connection,
                table = table.name(),
                fetched,
                finished,
                "livetex page pulled"
            );
            if finished {
                position.finish();
            }
            *cursor.position_mut(table) = position;
            let done = match (finished, table.next()) {
                (false, _) => false,
                (true, Some(next)) => {
                    cursor.table = next;
                    if fetched == 0 {
                        continue;
                    }
                    false
                }
                (true, None) => {
                    cursor.table = Table::ALL[0];
                    true
                }
            };
            return Ok(SyncPage {
                events,
                next_cursor: cursor.to_json(),
                done,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(from: &str, open_from: Option<&str>) -> TablePosition {
        TablePosition {
            from: Some(from.to_owned()),
            skip: 7,
            open_from: open_from.map(str::to_owned),
        }
    }

    #[test]
    fn a_finished_list_restarts_at_an_open_chat_within_three_days_only() {
        let mut none_open = position("2024-03-10T00:00:00.000Z", None);
        none_open.finish();
        assert_eq!(
            none_open,
            position("2024-03-10T00:00:00.000Z", None).with_skip(0)
        );

        let mut recent = position("2024-03-10T00:00:00.000Z", Some("2024-03-07T00:00:00.000Z"));
        recent.finish();
        assert_eq!(
            recent,
            position("2024-03-07T00:00:00.000Z", None).with_skip(0)
        );

        let mut abandoned = position("2024-03-10T00:00:00.000Z", Some("2024-03-06T23:59:59.000Z"));
        abandoned.finish();
        assert_eq!(
            abandoned,
            position("2024-03-10T00:00:00.000Z", None).with_skip(0)
        );
    }

    impl TablePosition {
        fn with_skip(mut self, skip: u64) -> Self {
            self.skip = skip;
            self
        }
    }
}
