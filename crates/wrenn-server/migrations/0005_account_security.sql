-- Account security.
-- An API key lives with its owner's membership: `owner_id` is the user whose keys it counts
-- as (the user who made it, or the owner of the key that made it); NULL = the team's own key
-- (the admin key `wrenn up` makes). Removing a member deletes their keys.
ALTER TABLE api_keys ADD COLUMN owner_id TEXT;
UPDATE api_keys SET owner_id = created_by WHERE created_by LIKE 'usr-%';
-- Keys made by keys inherit their maker's owner (chains of a few links at most).
UPDATE api_keys SET owner_id = (SELECT k.owner_id FROM api_keys k WHERE k.id = api_keys.created_by)
    WHERE owner_id IS NULL AND created_by LIKE 'key-%';
UPDATE api_keys SET owner_id = (SELECT k.owner_id FROM api_keys k WHERE k.id = api_keys.created_by)
    WHERE owner_id IS NULL AND created_by LIKE 'key-%';
UPDATE api_keys SET owner_id = (SELECT k.owner_id FROM api_keys k WHERE k.id = api_keys.created_by)
    WHERE owner_id IS NULL AND created_by LIKE 'key-%';
-- Keys of users who already left their team die now (the rule applies to them too).
DELETE FROM api_keys WHERE owner_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM memberships m WHERE m.team_id = api_keys.team_id AND m.user_id = api_keys.owner_id
);
CREATE INDEX api_keys_by_owner ON api_keys (team_id, owner_id);

-- User tokens are sessions: a token is valid while its row exists (log out deletes it).
CREATE TABLE user_sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX user_sessions_by_user ON user_sessions (user_id, expires_at);

-- Invitations to sign up into a team: single use, with an expiry; only the token's SHA-256 is
-- kept.
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by TEXT,
    used_at BIGINT
);
CREATE INDEX invitations_by_team ON invitations (team_id, created_at);
