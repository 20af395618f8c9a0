-- The host tags a capsule was created with (JSON array): a move keeps to hosts that have them.
ALTER TABLE capsules ADD COLUMN host_tags TEXT NOT NULL DEFAULT '[]';
