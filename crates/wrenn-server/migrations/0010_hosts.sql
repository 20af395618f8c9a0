-- Many hosts under one control plane: the hosts, their tags and tokens, where each capsule
-- and snapshot lives, the placements in flight, and leases for background work that must run
-- once across control-plane replicas.

-- A registered (or to-be-registered) host agent. `kind` is the API's `type`.
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CONSTRAINT hosts_kind_check CHECK (kind IN ('regular', 'byoc')),
    -- The owning team of a `byoc` host; NULL for `regular` hosts.
    team_id TEXT REFERENCES teams (id),
    provider TEXT NOT NULL DEFAULT '',
    availability_zone TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL
        CONSTRAINT hosts_status_check CHECK (status IN ('pending', 'online', 'unreachable')),
    -- No new placements while set (`wrenn host drain`).
    draining BIGINT NOT NULL DEFAULT 0,
    -- The built-in agent of `wrenn up` (reached over its Unix socket, never registered).
    builtin BIGINT NOT NULL DEFAULT 0,
    -- Where the control plane reaches its agent.v1 (`host:port`, or `unix:/path`).
    address TEXT NOT NULL DEFAULT '',
    -- Specs, as the agent reported them at registration (and refreshes with each heartbeat).
    arch TEXT NOT NULL DEFAULT '',
    cpu_cores BIGINT NOT NULL DEFAULT 0,
    memory_mb BIGINT NOT NULL DEFAULT 0,
    disk_mb BIGINT NOT NULL DEFAULT 0,
    slots TEXT NOT NULL DEFAULT '',
    vmm TEXT NOT NULL DEFAULT '',
    accel TEXT NOT NULL DEFAULT '',
    -- The last heartbeat's load (wrenn_types::api::hosts::HostLoad as JSON).
    load TEXT NOT NULL DEFAULT '{}',
    last_heartbeat_at BIGINT,
    -- The server certificate the control plane issued it last (SHA-256 of its DER, hex).
    cert_fingerprint TEXT,
    cert_expires_at BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX hosts_by_team ON hosts (team_id);

CREATE TABLE host_tags (
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (host_id, tag)
);

-- Registration tokens (single use, 1 h) and refresh tokens (rotated on use); SHA-256 only.
CREATE TABLE host_tokens (
    id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CONSTRAINT host_tokens_kind_check CHECK (kind IN ('registration', 'refresh')),
    token_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    -- Set when used (registration) or rotated/revoked (refresh): never valid again.
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX host_tokens_by_host ON host_tokens (host_id, kind);

-- What placements in flight hold on a host (so concurrent creates do not all pick the host
-- that looked emptiest); removed when the create ends, ignored after 15 minutes.
CREATE TABLE host_reservations (
    id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    disk_mb BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX host_reservations_by_host ON host_reservations (host_id, created_at);

-- Background work that runs once across replicas: the holder renews before `expires_at`.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

ALTER TABLE teams ADD COLUMN is_byoc BIGINT NOT NULL DEFAULT 0;

-- Where a snapshot template was made (its files are fetched from there by other hosts).
ALTER TABLE templates ADD COLUMN host_id TEXT;

-- The capsules table again (SQLite cannot change a CHECK): its host, and status `missing`.
CREATE TABLE capsules_hosted (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    template TEXT NOT NULL,
    status TEXT NOT NULL CONSTRAINT capsules_status_check
        CHECK (status IN ('pending', 'starting', 'running', 'paused', 'stopped', 'error', 'missing')),
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
    egress_deny TEXT NOT NULL DEFAULT '[]',
    -- The host it runs (or is paused) on; NULL only for rows older than hosts.
    host_id TEXT
);
INSERT INTO capsules_hosted (
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
ALTER TABLE capsules_hosted RENAME TO capsules;
CREATE INDEX capsules_by_team ON capsules (team_id, created_at);
CREATE INDEX capsules_by_host ON capsules (host_id, status);
