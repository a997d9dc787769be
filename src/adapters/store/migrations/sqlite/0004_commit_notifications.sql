-- PostgreSQL's 0004 wakes other replicas' feed followers through NOTIFY. SQLite mode is a single
-- process that wakes its followers in process, so nothing is needed; this keeps the numbering of
-- both stores in step.
SELECT 1;
