CREATE TABLE outbox_stream_types (
    stream_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (stream_id, event_type)
);
