//! The finishing pass over the generated OpenAPI document (`/api.json`): what generators and
//! validators need and the route definitions cannot say by themselves — every operation's
//! description and the 4xx/5xx responses it can give with their `code`s, the optional fields
//! without a `default: null` (generators read it as "required"), the query parameters the
//! server requires, and Mikoto's `websocket` key mirrored as `x-websocket` for validators.

use serde_json::{Map, Value, json};

use crate::error::ErrorCode::{self, *};

/// Who may call an operation, as far as the error responses go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// No token needed.
    Anyone,
    /// A user or bot token.
    Any,
    /// A user token (bots get 403 `BotNotAllowed`).
    User,
}

/// One operation's reference entry: what it does (who may call it, which events it emits) and
/// the codes specific to it (the generic ones are added from the operation's shape).
struct Entry {
    id: &'static str,
    caller: Caller,
    description: &'static str,
    codes: &'static [ErrorCode],
}

const fn op(id: &'static str, caller: Caller, description: &'static str, codes: &'static [ErrorCode]) -> Entry {
    Entry {
        id,
        caller,
        description,
        codes,
    }
}

use Caller::{Any, Anyone, User};

const MEMBER: &[ErrorCode] = &[NotFound];
const MANAGER: &[ErrorCode] = &[NotFound, InsufficientPermissions];
const RANKED: &[ErrorCode] = &[NotFound, InsufficientPermissions, InsufficientRank];

#[rustfmt::skip]
const ENTRIES: &[Entry] = &[
    op("index", Anyone, "The server's name and version.", &[]),
    op("instance.info", Anyone, "This instance's domain, API endpoint and handle-attestation key.", &[]),
    op("account.register", Anyone, "Creates an account, its user, default handle and first session; returns a token pair. Limited per client address (`auth`, `register`).", &[ValidationFailed, PasswordTooShort, PasswordTooLong, EmailTaken, RegistrationDisabled, ServiceUnavailable]),
    op("account.login", Anyone, "Opens a new session for an email and password; every failure is the same 401 `WrongPassword`. Limited per address and per email.", &[WrongPassword, ServiceUnavailable]),
    op("account.refresh", Anyone, "Rotates a refresh token. A token reused after the grace period revokes its whole session (401 `RefreshTokenReused`, sockets closed with 4006).", &[InvalidRefreshToken, RefreshTokenReused, TokenExpired]),
    op("account.logout", Anyone, "Revokes one session: the one of the given refresh token, or the caller's. Its sockets close with 4006.", &[Unauthorized]),
    op("account.logout_all", User, "Revokes every session of the caller's account; their sockets close with 4006.", &[]),
    op("account.change_password", User, "Checks the old password, sets the new one, revokes every session and returns a pair for a new one.", &[WrongPassword, PasswordTooShort, PasswordTooLong, ServiceUnavailable]),
    op("account.reset_password", Anyone, "Mails a reset link when the email has an account. Always answers `null`, at the same speed either way.", &[]),
    op("account.reset_password.confirm", Anyone, "Sets a new password with a reset token (single use, 1 h) and revokes every session.", &[InvalidResetToken, PasswordTooShort, PasswordTooLong, ServiceUnavailable]),
    op("bots.list", User, "The caller's bots (at most 25).", &[]),
    op("bots.create", User, "Creates a bot owned by the caller and returns its secret once (32 URL-safe characters).", &[LimitExceeded]),
    op("bots.login", Anyone, "Exchanges a bot's id and secret for a 24-hour bot token (no refresh token). Limited per address and per bot.", &[WrongPassword]),
    op("bots.get", User, "One of the caller's bots; someone else's answers 404.", &[NotFound]),
    op("bots.update", User, "Changes a bot the caller owns (PATCH: `null` clears avatar and description). Profile changes emit `users.onUpdate` and `members.onUpdate` in its spaces.", &[NotFound, InvalidMediaReference]),
    op("bots.delete", User, "Deletes a bot the caller owns: it leaves every space (`members.onDelete`), loses its secret and invites, and its sockets close with 4006. Its user stays as the author of its messages.", &[NotFound]),
    op("bots.regenerateToken", User, "Replaces a bot's secret: every earlier bot token is refused at once and its sockets close with 4006.", &[NotFound]),
    op("bots.listSpaces", User, "The spaces a bot the caller owns is a member of.", &[NotFound]),
    op("bots.install", User, "Adds a bot to a space. The caller needs MANAGE_BOTS there and must own the bot unless it is public. Emits `spaces.onCreate` to the bot and `members.onCreate`.", &[NotFound, InsufficientPermissions, Forbidden, Banned, AlreadyMember, LimitExceeded]),
    op("bots.removeFromSpace", User, "Removes a bot the caller owns from a space (`members.onDelete`).", &[NotFound]),
    op("user.get", Any, "The caller's own user.", &[]),
    op("user.update", Any, "Changes the caller's profile (PATCH: absent fields stay, `null` clears avatar and description). Emits `users.onUpdate` and `members.onUpdate`.", &[InvalidMediaReference]),
    op("users.get", Any, "A user's public profile, visible to co-members, relations and the user.", &[NotFound]),
    op("users.presence", Any, "ONLINE or OFFLINE for up to 100 users of the caller's profile audience; other ids are left out.", &[InvalidQuery]),
    op("user.setHandle", Any, "Sets the caller's handle: a default `<name>.<domain>` handle, or a custom domain the caller has verified.", &[InvalidHandle, HandleTaken, CustomDomainRequiresVerification]),
    op("user.deleteHandle", Any, "Releases the caller's handle.", &[]),
    op("user.startHandleVerification", User, "Starts proving control of a custom domain: returns the DNS TXT record and well-known file to publish (valid 24 h).", &[InvalidHandle]),
    op("user.completeHandleVerification", User, "Checks the DNS record or the well-known file of a pending domain and, on success, gives the caller that handle.", &[InvalidHandle, HandleTaken]),
    op("handles.resolve", Anyone, "Who holds a handle.", &[NotFound]),
    op("relations.list", User, "The caller's relationships (friends, requests, blocks).", &[]),
    op("relations.get", User, "The caller's relationship with one user.", &[NotFound]),
    op("relations.sendRequest", User, "Sends a friend request (accepts an incoming one). Emits `relations.onCreate` to both users.", &[NotFound, CannotFriendSelf, CannotFriendBot, Forbidden, LimitExceeded]),
    op("relations.accept", User, "Accepts an incoming friend request (`relations.onUpdate` to both users).", &[NotFound, NotIncomingRequest]),
    op("relations.decline", User, "Declines an incoming friend request (`relations.onDelete` to both users).", &[NotFound, NotIncomingRequest]),
    op("relations.remove", User, "Removes a friend or an outgoing request, and the DM with them (`relations.onDelete`, `channels.onDelete`).", &[NotFound, CannotRemove]),
    op("relations.block", User, "Blocks a user (removing any friendship and DM).", &[NotFound, CannotBlockSelf]),
    op("relations.unblock", User, "Removes the caller's block of a user.", &[NotFound, NotBlocked]),
    op("relations.openDm", User, "The DM channel with a friend, created on first use.", &[NotFound, Forbidden]),
    op("dm.messages.list", User, "A page of a DM's messages (`before`, `after`, `around`, `limit` 1–100).", &[NotFound]),
    op("dm.messages.create", User, "Sends a DM (`messages.onCreate` to both participants). An `Idempotency-Key` header makes retries safe.", &[NotFound, InvalidMediaReference, Conflict]),
    op("dm.messages.search", User, "Full-text search in a DM (`q` 1–256 characters).", &[NotFound, InvalidQuery]),
    op("dm.messages.update", User, "Edits the caller's own DM message (`messages.onUpdate`).", &[NotFound, Forbidden]),
    op("dm.messages.delete", User, "Deletes the caller's own DM message (`messages.onDelete`).", &[NotFound, Forbidden]),
    op("dm.unreads", User, "The caller's read markers in their DMs.", &[]),
    op("dm.acknowledge", User, "Marks a DM as read now (`unreads.onUpdate` to the caller's other sessions).", &[NotFound]),
    op("push.config", Anyone, "The VAPID public key for `PushManager.subscribe()`, or `null` when push is off.", &[]),
    op("push.subscribe", User, "Stores the caller's browser push subscription (https endpoint on a public address; at most 20 per user, the oldest is dropped).", &[Conflict, PushDisabled]),
    op("push.unsubscribe", User, "Removes the caller's subscription for an endpoint, if any.", &[]),
    op("spaces.list", Any, "The spaces the caller is a member of, each with the channels and roles the caller may see.", &[]),
    op("spaces.create", User, "Creates a space owned by the caller, with `@everyone` and a first channel (`spaces.onCreate`).", &[LimitExceeded]),
    op("spaces.get", Any, "One space the caller is a member of.", MEMBER),
    op("spaces.update", Any, "Changes a space (MANAGE_SPACE; PATCH). Emits `spaces.onUpdate`.", &[NotFound, InsufficientPermissions, InvalidHandle, HandleTaken, InvalidMediaReference, CustomDomainRequiresVerification]),
    op("spaces.delete", Any, "Deletes a space (owner only); every member gets `spaces.onDelete`.", &[NotFound, Forbidden]),
    op("spaces.preview", Anyone, "What an invite leads to, without joining.", &[NotFound]),
    op("spaces.join", User, "Joins a space with an invite (or a public space's handle). Emits `spaces.onCreate` to the caller and `members.onCreate`.", &[NotFound, Banned, AlreadyMember, LimitExceeded, Forbidden]),
    op("spaces.leave", Any, "Leaves a space (`members.onDelete`, `spaces.onDelete` to the caller). The owner cannot leave.", &[NotFound, OwnerCannotLeave]),
    op("spaces.transferOwnership", User, "Gives the space to another (non-bot) member (owner only).", &[NotFound, Forbidden, ValidationFailed]),
    op("spaces.listNotificationPreferences", Any, "The caller's explicitly set notification levels.", &[]),
    op("spaces.getNotificationPreference", Any, "The caller's notification level in a space (ALL when never set).", MEMBER),
    op("spaces.setNotificationPreference", Any, "Sets the caller's notification level in a space (ALL, MENTIONS or NOTHING; Web Push honours it).", MEMBER),
    op("spaces.startHandleVerification", User, "Starts proving control of a custom domain for a space (MANAGE_SPACE).", &[NotFound, InsufficientPermissions, InvalidHandle]),
    op("spaces.completeHandleVerification", User, "Checks a pending domain and, on success, gives the space that handle.", &[NotFound, InsufficientPermissions, InvalidHandle, HandleTaken]),
    op("channels.list", Any, "The channels of a space the caller may view.", MEMBER),
    op("channels.get", Any, "One channel the caller may view.", MEMBER),
    op("channels.create", Any, "Creates a channel (MANAGE_CHANNELS; a DOCUMENT channel also gets an empty document). Emits `channels.onCreate` to those who can view it.", &[NotFound, InsufficientPermissions, LimitExceeded]),
    op("channels.update", Any, "Changes a channel (MANAGE_CHANNELS; PATCH). Emits `channels.onUpdate`.", MANAGER),
    op("channels.delete", Any, "Deletes a channel and its children (MANAGE_CHANNELS). Emits `channels.onDelete`; open document sockets close with 4013.", MANAGER),
    op("channels.unreads", Any, "The caller's read markers in a space.", MEMBER),
    op("channels.acknowledge", Any, "Marks a channel as read now (`unreads.onUpdate`).", MEMBER),
    op("channels.listOverrides", Any, "A channel's permission overrides (MANAGE_ROLES).", MANAGER),
    op("channels.getOverride", Any, "One permission override (MANAGE_ROLES).", MANAGER),
    op("channels.setOverride", Any, "Creates or replaces an override for a role or member (MANAGE_ROLES, within the caller's rank). Channels appear or disappear for the members it affects.", &[NotFound, InsufficientPermissions, InsufficientRank, LimitExceeded]),
    op("channels.deleteOverride", Any, "Deletes an override (MANAGE_ROLES, within the caller's rank).", RANKED),
    op("documents.get", Any, "The Markdown snapshot of a DOCUMENT channel (other channels: 404).", MEMBER),
    op("documents.update", Any, "Replaces a document's Markdown snapshot (SEND_MESSAGES; ≤ 262,144 characters; `null` keeps it). Emits `channels.onUpdate`.", &[NotFound, InsufficientPermissions]),
    op("documents.claimBootstrap", Any, "Whether the caller should seed the empty collaborative document from the snapshot: true for one writer, once, while no collaborative state exists.", MEMBER),
    op("messages.list", Any, "A page of a channel's messages (`before`, `after`, `around`, `limit` 1–100), oldest first.", MEMBER),
    op("messages.get", Any, "One message.", MEMBER),
    op("messages.create", Any, "Sends a message (SEND_MESSAGES; ATTACH_FILES for attachments, which must be uploads of the `attachment` store). Emits `messages.onCreate` to those who can view the channel; offline users mentioned may get a Web Push. An `Idempotency-Key` header makes retries safe.", &[NotFound, InsufficientPermissions, WrongChannelType, InvalidMediaReference, Conflict]),
    op("messages.update", Any, "Edits the caller's own message (`messages.onUpdate`).", &[NotFound, Forbidden]),
    op("messages.delete", Any, "Deletes a message: the author, or MANAGE_MESSAGES (`messages.onDelete`).", &[NotFound, InsufficientPermissions]),
    op("messages.search", Any, "Full-text search in a channel (`q` 1–256 characters), newest first.", &[NotFound, InvalidQuery]),
    op("voice.join", Any, "A LiveKit token for a VOICE channel's room; publishing needs SEND_MESSAGES.", &[NotFound, WrongChannelType, VoiceUnavailable]),
    op("members.list", Any, "A page of a space's members (`cursor`, `limit` 1–200).", MEMBER),
    op("members.get", Any, "One member.", MEMBER),
    op("members.create", Any, "Adds a bot to the space (MANAGE_BOTS; the caller's own bot or a public one). Emits `spaces.onCreate` to the bot and `members.onCreate`.", &[NotFound, InsufficientPermissions, Forbidden, Banned, AlreadyMember, LimitExceeded]),
    op("members.update", Any, "Sets a member's roles (ASSIGN_ROLES, within the caller's rank). Emits `members.onUpdate`.", &[NotFound, InsufficientPermissions, InsufficientRank, LimitExceeded]),
    op("members.delete", Any, "Kicks a member (BAN, outranking them; not the owner). Emits `members.onDelete`; their sockets stop receiving the space.", &[NotFound, InsufficientPermissions, InsufficientRank, CannotTargetSelf]),
    op("members.addRole", Any, "Gives a member a role below the caller's rank (ASSIGN_ROLES).", &[NotFound, InsufficientPermissions, InsufficientRank, DefaultRoleImmutable]),
    op("members.removeRole", Any, "Takes a role from a member (ASSIGN_ROLES, within the caller's rank).", &[NotFound, InsufficientPermissions, InsufficientRank, DefaultRoleImmutable]),
    op("roles.list", Any, "A space's roles.", MEMBER),
    op("roles.create", Any, "Creates a role below the caller's rank (MANAGE_ROLES). Emits `roles.onCreate`.", &[NotFound, InsufficientPermissions, InsufficientRank, LimitExceeded]),
    op("roles.update", Any, "Changes a role below the caller's rank (MANAGE_ROLES; PATCH). Emits `roles.onUpdate`.", &[NotFound, InsufficientPermissions, InsufficientRank, DefaultRoleImmutable]),
    op("roles.delete", Any, "Deletes a role below the caller's rank (MANAGE_ROLES). Emits `roles.onDelete`.", &[NotFound, InsufficientPermissions, InsufficientRank, DefaultRoleImmutable]),
    op("bans.list", Any, "A page of a space's bans (BAN).", MANAGER),
    op("bans.create", Any, "Bans a member or any user (BAN, outranking them; not the owner): they leave the space and cannot join again.", &[NotFound, InsufficientPermissions, InsufficientRank, CannotTargetSelf, AlreadyBanned]),
    op("bans.delete", Any, "Lifts a ban (BAN).", MANAGER),
    op("invites.list", Any, "A page of a space's invites (MANAGE_INVITES).", MANAGER),
    op("invites.create", Any, "Creates an invite (MANAGE_INVITES); optional `maxUses` and `expiresAt`. The body may be omitted.", &[NotFound, InsufficientPermissions, LimitExceeded]),
    op("invites.delete", Any, "Deletes an invite (MANAGE_INVITES).", MANAGER),
    // Served outside the REST router: described in `other_routes`, only their codes are here.
    op("media.upload", Any, "", &[UnsupportedFileType]),
];

/// Request examples: what a client typically sends (optional fields left out, as they should be).
fn request_example(id: &str) -> Option<Value> {
    Some(match id {
        "account.register" => json!({"email": "ada@example.org", "name": "Ada", "password": "correct horse battery"}),
        "account.login" => json!({"email": "ada@example.org", "password": "correct horse battery"}),
        "account.refresh" => json!({"refreshToken": "Q2hhbmdlIG1lOiB0aGlzIGlzIGFuIGV4YW1wbGUgdG9rZW4"}),
        "account.change_password" => {
            json!({"oldPassword": "correct horse battery", "newPassword": "staple battery horse"})
        }
        "account.reset_password" => json!({"email": "ada@example.org"}),
        "user.update" => json!({"description": "Analytical engines and poetry"}),
        "spaces.create" => json!({"name": "Engine Room"}),
        "spaces.update" => json!({"name": "Engine Room (archive)"}),
        "channels.create" => json!({"name": "design", "type": "TEXT"}),
        "channels.update" => json!({"name": "design-notes"}),
        "roles.create" => json!({"name": "Moderators"}),
        "roles.update" => json!({"permissions": "2048", "color": "#7c3aed"}),
        "invites.create" => json!({"maxUses": 10}),
        "bans.create" => json!({"userId": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b12", "reason": "spam"}),
        "messages.create" | "dm.messages.create" => json!({"content": "Hello, world"}),
        "messages.update" | "dm.messages.update" => json!({"content": "Hello, world (edited)"}),
        "members.update" => json!({"roleIds": ["0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b13"]}),
        "bots.create" => json!({"name": "Helper"}),
        "bots.update" => json!({"visibility": "PUBLIC"}),
        "bots.login" => {
            json!({"botId": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b14", "token": "s3cr3t-s3cr3t-s3cr3t-s3cr3t-abcd"})
        }
        "bots.install" => json!({"spaceId": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b15"}),
        "documents.update" => json!({"content": "# Notes\n\nFirst draft."}),
        "push.subscribe" => json!({
            "endpoint": "https://push.example.net/send/abc123",
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg"
        }),
        "channels.setOverride" => json!({"targetType": "ROLE", "allow": "0", "deny": "4096"}),
        _ => return None,
    })
}

/// Response examples of the most used operations.
fn response_example(id: &str) -> Option<Value> {
    let user = json!({
        "id": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b11", "name": "Ada", "avatar": null,
        "description": "Analytical engines and poetry", "category": null, "handle": "ada.example.org"
    });
    Some(match id {
        "account.register" | "account.login" | "account.refresh" | "account.change_password" => json!({
            "accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJleGFtcGxlIn0.c2lnbmF0dXJl",
            "refreshToken": "Q2hhbmdlIG1lOiB0aGlzIGlzIGFuIGV4YW1wbGUgdG9rZW4"
        }),
        "bots.login" => {
            json!({"accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJl", "refreshToken": null})
        }
        "user.get" | "user.update" => user,
        "messages.create" | "messages.get" | "messages.update" => json!({
            "id": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b20",
            "channelId": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b21",
            "authorId": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b11",
            "timestamp": "2026-12-06T10:15:30.123Z",
            "editedTimestamp": null,
            "content": "Hello, world",
            "author": {"id": "0192f1a0-5c3e-7d6a-9b1e-2f4c6a8e0b11", "name": "Ada", "avatar": null, "description": null, "category": null},
            "attachments": []
        }),
        "push.config" => {
            json!({"publicKey": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"})
        }
        "documents.claimBootstrap" => json!({"shouldBootstrap": false}),
        _ => return None,
    })
}

/// Query parameters the server requires although their struct field is optional (it answers a
/// missing one with its own 400 `InvalidQuery`).
const REQUIRED_QUERY: &[(&str, &str)] = &[
    ("users.presence", "ids"),
    ("messages.search", "q"),
    ("dm.messages.search", "q"),
];

/// Operations whose JSON body may be left out entirely.
const OPTIONAL_BODY: &[&str] = &["invites.create"];

/// What the path parameters are.
const PATH_PARAMETERS: &[(&str, &str)] = &[
    ("spaceId", "The space's id (UUID)."),
    ("channelId", "The channel's id (UUID)."),
    ("messageId", "The message's id (UUID)."),
    ("userId", "The user's id (UUID)."),
    ("roleId", "The role's id (UUID)."),
    ("botId", "The bot's user id (UUID)."),
    ("relationId", "The other user's id (UUID)."),
    ("targetId", "The role id or member user id the override is for (UUID)."),
    ("invite", "An invite code, or a public space's handle."),
    ("inviteId", "The invite code."),
    ("handle", "A handle, e.g. `alice.example.org`."),
];

/// Routes served outside the REST router, described so the reference is complete: the media API
/// (at the default `MEDIA_PREFIX`) and the two WebSocket upgrades. They carry no rate-limit
/// declaration of the REST layer (they limit themselves: `upload`, `media-resize`, `ws-connect`).
fn other_routes() -> Value {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let upgrade = |id: &str, summary: &str, description: &str| {
        json!({"get": {
            "operationId": id, "summary": summary, "description": description, "tags": ["Real time"],
            "x-rate-limit": [{"bucket": "ws-connect", "key": "ip"}],
            "responses": {
                "101": {"description": "Switching Protocols: the WebSocket is open."},
                "400": {"description": "Not a WebSocket upgrade, or a malformed id.", "content": error},
                "401": {"description": "A missing, invalid, expired or revoked token.", "content": error},
                "404": {"description": "No such document channel, or not visible to the caller.", "content": error},
                "429": {"description": "`ws-connect` limit (30 a minute per address).", "content": error},
                "503": {"description": "The instance is shutting down.", "content": error},
            }
        }})
    };
    let mut ws = upgrade(
        "gateway.connect",
        "Real-time Gateway",
        "The `/ws` socket: JSON frames `{op, data}`. The first frame is `authenticate {token}` (or \
         the legacy `?token=`); the server answers `ready` with a session id, then events with \
         `seq`. `resume {token, sessionId, seq}` replays what was missed, also on another \
         instance. Heartbeats every 30 s. Close codes: 4003 not authenticated in 10 s, 4004 bad \
         token, 4006 session revoked, 4008 too many commands, 4009 heartbeat missed, 4010 too slow. \
         The events are listed under the document's `websocket` key.",
    );
    if let Some(responses) = ws["get"]["responses"].as_object_mut() {
        responses.remove("404");
        responses.remove("401");
    }
    let mut collab = upgrade(
        "collab.connect",
        "Collaborative Document Socket",
        "The y-websocket room of a DOCUMENT channel (`?token=` is required). Binary y-protocols \
         frames: sync steps 1/2, updates (v1), awareness, awareness queries; several messages may \
         share a frame. Writers hold SEND_MESSAGES in the channel; a reader's updates are refused \
         with the auth message `read-only`, a document past 32 MiB answers `document-too-large`. \
         Close codes: 1003 text frame, 1009 frame over 8 MiB, 1002 malformed, 4006 session revoked, \
         4008 more than 1200 frames a minute, 4009 60 s of silence, 4013 access lost or channel \
         deleted.",
    );
    collab["get"]["parameters"] = json!([
        {"in": "path", "name": "channelId", "required": true, "schema": {"type": "string", "format": "uuid"},
         "description": "The DOCUMENT channel's id."},
        {"in": "query", "name": "token", "required": true, "schema": {"type": "string"},
         "description": "An access token (user or bot)."}
    ]);
    json!({
        "/ws": ws,
        "/collab/{channelId}": collab,
        "/media/{store}": {"post": {
            "operationId": "media.upload",
            "summary": "Upload Media",
            "description": "Uploads one file as multipart field `file` into a store: `avatar` and \
                `spaceicon` (images, 10 MiB) or `attachment` (50 MiB). The type is read from the \
                bytes, not trusted from the client. Returns the relative `url` to store in a \
                profile, space or message. Anonymous uploads are allowed unless \
                `MEDIA_ANONYMOUS_UPLOADS=false`. Limited per user (`upload`) or address \
                (`upload-anonymous`), in requests and bytes. The prefix is `MEDIA_PREFIX` (default `/media`).",
            "tags": ["Media"],
            "x-rate-limit": [],
            "parameters": [{"in": "path", "name": "store", "required": true,
                "schema": {"type": "string", "enum": ["avatar", "spaceicon", "attachment"]}}],
            "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}}}},
            "responses": {
                "200": {"description": "The stored object.", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["url", "contentType", "size"],
                    "properties": {"url": {"type": "string"}, "contentType": {"type": "string"}, "size": {"type": "integer", "minimum": 0}}}}}},
                "400": {"description": "Not multipart, no `file`, or an image too large in pixels.", "content": error},
                "401": {"description": "Anonymous uploads are off, or a bad token.", "content": error},
                "404": {"description": "No such store.", "content": error},
                "413": {"description": "Over the store's byte limit.", "content": error},
                "415": {"description": "A type the store does not accept.", "content": error},
                "429": {"description": "Upload limits.", "content": error}
            }
        }},
        "/media/{store}/{name}": {"get": {
            "operationId": "media.get",
            "summary": "Get Media",
            "description": "Serves a stored object (ranges, `ETag`, immutable caching). For images, \
                `?w=&h=` (1–1024) returns a resized PNG variant, made once and kept.",
            "tags": ["Media"],
            "x-rate-limit": [],
            "parameters": [
                {"in": "path", "name": "store", "required": true, "schema": {"type": "string"}},
                {"in": "path", "name": "name", "required": true, "schema": {"type": "string"}},
                {"in": "query", "name": "w", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1024}},
                {"in": "query", "name": "h", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1024}}
            ],
            "responses": {
                // Served with the type read from the bytes at upload (a resized variant is PNG).
                "200": {"description": "The object's bytes, with the type detected at upload.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "206": {"description": "The byte range asked for with `Range`, with `Content-Range`.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "304": {"description": "Not modified."},
                "404": {"description": "No such object.", "content": error},
                "429": {"description": "`media-resize` limit for new variants.", "content": error}
            }
        }}
    })
}

/// What the query parameters are.
const QUERY_PARAMETERS: &[(&str, &str)] = &[
    (
        "limit",
        "How many items to return; out-of-range values are clamped to the operation's range.",
    ),
    (
        "cursor",
        "Continue after this item (the last id or code of the previous page).",
    ),
    ("before", "A message id: the page holds the messages just before it."),
    ("after", "A message id: the page holds the messages just after it."),
    ("around", "A message id: the page is centred on it."),
    ("q", "The text to search for, 1–256 characters."),
    ("ids", "1–100 comma-separated user ids."),
];

/// Applies the pass to the generated document.
pub fn finish(doc: &mut Value) {
    strip_null_defaults(doc);
    if let (Some(paths), Value::Object(extra)) = (doc.get_mut("paths").and_then(Value::as_object_mut), other_routes()) {
        for (path, item) in extra {
            paths.entry(path).or_insert(item);
        }
    }
    if let Some(ws) = doc.get("websocket").cloned() {
        doc["x-websocket"] = ws;
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            if let Some(operation) = operation.as_object_mut() {
                finish_operation(operation);
            }
        }
    }
}

/// `"default": null` on an optional field makes generators mark it required; absent already
/// means "not given".
fn strip_null_defaults(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(strip_null_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_defaults),
        _ => {}
    }
}

fn finish_operation(operation: &mut Map<String, Value>) {
    let Some(id) = operation.get("operationId").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    let entry = ENTRIES.iter().find(|e| e.id == id);
    if let Some(entry) = entry.filter(|e| !e.description.is_empty()) {
        operation.insert("description".into(), entry.description.into());
    }
    if OPTIONAL_BODY.contains(&id.as_str())
        && let Some(body) = operation.get_mut("requestBody").and_then(Value::as_object_mut)
    {
        body.insert("required".into(), false.into());
    }
    let mut has_path = false;
    let mut has_query = false;
    if let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            match p["in"].as_str() {
                Some("path") => {
                    has_path = true;
                    if let Some((_, text)) = PATH_PARAMETERS.iter().find(|(n, _)| *n == name) {
                        p["description"] = (*text).into();
                    }
                }
                Some("query") => {
                    has_query = true;
                    if p.get("description").is_none()
                        && let Some((_, text)) = QUERY_PARAMETERS.iter().find(|(n, _)| *n == name)
                    {
                        p["description"] = (*text).into();
                    }
                    if REQUIRED_QUERY.contains(&(id.as_str(), name.as_str())) {
                        p["required"] = true.into();
                    }
                }
                _ => {}
            }
        }
    }
    if let (Some(example), Some(media)) = (
        response_example(&id),
        operation
            .get_mut("responses")
            .and_then(|r| r.pointer_mut("/200/content/application~1json")),
    ) {
        media["example"] = example;
    }
    let has_body = operation.contains_key("requestBody");
    if let (Some(example), Some(media)) = (
        request_example(&id),
        operation
            .get_mut("requestBody")
            .and_then(|b| b.pointer_mut("/content/application~1json")),
    ) {
        media["example"] = example;
    }
    let caller = entry.map_or(Caller::Any, |e| e.caller);
    let mut codes: Vec<ErrorCode> = entry.map(|e| e.codes.to_vec()).unwrap_or_default();
    // Every route is behind the NUL layer (middlewares/nul.rs): U+0000 anywhere in the path or
    // query is a 400 `ValidationFailed` naming the parameter.
    codes.push(ValidationFailed);
    if has_path {
        codes.extend([InvalidPathParameter, NotFound]);
    }
    if has_query {
        codes.push(InvalidQuery);
    }
    if has_body {
        codes.extend([
            InvalidJson,
            ValidationFailed,
            InvalidBody,
            PayloadTooLarge,
            UnsupportedMediaType,
            RequestTimeout,
        ]);
    }
    if caller != Caller::Anyone {
        codes.extend([Unauthorized, InvalidToken, TokenExpired, SessionRevoked]);
    }
    if caller == Caller::User {
        codes.push(BotNotAllowed);
    }
    // Any operation may meet an unavailable database or a handler over `REQUEST_TIMEOUT`.
    codes.extend([RateLimited, ServiceUnavailable]);
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        add_error_responses(responses, &codes);
    }
}

/// One response per status, listing its possible codes, with the error body schema.
fn add_error_responses(responses: &mut Map<String, Value>, codes: &[ErrorCode]) {
    let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for code in codes {
        let name = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let list = by_status.entry(code.status().as_u16()).or_default();
        if !list.contains(&name) {
            list.push(name);
        }
    }
    for (status, names) in by_status {
        let codes = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        responses.insert(
            status.to_string(),
            json!({
                "description": format!("An error with `code` {codes}."),
                "content": {"application/json": {"schema": {
                    "allOf": [{"$ref": "#/components/schemas/ErrorBody"}],
                    "properties": {"code": {"enum": names}}
                }}}
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_reference_entry_and_no_null_default_remains() {
        let (_, api) = super::super::openapi();
        let mut doc = serde_json::to_value(&api).unwrap();
        finish(&mut doc);
        assert!(!doc.to_string().contains("\"default\":null"));
        let mut missing = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap_or_default();
                if op["description"].as_str().unwrap_or_default().is_empty() {
                    missing.push(id.to_string());
                }
                assert!(op["responses"]["429"].is_object(), "{id} lists no 429");
            }
        }
        assert!(missing.is_empty(), "operations without a description: {missing:?}");
        for entry in ENTRIES {
            assert!(
                doc.to_string().contains(&format!("\"operationId\":\"{}\"", entry.id)),
                "{} is not an operation",
                entry.id
            );
        }
        let search = &doc["paths"]["/spaces/{spaceId}/channels/{channelId}/messages/search"]["get"];
        let q = search["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "q")
            .unwrap();
        assert_eq!(q["required"], true);
        assert_eq!(
            doc["paths"]["/spaces/{spaceId}/invites/"]["post"]["requestBody"]["required"],
            false
        );
        assert_eq!(doc["x-websocket"], doc["websocket"]);
        let patch = &doc["paths"]["/users/me"]["patch"]["requestBody"]["content"]["application/json"]["example"];
        assert_eq!(patch, &json!({"description": "Analytical engines and poetry"}));
        let me = &doc["paths"]["/users/me"]["get"]["responses"]["200"];
        assert_eq!(me["content"]["application/json"]["example"]["name"], "Ada", "{me}");
        let create = &doc["paths"]["/spaces/{spaceId}/bans/"]["post"]["responses"];
        assert!(
            create["403"]["description"]
                .as_str()
                .unwrap()
                .contains("InsufficientRank")
        );
        assert!(create["409"]["description"].as_str().unwrap().contains("AlreadyBanned"));
    }
}
