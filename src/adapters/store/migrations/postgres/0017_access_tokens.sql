-- Access tokens the service manages (src/domain/access_token.rs). Each token is an aggregate
-- whose events live in token_events, hash-chained like the domains' log but outside the global
-- feed. Every replica keeps a table of the tokens in memory from these events
-- (src/read/token_table.rs), so token_events has a position of its own, handed out in commit
-- order under its own advisory lock (as 0002 does for events), and its commits wake the
-- replicas like the events' do (0004).
CREATE TABLE IF NOT EXISTS token_events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS token_events_position ON token_events (position);
CREATE SEQUENCE IF NOT EXISTS token_events_position_seq;

CREATE OR REPLACE FUNCTION token_events_assign_position() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7246017);
    NEW.position := nextval('token_events_position_seq');
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS token_events_assign_position ON token_events;
CREATE TRIGGER token_events_assign_position BEFORE INSERT ON token_events
    FOR EACH ROW EXECUTE FUNCTION token_events_assign_position();

DROP TRIGGER IF EXISTS token_events_notify_committed ON token_events;
CREATE TRIGGER token_events_notify_committed AFTER INSERT ON token_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify_committed();

CREATE TABLE IF NOT EXISTS token_snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- When each token was last used, to the minute or so: written at most once a minute per token
-- and replica, never as an event (a use is not a change of the token).
CREATE TABLE IF NOT EXISTS token_uses
(
    token_id     text NOT NULL PRIMARY KEY,
    last_used_at text NOT NULL
);
