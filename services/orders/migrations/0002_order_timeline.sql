ALTER TABLE order_views ADD COLUMN reserved_at BIGINT;
ALTER TABLE order_views ADD COLUMN paid_at BIGINT;
ALTER TABLE order_views ADD COLUMN confirmed_at BIGINT;
ALTER TABLE order_views ADD COLUMN cancelled_at BIGINT;
