//! Memberships and role assignments (spec §3.2 MemberExt, §4.13).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::entities::users::{UserCategory, UserExt};
use crate::error::{Error, ErrorCode, ResultExt};
use crate::functions::ids::{MemberId, RoleId, SpaceId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberExt {
    pub id: MemberId,
    pub space_id: SpaceId,
    pub user_id: UserId,
    /// Nicknames are not supported: always `null`.
    pub name: Option<String>,
    pub user: UserExt,
    /// Explicitly assigned roles; `@everyone` is implicit and never listed.
    pub role_ids: Vec<RoleId>,
}

#[derive(FromRow)]
struct MemberRow {
    id: MemberId,
    space_id: SpaceId,
    user_id: UserId,
    name: String,
    avatar: Option<String>,
    description: Option<String>,
    category: Option<UserCategory>,
    handle: Option<String>,
    role_ids: Vec<RoleId>,
}

impl From<MemberRow> for MemberExt {
    fn from(r: MemberRow) -> Self {
        MemberExt {
            id: r.id,
            space_id: r.space_id,
            user_id: r.user_id,
            name: None,
            user: UserExt {
                id: r.user_id,
                name: r.name,
                avatar: r.avatar,
                description: r.description,
                category: r.category,
                handle: r.handle,
            },
            role_ids: r.role_ids,
        }
    }
}

/// Members of a space after the member id `after`, in join order.
pub async fn list(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    after: Option<MemberId>,
    limit: i64,
) -> Result<Vec<MemberExt>, Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT m.id, m.space_id, m.user_id, u.name, u.avatar, u.description, u.category, h.handle, \
                COALESCE(array_agg(mr.role_id ORDER BY mr.role_id) FILTER (WHERE mr.role_id IS NOT NULL), '{}') AS role_ids \
         FROM members m JOIN users u ON u.id = m.user_id LEFT JOIN handles h ON h.user_id = m.user_id \
         LEFT JOIN member_roles mr ON mr.space_id = m.space_id AND mr.user_id = m.user_id \
         WHERE m.space_id = $1 AND ($2::uuid IS NULL OR m.id > $2) \
         GROUP BY m.id, u.id, h.handle ORDER BY m.id LIMIT $3",
    )
    .bind(space)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(MemberExt::from).collect())
}

/// One member, by user id.
pub async fn get(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<Option<MemberExt>, Error> {
    let row: Option<MemberRow> = sqlx::query_as(
        "SELECT m.id, m.space_id, m.user_id, u.name, u.avatar, u.description, u.category, h.handle, \
                COALESCE(array_agg(mr.role_id ORDER BY mr.role_id) FILTER (WHERE mr.role_id IS NOT NULL), '{}') AS role_ids \
         FROM members m JOIN users u ON u.id = m.user_id LEFT JOIN handles h ON h.user_id = m.user_id \
         LEFT JOIN member_roles mr ON mr.space_id = m.space_id AND mr.user_id = m.user_id \
         WHERE m.space_id = $1 AND m.user_id = $2 GROUP BY m.id, u.id, h.handle",
    )
    .bind(space)
    .bind(user)
    .fetch_optional(db)
    .await?;
    Ok(row.map(MemberExt::from))
}

/// Every membership of a user, as members (for profile-change fan-out).
pub async fn of_user(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<SpaceId>, Error> {
    Ok(
        sqlx::query_scalar("SELECT space_id FROM members WHERE user_id = $1 ORDER BY id")
            .bind(user)
            .fetch_all(db)
            .await?,
    )
}

pub async fn is_member(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM members WHERE space_id = $1 AND user_id = $2)")
            .bind(space)
            .bind(user)
            .fetch_one(db)
            .await?,
    )
}

/// Adds a membership; 409 `AlreadyMember` for an existing one.
pub async fn insert(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<MemberId, Error> {
    let id = MemberId::new();
    sqlx::query("INSERT INTO members (id, space_id, user_id) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(space)
        .bind(user)
        .execute(db)
        .await
        .on_constraints(&[
            ("members_space_user_key", || {
                Error::new(ErrorCode::AlreadyMember, "Already a member of this space")
            }),
            // The space or the user was deleted meanwhile.
            ("members_space_id_fkey", Error::not_found),
            ("members_user_id_fkey", Error::not_found),
        ])?;
    Ok(id)
}

/// Removes a membership with its member overrides (role assignments cascade).
/// Locks a member's row for the rest of the transaction; `false` when there is no such member.
/// Every write of a member's roles or membership takes this lock first, so a kick and a role
/// change of the same member queue instead of deadlocking (`members` vs `member_roles`).
pub async fn lock(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<bool, Error> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM members WHERE space_id = $1 AND user_id = $2 FOR UPDATE")
            .bind(space)
            .bind(user)
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

pub async fn remove(conn: &mut sqlx::PgConnection, space: SpaceId, user: UserId) -> Result<bool, Error> {
    sqlx::query(
        "DELETE FROM channel_overrides o USING channels c \
         WHERE o.channel_id = c.id AND c.space_id = $1 AND o.target_type = 'MEMBER' AND o.target_id = $2",
    )
    .bind(space)
    .bind(user)
    .execute(&mut *conn)
    .await?;
    let res = sqlx::query("DELETE FROM members WHERE space_id = $1 AND user_id = $2")
        .bind(space)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Assigns a role; returns whether it was new.
pub async fn add_role(db: impl PgExecutor<'_>, space: SpaceId, user: UserId, role: RoleId) -> Result<bool, Error> {
    let res =
        sqlx::query("INSERT INTO member_roles (space_id, user_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(space)
            .bind(user)
            .bind(role)
            .execute(db)
            .await
            // The role or the membership was deleted meanwhile.
            .on_constraints(&[
                ("member_roles_role_id_fkey", Error::not_found),
                ("member_roles_space_id_user_id_fkey", Error::not_found),
            ])?;
    Ok(res.rows_affected() == 1)
}

/// Unassigns a role; returns whether it was assigned.
pub async fn remove_role(db: impl PgExecutor<'_>, space: SpaceId, user: UserId, role: RoleId) -> Result<bool, Error> {
    let res = sqlx::query("DELETE FROM member_roles WHERE space_id = $1 AND user_id = $2 AND role_id = $3")
        .bind(space)
        .bind(user)
        .bind(role)
        .execute(db)
        .await?;
    Ok(res.rows_affected() == 1)
}
