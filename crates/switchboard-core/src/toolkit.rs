//! Helpers for the repetitive parts of a plugin: reading JSON fields with errors that name
//! their path ([`json::Fields`]), a hash that stays the same across platforms, Rust versions
//! and runs (for dedup keys built from contents), and message keys for vendors that give
//! messages no id.

pub mod json;

use sha2::{Digest, Sha256};

use crate::Timestamp;

/// A stable hash of `parts`: 32 hex digits of the SHA-256 of the parts, each prefixed by its
/// length (so `["ab", "c"]` and `["a", "bc"]` differ). Unlike `std::hash`, it never changes
/// between runs, platforms or Rust versions, so it may go into dedup keys and message keys,
/// which must be the same every time a body is delivered.
///
/// ```
/// use switchboard_core::toolkit::stable_hash;
///
/// assert_eq!(stable_hash(&["chat", "42"]), stable_hash(&["chat", "42"]));
/// assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
/// assert_eq!(stable_hash(&[]).len(), 32);
/// ```
pub fn stable_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// A message key for a vendor that gives its messages no id: `m-` and the [`stable_hash`] of
/// the author, the time and the text. The same message delivered by its own event and again
/// in a transcript gets the same key, so the two merge instead of showing twice (the
/// conformance kit checks it). Use the vendor's id whenever it has one.
///
/// ```
/// use switchboard_core::Timestamp;
/// use switchboard_core::toolkit::message_key;
///
/// let at = Timestamp::from_secs(1_700_000_000).unwrap();
/// assert_eq!(message_key("visitor-7", at, "hello"), message_key("visitor-7", at, "hello"));
/// assert_ne!(message_key("visitor-7", at, "hello"), message_key("agent-1", at, "hello"));
/// assert!(message_key("visitor-7", at, "hello").starts_with("m-"));
/// ```
pub fn message_key(author: &str, sent_at: Timestamp, text: &str) -> String {
    format!(
        "m-{}",
        stable_hash(&[author, &sent_at.as_millis().to_string(), text])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // A change here changes every key built with it: stored events would no longer be
        // recognized as redeliveries. (Python: sha256 of each part's u64 LE length + bytes.)
        assert_eq!(
            stable_hash(&["chat", "42"]),
            "4852908839895cf265d6d204cffc2ead"
        );
    }
}
