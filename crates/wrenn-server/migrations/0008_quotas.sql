-- Per-team quotas. A NULL limit is the platform default (set by `wrenn up` / `wrenn server`
-- flags, kept in settings as `quota_defaults`).
CREATE TABLE team_quotas (
    team_id TEXT PRIMARY KEY REFERENCES teams (id),
    capsules BIGINT,
    vcpus BIGINT,
    memory_mb BIGINT,
    disk_mb BIGINT,
    snapshots BIGINT,
    updated_at BIGINT NOT NULL
);

-- What creates, resumes and snapshots in flight hold against their team's quotas; removed
-- when the request ends, ignored after 15 minutes (a control plane that died mid-request).
CREATE TABLE quota_reservations (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL,
    capsules BIGINT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    disk_mb BIGINT NOT NULL,
    snapshots BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX quota_reservations_by_team ON quota_reservations (team_id, created_at);
