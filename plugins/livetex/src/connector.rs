//! The LiveTex pull connector: logs in with the account's login and password (OAuth2 password
//! grant), then pages through the dialogs, leads and conversations tables by update time.
//!
//! The API paths and parameters are assumptions (the seed gives only the tables' columns);
//! `README.md` lists them, and the fake in `switchboard_testkit::fake::livetex` implements
//! exactly them.

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

use crate::fields::Fields;
use crate::{conversation_to_events, dialog_to_events, lead_to_events};

/// Where the connector calls when the connection sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.livetex.ru";
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
/// The connection setting for records per page (1 to [`MAX_PAGE_SIZE`]).
pub const PAGE_SIZE_SETTING: &str = "page_size";
/// The largest page the API serves (and the default page size).
pub const MAX_PAGE_SIZE: usize = 100;
/// The token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/token";

/// The longest a cached token is renewed ahead of its expiry.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);

/// The three tables, in the order a sync goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Table {
    Conversations,
    Dialogs,
    Leads,
}

impl Table {
    const ALL: [Table; 3] = [Table::Conversations, Table::Dialogs, Table::Leads];

    fn path(self) -> &'static str {
        match self {
            Table::Conversations => "/v2/conversations",
            Table::Dialogs => "/v2/dialogs",
            Table::Leads => "/v2/leads",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Conversations => "conversations",
            Table::Dialogs => "dialogs",
            Table::Leads => "leads",
        }
    }

    fn id_column(self) -> &'static str {
        match self {
            Table::Conversations => "conversation_id",
            Table::Dialogs => "chat_id",
            Table::Leads => "lead_id",
        }
    }

    fn events(self, row: &Value) -> Result<Vec<IncomingEvent>, Error> {
        match self {
            Table::Conversations => conversation_to_events(row),
            Table::Dialogs => dialog_to_events(row),
            Table::Leads => lead_to_events(row),
        }
    }

    fn next(self) -> Option<Table> {
        match self {
            Table::Conversations => Some(Table::Dialogs),
            Table::Dialogs => Some(Table::Leads),
            Table::Leads => None,
        }
    }
}

/// Where one table's sync stands: the `updated_at` of the last record read and how many
/// records with exactly that `updated_at` were read (the `offset` to ask for next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TablePosition {
    /// RFC 3339; `None`: from the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// Records at `from` already read.
    #[serde(default)]
    skip: u64,
}

/// The sync cursor, saved as JSON:
/// `{"v":1,"table":"dialogs","conversations":{"from":"…","skip":0},"dialogs":{…},"leads":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    v: u32,
    /// The table the next page comes from.
    table: Table,
    #[serde(default)]
    conversations: TablePosition,
    #[serde(default)]
    dialogs: TablePosition,
    #[serde(default)]
    leads: TablePosition,
}

impl Cursor {
    fn start(since: Option<Timestamp>) -> Cursor {
        let position = TablePosition {
            from: since.map(Timestamp::to_rfc3339),
            skip: 0,
        };
        Cursor {
            v: 1,
            table: Table::Conversations,
            conversations: position.clone(),
            dialogs: position.clone(),
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
        if cursor.v != 1 {
            return Err(Error::invalid(format!(
                "the saved LiveTex sync cursor of connection {connection} has version {}, \
                 this build reads version 1: restart the sync from scratch",
                cursor.v
            )));
        }
        for table in Table::ALL {
            if let Some(from) = &cursor.position(table).from {
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
            Table::Conversations => &self.conversations,
            Table::Dialogs => &self.dialogs,
            Table::Leads => &self.leads,
        }
    }

    fn position_mut(&mut self, table: Table) -> &mut TablePosition {
        match table {
            Table::Conversations => &mut self.conversations,
            Table::Dialogs => &mut self.dialogs,
            Table::Leads => &mut self.leads,
        }
    }

    fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One page of a table as the API answers it.
#[derive(Debug, Deserialize)]
struct ListPage {
    #[serde(default)]
    items: Vec<Value>,
}

/// The token endpoint's success answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// An OAuth2 error answer (`{"error": "invalid_grant", "error_description": "…"}`).
#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: Option<String>,
}

/// A token and when to renew it.
struct Token {
    access: Secret,
    refresh: Option<Secret>,
    renew_at: Option<Instant>,
}

/// Which grant a token request uses.
enum Grant<'a> {
    Password,
    Refresh(&'a Secret),
}

impl Grant<'_> {
    fn name(&self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// A LiveTex connection's connector: one [`VendorClient`] (rate limit, retries, deadline) and
/// one cached OAuth2 token.
pub struct LiveTexConnector {
    connection: ConnectionId,
    login: String,
    password: Secret,
    page_size: usize,
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
/// As [`LiveTexConnector::new`].
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
    Ok(Box::new(LiveTexConnector::new(config)?))
}

impl LiveTexConnector {
    /// The connector of a connection: the setting `login`, the secret `password`, and
    /// optionally `base_url`, `page_size` (1 to 100, default 100), `request_timeout_ms`,
    /// `deadline_ms`, `max_attempts` and `rate_limit` (default [`DEFAULT_RATE_LIMIT`]).
    ///
    /// # Errors
    /// [`switchboard_core::ErrorCode::InvalidArgument`] naming the connection and what to set when `login` or
    /// `password` is missing or a setting is malformed.
    pub fn new(config: &ConnectionConfig) -> Result<Self, Error> {
        let login = config.required_setting(LOGIN_SETTING)?.to_owned();
        let password = config.required_secret(PASSWORD_SECRET)?.clone();
        let page_size = match config.setting(PAGE_SIZE_SETTING) {
            None => MAX_PAGE_SIZE,
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
        let settings =
            ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)?;
        let client = VendorClient::new(config, settings)?;
        Ok(LiveTexConnector {
            connection: config.id.clone(),
            login,
            password,
            page_size,
            client,
            token: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, else a renewed one (refresh grant when the cached
    /// token is near its expiry, else the password grant).
    async fn access_token(&self) -> Result<Secret, Error> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let fresh = token.renew_at.is_none_or(|at| Instant::now() < at);
            if fresh {
                return Ok(token.access.clone());
            }
        }
        let refresh = cached.as_ref().and_then(|t| t.refresh.clone());
        let token = self.obtain(refresh.as_ref()).await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// Renews the token after the API refused `rejected` as `invalid_token`, unless another
    /// call renewed it meanwhile.
    async fn renew_after_rejection(&self, rejected: &Secret) -> Result<Secret, Error> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if token.access != *rejected {
                return Ok(token.access.clone());
            }
        }
        let refresh = cached.as_ref().and_then(|t| t.refresh.clone());
        let token = self.obtain(refresh.as_ref()).await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// The refresh grant if there is a refresh token and LiveTex accepts it, else the password
    /// grant.
    async fn obtain(&self, refresh: Option<&Secret>) -> Result<Token, Error> {
        if let Some(refresh) = refresh {
            match self.grant(Grant::Refresh(refresh)).await? {
                Some(token) => return Ok(token),
                None => tracing::info!(
                    connection = %self.connection,
                    "livetex refused the refresh token; logging in with the password"
                ),
            }
        }
        self.grant(Grant::Password).await?.ok_or_else(|| {
            Error::failed_precondition(format!(
                "LiveTex refused the login `{}` and password of connection {}: check the \
                 `{LOGIN_SETTING}` setting and the `{PASSWORD_SECRET}` secret",
                self.login, self.connection
            ))
        })
    }

    /// One token request. `Ok(None)`: LiveTex refused the grant (`invalid_grant`, or a 400/401
    /// to the token request).
    async fn grant(&self, grant: Grant<'_>) -> Result<Option<Token>, Error> {
        let (form, secret) = match &grant {
            Grant::Password => (
                vec![
                    ("grant_type", "password".to_owned()),
                    ("username", self.login.clone()),
                    ("password", self.password.expose().to_owned()),
                ],
                &self.password,
            ),
            Grant::Refresh(refresh) => (
                vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.expose().to_owned()),
                ],
                *refresh,
            ),
        };
        let mut request = self.client.request(Method::POST, TOKEN_PATH).form(&form);
        if let Grant::Password = grant {
            // Logging in again only issues another token: safe to retry after a timeout or a
            // 5xx. A refresh token is single-use, so once LiveTex may have received it, it is
            // not sent again (the next sync finds it refused and logs in with the password).
            request = request.idempotent();
        }
        let response = request.send_raw().await?;
        let outcome = match response.status {
            200..=299 => "granted",
            400 | 401 => "refused",
            _ => "failed",
        };
        metrics::counter!(
            "switchboard_livetex_token_requests_total",
            "connection" => self.connection.to_string(),
            "grant" => grant.name(),
            "outcome" => outcome,
        )
        .increment(1);
        match response.status {
            200..=299 => {}
            400 | 401 => {
                let error: OAuthError = serde_json::from_slice(&response.body).unwrap_or_default();
                tracing::warn!(
                    connection = %self.connection,
                    grant = grant.name(),
                    status = response.status,
                    error = error.error.as_deref().unwrap_or(""),
                    "livetex refused a token request"
                );
                return Ok(None);
            }
            // The answer may echo the form: the password or the refresh token.
            _ => return Err(self.client.error_for(&response, &[secret])),
        }
        let answer: TokenAnswer = response.json()?;
        if let Some(kind) = &answer.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(Error::unavailable(format!(
                    "LiveTex issued a `{kind}` token to connection {}, not a bearer token: \
                     check that `base_url` points at the LiveTex API",
                    self.connection
                )));
            }
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
        tracing::debug!(connection = %self.connection, grant = grant.name(), "livetex token issued");
        Ok(Some(Token {
            access: Secret::new(answer.access_token),
            refresh: answer
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            renew_at,
        }))
    }

    /// `GET path?query` with the bearer token; on `401 invalid_token` renews the token and
    /// tries once more.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let token = self.access_token().await?;
        let response = self.get(path, query, &token).await?;
        let (response, token) = if is_invalid_token(&response) {
            tracing::info!(connection = %self.connection, path, "livetex token rejected; renewing it");
            let token = self.renew_after_rejection(&token).await?;
            (self.get(path, query, &token).await?, token)
        } else {
            (response, token)
        };
        match response.status {
            200..=299 => response.json(),
            401 | 403 => Err(Error::failed_precondition(format!(
                "LiveTex refused the access token of connection {} even after a new login \
                 (status {}): check that the account `{}` may use the API",
                self.connection, response.status, self.login
            ))),
            _ => Err(self.client.error_for(&response, &[&token])),
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

    /// One page of `table` from `position`; updates `position` to just after it. Returns the
    /// events and whether the table has nothing more.
    async fn table_page(
        &self,
        table: Table,
        position: &mut TablePosition,
    ) -> Result<(Vec<IncomingEvent>, bool, u64), Error> {
        let mut query = vec![
            ("offset", position.skip.to_string()),
            ("limit", self.page_size.to_string()),
        ];
        if let Some(from) = &position.from {
            query.insert(0, ("updated_from", from.clone()));
        }
        let page: ListPage = self.get_json(table.path(), &query).await?;
        let fetched = u64::try_from(page.items.len()).unwrap_or(u64::MAX);
        let mut events = Vec::new();
        for row in &page.items {
            let updated_at = updated_at(table, row)?;
            let updated_text = updated_at.to_rfc3339();
            if position.from.as_deref() == Some(updated_text.as_str()) {
                position.skip += 1;
            } else {
                position.from = Some(updated_text);
                position.skip = 1;
            }
            match table.events(row) {
                Ok(mut row_events) => events.append(&mut row_events),
                Err(error) => {
                    let id = row.get(table.id_column()).and_then(Value::as_str);
                    tracing::warn!(
                        connection = %self.connection,
                        table = table.name(),
                        id = id.unwrap_or(""),
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
        let finished = page.items.len() < self.page_size;
        Ok((events, finished, fetched))
    }
}

/// Whether the API refused the bearer token (`401` with `invalid_token` in the body or the
/// `WWW-Authenticate` challenge).
fn is_invalid_token(response: &VendorResponse) -> bool {
    if response.status != 401 {
        return false;
    }
    let in_body = serde_json::from_slice::<OAuthError>(&response.body)
        .ok()
        .and_then(|e| e.error)
        .is_some_and(|e| e == "invalid_token");
    let in_challenge = response
        .headers
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("invalid_token"));
    in_body || in_challenge
}

/// A row's `updated_at`, which the cursor is made of.
fn updated_at(table: Table, row: &Value) -> Result<Timestamp, Error> {
    let fields = Fields::of(row, table.name())?;
    fields.required_time("updated_at").map_err(|e| {
        Error::unavailable(format!(
            "LiveTex sent a {} record without a usable `updated_at` ({}): the sync cannot \
             keep its place without it; check that `base_url` points at the LiveTex API",
            table.name(),
            e.message
        ))
    })
}

#[async_trait]
impl Connector for LiveTexConnector {
    /// Pages through conversations, then dialogs, then leads, each by `updated_at` (see the
    /// README's "Cursor"). A page with no records moves on to the next table within the same
    /// call; `done` once the leads table has nothing more. The cursor then points at the last
    /// second seen in each table (position 0), so the next run re-reads that second (appending
    /// nothing) and everything after it.
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
                // Re-read the last second next time: a record written in that second after
                // this read would otherwise be skipped by the offset.
                position.skip = 0;
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
