-- Collaborative documents (spec §9.4). `documents` keeps the Markdown snapshot (REST) and gains
-- the compacted Y state; every applied Y update is appended to `document_updates` before it is
-- broadcast, and compaction folds rows into `y_state` in one transaction. Deleting a channel
-- deletes both through the foreign keys.
ALTER TABLE documents
    ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN y_state bytea;

CREATE TABLE document_updates (
    id         bigserial PRIMARY KEY,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX document_updates_channel_id_idx ON document_updates (channel_id, id);
