-- The keys the certificate stream (GET /edge/certificates) handed out: one row per receiver
-- (`edge:<name>` for an edge token, `admin` for the admin) and certificate, written before the
-- first chunk carrying that key left, never moved after (`first_delivered_at` is the first
-- time). Later deliveries are only counted in `edge_key_reads_total{edge}`. Times are sortable
-- RFC 3339 text, as elsewhere.
CREATE TABLE IF NOT EXISTS edge_key_deliveries
(
    edge               text NOT NULL,
    certificate_id     text NOT NULL,
    domain_id          text NOT NULL,
    first_delivered_at text NOT NULL,
    PRIMARY KEY (edge, certificate_id)
);

-- An auditor asks by certificate as well as by edge (the primary key serves that one).
CREATE INDEX IF NOT EXISTS edge_key_deliveries_by_certificate
    ON edge_key_deliveries (certificate_id, edge);
