-- The event store, exactly as postgres-es expects it.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Read projection behind GET /domains and GET /domains/{id}.
CREATE TABLE IF NOT EXISTS domain_views
(
    id            text   NOT NULL PRIMARY KEY,
    domain_name   text   NOT NULL,
    status        text   NOT NULL,
    last_sequence bigint NOT NULL,
    payload       text   NOT NULL
);
CREATE INDEX IF NOT EXISTS domain_views_status ON domain_views (status, id);

-- Read projection behind GET /domains/{id}/certificate.
CREATE TABLE IF NOT EXISTS certificate_views
(
    domain_id text NOT NULL PRIMARY KEY,
    payload   text NOT NULL
);

-- Set validation: a name belongs to at most one live domain.
CREATE TABLE IF NOT EXISTS domain_names
(
    domain_name text NOT NULL PRIMARY KEY,
    domain_id   text NOT NULL,
    reserved_at text NOT NULL
);

-- The one ACME account per directory. Holds a private key: never exposed through the API.
CREATE TABLE IF NOT EXISTS acme_accounts
(
    directory_url text NOT NULL PRIMARY KEY,
    account_id    text NOT NULL,
    credentials   text NOT NULL,
    created_at    text NOT NULL
);

-- Certificate private keys, by order, kept out of the event payloads.
CREATE TABLE IF NOT EXISTS certificate_keys
(
    order_id    text NOT NULL PRIMARY KEY,
    domain_id   text NOT NULL,
    private_key text NOT NULL,
    created_at  text NOT NULL
);
