-- The finder's index (switchboard-find; `PgFindIndex` in src/find.rs): what ListConversations'
-- filters by e-mail, phone, visitor, agent, tag, contact and text, and the contacts, are
-- answered from. A projection of the log kept apart from the store's write path: written only
-- by the finder of the replica holding the `find` lease, one batch per transaction together
-- with `sb_find_state.position`; read by every replica. Emptying these tables (and setting the
-- position to 0) rebuilds them from the log.
--
-- Strings from vendors (ids, e-mails, phones, tags, identity keys, contact ids) are bytea
-- (UTF-8), as in V1: they may hold any character, NUL included, and compare byte by byte.
-- `terms` and `name_terms` are tsvectors made with array_to_tsvector from terms the finder
-- already normalized (folded, CJK characters and pairs): no text search dictionary touches
-- them, so a query's terms match exactly as normalized.

-- One row: the last sequence of the log applied to the tables below.
CREATE TABLE IF NOT EXISTS sb_find_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
INSERT INTO sb_find_state VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- One row per conversation: what it is found by. id is `connection/external id`, sort_key is
-- started_at if known, else updated_at: pages read (sort_key DESC, id DESC), as sb_conversations.
-- term_list is the document's terms as the finder gave them (read back by conversation_docs);
-- terms, the same as a tsvector (searched).
CREATE TABLE IF NOT EXISTS sb_find_conversations (
    id bytea PRIMARY KEY,
    connection text NOT NULL,
    vendor bytea NOT NULL,
    status text NOT NULL,
    sort_key bigint NOT NULL,
    started_at bigint,
    updated_at bigint NOT NULL,
    contact bytea,
    emails bytea[] NOT NULL,
    phones bytea[] NOT NULL,
    visitor_ids bytea[] NOT NULL,
    agent_ids bytea[] NOT NULL,
    tags bytea[] NOT NULL,
    term_list bytea[] NOT NULL,
    terms tsvector NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_find_conversations_order ON sb_find_conversations (sort_key DESC, id DESC);
CREATE INDEX IF NOT EXISTS sb_find_conversations_contact ON sb_find_conversations (contact, sort_key DESC, id DESC);
CREATE INDEX IF NOT EXISTS sb_find_conversations_connection ON sb_find_conversations (connection, sort_key DESC, id DESC);
CREATE INDEX IF NOT EXISTS sb_find_conversations_terms ON sb_find_conversations USING gin (terms);
CREATE INDEX IF NOT EXISTS sb_find_conversations_emails ON sb_find_conversations USING gin (emails);
CREATE INDEX IF NOT EXISTS sb_find_conversations_phones ON sb_find_conversations USING gin (phones);
CREATE INDEX IF NOT EXISTS sb_find_conversations_visitor_ids ON sb_find_conversations USING gin (visitor_ids);
CREATE INDEX IF NOT EXISTS sb_find_conversations_agent_ids ON sb_find_conversations USING gin (agent_ids);
CREATE INDEX IF NOT EXISTS sb_find_conversations_tags ON sb_find_conversations USING gin (tags);

-- One row per ticket: whose it is. A contact's tickets read (updated_at DESC, id DESC).
CREATE TABLE IF NOT EXISTS sb_find_tickets (
    id bytea PRIMARY KEY,
    contact bytea,
    updated_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_find_tickets_contact ON sb_find_tickets (contact, updated_at DESC, id DESC);

-- Contacts: the record as JSON text (serde), its identity keys and the terms of its names as
-- columns for ListContacts' filters. Listed by id.
CREATE TABLE IF NOT EXISTS sb_find_contacts (
    id bytea PRIMARY KEY,
    identities bytea[] NOT NULL,
    name_terms tsvector NOT NULL,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_find_contacts_identities ON sb_find_contacts USING gin (identities);
CREATE INDEX IF NOT EXISTS sb_find_contacts_name_terms ON sb_find_contacts USING gin (name_terms);

-- Identity keys (`email:...`, `phone:...`, `visitor:<connection>/<id>`) and the contact each
-- points at.
CREATE TABLE IF NOT EXISTS sb_find_identities (
    key bytea PRIMARY KEY,
    contact bytea NOT NULL
);

-- Which conversation or ticket each event of the log is about: how an erasure finds the
-- events whose stored payloads it rewrites.
CREATE TABLE IF NOT EXISTS sb_find_events (
    sequence bigint PRIMARY KEY,
    conversation bytea,
    ticket bytea
);
CREATE INDEX IF NOT EXISTS sb_find_events_conversation ON sb_find_events (conversation) WHERE conversation IS NOT NULL;
CREATE INDEX IF NOT EXISTS sb_find_events_ticket ON sb_find_events (ticket) WHERE ticket IS NOT NULL;
