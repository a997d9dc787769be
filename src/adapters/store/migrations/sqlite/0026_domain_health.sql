-- Domain health (HealthChanged): each check's worst outcome over the domain's names, copied out
-- of the view's payload (`routing:ok caa:forbidden`), so that the metric of domains by health
-- counts an index, not every payload. The views are built again from the events (the
-- catch-up at the next start), so that every domain's row holds it.
ALTER TABLE domain_views ADD COLUMN health text;
CREATE INDEX IF NOT EXISTS domain_views_health ON domain_views (health) WHERE health IS NOT NULL;
DELETE FROM domain_views;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'domain_views';
