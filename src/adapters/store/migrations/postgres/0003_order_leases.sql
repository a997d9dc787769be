-- Which replica polls which pending order. A lease row rather than advisory locks: a session
-- lock lives on one pooled connection and dies or lingers with it, cannot be seen by the other
-- replicas, and has no expiry; a row with an owner and an expiry time (PostgreSQL's clock, so
-- replicas' clocks do not matter) is visible, renewable in one statement for all of a
-- replica's orders, and moves to another replica by itself once its owner stops renewing.
CREATE TABLE IF NOT EXISTS order_leases
(
    domain_id  text        NOT NULL PRIMARY KEY,
    order_id   text        NOT NULL,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS order_leases_owner ON order_leases (owner);
