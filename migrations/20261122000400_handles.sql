-- Custom-domain handle verification (spec §12.4).

-- The Ed25519 attestation of a verified custom domain (base64), when the instance signs them.
ALTER TABLE handles ADD COLUMN attestation text;

-- Stored challenges: a fresh nonce per start, 24 h, at most one per user or space (a new start
-- replaces the earlier challenge).
CREATE TABLE handle_challenges (
    user_id    uuid REFERENCES users (id) ON DELETE CASCADE,
    space_id   uuid REFERENCES spaces (id) ON DELETE CASCADE,
    domain     text NOT NULL,
    nonce      text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT handle_challenges_one_owner CHECK ((user_id IS NULL) <> (space_id IS NULL))
);
CREATE UNIQUE INDEX handle_challenges_user_id_key ON handle_challenges (user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX handle_challenges_space_id_key ON handle_challenges (space_id) WHERE space_id IS NOT NULL;
CREATE INDEX handle_challenges_expires_at_idx ON handle_challenges (expires_at);
