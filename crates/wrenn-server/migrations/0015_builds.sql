-- Template builds from recipes and Dockerfiles (builds/). A build's steps' records are JSON
-- in `logs`; its archive (a vetted tar, see builds/archive.rs) waits in build_archives until
-- the build ends. `running` rows of a control plane that stopped are failed at its next start.
CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    source TEXT NOT NULL,
    base_template TEXT NOT NULL,
    healthcheck TEXT,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    disk_mb BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled')),
    current_step BIGINT NOT NULL DEFAULT 0,
    total_steps BIGINT NOT NULL DEFAULT 0,
    logs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    capsule_id TEXT,
    default_user TEXT NOT NULL DEFAULT '',
    default_workdir TEXT NOT NULL DEFAULT '',
    default_env TEXT NOT NULL DEFAULT '{}',
    expose TEXT NOT NULL DEFAULT '[]',
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    has_archive BIGINT NOT NULL DEFAULT 0,
    -- Refreshed by the running build; a `running` row not refreshed for a minute lost its runner.
    updated_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX builds_by_team ON builds (team_id, created_at);
CREATE INDEX builds_by_status ON builds (status, created_at);

CREATE TABLE build_archives (
    build_id TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
