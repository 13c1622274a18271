-- One writer at a time: position order is commit order, and every committed event is final.
CREATE VIEW events_in_commit_order AS
    SELECT position, version, envelope, recorded_at, position AS commit_order FROM events;
CREATE VIEW event_horizon AS SELECT 9223372036854775807 AS horizon, 0 AS next_to_start;
