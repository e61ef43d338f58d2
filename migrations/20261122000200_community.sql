-- The community model (spec §3, §4.8–§4.16, §5): spaces, channels, roles, members, invites, bans.

CREATE TABLE spaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    icon       text,
    owner_id   uuid NOT NULL REFERENCES users (id),
    type       text NOT NULL DEFAULT 'NONE' CHECK (type IN ('NONE', 'DM', 'GROUP')),
    visibility text CHECK (visibility IN ('PRIVATE', 'PUBLIC')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spaces_owner_id_idx ON spaces (owner_id);

ALTER TABLE handles
    ADD CONSTRAINT handles_space_id_fkey FOREIGN KEY (space_id) REFERENCES spaces (id) ON DELETE CASCADE;

-- Exactly one default role (`@everyone`, position -1) per space.
CREATE TABLE roles (
    id          uuid PRIMARY KEY,
    space_id    uuid NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    name        text NOT NULL,
    color       text,
    permissions bigint NOT NULL DEFAULT 0,
    position    integer NOT NULL DEFAULT 0,
    is_default  boolean NOT NULL DEFAULT false
);
CREATE INDEX roles_space_id_idx ON roles (space_id);
CREATE UNIQUE INDEX roles_one_default ON roles (space_id) WHERE is_default;

-- Membership rows; the id is the member id of the wire (join order).
CREATE TABLE members (
    id       uuid PRIMARY KEY,
    space_id uuid NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT members_space_user_key UNIQUE (space_id, user_id)
);
CREATE INDEX members_user_id_idx ON members (user_id);
CREATE INDEX members_space_id_id_idx ON members (space_id, id);

-- Explicitly assigned roles; disappear with the membership or the role.
CREATE TABLE member_roles (
    space_id uuid NOT NULL,
    user_id  uuid NOT NULL,
    role_id  uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (space_id, user_id, role_id),
    FOREIGN KEY (space_id, user_id) REFERENCES members (space_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_roles_role_id_idx ON member_roles (role_id);

-- Channels of spaces (space_id set) and DMs (space_id null). The tree is by parent_id.
CREATE TABLE channels (
    id           uuid PRIMARY KEY,
    space_id     uuid REFERENCES spaces (id) ON DELETE CASCADE,
    parent_id    uuid REFERENCES channels (id) ON DELETE CASCADE,
    "order"      integer NOT NULL DEFAULT 0 CHECK ("order" >= 0),
    name         text NOT NULL,
    type         text NOT NULL CHECK (type IN ('TEXT', 'VOICE', 'DOCUMENT', 'APPLICATION', 'THREAD', 'CATEGORY')),
    last_updated timestamptz
);
CREATE INDEX channels_space_id_idx ON channels (space_id, "order", id);
CREATE INDEX channels_parent_id_idx ON channels (parent_id);

-- The Markdown snapshot of a DOCUMENT channel.
CREATE TABLE documents (
    channel_id uuid PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    content    text NOT NULL DEFAULT ''
);

-- Channel permission overrides (spec §5.3). The target is a role or a member's user id; rows of
-- a deleted role or a removed member are deleted in the same transaction.
CREATE TABLE channel_overrides (
    channel_id  uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    target_type text NOT NULL CHECK (target_type IN ('ROLE', 'MEMBER')),
    target_id   uuid NOT NULL,
    allow       bigint NOT NULL DEFAULT 0,
    deny        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, target_type, target_id)
);
CREATE INDEX channel_overrides_target_id_idx ON channel_overrides (target_id);

-- Read markers (spec §12.5).
CREATE TABLE channel_unreads (
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    timestamp  timestamptz NOT NULL,
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX channel_unreads_channel_id_idx ON channel_unreads (channel_id);

CREATE TABLE invites (
    code       text PRIMARY KEY,
    space_id   uuid NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    creator_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    max_uses   integer CHECK (max_uses IS NULL OR max_uses > 0),
    uses       integer NOT NULL DEFAULT 0,
    expires_at timestamptz,
    -- When the last use was consumed (purged 7 days later).
    exhausted_at timestamptz
);
CREATE INDEX invites_space_id_idx ON invites (space_id, created_at, code);
CREATE INDEX invites_creator_id_idx ON invites (creator_id);

CREATE TABLE bans (
    id         uuid PRIMARY KEY,
    space_id   uuid NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bans_space_user_key UNIQUE (space_id, user_id)
);
CREATE INDEX bans_user_id_idx ON bans (user_id);

CREATE TABLE notification_preferences (
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    space_id uuid NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    level    text NOT NULL CHECK (level IN ('ALL', 'MENTIONS', 'NOTHING')),
    PRIMARY KEY (user_id, space_id)
);
CREATE INDEX notification_preferences_space_id_idx ON notification_preferences (space_id);

-- Bots (spec §12.6): the rows `members.create` and `bots.install` consult.
CREATE TABLE bots (
    user_id          uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    owner_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    visibility       text NOT NULL DEFAULT 'PRIVATE' CHECK (visibility IN ('PUBLIC', 'PRIVATE')),
    token_generation bigint NOT NULL DEFAULT 0
);
CREATE INDEX bots_owner_id_idx ON bots (owner_id);
