-- The global feed: every event gets a position in one total order, handed out in commit order.
--
-- A plain identity column is not enough: two transactions can take positions 7 and 8 and commit
-- as 8 then 7, and a reader that saw 8 before 7 existed would skip 7 for ever. Here a position
-- is taken under a transaction-scoped advisory lock that is held until commit, so a writer
-- cannot take position n+1 before the writer of n has committed (or rolled back, which leaves
-- a harmless hole in the numbers, never a skipped event).
CREATE SEQUENCE IF NOT EXISTS events_position_seq;
ALTER TABLE events ADD COLUMN IF NOT EXISTS position bigint;
ALTER TABLE events ADD COLUMN IF NOT EXISTS recorded_at text NOT NULL
    DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- Rows written before this migration get positions in their stream order.
WITH ordered AS (
    SELECT aggregate_type, aggregate_id, sequence,
           row_number() OVER (ORDER BY recorded_at, aggregate_id, sequence) AS n
    FROM events WHERE position IS NULL
)
UPDATE events e SET position = o.n
FROM ordered o
WHERE e.aggregate_type = o.aggregate_type AND e.aggregate_id = o.aggregate_id
  AND e.sequence = o.sequence;
SELECT setval('events_position_seq', COALESCE((SELECT MAX(position) FROM events), 0) + 1, false);
CREATE UNIQUE INDEX IF NOT EXISTS events_position ON events (position);

CREATE OR REPLACE FUNCTION events_assign_position() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7246002);
    NEW.position := nextval('events_position_seq');
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS events_assign_position ON events;
CREATE TRIGGER events_assign_position BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_assign_position();

-- How far each projection has applied the feed.
CREATE TABLE IF NOT EXISTS projection_checkpoints
(
    name     text   NOT NULL PRIMARY KEY,
    position bigint NOT NULL
);
