CREATE TABLE payments (
    order_id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    card_token TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_charge_id TEXT,
    provider_refund_id TEXT,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    refund_requested BIGINT NOT NULL,
    last_error TEXT,
    correlation_id TEXT,
    traceparent TEXT,
    charge_command_id TEXT,
    refund_command_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payments_due ON payments (next_attempt_at) WHERE status IN ('pending', 'refund_pending');
