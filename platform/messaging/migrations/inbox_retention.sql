CREATE INDEX inbox_processed_by_age ON inbox_processed (subscriber, processed_at);
