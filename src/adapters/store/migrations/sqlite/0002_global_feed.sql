-- The global feed: every event gets a position in one total order, handed out in commit order.
-- SQLite has one writer at a time, and the trigger runs inside the writing transaction, so
-- MAX(position) + 1 is always taken after every earlier writer has committed.
ALTER TABLE events ADD COLUMN position integer;
ALTER TABLE events ADD COLUMN recorded_at text;
UPDATE events SET position = rowid, recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE position IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_position ON events (position);

CREATE TRIGGER IF NOT EXISTS events_assign_position AFTER INSERT ON events
BEGIN
    UPDATE events
    SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM events),
        recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE rowid = NEW.rowid;
END;

-- How far each projection has applied the feed.
CREATE TABLE IF NOT EXISTS projection_checkpoints
(
    name     text    NOT NULL PRIMARY KEY,
    position integer NOT NULL
);
