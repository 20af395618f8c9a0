-- Every 10 s, per team with live capsules: what it runs (for stats, peaks and usage).
CREATE TABLE usage_samples (
    team_id TEXT NOT NULL,
    sampled_at BIGINT NOT NULL,
    running BIGINT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    PRIMARY KEY (team_id, sampled_at)
);
