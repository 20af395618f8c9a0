-- A capsule's status is one of wrenn_types::CapsuleStatus's texts, checked by the database.
-- SQLite cannot add a CHECK to a table, so the table is rebuilt (on both databases alike):
-- every column of 0001, 0004 and 0007, every row, and its index.
CREATE TABLE capsules_checked (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    template TEXT NOT NULL,
    status TEXT NOT NULL CONSTRAINT capsules_status_check
        CHECK (status IN ('pending', 'starting', 'running', 'paused', 'stopped', 'error')),
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    disk_size_mb BIGINT NOT NULL,
    timeout_sec BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    last_active_at BIGINT,
    updated_at BIGINT NOT NULL,
    public BIGINT NOT NULL DEFAULT 0,
    access_token_hash TEXT,
    egress BIGINT NOT NULL DEFAULT 1,
    egress_allow TEXT NOT NULL DEFAULT '[]',
    egress_deny TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO capsules_checked (
    id, team_id, template, status, vcpus, memory_mb, disk_size_mb, timeout_sec, metadata, error,
    created_at, started_at, last_active_at, updated_at, public, access_token_hash, egress,
    egress_allow, egress_deny
)
SELECT
    id, team_id, template, status, vcpus, memory_mb, disk_size_mb, timeout_sec, metadata, error,
    created_at, started_at, last_active_at, updated_at, public, access_token_hash, egress,
    egress_allow, egress_deny
FROM capsules;
DROP TABLE capsules;
ALTER TABLE capsules_checked RENAME TO capsules;
CREATE INDEX capsules_by_team ON capsules (team_id, created_at);
