-- Orders now cover several names (CertificateRequested 3.0) and certificates are renewed: the
-- views keep each pending order's challenges, a domain's alt names and its renewal, and views
-- stored in the old shape cannot be read as the new one. They are built again from the events
-- (which are upcast) by the catch-up at the next start; the name claims in domain_names are
-- keyed by name and serve alt names as they are.
DELETE FROM domain_views;
DELETE FROM certificate_views;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'domain_views';

-- What the background work looks for, without reading every view: the order a poller must
-- carry on (`open_order`: its id), and when the renewal scheduler must next look at a domain
-- (`wake_at`: its renewal or retry is due, or its certificate expires). `open_order` is null for
-- most domains most of the time; `wake_at` is set for every domain with a certificate (its due
-- time or its expiry), and the scheduler reads only the range that has passed.
ALTER TABLE domain_views ADD COLUMN open_order text;
ALTER TABLE domain_views ADD COLUMN wake_at text;
-- The current certificate's end of validity, for the metrics of certificates by time to expiry.
ALTER TABLE domain_views ADD COLUMN not_after text;
CREATE INDEX IF NOT EXISTS domain_views_open_order ON domain_views (id) WHERE open_order IS NOT NULL;
CREATE INDEX IF NOT EXISTS domain_views_wake_at ON domain_views (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS domain_views_not_after ON domain_views (not_after) WHERE not_after IS NOT NULL;

-- When to ask the CA again for a certificate's renewal window (ARI, RFC 9773): its Retry-After,
-- clamped. Operational state, like the leases: only a window that moves the renewal is a fact
-- (RenewalScheduled); asking again every few hours is not.
CREATE TABLE IF NOT EXISTS renewal_info_checks
(
    domain_id      text NOT NULL PRIMARY KEY,
    certificate_id text NOT NULL,
    check_at       text NOT NULL
);
CREATE INDEX IF NOT EXISTS renewal_info_checks_check_at ON renewal_info_checks (check_at);

-- When each certificate key is to be destroyed, and why: set by the projection as the key's
-- fate becomes known (its order ended without a certificate, its certificate's end of
-- validity, its domain's removal), found by the renewal scheduler through the index, which
-- records the destruction and deletes the row.
ALTER TABLE certificate_keys ADD COLUMN destroy_after text;
ALTER TABLE certificate_keys ADD COLUMN destroy_reason text;
ALTER TABLE certificate_keys ADD COLUMN certificate_id text;
CREATE INDEX IF NOT EXISTS certificate_keys_destroy_after ON certificate_keys (destroy_after)
    WHERE destroy_after IS NOT NULL;
