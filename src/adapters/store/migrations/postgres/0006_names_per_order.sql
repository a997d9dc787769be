-- Orders now cover several names (CertificateRequested 3.0): the views keep each pending order's
-- challenges and a domain's alt names, and views stored in the old shape cannot be read as the
-- new one. They are built again from the events (which are upcast) by the catch-up at the next
-- start; the name claims in domain_names are keyed by name and serve alt names as they are.
DELETE FROM domain_views;
DELETE FROM certificate_views;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'domain_views';
