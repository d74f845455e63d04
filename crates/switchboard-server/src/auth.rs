//! gRPC authentication: API keys sent as `authorization: Bearer <key>`, each with a name and
//! scopes, checked by a tower layer in front of every gRPC service.
//!
//! Keys are configured only as the SHA-256 of the key (hex). That is enough for keys made by
//! [`generate_key`] (256 random bits): nobody can find a key from its hash by guessing, so the
//! slow, salted hashes that passwords need would add cost and nothing else. The presented key
//! is hashed and compared with **every** configured hash in constant time, so the time taken
//! tells nothing about which hash came close.
//!
//! The layer maps the gRPC path (`/switchboard.v1.Switchboard/<Method>`) to the scope it needs
//! ([`required_access`]): the service itself needs no change to be protected, and a method added
//! later needs `admin` until it is given a scope here. `grpc.health.v1` stays open (load
//! balancers probe it); server reflection needs any valid key. With no key configured the layer
//! lets everything through (the bind policy in [`crate::config`] decides whether that is allowed).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

/// The package and service of the Switchboard API, as it appears in gRPC paths.
pub const SERVICE_PATH: &str = "/switchboard.v1.Switchboard/";
/// Prefix of freshly generated keys, so a leaked one is easy to recognize (and to grep for).
pub const KEY_PREFIX: &str = "sbk_";

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `conversations:read`: ListConversations, GetConversation, ListContacts, GetContact.
    ConversationsRead,
    /// `events:stream`: StreamEvents.
    EventsStream,
    /// `tickets:manage`: ManageTickets.
    TicketsManage,
    /// `admin`: ListConnections, SyncConnection, ManageAgents, MergeContacts, SplitContact,
    /// EraseContact, any method without a scope of its own; implies every other scope.
    Admin,
}

impl Scope {
    /// Every scope, in config spelling order.
    pub const ALL: [Scope; 4] = [
        Scope::ConversationsRead,
        Scope::EventsStream,
        Scope::TicketsManage,
        Scope::Admin,
    ];

    /// The config spelling, e.g. `conversations:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ConversationsRead => "conversations:read",
            Scope::EventsStream => "events:stream",
            Scope::TicketsManage => "tickets:manage",
            Scope::Admin => "admin",
        }
    }

    /// Parses the config spelling; the error lists the known scopes.
    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown scope {text:?}; known scopes: {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured API key: its name (for logs), the SHA-256 of the key, and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Shown in logs and errors; never the key itself.
    pub name: String,
    /// SHA-256 of the key's UTF-8 bytes.
    pub sha256: [u8; 32],
    /// What the key may do.
    pub scopes: BTreeSet<Scope>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// Whether the key grants `scope` (`admin` grants every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// A fresh random key: `sbk_` and 64 hex digits (256 bits from the OS-seeded CSPRNG).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// SHA-256 of a key, as the 64 lowercase hex digits the config's `sha256` field takes.
pub fn key_hash_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses a `sha256` config value: 64 hex digits.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return Err(format!(
            "sha256 must be 64 hex digits (the SHA-256 of the key), got {} characters; \
             `switchboard keys new` prints it",
            text.len()
        ));
    }
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| "sha256 must be 64 hex digits (0-9, a-f)".to_owned())?;
    Ok(out)
}

/// What a gRPC path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open to everyone (health checks).
    Open,
    /// Any valid key (reflection, services other than ours).
    AnyKey,
    /// A key with this scope.
    Scope(Scope),
}

/// The access a gRPC path needs. Methods of our service not listed need `admin`.
pub fn required_access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Open;
    }
    let Some(method) = path.strip_prefix(SERVICE_PATH) else {
        return Access::AnyKey;
    };
    Access::Scope(match method {
        "ListConversations" | "GetConversation" | "ListContacts" | "GetContact" => {
            Scope::ConversationsRead
        }
        "StreamEvents" => Scope::EventsStream,
        "ManageTickets" => Scope::TicketsManage,
        // ListConnections, SyncConnection, ManageAgents, MergeContacts, SplitContact,
        // EraseContact, anything new
        _ => Scope::Admin,
    })
}

/// The key a request was authenticated with; put in the request's extensions for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's configured name.
    pub name: Arc<str>,
}

/// The configured keys, shared by every connection's copy of the layer.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<Vec<ApiKey>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.name))
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// UNAUTHENTICATED: no key, a malformed header, or an unknown key.
    Unauthenticated(String),
    /// PERMISSION_DENIED: a valid key without the scope.
    PermissionDenied(String),
}

impl Denied {
    /// As a gRPC status.
    pub fn status(&self) -> Status {
        match self {
            Denied::Unauthenticated(m) => Status::unauthenticated(m.clone()),
            Denied::PermissionDenied(m) => Status::permission_denied(m.clone()),
        }
    }
}

impl KeyRing {
    /// A key ring; empty means authentication is off.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        KeyRing {
            keys: Arc::new(keys),
        }
    }

    /// True when no key is configured (every request passes).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose hash matches `presented`. Every configured hash is compared, in constant
    /// time, whatever matches first.
    fn find(&self, presented: &str) -> Option<&ApiKey> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in self.keys.iter() {
            if bool::from(key.sha256.ct_eq(&hash)) {
                found = Some(key);
            }
        }
        found
    }

    /// Decides a request from its path and `authorization` header value. `Ok(None)`: allowed
    /// without a key (open path or authentication off).
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Caller>, Denied> {
        let access = required_access(path);
        if self.is_empty() || access == Access::Open {
            return Ok(None);
        }
        let Some(header) = authorization else {
            return Err(Denied::Unauthenticated(
                "missing API key: send the header `authorization: Bearer <key>` (the CLI takes \
                 --api-key or SWITCHBOARD_API_KEY; an operator makes keys with `switchboard keys new`)"
                    .to_owned(),
            ));
        };
        let presented = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return Err(Denied::Unauthenticated(
                "malformed authorization header: expected `Bearer <key>`".to_owned(),
            ));
        };
        let Some(key) = self.find(presented) else {
            return Err(Denied::Unauthenticated(
                "unknown API key: check the key you send (no configured key matches it)".to_owned(),
            ));
        };
        if let Access::Scope(scope) = access
            && !key.allows(scope)
        {
            let method = path.rsplit('/').next().unwrap_or(path);
            return Err(Denied::PermissionDenied(format!(
                "API key {:?} lacks the scope {scope} needed for {method}; add {scope} to the \
                 key's scopes in the config, or use a key that has it",
                key.name
            )));
        }
        Ok(Some(Caller {
            name: Arc::from(key.name.as_str()),
        }))
    }
}

/// The tower layer that authenticates gRPC requests against a [`KeyRing`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: KeyRing,
}

impl AuthLayer {
    /// A layer over these keys.
    pub fn new(keys: KeyRing) -> Self {
        AuthLayer { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: KeyRing,
}

impl<S, B, R> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let decision = self.keys.check(
            &path,
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        match decision {
            Ok(caller) => {
                let key_name = caller.as_ref().map(|c| c.name.clone());
                let span = tracing::info_span!(
                    "grpc",
                    method = %path,
                    api_key = key_name.as_deref().unwrap_or("-"),
                );
                if let Some(caller) = caller {
                    span.in_scope(|| tracing::debug!("gRPC request authenticated"));
                    request.extensions_mut().insert(caller);
                }
                // The service was polled ready; take it and leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request).instrument(span))
            }
            Err(denied) => {
                tracing::warn!(method = %path, outcome = "refused", reason = ?denied, "gRPC request refused");
                let response = denied.status().into_http::<R>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (KeyRing, String, String) {
        let reader = generate_key();
        let admin = generate_key();
        let keys = vec![
            ApiKey {
                name: "reader".into(),
                sha256: parse_hash(&key_hash_hex(&reader)).unwrap(),
                scopes: [Scope::ConversationsRead].into(),
            },
            ApiKey {
                name: "ops".into(),
                sha256: parse_hash(&key_hash_hex(&admin)).unwrap(),
                scopes: [Scope::Admin].into(),
            },
        ];
        (KeyRing::new(keys), reader, admin)
    }

    fn bearer(key: &str) -> Vec<u8> {
        format!("Bearer {key}").into_bytes()
    }

    #[test]
    fn paths_map_to_scopes_and_unknown_methods_need_admin() {
        let m = |name: &str| required_access(&format!("{SERVICE_PATH}{name}"));
        assert_eq!(
            m("ListConversations"),
            Access::Scope(Scope::ConversationsRead)
        );
        assert_eq!(
            m("GetConversation"),
            Access::Scope(Scope::ConversationsRead)
        );
        assert_eq!(m("StreamEvents"), Access::Scope(Scope::EventsStream));
        assert_eq!(m("ManageTickets"), Access::Scope(Scope::TicketsManage));
        assert_eq!(m("ListConnections"), Access::Scope(Scope::Admin));
        assert_eq!(m("ManageAgents"), Access::Scope(Scope::Admin));
        assert_eq!(m("ListContacts"), Access::Scope(Scope::ConversationsRead));
        assert_eq!(m("GetContact"), Access::Scope(Scope::ConversationsRead));
        for writes in ["MergeContacts", "SplitContact", "EraseContact"] {
            assert_eq!(m(writes), Access::Scope(Scope::Admin), "{writes}");
        }
        assert_eq!(m("SomethingNew"), Access::Scope(Scope::Admin));
        assert_eq!(
            required_access("/grpc.health.v1.Health/Check"),
            Access::Open
        );
        assert_eq!(
            required_access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::AnyKey
        );
    }

    #[test]
    fn the_matrix_of_keys_and_scopes() {
        let (ring, reader, admin) = ring();
        let list = "/switchboard.v1.Switchboard/ListConversations";
        let stream = "/switchboard.v1.Switchboard/StreamEvents";
        assert!(
            matches!(ring.check(list, None), Err(Denied::Unauthenticated(m)) if m.contains("missing"))
        );
        assert!(
            matches!(ring.check(list, Some(b"Basic abc")), Err(Denied::Unauthenticated(m)) if m.contains("malformed"))
        );
        assert!(matches!(
            ring.check(list, Some(b"Bearer ")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(
            matches!(ring.check(list, Some(&bearer("sbk_wrong"))), Err(Denied::Unauthenticated(m)) if m.contains("unknown"))
        );
        assert_eq!(
            ring.check(list, Some(&bearer(&reader)))
                .unwrap()
                .unwrap()
                .name
                .as_ref(),
            "reader"
        );
        let denied = ring.check(stream, Some(&bearer(&reader))).unwrap_err();
        assert!(
            matches!(&denied, Denied::PermissionDenied(m) if m.contains("events:stream") && m.contains("reader") && !m.contains(&reader)),
            "{denied:?}"
        );
        assert_eq!(
            ring.check(stream, Some(&bearer(&admin)))
                .unwrap()
                .unwrap()
                .name
                .as_ref(),
            "ops"
        );
        assert_eq!(ring.check("/grpc.health.v1.Health/Check", None), Ok(None));
        assert!(
            ring.check(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            )
            .is_err()
        );
        assert!(
            KeyRing::new(Vec::new())
                .check(stream, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn generated_keys_are_random_and_hashes_parse() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        let hash = key_hash_hex("abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_hash(&hash).is_ok());
        assert!(parse_hash("abc").unwrap_err().contains("64 hex"));
        assert!(parse_hash(&"zz".repeat(32)).is_err());
        assert!(!format!("{:?}", ring().0).contains("sha256"));
    }
}
