//! Bots (spec §4.3, §12.6): the `BotInfo` family of wire models and the `bots` table.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};

use crate::entities::users::{self, UserExt};
use crate::error::Error;
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::time::Timestamp;

crate::wire_enum!(
    BotVisibility {
        Public = "PUBLIC",
        Private = "PRIVATE",
    }
);

/// Bots an owner may have.
pub const MAX_PER_OWNER: i64 = 25;

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotInfo {
    /// The bot's user id.
    pub id: UserId,
    /// Always the bot user's current name.
    pub name: String,
    pub owner_id: UserId,
    pub visibility: BotVisibility,
    /// Informational list of requested permission names.
    pub permissions: Vec<String>,
    pub last_token_regenerated_at: Option<Timestamp>,
    pub user: Option<UserExt>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotCreatedResponse {
    pub id: UserId,
    pub name: String,
    pub owner_id: UserId,
    /// The secret for `bots.login`, shown only in this response.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct BotSpaceInfo {
    pub space_id: SpaceId,
    pub space_name: String,
    pub space_icon: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateBotPayload {
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotLoginPayload {
    pub bot_id: UserId,
    pub token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallBotPayload {
    pub space_id: SpaceId,
}

#[derive(FromRow)]
struct BotRow {
    user_id: UserId,
    owner_id: UserId,
    visibility: BotVisibility,
    permissions: Vec<String>,
    last_token_regenerated_at: Option<DateTime<Utc>>,
}

async fn info(db: impl PgExecutor<'_> + Copy, row: BotRow) -> Result<Option<BotInfo>, Error> {
    let Some(user) = users::get_ext(db, row.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(BotInfo {
        id: row.user_id,
        name: user.name.clone(),
        owner_id: row.owner_id,
        visibility: row.visibility,
        permissions: row.permissions,
        last_token_regenerated_at: row.last_token_regenerated_at.map(Timestamp::from),
        user: Some(user),
    }))
}

macro_rules! bot_select {
    () => {
        "SELECT user_id, owner_id, visibility, permissions, last_token_regenerated_at FROM bots "
    };
}

/// A bot of `owner`: `None` when it does not exist or belongs to someone else.
pub async fn get_owned(db: impl PgExecutor<'_> + Copy, owner: UserId, bot: UserId) -> Result<Option<BotInfo>, Error> {
    let row: Option<BotRow> = sqlx::query_as(concat!(bot_select!(), "WHERE user_id = $1 AND owner_id = $2"))
        .bind(bot)
        .bind(owner)
        .fetch_optional(db)
        .await?;
    match row {
        Some(row) => info(db, row).await,
        None => Ok(None),
    }
}

/// The owner's bots, oldest first (at most [`MAX_PER_OWNER`]).
pub async fn list(db: impl PgExecutor<'_> + Copy, owner: UserId) -> Result<Vec<BotInfo>, Error> {
    let rows: Vec<BotRow> = sqlx::query_as(concat!(
        bot_select!(),
        "WHERE owner_id = $1 ORDER BY created_at, user_id LIMIT $2"
    ))
    .bind(owner)
    .bind(MAX_PER_OWNER)
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.extend(info(db, row).await?);
    }
    Ok(out)
}

/// Serialises the bot creations of one owner for the rest of the transaction (the 25-bot cap
/// is then checked and kept atomically).
pub async fn lock_owner(db: impl PgExecutor<'_>, owner: UserId) -> Result<(), Error> {
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(owner)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks `owner`'s bot row for the rest of the transaction; `false` for a missing or foreign bot.
pub async fn lock_owned(db: impl PgExecutor<'_>, owner: UserId, bot: UserId) -> Result<bool, Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM bots WHERE user_id = $1 AND owner_id = $2 FOR UPDATE")
        .bind(bot)
        .bind(owner)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

pub async fn count_for_owner(db: impl PgExecutor<'_>, owner: UserId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM bots WHERE owner_id = $1")
        .bind(owner)
        .fetch_one(db)
        .await?)
}

/// Creates the bot user (`category: BOT`) and its bot row with the secret's digest.
pub async fn insert(
    conn: &mut sqlx::PgConnection,
    id: UserId,
    owner: UserId,
    name: &str,
    secret_digest: &[u8],
) -> Result<(), Error> {
    sqlx::query("INSERT INTO users (id, name, category) VALUES ($1, $2, 'BOT')")
        .bind(id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO bots (user_id, owner_id, secret_digest) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(owner)
        .bind(secret_digest)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The stored credential of a bot, for `bots.login`.
#[derive(Debug, FromRow)]
pub struct Credential {
    pub secret_digest: Option<Vec<u8>>,
    pub secret_bcrypt: Option<String>,
    pub token_generation: i64,
}

pub async fn credential(db: impl PgExecutor<'_>, bot: UserId) -> Result<Option<Credential>, Error> {
    Ok(
        sqlx::query_as("SELECT secret_digest, secret_bcrypt, token_generation FROM bots WHERE user_id = $1")
            .bind(bot)
            .fetch_optional(db)
            .await?,
    )
}

/// Replaces an imported bcrypt hash by the secret's digest (after a successful verification).
pub async fn upgrade_secret(db: impl PgExecutor<'_>, bot: UserId, digest: &[u8]) -> Result<(), Error> {
    sqlx::query("UPDATE bots SET secret_digest = $2, secret_bcrypt = NULL WHERE user_id = $1")
        .bind(bot)
        .bind(digest)
        .execute(db)
        .await?;
    Ok(())
}

/// A new secret: the generation moves on, so every earlier bot token is refused. Returns
/// whether the bot exists and belongs to `owner`.
pub async fn regenerate(db: impl PgExecutor<'_>, owner: UserId, bot: UserId, digest: &[u8]) -> Result<bool, Error> {
    let res = sqlx::query(
        "UPDATE bots SET secret_digest = $3, secret_bcrypt = NULL, token_generation = token_generation + 1, \
                last_token_regenerated_at = now() \
         WHERE user_id = $1 AND owner_id = $2",
    )
    .bind(bot)
    .bind(owner)
    .bind(digest)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Whether a bot token of `generation` is still valid: `Some(true)` live, `Some(false)` an
/// outdated generation, `None` no such bot (deleted or never existed).
pub async fn generation_is_current(
    db: impl PgExecutor<'_>,
    bot: UserId,
    generation: i64,
) -> Result<Option<bool>, Error> {
    Ok(
        sqlx::query_scalar("SELECT token_generation = $2 FROM bots WHERE user_id = $1")
            .bind(bot)
            .bind(generation)
            .fetch_optional(db)
            .await?,
    )
}

/// The management fields of `bots.update` (the profile fields go through the user).
#[derive(Debug, Default)]
pub struct BotChange {
    pub visibility: Option<BotVisibility>,
    pub permissions: Option<Vec<String>>,
}

pub async fn update(db: impl PgExecutor<'_>, bot: UserId, change: &BotChange) -> Result<(), Error> {
    sqlx::query(
        "UPDATE bots SET visibility = COALESCE($2, visibility), permissions = COALESCE($3, permissions) \
         WHERE user_id = $1",
    )
    .bind(bot)
    .bind(change.visibility)
    .bind(change.permissions.as_deref())
    .execute(db)
    .await?;
    Ok(())
}

/// Whether `caller` may add the bot to a space: they own it or it is public. `None` when the
/// user is not a bot.
pub async fn installable_by(db: impl PgExecutor<'_>, bot: UserId, caller: UserId) -> Result<Option<bool>, Error> {
    Ok(
        sqlx::query_scalar("SELECT owner_id = $2 OR visibility = 'PUBLIC' FROM bots WHERE user_id = $1")
            .bind(bot)
            .bind(caller)
            .fetch_optional(db)
            .await?,
    )
}

/// The spaces a bot is a member of, by join order.
pub async fn spaces(db: impl PgExecutor<'_>, bot: UserId) -> Result<Vec<BotSpaceInfo>, Error> {
    Ok(sqlx::query_as(
        "SELECT s.id AS space_id, s.name AS space_name, s.icon AS space_icon \
         FROM members m JOIN spaces s ON s.id = m.space_id WHERE m.user_id = $1 ORDER BY m.id",
    )
    .bind(bot)
    .fetch_all(db)
    .await?)
}

/// Deletes the bot's credentials and the invites it created; its user row stays as a
/// tombstone (messages keep their author) that can never authenticate again.
pub async fn delete(conn: &mut sqlx::PgConnection, bot: UserId) -> Result<(), Error> {
    sqlx::query("DELETE FROM invites WHERE creator_id = $1")
        .bind(bot)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM bots WHERE user_id = $1")
        .bind(bot)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
