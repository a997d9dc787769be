-- What was spent of the budgets kept for the CA (see src/adapters/store/ca_budgets.rs): one row per
-- new order asked for (subject: the ACME directory) and per failed validation (subject: the
-- name), kept for the budget's window.
CREATE TABLE IF NOT EXISTS ca_budget_spend
(
    id       integer PRIMARY KEY AUTOINCREMENT,
    budget   text NOT NULL,
    subject  text NOT NULL,
    spent_at text NOT NULL
);
CREATE INDEX IF NOT EXISTS ca_budget_spend_window ON ca_budget_spend (budget, subject, spent_at);
