-- Access tokens the service manages (src/domain/access_token.rs). Each token is an aggregate
-- whose events live in token_events, hash-chained like the domains' log but outside the global
-- feed. The table of tokens each process keeps in memory (src/read/token_table.rs) follows
-- them by position: one writer at a time, so MAX(position) + 1 follows commit order (as 0002).
CREATE TABLE IF NOT EXISTS token_events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        text                         NOT NULL,
    metadata       text                         NOT NULL,
    position       integer,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS token_events_position ON token_events (position);

CREATE TRIGGER IF NOT EXISTS token_events_assign_position AFTER INSERT ON token_events
BEGIN
    UPDATE token_events
    SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM token_events)
    WHERE rowid = NEW.rowid;
END;

CREATE TABLE IF NOT EXISTS token_snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- When each token was last used, to the minute or so (written at most once a minute per token).
CREATE TABLE IF NOT EXISTS token_uses
(
    token_id     text NOT NULL PRIMARY KEY,
    last_used_at text NOT NULL
);
