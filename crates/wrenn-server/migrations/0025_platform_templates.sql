-- Platform templates built by platform admins (`POST /v1/admin/builds`): a build marked
-- `platform` ends in a template of the platform's team marked `platform`, which every team
-- sees and creates capsules from (its own template of the same name first) but cannot delete.
ALTER TABLE builds ADD COLUMN platform BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN platform BIGINT NOT NULL DEFAULT 0;
