CREATE TABLE order_views (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    cancel_reason TEXT,
    lines TEXT NOT NULL,
    total_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    payment_status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deadline_at BIGINT,
    version BIGINT NOT NULL
);
CREATE INDEX order_views_customer ON order_views (customer_id, created_at);
CREATE INDEX order_views_deadline ON order_views (deadline_at) WHERE status = 'pending';

CREATE TABLE order_payment_methods (
    order_id TEXT PRIMARY KEY,
    card_token TEXT NOT NULL
);

CREATE TABLE order_idempotency (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
);
