//! The finder: conversations by person, agent, tag and text, and contacts across vendors.
//!
//! It is a projection of the log like the others, but kept apart from the store's write path
//! so that ingest does not pay for it: [`Finder`] reads the log in order from its index's
//! position, links visitors into contacts, builds one [`ConversationDoc`] per conversation
//! changed, and applies each batch to a [`FindIndex`] atomically with its new position. Its
//! answers lag the log by one batch at most; every answer says how far the index has read.
//! Deleting the index rebuilds it from the log.

pub mod engine;
pub mod index;
pub mod memory;
pub mod normalize;
pub mod priority;
pub mod suite;
pub mod tantivy_index;

pub use crate::engine::{
    ContactListQuery, ContactPage, ContactView, FindError, Finder, FinderOptions, Found,
    LAG_METRIC, POSITION_METRIC,
};
pub use crate::index::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    IndexError, TicketDoc,
};
pub use crate::memory::MemoryIndex;
