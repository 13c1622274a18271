CREATE TABLE bus_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    envelope TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE INDEX bus_messages_by_category ON bus_messages (category, seq);
CREATE TABLE bus_groups (
    group_name TEXT NOT NULL,
    category TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_name, category)
);
CREATE TABLE bus_pending (
    group_name TEXT NOT NULL,
    category TEXT NOT NULL,
    seq BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    visible_at BIGINT NOT NULL,
    PRIMARY KEY (group_name, category, seq)
);
CREATE INDEX bus_pending_by_visibility ON bus_pending (group_name, category, visible_at);
CREATE TABLE bus_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    category TEXT NOT NULL,
    seq BIGINT NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    parked_at BIGINT NOT NULL
);
