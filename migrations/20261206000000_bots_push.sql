-- Bot credentials and management (spec §4.3, §6.6, §12.6). A bot's secret is high-entropy, so
-- only its SHA-256 digest is kept; `secret_bcrypt` holds a hash imported from Mikoto, verified
-- once on the next login and then replaced by the digest.
ALTER TABLE bots
    ADD COLUMN secret_digest bytea,
    ADD COLUMN secret_bcrypt text,
    ADD COLUMN permissions text[] NOT NULL DEFAULT '{}',
    ADD COLUMN last_token_regenerated_at timestamptz,
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- Web Push subscriptions (spec §4.7, §12.2): one row per browser subscription; an endpoint
-- belongs to one user at a time.
CREATE TABLE push_subscriptions (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint   text NOT NULL,
    p256dh     text NOT NULL,
    auth       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT push_subscriptions_endpoint_key UNIQUE (endpoint)
);
CREATE INDEX push_subscriptions_user_id_idx ON push_subscriptions (user_id, created_at);
