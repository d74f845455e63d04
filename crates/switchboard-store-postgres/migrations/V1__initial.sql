-- Switchboard's PostgreSQL schema, version 1. See the crate's README for what each table holds
-- and which guarantee rests on it. Strings that come from vendors or plugins are bytea (UTF-8):
-- they may hold any character, NUL included, which text cannot, and compare byte by byte as on
-- sled. JSON is text written by serde (a NUL in it stays an escape).

-- One row: the head of the log and the counters. Every write transaction locks it first
-- (SELECT ... FOR UPDATE), which serializes writers across replicas until COMMIT.
CREATE TABLE sb_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    head bigint NOT NULL,
    conversations bigint NOT NULL,
    quarantine_next_id bigint NOT NULL,
    quarantine_entries bigint NOT NULL,
    quarantine_bytes bigint NOT NULL
);
INSERT INTO sb_state VALUES (1, 0, 0, 0, 0, 0);

-- The log. The unique key (connection, dedup_key) is the dedup index: global, permanent.
CREATE TABLE sb_events (
    sequence bigint PRIMARY KEY,
    id text NOT NULL,
    connection text NOT NULL,
    dedup_key bytea NOT NULL,
    vendor bytea NOT NULL,
    received_at bigint NOT NULL,
    request_id bytea,
    kind text NOT NULL,
    vendor_event bytea NOT NULL,
    occurred_at bigint NOT NULL,
    payload text NOT NULL,
    raw bytea,
    CONSTRAINT sb_events_dedup UNIQUE (connection, dedup_key)
);

-- Conversations without their messages; id is `connection/external id` (UTF-8 bytes), sort_at
-- is started_at if known, else updated_at: listings read (sort_at DESC, id DESC).
CREATE TABLE sb_conversations (
    id bytea PRIMARY KEY,
    connection text NOT NULL,
    vendor bytea NOT NULL,
    status text NOT NULL,
    started_at bigint,
    updated_at bigint NOT NULL,
    sort_at bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX sb_conversations_all ON sb_conversations (sort_at DESC, id DESC);
CREATE INDEX sb_conversations_connection ON sb_conversations (connection, sort_at DESC, id DESC);
CREATE INDEX sb_conversations_vendor ON sb_conversations (vendor, sort_at DESC, id DESC);
CREATE INDEX sb_conversations_status ON sb_conversations (status, sort_at DESC, id DESC);

-- A conversation's messages, one row each (a long conversation is never rewritten whole).
CREATE TABLE sb_messages (
    conversation bytea NOT NULL,
    key bytea NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (conversation, key)
);

-- Tickets; key is `connection/external id`, the order of listings.
CREATE TABLE sb_tickets (
    key bytea PRIMARY KEY,
    connection text NOT NULL,
    status text NOT NULL,
    updated_at bigint NOT NULL,
    sequence bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX sb_tickets_connection ON sb_tickets (connection, key);

CREATE TABLE sb_agents (
    connection text NOT NULL,
    login bytea NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (connection, login)
);

CREATE TABLE sb_sync (
    connection text PRIMARY KEY,
    body text NOT NULL
);

-- Idempotency keys held by one caller until released or expired (the database's clock).
CREATE TABLE sb_claims (
    connection text NOT NULL,
    key bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (connection, key)
);

-- Webhooks a plugin could not map; the body apart, the rest of the entry as JSON.
CREATE TABLE sb_quarantine (
    id bigint PRIMARY KEY,
    connection text NOT NULL,
    size bigint NOT NULL,
    body bytea NOT NULL,
    entry text NOT NULL
);
