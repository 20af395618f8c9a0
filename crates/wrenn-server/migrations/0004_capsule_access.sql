-- The port proxy: public capsules, and the hash of each capsule's access token.
ALTER TABLE capsules ADD COLUMN public BIGINT NOT NULL DEFAULT 0;
ALTER TABLE capsules ADD COLUMN access_token_hash TEXT;
