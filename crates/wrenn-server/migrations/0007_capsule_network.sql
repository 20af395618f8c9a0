-- Per-capsule egress: on/off and allow/deny lists (JSON arrays of CIDRs and domain names).
ALTER TABLE capsules ADD COLUMN egress BIGINT NOT NULL DEFAULT 1;
ALTER TABLE capsules ADD COLUMN egress_allow TEXT NOT NULL DEFAULT '[]';
ALTER TABLE capsules ADD COLUMN egress_deny TEXT NOT NULL DEFAULT '[]';
