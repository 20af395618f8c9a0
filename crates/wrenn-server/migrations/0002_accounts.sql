-- Accounts: a user's teams and a team's keys by index, and a per-team audit sequence so a
-- team's log has one stable order (timestamps tie within a millisecond; ids are random).
CREATE INDEX memberships_by_user ON memberships (user_id, created_at);
CREATE INDEX api_keys_by_team ON api_keys (team_id, created_at);

ALTER TABLE audit_log ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE audit_log SET seq = (
    SELECT COUNT(*) FROM audit_log AS a
    WHERE a.team_id = audit_log.team_id
      AND (a.created_at < audit_log.created_at
           OR (a.created_at = audit_log.created_at AND a.id <= audit_log.id))
);
CREATE UNIQUE INDEX audit_by_team_seq ON audit_log (team_id, seq);
