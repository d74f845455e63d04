-- Job leases (Storage::acquire_lease): one holder per name until it releases or its lease runs
-- out; e.g. `sync/<connection>`, so that one replica at a time syncs a connection.
CREATE TABLE sb_leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
