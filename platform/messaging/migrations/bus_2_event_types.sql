ALTER TABLE bus_messages ADD COLUMN event_type TEXT NOT NULL DEFAULT '';
UPDATE bus_messages SET event_type = COALESCE(json_extract(envelope, '$.type'), '');
CREATE INDEX bus_messages_by_type ON bus_messages (category, event_type, seq);
