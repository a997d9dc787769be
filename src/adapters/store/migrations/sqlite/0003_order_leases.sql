-- SQLite mode is single-replica (the process holds an exclusive lock on `<database>.lock`), so
-- every order is this process's: no lease table is needed. This migration keeps the numbering
-- of both stores in step.
SELECT 1;
