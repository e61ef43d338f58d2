-- Messages imported from Mikoto (`alterego import-mikoto`). Mikoto's message ids are random
-- UUIDv4s with a separate timestamp; the importer mints time-ordered UUIDv7 ids from the
-- timestamps so the `(channel_id, id)` keyset stays the only sort key of the hot path. This
-- table maps the old ids, which a client may still send as a history cursor, to the new ones.
CREATE TABLE imported_message_ids (
    legacy_id  uuid PRIMARY KEY,
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE
);
-- Deleting a message looks its mapping up by the new id.
CREATE INDEX imported_message_ids_message_id_idx ON imported_message_ids (message_id);
