-- Rows stored before this migration committed in position order (appends took turns on a lock):
-- transaction 0 keeps them first, in that order. Later rows carry their transaction's id.
ALTER TABLE events ADD COLUMN tx_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX events_commit_order ON events (tx_id, position);
CREATE VIEW events_in_commit_order AS
    SELECT position, version, envelope, recorded_at, tx_id AS commit_order FROM events;
-- The lowest transaction id that may still add events here: the oldest transaction running in
-- this database (only its own connections can write its tables; other databases' do not hold it
-- back), or the next id to be handed out. Running ids are 32-bit; each is widened to 64 bits
-- from the next id, which is less than 2^31 away.
CREATE VIEW event_horizon AS
    WITH snapshot AS (
        SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_to_start
    ),
    running AS (
        SELECT backend_xid AS xid FROM pg_stat_activity
        WHERE datname = current_database() AND backend_xid IS NOT NULL
        UNION ALL
        SELECT transaction FROM pg_prepared_xacts WHERE database = current_database()
    )
    SELECT LEAST(s.next_to_start, MIN(s.next_to_start
               - ((s.next_to_start % 4294967296 - r.xid::text::bigint + 6442450944) % 4294967296
                  - 2147483648))) AS horizon,
           s.next_to_start
    FROM snapshot AS s LEFT JOIN running AS r ON true
    GROUP BY s.next_to_start;
