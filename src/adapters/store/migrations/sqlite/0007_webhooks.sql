-- Webhooks (see src/actors/webhooks.rs). Each endpoint is an aggregate whose events live in
-- webhook_events, hash-chained like the domains' log but outside the global feed: the feed is
-- what endpoints are sent.
CREATE TABLE IF NOT EXISTS webhook_events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        text                         NOT NULL,
    metadata       text                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE IF NOT EXISTS webhook_snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Signing secrets, sealed by the key vault (bound to their id), never in an event.
CREATE TABLE IF NOT EXISTS webhook_secrets
(
    secret_id   text NOT NULL PRIMARY KEY,
    endpoint_id text NOT NULL,
    secret      text NOT NULL,
    created_at  text NOT NULL
);

-- How far each endpoint has read the feed: every event up to position has been turned into its
-- messages (or had none for the endpoint).
CREATE TABLE IF NOT EXISTS webhook_cursors
(
    endpoint_id text   NOT NULL PRIMARY KEY,
    position    bigint NOT NULL
);

-- Each endpoint's messages as first built (so every retry sends the same id and body), sent one
-- at a time in (position, ordinal) order: an event may make two (a failed renewal of a
-- certificate about to end). attempts failed so far; the next at next_attempt_at.
CREATE TABLE IF NOT EXISTS webhook_messages
(
    endpoint_id     text   NOT NULL,
    position        bigint NOT NULL,
    ordinal         bigint NOT NULL,
    message_id      text   NOT NULL,
    message_type    text   NOT NULL,
    body            text   NOT NULL,
    created_at      text   NOT NULL,
    state           text   NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_at text,
    PRIMARY KEY (endpoint_id, position, ordinal)
);
CREATE INDEX IF NOT EXISTS webhook_messages_pending ON webhook_messages (endpoint_id, state, position, ordinal);

-- Every delivery attempt: when, what came back, how long it took.
CREATE TABLE IF NOT EXISTS webhook_attempts
(
    id           integer PRIMARY KEY AUTOINCREMENT,
    endpoint_id  text   NOT NULL,
    message_id   text   NOT NULL,
    position     bigint NOT NULL,
    attempt      bigint NOT NULL,
    attempted_at text   NOT NULL,
    status_code  bigint,
    latency_ms   bigint NOT NULL,
    error        text,
    replica      text   NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);
