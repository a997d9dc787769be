-- The certificate keys no disposal mark has reached: those of open orders (a few), and any
-- stored after its domain's removal was marked (a replica finalizing an order after another
-- removed the domain). The key-destruction pass finds the latter through this index, by
-- domain, without reading every key.
CREATE INDEX IF NOT EXISTS certificate_keys_unmarked ON certificate_keys (domain_id)
    WHERE destroy_after IS NULL;
