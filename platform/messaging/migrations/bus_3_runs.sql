CREATE TABLE bus_members (
    run_id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
ALTER TABLE bus_pending ADD COLUMN run_id TEXT;
CREATE INDEX bus_pending_by_run ON bus_pending (run_id);
