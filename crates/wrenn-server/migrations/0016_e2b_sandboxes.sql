-- Capsules made through the E2B-compatible API (src/e2b/): E2B's lifetime is a deadline
-- (`end_at`, Unix ms), not Wrenn's idle timeout; at it the capsule is destroyed, or paused
-- when the create asked for auto-pause. Capsules made through /v1 have no row here.
CREATE TABLE e2b_sandboxes (
    capsule_id TEXT PRIMARY KEY,
    end_at BIGINT NOT NULL,
    auto_pause BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX e2b_sandboxes_by_end ON e2b_sandboxes (end_at);
