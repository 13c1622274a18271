CREATE TABLE payment_attempts (
    order_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    provider_id TEXT,
    error TEXT,
    PRIMARY KEY (order_id, step, attempt)
);
