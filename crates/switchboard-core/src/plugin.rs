//! The plugin contract: [`WebhookSource`] for pushed data, [`Connector`] for pulled data and
//! vendor-side tickets and agents, and the [`Plugin`] descriptor each plugin crate submits to
//! `inventory`.

use std::fmt;

use async_trait::async_trait;

use crate::{
    Agent, ConnectionConfig, Error, ErrorCode, IncomingEvent, Participant, Ticket, TicketStatus,
    Timestamp,
};

/// A webhook request as the HTTP front door received it. Header names are lowercase.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The connection the request was addressed to.
    pub connection: &'a ConnectionConfig,
    /// Headers, names lowercased.
    pub headers: &'a [(String, String)],
    /// Query parameters, percent-decoded, in order.
    pub query: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
    /// When it arrived.
    pub received_at: Timestamp,
}

impl<'a> WebhookRequest<'a> {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name (exact case).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What happened to a webhook's events once stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Events appended to the log.
    pub appended: usize,
    /// Events already known by their dedup key (a redelivery), appended nothing.
    pub duplicates: usize,
}

/// The HTTP reply to send to the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl WebhookReply {
    /// Switchboard's default reply: `{"ok":true,"appended":N,"duplicates":M}` on success,
    /// `{"ok":false,"error":CODE,"message":TEXT}` with the code's HTTP status on failure.
    pub fn default_for(outcome: Result<&IngestSummary, &Error>) -> Self {
        let (status, body) = match outcome {
            Ok(summary) => (
                200,
                serde_json::json!({
                    "ok": true,
                    "appended": summary.appended,
                    "duplicates": summary.duplicates,
                }),
            ),
            Err(error) => (
                error.code.http_status(),
                serde_json::json!({
                    "ok": false,
                    "error": error.code.as_str(),
                    "message": error.message,
                }),
            ),
        };
        WebhookReply {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }
}

/// `body`, a JSON object, without its top-level members named in `fields` (compared after
/// unescaping, so `"secret\u005fkey"` is `secret_key`; every member of a repeated name goes).
/// The members kept are copied as they came, in their order: their values byte for byte (numbers
/// keep their digits), their names re-escaped only where JSON needs it; only the whitespace
/// between top-level members is dropped. `None` when `body` is not a JSON object.
pub fn json_without_fields(body: &[u8], fields: &[&str]) -> Option<String> {
    let Members(members) = serde_json::from_slice(body).ok()?;
    let mut out = String::with_capacity(body.len());
    out.push('{');
    for (name, value) in members
        .iter()
        .filter(|(name, _)| !fields.contains(&name.as_str()))
    {
        if out.len() > 1 {
            out.push(',');
        }
        // A name serializes as a JSON string, always.
        out.push_str(&serde_json::to_string(name).ok()?);
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Some(out)
}

/// Whether `body` may have a JSON member named one of `fields`: false only when no field's name
/// appears in it as written and it has no `\u` escape (the only way to write a name's letters
/// other than as themselves). A cheap check of the bytes, so that a body without the fields is
/// not parsed to remove nothing.
pub fn may_name_fields(body: &[u8], fields: &[&str]) -> bool {
    memchr::memmem::find(body, br"\u").is_some()
        || fields
            .iter()
            .any(|field| memchr::memmem::find(body, field.as_bytes()).is_some())
}

/// A JSON object's members in their order, repeats included, each value as its raw text.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> serde::de::Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Members(members))
    }
}

/// Turns a vendor's webhook requests into events. Built once per connection by
/// [`Plugin::webhook`]; called for every request to `/webhooks/{connection_id}`.
///
/// Both methods are pure (no I/O) and must never panic, whatever the bytes: the conformance kit
/// feeds them truncated, mistyped, deeply nested and non-UTF-8 bodies.
pub trait WebhookSource: Send + Sync + fmt::Debug {
    /// Checks that the request comes from the vendor (secret, signature, app id). Called before
    /// [`WebhookSource::parse`] unless the connection has verification off. A failure is
    /// answered 401 and nothing is stored.
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error>;

    /// Parses the body into events. A malformed body is an [`ErrorCode::InvalidArgument`]
    /// error with a reason, answered 400; nothing is stored. A well-formed event the plugin
    /// does not model is returned as an [`crate::EventKind::VendorEvent`], not refused.
    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error>;

    /// The raw body as it is kept in the log (and served as `Event.raw`). Called only for a
    /// verified, parsed request. A plugin whose vendor puts a credential in the body (a
    /// `secret_key`, a webhook key) MUST remove it here; the default keeps the body as is
    /// (lossy UTF-8).
    fn raw_for_storage(&self, request: &WebhookRequest<'_>) -> String {
        String::from_utf8_lossy(request.body).into_owned()
    }

    /// Removes the top-level JSON fields `fields` from the body, for
    /// [`WebhookSource::raw_for_storage`] (see [`json_without_fields`]). A body that is not a
    /// JSON object, or that cannot name any of the fields (see [`may_name_fields`]), is kept
    /// as is.
    fn raw_without_fields(&self, request: &WebhookRequest<'_>, fields: &[&str]) -> String
    where
        Self: Sized,
    {
        if !may_name_fields(request.body, fields) {
            return String::from_utf8_lossy(request.body).into_owned();
        }
        json_without_fields(request.body, fields)
            .unwrap_or_else(|| String::from_utf8_lossy(request.body).into_owned())
    }

    /// Why this connection's verification rests on public values alone (values anyone can
    /// learn, such as an app id shipped in every client), if it does: the server then warns
    /// at start-up and shows it in `ListConnections`. `None` (the default) when a secret is
    /// checked.
    fn public_verification_only(&self, connection: &ConnectionConfig) -> Option<String> {
        let _ = connection;
        None
    }

    /// The reply the vendor expects, for success or failure. Defaults to
    /// [`WebhookReply::default_for`].
    fn reply(&self, outcome: Result<&IngestSummary, &Error>) -> WebhookReply {
        WebhookReply::default_for(outcome)
    }
}

/// One page pulled from a vendor's API by [`Connector::sync_page`].
#[derive(Debug, Clone, Default)]
pub struct SyncPage {
    /// The events of the page.
    pub events: Vec<IncomingEvent>,
    /// The cursor to resume from after this page; saved in the same store transaction as the
    /// page's events.
    pub next_cursor: String,
    /// Whether the vendor has nothing more right now.
    pub done: bool,
}

/// What a new ticket needs (LiveChat's create-ticket parameters, generalized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTicket {
    /// The first message.
    pub message: String,
    /// The requester (e-mail required, name optional).
    pub requester: Participant,
    /// Short description.
    pub subject: String,
    /// The assignee's id.
    pub assignee_id: Option<String>,
    /// Source type (`chat-window`, `mail`...).
    pub source_kind: Option<String>,
    /// Source URL, for a chat window.
    pub source_url: Option<String>,
}

/// A change to a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketChange {
    /// A message to add.
    pub message: Option<String>,
    /// New subject.
    pub subject: Option<String>,
    /// New status.
    pub status: Option<TicketStatus>,
    /// New assignee id.
    pub assignee_id: Option<String>,
    /// New requester e-mail and name.
    pub requester: Option<Participant>,
    /// Tags to set (replacing the current ones).
    pub tags: Option<Vec<String>>,
}

/// Filters for listing tickets at a vendor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketQuery {
    /// Only tickets in this status.
    pub status: Option<TicketStatus>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_to: Option<Timestamp>,
    /// The vendor's page token.
    pub page_token: Option<String>,
}

/// One page of tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketPage {
    /// Tickets.
    pub tickets: Vec<Ticket>,
    /// The token of the next page, if any.
    pub next_page_token: Option<String>,
}

/// What a new agent needs (LiveChat's create-agent parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAgent {
    /// Login e-mail.
    pub login: String,
    /// Display name.
    pub name: String,
    /// `accepting chats` or `not accepting chats`.
    pub login_status: Option<String>,
    /// Job title; the vendor defaults it.
    pub job_title: Option<String>,
    /// `owner`, `administrator` or `normal`.
    pub permission: Option<String>,
    /// Password, at least 5 characters.
    pub password: Option<String>,
    /// Limit of concurrent chats.
    pub max_chats_count: Option<i64>,
}

/// A vendor's ticket API.
#[async_trait]
pub trait TicketApi: Send + Sync {
    /// Creates a ticket.
    async fn create(&self, ticket: &NewTicket) -> Result<Ticket, Error>;
    /// Reads a ticket by the vendor's id.
    async fn get(&self, external_id: &str) -> Result<Ticket, Error>;
    /// Changes a ticket.
    async fn update(&self, external_id: &str, change: &TicketChange) -> Result<Ticket, Error>;
    /// Lists tickets.
    async fn list(&self, query: &TicketQuery) -> Result<TicketPage, Error>;
}

/// A vendor's agent API.
#[async_trait]
pub trait AgentApi: Send + Sync {
    /// Lists agents.
    async fn list(&self) -> Result<Vec<Agent>, Error>;
    /// Creates an agent.
    async fn create(&self, agent: &NewAgent) -> Result<Agent, Error>;
    /// Deletes an agent by login.
    async fn delete(&self, login: &str) -> Result<(), Error>;
}

/// Pulls data from a vendor's API and acts on its tickets and agents. Built once per connection
/// by [`Plugin::connector`].
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// Fetches the page after `cursor` (`None`: from the start, or from `since` if given).
    /// Returns [`ErrorCode::Unimplemented`] if the vendor has no API to pull from.
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        since: Option<Timestamp>,
    ) -> Result<SyncPage, Error>;

    /// The vendor's ticket API, if it has one.
    fn tickets(&self) -> Option<&dyn TicketApi> {
        None
    }

    /// The vendor's agent API, if it has one.
    fn agents(&self) -> Option<&dyn AgentApi> {
        None
    }
}

/// Builds a connection's webhook source from its config; refuses a config it cannot use.
pub type WebhookFactory = fn(&ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error>;
/// Builds a connection's connector from its config; refuses a config it cannot use.
pub type ConnectorFactory = fn(&ConnectionConfig) -> Result<Box<dyn Connector>, Error>;

/// A plugin's descriptor. Each plugin crate submits one with
/// `inventory::submit! { Plugin { .. } }`; every field is `const`.
pub struct Plugin {
    /// The vendor's name: lowercase, unique, also the default connection id (`livechat`).
    pub vendor: &'static str,
    /// One line for people: what the plugin ingests.
    pub description: &'static str,
    /// How its webhooks are verified, for people (README, `ListConnections`, `plugins list`).
    pub verification: &'static str,
    /// Builds the webhook source, if the vendor pushes webhooks.
    pub webhook: Option<WebhookFactory>,
    /// Builds the connector, if the vendor has an API.
    pub connector: Option<ConnectorFactory>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("vendor", &self.vendor)
            .field("webhook", &self.webhook.is_some())
            .field("connector", &self.connector.is_some())
            .finish()
    }
}

inventory::collect!(Plugin);

/// Why the registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two plugins claim the same vendor name.
    #[error("two plugins are registered for the vendor {0:?}; remove one of the plugin crates")]
    Duplicate(&'static str),
    /// A vendor name is not usable as a connection id.
    #[error("plugin vendor name {0:?} is invalid: use lowercase letters, digits, '-' and '_'")]
    InvalidName(&'static str),
}

/// Every plugin linked into the binary, sorted by vendor name.
#[derive(Debug, Clone)]
pub struct Registry {
    plugins: Vec<&'static Plugin>,
}

impl Registry {
    /// The plugins submitted through `inventory`. A binary must reference each plugin crate
    /// (`use switchboard_plugin_x as _;`) or the linker may drop it.
    pub fn from_inventory() -> Result<Self, RegistryError> {
        Self::from_plugins(inventory::iter::<Plugin>)
    }

    /// A registry of the given plugins.
    pub fn from_plugins(
        plugins: impl IntoIterator<Item = &'static Plugin>,
    ) -> Result<Self, RegistryError> {
        let mut plugins: Vec<&'static Plugin> = plugins.into_iter().collect();
        plugins.sort_by_key(|p| p.vendor);
        for plugin in &plugins {
            if crate::ConnectionId::new(plugin.vendor).is_err() {
                return Err(RegistryError::InvalidName(plugin.vendor));
            }
        }
        if let Some(pair) = plugins.windows(2).find(|w| w[0].vendor == w[1].vendor) {
            return Err(RegistryError::Duplicate(pair[0].vendor));
        }
        Ok(Registry { plugins })
    }

    /// The plugin for a vendor.
    pub fn get(&self, vendor: &str) -> Option<&'static Plugin> {
        self.plugins
            .binary_search_by(|p| p.vendor.cmp(vendor))
            .ok()
            .map(|i| self.plugins[i])
    }

    /// All plugins, sorted by vendor.
    pub fn plugins(&self) -> &[&'static Plugin] {
        &self.plugins
    }

    /// All vendor names, sorted.
    pub fn vendors(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.vendor).collect()
    }
}

/// The error for an operation a vendor does not offer.
pub fn unsupported(vendor: &str, what: &str) -> Error {
    Error::new(
        ErrorCode::FailedPrecondition,
        format!("{vendor} does not support {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_without_fields_drops_top_level_members_and_keeps_the_rest_as_sent() {
        let body = br#"{ "secret_key" : "s3cr3t", "b": 1.50, "a": {"secret_key": "nested stays"},
            "c": "caf\u00e9 \"q\"", "n": 1e3, "secret\u005fkey": "escaped name", "z": [1, 2] }"#;
        let kept = json_without_fields(body, &["secret_key"]).unwrap();
        assert_eq!(
            kept,
            r#"{"b":1.50,"a":{"secret_key": "nested stays"},"c":"caf\u00e9 \"q\"","n":1e3,"z":[1, 2]}"#
        );
        // The same members as a parse of the body without the field, so readers see no change.
        let mut expected: serde_json::Value = serde_json::from_slice(body).unwrap();
        expected.as_object_mut().unwrap().remove("secret_key");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&kept).unwrap(),
            expected
        );
        // Several names, a name needing escapes kept, and nothing left.
        assert_eq!(
            json_without_fields(br#"{"x":1,"y":2,"we\"ird":3}"#, &["x", "y"]).unwrap(),
            r#"{"we\"ird":3}"#
        );
        assert_eq!(json_without_fields(br#"{"x":1}"#, &["x"]).unwrap(), "{}");
        assert_eq!(json_without_fields(b"{}", &["x"]).unwrap(), "{}");
    }

    #[test]
    fn only_a_body_that_cannot_name_the_fields_is_kept_without_a_parse() {
        let fields = ["secret_key"];
        // As written, escaped, or anywhere at all (the check is on bytes, not members).
        for body in [
            r#"{"secret_key":"s"}"#,
            r#"{"secret\u005fkey":"s"}"#,
            r#"{"\u0073ecret_key":1}"#,
            r#"{"a":"the secret_key was here"}"#,
            r#"{"a":"caf\u00e9"}"#,
        ] {
            assert!(may_name_fields(body.as_bytes(), &fields), "{body}");
        }
        for body in [
            r#"{"secret":"s","key":1}"#,
            r#"{"a":"line\nbreak \"q\""}"#,
            "{}",
        ] {
            assert!(!may_name_fields(body.as_bytes(), &fields), "{body}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_member_named_a_field_is_never_kept(escaped in proptest::collection::vec(proptest::bool::ANY, 10)) {
            // `secret_key` with any of its letters written as a `\u` escape.
            let written: String = "secret_key"
                .chars()
                .zip(&escaped)
                .map(|(c, &e)| if e { format!("\\u{:04x}", u32::from(c)) } else { c.to_string() })
                .collect();
            let body = format!(r#"{{"a":1,"{written}":"s"}}"#);
            let request_body = body.as_bytes();
            proptest::prop_assert!(may_name_fields(request_body, &["secret_key"]));
            let kept: serde_json::Value =
                serde_json::from_str(&json_without_fields(request_body, &["secret_key"]).unwrap()).unwrap();
            proptest::prop_assert_eq!(kept, serde_json::json!({"a": 1}));
        }
    }

    #[test]
    fn json_without_fields_is_none_for_anything_but_an_object() {
        for body in [
            &b"[1,2]"[..],
            b"\"text\"",
            b"12",
            b"{\"a\":",
            b"{\"a\":1} trailing",
            b"not json",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(json_without_fields(body, &["a"]), None, "{body:?}");
        }
    }

    static A: Plugin = Plugin {
        vendor: "alpha",
        description: "",
        verification: "",
        webhook: None,
        connector: None,
    };
    static B: Plugin = Plugin {
        vendor: "beta",
        description: "",
        verification: "",
        webhook: None,
        connector: None,
    };
    static B2: Plugin = Plugin {
        vendor: "beta",
        description: "",
        verification: "",
        webhook: None,
        connector: None,
    };
    static BAD: Plugin = Plugin {
        vendor: "Bad Name",
        description: "",
        verification: "",
        webhook: None,
        connector: None,
    };

    #[test]
    fn registry_is_sorted_and_refuses_duplicates() {
        let registry = Registry::from_plugins([&B, &A]).unwrap();
        assert_eq!(registry.vendors(), ["alpha", "beta"]);
        assert_eq!(registry.get("beta").map(|p| p.vendor), Some("beta"));
        assert!(registry.get("gamma").is_none());
        let err = Registry::from_plugins([&B, &A, &B2]).unwrap_err();
        assert_eq!(err, RegistryError::Duplicate("beta"));
        assert!(err.to_string().contains("beta"));
        assert_eq!(
            Registry::from_plugins([&BAD]).unwrap_err(),
            RegistryError::InvalidName("Bad Name")
        );
    }
}
