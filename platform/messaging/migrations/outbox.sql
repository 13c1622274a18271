CREATE TABLE outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    stream_seq BIGINT NOT NULL,
    envelope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
CREATE TABLE outbox_streams (
    stream_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
