CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
