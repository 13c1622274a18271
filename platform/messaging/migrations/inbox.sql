CREATE TABLE inbox_processed (
    subscriber TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (subscriber, event_id)
);
CREATE TABLE inbox_streams (
    subscriber TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (subscriber, stream_id)
);
