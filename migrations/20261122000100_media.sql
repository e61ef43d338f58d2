-- The media index (spec §10.3, §10.7, §10.8): one row per uploaded object. Objects in the
-- backend without a row predate alterego (§10.9) and are served but never collected.
CREATE TABLE media_objects (
    key          text PRIMARY KEY,
    store        text NOT NULL CHECK (store IN ('avatar', 'spaceicon', 'attachment')),
    content_type text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    -- The original filename, sanitised (control characters and path removed, ≤ 255 characters).
    filename     text NOT NULL,
    uploader_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when a reference to the object is first stored (avatar, icon, attachment, document).
    claimed_at   timestamptz,
    CONSTRAINT media_objects_key_store CHECK (starts_with(key, store || '/'))
);
CREATE INDEX media_objects_uploader_id_idx ON media_objects (uploader_id);
-- The garbage collector's scan: unclaimed objects by age.
CREATE INDEX media_objects_unclaimed_idx ON media_objects (created_at) WHERE claimed_at IS NULL;
