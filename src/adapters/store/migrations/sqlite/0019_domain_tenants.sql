-- Tenants (DomainRegistered 3.0). The tenant a domain belongs to is copied out of the view's
-- payload, so that GET /domains?tenant= reads an index, not every payload; views written before
-- it hold no tenant, as their registrations named none. A name claim carries its domain's
-- tenant too: the claims are written before the registration is recorded, so counting them
-- is what keeps a tenant under TENANT_DOMAIN_LIMIT when registrations race.
ALTER TABLE domain_views ADD COLUMN tenant text;
CREATE INDEX IF NOT EXISTS domain_views_tenant ON domain_views (tenant, id);
ALTER TABLE domain_names ADD COLUMN tenant text;
CREATE INDEX IF NOT EXISTS domain_names_tenant ON domain_names (tenant, domain_id);
