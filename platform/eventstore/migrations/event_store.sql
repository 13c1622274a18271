CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    envelope TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version),
    CONSTRAINT events_event_id UNIQUE (event_id)
);
CREATE TABLE checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
