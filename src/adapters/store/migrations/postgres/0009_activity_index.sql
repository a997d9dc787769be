-- The console's overview counts issuances and failures per day (GET /overview): this index
-- lets it read only the events of those types in the window it shows, not the whole log.
CREATE INDEX IF NOT EXISTS events_type_recorded_at ON events (event_type, recorded_at);
