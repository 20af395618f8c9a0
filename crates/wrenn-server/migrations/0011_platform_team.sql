-- The platform's team (its owners and admins are the platform admins): the team of
-- `admin@localhost` (made at the first start of `wrenn up`/`wrenn server`), or, on an install
-- whose first account signed up, that account's own team. Kept in `settings` as
-- `platform_team`; an existing database gets it here, a new one when its first team is made.
INSERT INTO settings (name, value)
SELECT 'platform_team', m.team_id
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.role = 'owner'
ORDER BY CASE WHEN u.email = 'admin@localhost' THEN 0 ELSE 1 END, u.created_at, m.created_at
LIMIT 1;
