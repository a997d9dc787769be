-- Signed checkpoints of the whole log (see src/audit/checkpoints.rs): the feed position covered, the
-- number of events up to it, the running log hash, and an Ed25519 signature by a key that is
-- never stored here.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    position bigint NOT NULL PRIMARY KEY,
    event_count bigint NOT NULL,
    log_hash text NOT NULL,
    signed_at text NOT NULL,
    public_key text NOT NULL,
    signature text NOT NULL
);

-- Certificate views now carry their chain, so the certificate is served from the view alone:
-- they are built again from the events by the catch-up at the next start.
DELETE FROM certificate_views;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'domain_views';
