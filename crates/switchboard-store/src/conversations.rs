//! How a conversation is stored: its header (everything but the messages) under `conv/`, and
//! each message under `msg/` as its own key. A new message writes one small key and rewrites
//! the header, never the conversation's other messages; a conversation of 200 messages is not
//! rewritten 200 times. Since schema 8 a message's record is in the segment files
//! ([`crate::segments`]), sled keeping a 21-byte pointer under its key; the messages a store of
//! schema 7 or before kept inside sled are read there. The header keeps
//! [`Conversation::event_count`], not the dedup keys of its events: the store applies every
//! event once (dedup), so the count is all it needs.

use std::collections::BTreeMap;

use switchboard_core::{Conversation, ConversationId, Lww, Message};

use crate::StoreError;
use crate::keys;
use crate::record::{decode_message, encode_message};
use crate::segments::LogFiles;

/// The header of `id`, without messages, if stored.
pub(crate) fn load_header(
    tree: &sled::Tree,
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    crate::header::load_header(tree, &keys::conversation_key(id))
}

/// The message stored at `key` with sled value `value` (a pointer to its record, or the record).
pub(crate) fn read_message(
    log: &LogFiles,
    key: &[u8],
    value: &[u8],
) -> Result<Lww<Message>, StoreError> {
    decode_message(key, &log.record(key, value)?)
}

/// Reads the messages of `conversation` (a header) into it. A message that does not read or
/// decode is reported and left out.
pub(crate) fn load_messages(
    tree: &sled::Tree,
    log: &LogFiles,
    conversation: &mut Conversation,
) -> Result<(), StoreError> {
    let prefix = keys::message_prefix(&conversation.id);
    for entry in tree.scan_prefix(&prefix) {
        let (key, value) = entry?;
        match read_message(log, &key, &value) {
            Ok(message) => {
                conversation
                    .messages
                    .insert(message.value.key.clone(), message);
            }
            Err(error) => crate::unreadable_record(&key, &error),
        }
    }
    Ok(())
}

/// The whole conversation `id`: header and messages.
pub(crate) fn load_full(
    tree: &sled::Tree,
    log: &LogFiles,
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    let Some(mut conversation) = load_header(tree, id)? else {
        return Ok(None);
    };
    load_messages(tree, log, &mut conversation)?;
    Ok(Some(conversation))
}

/// One stored message of `id`, if any.
pub(crate) fn load_message(
    tree: &sled::Tree,
    log: &LogFiles,
    id: &ConversationId,
    key: &str,
) -> Result<Option<Lww<Message>>, StoreError> {
    let key = keys::message_key(id, key);
    tree.get(&key)?
        .map(|value| read_message(log, &key, &value))
        .transpose()
}

/// The writes that store `conversation` (header plus the messages that differ from
/// `stored_messages`, the registers as they were before this group), into `writes`; the
/// changed messages' records go to `log`.
pub(crate) fn encode_changes(
    mut conversation: Conversation,
    stored_messages: &BTreeMap<String, Option<Lww<Message>>>,
    log: &LogFiles,
    writes: &mut sled::Batch,
) -> Result<(), StoreError> {
    let messages = std::mem::take(&mut conversation.messages);
    for (key, message) in &messages {
        let unchanged = stored_messages
            .get(key)
            .is_some_and(|stored| stored.as_ref() == Some(message));
        if !unchanged {
            writes.insert(
                keys::message_key(&conversation.id, key),
                log.append_record(&encode_message(message)?)?,
            );
        }
    }
    writes.insert(
        keys::conversation_key(&conversation.id),
        crate::header::encode_header(&conversation)?,
    );
    Ok(())
}
