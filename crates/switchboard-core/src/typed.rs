//! Typed settings and secrets: a plugin declares what its connections may set as two serde
//! structs, and [`ConnectionConfig::typed`] refuses any other key at start-up, naming it and
//! the allowed names. A misspelt `webhok_secret` is then a start-up error, not a 401 at run
//! time.
//!
//! ```
//! use serde::Deserialize;
//! use switchboard_core::{ConnectionConfig, ConnectionId, Secret};
//!
//! /// The settings of an Acme connection.
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     /// The account the webhooks come from.
//!     account_id: Option<String>,
//! }
//!
//! /// The secrets of an Acme connection.
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Secrets {
//!     /// The token Acme sends with each webhook.
//!     webhook_secret: Option<Secret>,
//! }
//!
//! let good = ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme")
//!     .with_setting("account_id", "42")
//!     .with_secret("webhook_secret", "hunter2");
//! let (settings, secrets) = good.typed::<Settings, Secrets>().unwrap();
//! assert_eq!(settings.account_id.as_deref(), Some("42"));
//! assert_eq!(secrets.webhook_secret.unwrap().expose(), "hunter2");
//!
//! let misspelt = ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme")
//!     .with_secret("webhok_secret", "hunter2");
//! let error = misspelt.typed::<Settings, Secrets>().unwrap_err();
//! assert!(error.message.contains("unknown secret `webhok_secret`"));
//! assert!(error.message.contains("`webhook_secret`"));
//! assert!(!error.message.contains("hunter2"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::{ConnectionConfig, Error, Secret};

/// The field names a struct deserializes from (the `fields` serde's derive passes to
/// `deserialize_struct`), or `None` when `T` is not a plain struct (a map, an enum, a struct
/// with `#[serde(flatten)]`).
pub fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    // The probe always fails once it has seen the fields; the error is expected.
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

impl ConnectionConfig {
    /// Checks the connection's settings against the plugin's settings struct `S` and its
    /// secrets against the secrets struct `K`, and returns both, typed.
    ///
    /// Every key must be a field of its struct: a key that is not is refused with an
    /// [`Error::invalid`] naming the connection, the key, whether it is a setting or a secret,
    /// and the names allowed (a secret's message also names the environment variable it may
    /// come from). Every unknown key is reported at once. Empty values count as absent, as in
    /// [`ConnectionConfig::setting`] and [`ConnectionConfig::secret`]. No message ever holds a
    /// secret's value, only key names.
    ///
    /// Declare both structs with `#[serde(deny_unknown_fields)]`, every field an `Option`
    /// (settings as `Option<String>`, secrets as `Option<Secret>`) unless the plugin cannot work
    /// without it, and a doc comment on each field: they are the plugin's reference of keys.
    /// Call this first in both the webhook factory and the connector factory, so that
    /// `switchboard serve` refuses a misspelt key at start-up.
    ///
    /// # Errors
    /// [`crate::ErrorCode::InvalidArgument`] for an unknown key, or a value the struct refuses
    /// (a missing required field, a wrong type); [`crate::ErrorCode::Internal`] when `S` or `K`
    /// is not a plain struct (a plugin bug).
    pub fn typed<S: DeserializeOwned, K: DeserializeOwned>(&self) -> Result<(S, K), Error> {
        let who = format!("connection {} ({})", self.id, self.vendor);
        let setting_names = struct_fields::<S>(&who, "settings")?;
        let secret_names = struct_fields::<K>(&who, "secrets")?;
        let mut unknown = Vec::new();
        for key in self.settings.keys() {
            if !setting_names.contains(&key.as_str()) {
                unknown.push(self.unknown_key(key, Kind::Setting, setting_names, secret_names));
            }
        }
        for key in self.secrets.keys() {
            if !secret_names.contains(&key.as_str()) {
                unknown.push(self.unknown_key(key, Kind::Secret, secret_names, setting_names));
            }
        }
        if !unknown.is_empty() {
            return Err(Error::invalid(format!("{who}: {}", unknown.join("; "))));
        }
        let settings = S::deserialize(Entries::new(
            self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
        .map_err(|e| Error::invalid(format!("{who}: setting {e}")))?;
        let secrets = K::deserialize(Entries::new(
            self.secrets.iter().map(|(k, v)| (k.as_str(), v.expose())),
        ))
        .map_err(|e| Error::invalid(redact(format!("{who}: secret {e}"), &self.secrets)))?;
        Ok((settings, secrets))
    }

    fn unknown_key(&self, key: &str, kind: Kind, allowed: &[&str], other: &[&str]) -> String {
        let (this, that, section, other_section) = match kind {
            Kind::Setting => ("setting", "secret", "settings", "secrets"),
            Kind::Secret => ("secret", "setting", "secrets", "settings"),
        };
        let mut message = format!(
            "unknown {this} `{key}`: the {} plugin allows the {section} {}",
            self.vendor,
            names(allowed)
        );
        if other.contains(&key) {
            message.push_str(&format!(
                " (`{key}` is a {that}: move it to the connection's `{other_section}`)"
            ));
        }
        if kind == Kind::Secret {
            message.push_str(&format!(
                "; check its spelling in the connection's `secrets` and in the environment \
                 variable {}",
                self.secret_env_var(key)
            ));
        }
        message
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Setting,
    Secret,
}

/// `` `a`, `b` and `c` ``, or `none` when empty.
fn names(names: &[&str]) -> String {
    match names {
        [] => "none".to_owned(),
        [one] => format!("`{one}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|n| format!("`{n}`")).collect();
            format!("{} and `{last}`", init.join(", "))
        }
    }
}

fn struct_fields<T: DeserializeOwned>(
    who: &str,
    what: &str,
) -> Result<&'static [&'static str], Error> {
    field_names::<T>().ok_or_else(|| {
        Error::internal(format!(
            "{who}: the plugin's {what} type {} is not a plain struct, so its keys cannot be \
             checked (a plugin bug)",
            std::any::type_name::<T>()
        ))
    })
}

/// Replaces every non-empty secret value in `message` with `[redacted]`.
fn redact(mut message: String, secrets: &BTreeMap<String, Secret>) -> String {
    for secret in secrets.values() {
        let value = secret.expose();
        if !value.is_empty() && message.contains(value) {
            message = message.replace(value, "[redacted]");
        }
    }
    message
}

/// A deserialization error that never quotes the value it could not take.
#[derive(Debug)]
struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DeError(message.to_string())
    }

    fn invalid_type(_: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        DeError(format!(
            "has a value of the wrong type: expected {expected}"
        ))
    }

    fn invalid_value(_: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        DeError(format!("has an invalid value: expected {expected}"))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(format!("`{field}` is required and missing"))
    }
}

/// The non-empty entries of a string map, as a struct to deserialize; a value's error names
/// its key.
struct Entries<'a, I: Iterator<Item = (&'a str, &'a str)>> {
    entries: I,
    value: Option<(&'a str, &'a str)>,
}

impl<'a, I: Iterator<Item = (&'a str, &'a str)>> Entries<'a, I> {
    fn new(entries: I) -> Self {
        Entries {
            entries,
            value: None,
        }
    }
}

impl<'de, 'a, I: Iterator<Item = (&'a str, &'a str)>> Deserializer<'de> for Entries<'a, I> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, 'a, I: Iterator<Item = (&'a str, &'a str)>> MapAccess<'de> for Entries<'a, I> {
    type Error = DeError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        let Some((key, value)) = self.entries.by_ref().find(|(_, v)| !v.is_empty()) else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(de::value::StrDeserializer::<DeError>::new(key))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value without a key"))?;
        seed.deserialize(Text(value))
            .map_err(|e| DeError(format!("`{key}` {e}")))
    }
}

/// One value of a string map: a string, or a number or `true`/`false` written as text, as
/// the field's type asks.
struct Text<'a>(&'a str);

macro_rules! parse_as {
    ($($method:ident $visit:ident $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.0.trim().parse::<$ty>() {
                Ok(value) => visitor.$visit(value),
                Err(_) => Err(DeError(format!(
                    "has an invalid value: expected {}",
                    stringify!($ty)
                ))),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Text<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    parse_as! {
        deserialize_bool visit_bool bool,
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_f32 visit_f32 f32,
        deserialize_f64 visit_f64 f64,
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

/// A deserializer that records the fields of the struct asked of it, then fails.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::{ConnectionId, ErrorCode};

    /// Settings of a test vendor.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        /// An account id.
        account_id: Option<String>,
        /// A number.
        page_size: Option<u32>,
    }

    /// Secrets of a test vendor.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Secrets {
        /// A webhook token.
        webhook_secret: Option<Secret>,
        /// An API key, required.
        api_key: Secret,
    }

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("acme-eu").unwrap(), "acme")
            .with_secret("api_key", "k3y-value")
    }

    #[test]
    fn known_keys_deserialize_and_empty_values_count_as_absent() {
        let config = config()
            .with_setting("account_id", "")
            .with_setting("page_size", "50")
            .with_secret("webhook_secret", "hunter2");
        let (settings, secrets) = config.typed::<Settings, Secrets>().unwrap();
        assert_eq!(settings.account_id, None);
        assert_eq!(settings.page_size, Some(50));
        assert_eq!(secrets.webhook_secret.unwrap().expose(), "hunter2");
        assert_eq!(secrets.api_key.expose(), "k3y-value");
    }

    #[test]
    fn a_misspelt_secret_is_refused_with_the_allowed_names_and_never_its_value() {
        let config = config().with_secret("webhok_secret", "hunter2");
        let error = config.typed::<Settings, Secrets>().unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        let message = &error.message;
        assert!(
            message.starts_with("connection acme-eu (acme): "),
            "{message}"
        );
        assert!(
            message.contains("unknown secret `webhok_secret`"),
            "{message}"
        );
        assert!(
            message.contains("allows the secrets `webhook_secret` and `api_key`"),
            "{message}"
        );
        assert!(
            message.contains("SWITCHBOARD_SECRET__ACME_EU__WEBHOK_SECRET"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("k3y-value"), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }

    #[test]
    fn a_misspelt_setting_is_refused_and_every_unknown_key_is_named_at_once() {
        let config = config()
            .with_setting("acount_id", "42")
            .with_setting("api_key", "oops")
            .with_secret("page_size", "s3cret");
        let message = config.typed::<Settings, Secrets>().unwrap_err().message;
        assert!(message.contains("unknown setting `acount_id`"), "{message}");
        assert!(
            message.contains("allows the settings `account_id` and `page_size`"),
            "{message}"
        );
        assert!(
            message.contains("`api_key` is a secret: move it to the connection's `secrets`"),
            "{message}"
        );
        assert!(
            message.contains("`page_size` is a setting: move it to the connection's `settings`"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn a_bad_value_names_its_key_and_never_a_secret_value() {
        let bad_number = config().with_setting("page_size", "fifty");
        let message = bad_number.typed::<Settings, Secrets>().unwrap_err().message;
        assert!(message.contains("setting `page_size`"), "{message}");

        let missing = ConnectionConfig::new(ConnectionId::new("a").unwrap(), "acme");
        let message = missing.typed::<Settings, Secrets>().unwrap_err().message;
        assert!(message.contains("`api_key` is required"), "{message}");

        /// A secret that must be a number, so that serde would quote it.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NumericSecret {
            /// A pin.
            pin: u32,
        }
        let both = config().with_secret("pin", "hunter2");
        let message = both
            .typed::<Settings, NumericSecret>()
            .map(|_| ())
            .unwrap_err()
            .message;
        assert!(message.contains("unknown secret `api_key`"), "{message}");
        let pin = ConnectionConfig::new(ConnectionId::new("a").unwrap(), "acme")
            .with_secret("pin", "hunter2");
        let message = pin
            .typed::<Settings, NumericSecret>()
            .map(|_| ())
            .unwrap_err()
            .message;
        assert!(message.contains("secret `pin`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let pin = ConnectionConfig::new(ConnectionId::new("a").unwrap(), "acme")
            .with_secret("pin", "1234");
        let (_, secrets) = pin.typed::<Settings, NumericSecret>().unwrap();
        assert_eq!(secrets.pin, 1234);
    }

    #[test]
    fn field_names_lists_a_structs_fields_and_refuses_other_types() {
        assert_eq!(
            field_names::<Settings>(),
            Some(&["account_id", "page_size"][..])
        );
        assert_eq!(field_names::<BTreeMap<String, String>>(), None);
        let error = config()
            .typed::<BTreeMap<String, String>, Secrets>()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal);
    }
}
