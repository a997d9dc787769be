-- How far the delegation-zone follower has applied the event feed (see the PostgreSQL
-- migration of the same number). SQLite mode has one replica, so one row; `updated_at` is
-- sortable RFC 3339 text written by that process.
CREATE TABLE IF NOT EXISTS zone_followers
(
    replica_id text    NOT NULL PRIMARY KEY,
    position   integer NOT NULL,
    updated_at text    NOT NULL
);
