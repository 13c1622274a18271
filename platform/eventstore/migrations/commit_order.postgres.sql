-- Rows stored before this migration committed in position order (appends took turns on a lock):
-- transaction 0 keeps them first, in that order. Later rows carry their transaction's id.
ALTER TABLE events ADD COLUMN tx_id xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT pg_current_xact_id();
CREATE INDEX events_commit_order ON events (tx_id, position);
-- Below the oldest transaction still running nothing can appear any more.
CREATE VIEW committed_events AS
    SELECT position, version, envelope, recorded_at, tx_id AS commit_order
    FROM events
    WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot());
CREATE VIEW event_horizon AS
    SELECT pg_snapshot_xmin(s)::text::bigint AS oldest_running,
           pg_snapshot_xmax(s)::text::bigint AS next_to_start
    FROM pg_current_snapshot() AS s;
