-- One writer at a time: position order is commit order, and nothing commits out of turn.
CREATE VIEW committed_events AS
    SELECT position, version, envelope, recorded_at, position AS commit_order FROM events;
CREATE VIEW event_horizon AS SELECT 0 AS oldest_running, 0 AS next_to_start;
