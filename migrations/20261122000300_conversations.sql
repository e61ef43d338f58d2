-- Conversations (spec §4.5, §4.6, §4.10): relationships, DM channels, messages, search.

-- Each side of a pair has its own row; `relation_id` is the other user.
CREATE TABLE relationships (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    relation_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state       text NOT NULL CHECK (state IN ('FRIEND', 'BLOCKED', 'INCOMING_REQUEST', 'OUTGOING_REQUEST')),
    channel_id  uuid REFERENCES channels (id) ON DELETE SET NULL,
    CONSTRAINT relationships_pair_key UNIQUE (user_id, relation_id)
);
CREATE INDEX relationships_relation_id_idx ON relationships (relation_id);
CREATE INDEX relationships_channel_id_idx ON relationships (channel_id);

-- Messages of space and DM channels. Ids are UUIDv7 and `timestamp` is the id's millisecond,
-- so (channel_id, id) orders a channel's history by (timestamp, id) with no ties.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    channel_id       uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    author_id        uuid REFERENCES users (id) ON DELETE SET NULL,
    timestamp        timestamptz NOT NULL,
    edited_timestamp timestamptz,
    content          text NOT NULL,
    search           tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX messages_channel_id_id_idx ON messages (channel_id, id);
CREATE INDEX messages_search_idx ON messages USING gin (search);
CREATE INDEX messages_author_id_idx ON messages (author_id);

CREATE TABLE message_attachments (
    id           uuid PRIMARY KEY,
    message_id   uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    url          text NOT NULL,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size         integer NOT NULL,
    "order"      integer NOT NULL
);
CREATE INDEX message_attachments_message_id_idx ON message_attachments (message_id, "order");

-- Idempotency keys of message sends (spec §4.10): remembered 10 minutes, shared by every
-- instance through the database. `message_id` is null while the first request is in flight.
CREATE TABLE idempotency_keys (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    operation  text NOT NULL,
    key        text NOT NULL,
    message_id uuid REFERENCES messages (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, operation, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
