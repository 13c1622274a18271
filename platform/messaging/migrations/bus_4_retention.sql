CREATE INDEX bus_messages_by_age ON bus_messages (published_at);
CREATE INDEX bus_pending_by_seq ON bus_pending (seq);
CREATE INDEX bus_dead_letters_by_seq ON bus_dead_letters (seq);
