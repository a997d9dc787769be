-- Tell every listening replica that events were committed, so its following feed streams look
-- at once instead of at their next poll (src/commit_signal.rs).
--
-- PostgreSQL delivers a notification when the inserting transaction commits and never for one
-- that rolls back, and merges identical notifications of one transaction: one per commit, with
-- no payload, as a signal only says "look again" (each reader's feed position decides what is
-- new). The commit-time lock NOTIFY takes costs nothing extra here: commits that insert events
-- are already serialised by the position lock (0002).
CREATE OR REPLACE FUNCTION events_notify_committed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('dns_handling_events', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS events_notify_committed ON events;
CREATE TRIGGER events_notify_committed AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify_committed();
