-- How far each replica's delegation-zone follower has applied the event feed. A delegated
-- order is reported ready to the CA only once every live replica (its row written within
-- `zone_follower::LIVE_WITHIN`, by PostgreSQL's clock) has applied the event that opened it:
-- the CA may ask any replica's nameserver. The follower writes its row after each batch it
-- applies and at every heartbeat while idle.
CREATE TABLE IF NOT EXISTS zone_followers
(
    replica_id text        NOT NULL PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
