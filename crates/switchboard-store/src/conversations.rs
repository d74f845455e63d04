//! How a conversation is stored: its header (everything but the messages) under `conv/`, and
//! each message under `msg/` as its own key. A new message writes one small key and rewrites
//! the header, never the conversation's other messages; a conversation of 200 messages is not
//! rewritten 200 times. The header keeps [`Conversation::event_count`], not the dedup keys of
//! its events: the store applies every event once (dedup), so the count is all it needs.

use std::collections::BTreeMap;

use switchboard_core::{Conversation, ConversationId, Lww, Message};

use crate::StoreError;
use crate::keys;
use crate::record::{decode_message, encode_message};

/// The header of `id`, without messages, if stored.
pub(crate) fn load_header(
    tree: &sled::Tree,
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    crate::header::load_header(tree, &keys::conversation_key(id))
}

/// Reads the messages of `conversation` (a header) into it. A message that does not decode is
/// reported and left out.
pub(crate) fn load_messages(
    tree: &sled::Tree,
    conversation: &mut Conversation,
) -> Result<(), StoreError> {
    let prefix = keys::message_prefix(&conversation.id);
    for entry in tree.scan_prefix(&prefix) {
        let (key, value) = entry?;
        match decode_message(&key, &value) {
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
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    let Some(mut conversation) = load_header(tree, id)? else {
        return Ok(None);
    };
    load_messages(tree, &mut conversation)?;
    Ok(Some(conversation))
}

/// One stored message of `id`, if any.
pub(crate) fn load_message(
    tree: &sled::Tree,
    id: &ConversationId,
    key: &str,
) -> Result<Option<Lww<Message>>, StoreError> {
    let key = keys::message_key(id, key);
    tree.get(&key)?
        .map(|bytes| decode_message(&key, &bytes))
        .transpose()
}

/// The writes that store `conversation` (header plus the messages that differ from
/// `stored_messages`, the registers as they were before this group), into `writes`.
pub(crate) fn encode_changes(
    mut conversation: Conversation,
    stored_messages: &BTreeMap<String, Option<Lww<Message>>>,
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
                encode_message(message)?,
            );
        }
    }
    writes.insert(
        keys::conversation_key(&conversation.id),
        crate::header::encode_header(&conversation)?,
    );
    Ok(())
}
