//! Reading the Mikoto database (its schema: `mikoto-db-schema.json` of the spec): one read-only
//! `REPEATABLE READ` transaction, so every table is read from the same snapshot while a live
//! Mikoto keeps writing. Enum columns are read as text; timestamps are `timestamp without time
//! zone` in UTC.

use chrono::NaiveDateTime;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

/// Every table of Mikoto's schema; the importer refuses a source that lacks one.
pub const TABLES: &[&str] = &[
    "User",
    "Account",
    "AccountVerification",
    "RefreshToken",
    "Settings",
    "UserStatus",
    "Space",
    "Role",
    "SpaceUser",
    "_RoleToSpaceUser",
    "Ban",
    "Invite",
    "Channel",
    "Document",
    "Message",
    "MessageAttachment",
    "ChannelUnread",
    "Relationship",
    "Bot",
    "Handle",
    "NotificationPreference",
    "PushSubscription",
];

/// Opens the source and starts the snapshot transaction.
pub async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    // The snapshot's long reads are expected: no slow-statement warnings.
    let mut conn = PgConnectOptions::from_str(url)?
        .disable_statement_logging()
        .connect()
        .await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The Mikoto tables missing from the source (empty when it looks like Mikoto's schema).
pub async fn missing_tables(conn: &mut PgConnection) -> Result<Vec<&'static str>, sqlx::Error> {
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(conn)
    .await?;
    Ok(TABLES
        .iter()
        .copied()
        .filter(|t| !present.iter().any(|p| p == t))
        .collect())
}

/// Rows in a Mikoto table (for progress and for the tables that are not carried).
pub async fn count(conn: &mut PgConnection, table: &str) -> Result<u64, sqlx::Error> {
    // `table` is one of TABLES, never input.
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{table}\"")))
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Reads a whole (small) table.
pub async fn load<T>(conn: &mut PgConnection, sql: &'static str) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql).fetch_all(conn).await
}

// Each query orders by the key so that choices among rows (first `@everyone` of a space, first
// handle of an owner) are the same on every run.

pub const USERS: &str = "SELECT id, name, avatar, description, category::text AS category FROM \"User\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub avatar: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
}

pub const ACCOUNTS: &str = "SELECT id, email, passhash FROM \"Account\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub passhash: String,
}

pub const SPACES: &str = "SELECT id, name, icon, \"ownerId\" AS owner_id, type::text AS kind, visibility::text AS visibility FROM \"Space\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Space {
    pub id: Uuid,
    pub name: String,
    pub icon: Option<String>,
    pub owner_id: Option<Uuid>,
    pub kind: String,
    pub visibility: Option<String>,
}

/// The first member of each space, the owner of last resort for a space whose owner is gone.
pub const FIRST_MEMBERS: &str = "SELECT DISTINCT ON (\"spaceId\") \"spaceId\" AS space_id, \"userId\" AS user_id FROM \"SpaceUser\" ORDER BY \"spaceId\", id";
#[derive(sqlx::FromRow)]
pub struct FirstMember {
    pub space_id: Uuid,
    pub user_id: Uuid,
}

pub const ROLES: &str = "SELECT id, name, color, permissions, position, \"spaceId\" AS space_id FROM \"Role\" ORDER BY \"spaceId\", position, id";
#[derive(sqlx::FromRow)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    pub color: Option<String>,
    pub permissions: String,
    pub position: i32,
    pub space_id: Uuid,
}

pub const MEMBERS: &str =
    "SELECT id, name, \"spaceId\" AS space_id, \"userId\" AS user_id FROM \"SpaceUser\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub name: Option<String>,
    pub space_id: Uuid,
    pub user_id: Uuid,
}

pub const MEMBER_ROLES: &str =
    "SELECT \"A\" AS role_id, \"B\" AS member_id FROM \"_RoleToSpaceUser\" ORDER BY \"A\", \"B\"";
#[derive(sqlx::FromRow)]
pub struct MemberRole {
    pub role_id: Uuid,
    pub member_id: Uuid,
}

pub const BANS: &str = "SELECT id, \"userId\" AS user_id, \"spaceId\" AS space_id, reason FROM \"Ban\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Ban {
    pub id: Uuid,
    pub user_id: Uuid,
    pub space_id: Uuid,
    pub reason: Option<String>,
}

pub const INVITES: &str = "SELECT id, \"spaceId\" AS space_id, \"createdAt\" AS created_at, \"creatorId\" AS creator_id FROM \"Invite\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Invite {
    pub id: String,
    pub space_id: Uuid,
    pub created_at: NaiveDateTime,
    pub creator_id: Option<Uuid>,
}

pub const CHANNELS: &str = "SELECT id, type::text AS kind, \"parentId\" AS parent_id, \"order\", name, \
     \"spaceId\" AS space_id, \"lastUpdated\" AS last_updated FROM \"Channel\" ORDER BY id";
#[derive(sqlx::FromRow, Clone)]
pub struct Channel {
    pub id: Uuid,
    pub kind: String,
    pub parent_id: Option<Uuid>,
    pub order: i32,
    pub name: String,
    pub space_id: Option<Uuid>,
    pub last_updated: Option<NaiveDateTime>,
}

pub const DOCUMENTS: &str = "SELECT id, \"channelId\" AS channel_id, content FROM \"Document\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Document {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub content: String,
}

/// Streamed: the largest table. Unordered, because the new ids do not depend on the order.
/// Whether a message has attachments is written with it (`messages.has_attachments`), so the
/// attachments step does not have to rewrite the message rows through the table's trigger.
pub const MESSAGES: &str = "SELECT id, content, timestamp, \"editedTimestamp\" AS edited_timestamp, \
     \"authorId\" AS author_id, \"channelId\" AS channel_id, \
     EXISTS (SELECT 1 FROM \"MessageAttachment\" a WHERE a.\"messageId\" = \"Message\".id) AS has_attachments \
     FROM \"Message\"";
#[derive(sqlx::FromRow)]
pub struct Message {
    pub id: Uuid,
    pub content: String,
    pub timestamp: NaiveDateTime,
    pub edited_timestamp: Option<NaiveDateTime>,
    pub author_id: Option<Uuid>,
    pub channel_id: Uuid,
    pub has_attachments: bool,
}

/// Streamed, with the message's timestamp and channel: the new message id is minted from them.
pub const ATTACHMENTS: &str = "SELECT a.id, a.\"messageId\" AS message_id, a.url, a.filename, \
     a.\"contentType\" AS content_type, a.size, a.\"order\", m.timestamp AS message_timestamp, \
     m.\"channelId\" AS channel_id FROM \"MessageAttachment\" a JOIN \"Message\" m ON m.id = a.\"messageId\"";
#[derive(sqlx::FromRow)]
pub struct Attachment {
    pub id: Uuid,
    pub message_id: Uuid,
    pub url: String,
    pub filename: String,
    pub content_type: String,
    pub size: i32,
    pub order: i32,
    pub message_timestamp: NaiveDateTime,
    pub channel_id: Uuid,
}

pub const UNREADS: &str =
    "SELECT \"channelId\" AS channel_id, \"userId\" AS user_id, timestamp FROM \"ChannelUnread\" ORDER BY 1, 2";
#[derive(sqlx::FromRow)]
pub struct Unread {
    pub channel_id: Uuid,
    pub user_id: Uuid,
    pub timestamp: NaiveDateTime,
}

pub const RELATIONSHIPS: &str = "SELECT id, \"userId\" AS user_id, \"relationId\" AS relation_id, \
     \"channelId\" AS channel_id, state::text AS state FROM \"Relationship\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Relationship {
    pub id: Uuid,
    pub user_id: Uuid,
    pub relation_id: Uuid,
    pub channel_id: Option<Uuid>,
    pub state: String,
}

/// `Bot.name` is not read: alterego keeps a bot's name on its user row only.
pub const BOTS: &str = "SELECT id, \"ownerId\" AS owner_id, secret, visibility::text AS visibility, \
     permissions, \"lastTokenRegeneratedAt\" AS last_regenerated FROM \"Bot\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct Bot {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub secret: String,
    pub visibility: String,
    pub permissions: serde_json::Value,
    pub last_regenerated: Option<chrono::DateTime<chrono::Utc>>,
}

/// Verified handles first, then the newest: when an owner holds several, the first is kept.
pub const HANDLES: &str = "SELECT handle, \"userId\" AS user_id, \"spaceId\" AS space_id, \"verifiedAt\" AS verified_at, \
     attestation, \"createdAt\" AS created_at FROM \"Handle\" \
     ORDER BY (\"verifiedAt\" IS NULL), \"createdAt\" DESC, handle";
#[derive(sqlx::FromRow)]
pub struct Handle {
    pub handle: String,
    pub user_id: Option<Uuid>,
    pub space_id: Option<Uuid>,
    pub verified_at: Option<NaiveDateTime>,
    pub attestation: Option<serde_json::Value>,
    pub created_at: NaiveDateTime,
}

pub const PREFERENCES: &str = "SELECT \"userId\" AS user_id, \"spaceId\" AS space_id, level::text AS level \
     FROM \"NotificationPreference\" ORDER BY 1, 2";
#[derive(sqlx::FromRow)]
pub struct Preference {
    pub user_id: Uuid,
    pub space_id: Uuid,
    pub level: String,
}

pub const PUSH_SUBSCRIPTIONS: &str = "SELECT id, \"userId\" AS user_id, endpoint, p256dh, auth, \"createdAt\" AS created_at \
     FROM \"PushSubscription\" ORDER BY id";
#[derive(sqlx::FromRow)]
pub struct PushSubscription {
    pub id: Uuid,
    pub user_id: Uuid,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub created_at: NaiveDateTime,
}
