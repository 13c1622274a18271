CREATE TABLE notification_customers (
    customer_id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    email_enabled BIGINT NOT NULL,
    sms_enabled BIGINT NOT NULL,
    marketing_opt_in BIGINT NOT NULL,
    locale TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    locale TEXT NOT NULL,
    recipient TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claim_token TEXT,
    claimed_until BIGINT,
    committing BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    CONSTRAINT notifications_once_per_event_and_channel UNIQUE (event_id, channel)
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, channel, created_at, id);
CREATE INDEX notifications_due ON notifications (channel, state, next_attempt_at);
CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (notification_id, attempt)
);
