-- Cross-replica notifications (PostgreSQL NOTIFY) whose payload is too large for NOTIFY's
-- 8000 bytes: the payload waits here and the notification carries its id. Rows are removed
-- after a few minutes. Unused on SQLite (one control plane).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_by_age ON notifications (created_at);

-- Failed log-ins per account (`account:EMAIL`) and per client address (`address:IP`) within the
-- current window, shared by every control plane on the database (accounts/limits.rs).
CREATE TABLE login_failures (
    subject TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    failures BIGINT NOT NULL
);
CREATE INDEX login_failures_by_start ON login_failures (started_at);
