//! The import, table by table in dependency order: each step reads a Mikoto table, checks every
//! reference against what earlier steps wrote, converts values, writes, and reports every row it
//! skips or changes with the reason.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::query_builder::Separated;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::report::{Report, TableReport};
use super::write;
use super::{ImportError, Progress, convert, source};
use crate::entities::messages::MessageAttachment;

/// What earlier steps imported, for checking references.
#[derive(Default)]
struct Known {
    users: HashSet<Uuid>,
    /// Imported spaces and their owners.
    spaces: HashMap<Uuid, Uuid>,
    /// Mikoto DM spaces: not spaces in alterego; their channels become DM channels.
    dm_spaces: HashSet<Uuid>,
    /// Role -> (space, is `@everyone`).
    roles: HashMap<Uuid, (Uuid, bool)>,
    /// Mikoto `SpaceUser` id -> (space, user).
    members: HashMap<Uuid, (Uuid, Uuid)>,
    channels: HashSet<Uuid>,
}

const CONFLICT: &str = "already present in the target (unique key collision)";
const NO_USER: &str = "user not imported";
const NO_SPACE: &str = "space not imported";
const DM_SPACE: &str = "belongs to a DM space (alterego DMs have no space, members or roles)";
const NO_CHANNEL: &str = "channel not imported";

fn src(e: sqlx::Error) -> ImportError {
    ImportError::Source(e)
}

fn dst(e: sqlx::Error) -> ImportError {
    ImportError::Target(e)
}

/// Counts a written batch: what was not written collided with a unique key.
fn record(t: &mut TableReport, attempted: usize, written: u64) {
    t.written += written;
    t.skip_n(CONFLICT, (attempted as u64).saturating_sub(written));
}

/// A deterministic id for a row the importer adds (an `@everyone` role or an owner's
/// membership that Mikoto lacked): derived from the space id, so re-runs agree.
fn derived_id(from: Uuid, salt: u128) -> Uuid {
    Uuid::from_u128(from.as_u128() ^ salt)
}

/// A Mikoto table that is read whole: its name in the report, the mapping shown there, the
/// source query, and the alterego table (with its columns) it is written to.
struct Table {
    name: &'static str,
    mapping: &'static str,
    sql: &'static str,
    target: &'static str,
    columns: usize,
}

/// The import's connections and output.
struct Cx<'a> {
    s: &'a mut PgConnection,
    d: &'a mut PgConnection,
    report: &'a mut Report,
    progress: &'a mut Progress,
}

type Binder<'b, O> = dyn FnMut(&mut Separated<'_, Postgres, &'static str>, &O) + 'b;

impl Cx<'_> {
    fn entry(&mut self, table: &Table) -> &mut TableReport {
        self.report.table(table.name, table.mapping)
    }

    /// Reads `table` and converts its rows with `f`, which returns `None` for a row it skips
    /// (after recording why in the report entry it is given).
    async fn convert<S, O>(
        &mut self,
        table: &Table,
        mut f: impl FnMut(S, &mut TableReport) -> Option<O>,
    ) -> Result<Vec<O>, ImportError>
    where
        S: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let rows: Vec<S> = source::load(self.s, table.sql).await.map_err(src)?;
        self.progress.start(table.name, rows.len() as u64);
        self.progress.advance(rows.len() as u64);
        let t = self.report.table(table.name, table.mapping);
        t.read += rows.len() as u64;
        Ok(rows.into_iter().filter_map(|r| f(r, &mut *t)).collect())
    }

    /// Writes converted rows of `table` and counts them.
    async fn write<O>(&mut self, table: &Table, rows: &[O], bind: &mut Binder<'_, O>) -> Result<(), ImportError> {
        let written = write::rows(self.d, table.target, table.columns, rows, bind)
            .await
            .map_err(dst)?;
        record(self.entry(table), rows.len(), written);
        Ok(())
    }

    /// Writes the rows of `table` and ends its progress.
    async fn store<O>(
        &mut self,
        table: &Table,
        rows: &[O],
        mut bind: impl FnMut(&mut Separated<'_, Postgres, &'static str>, &O),
    ) -> Result<(), ImportError> {
        self.write(table, rows, &mut bind).await?;
        self.progress.finish();
        Ok(())
    }
}

pub async fn run(
    s: &mut PgConnection,
    d: &mut PgConnection,
    report: &mut Report,
    progress: &mut Progress,
    batch: usize,
) -> Result<(), ImportError> {
    let mut known = Known::default();
    let mut cx = Cx { s, d, report, progress };
    let cx = &mut cx;
    users(cx, &mut known).await?;
    accounts(cx, &known).await?;
    spaces(cx, &mut known).await?;
    roles(cx, &mut known).await?;
    members(cx, &mut known).await?;
    member_roles(cx, &known).await?;
    bans(cx, &known).await?;
    invites(cx, &known).await?;
    channels(cx, &mut known).await?;
    documents(cx, &known).await?;
    messages(cx, &known, batch).await?;
    attachments(cx, &known, batch).await?;
    unreads(cx, &known).await?;
    relationships(cx, &known).await?;
    bots(cx, &known).await?;
    handles(cx, &known).await?;
    preferences(cx, &known).await?;
    push_subscriptions(cx, &known).await?;
    not_carried(cx.s, cx.report).await
}

/// `row`, unless there is a reason to skip it (which is recorded).
fn keep<T>(t: &mut TableReport, skip: Option<&str>, row: T) -> Option<T> {
    match skip {
        Some(reason) => {
            t.skip(reason);
            None
        }
        None => Some(row),
    }
}

/// The reason a row of a space-scoped table is not imported, if it is not.
fn space_gone(known: &Known, space: Uuid) -> Option<&'static str> {
    if known.dm_spaces.contains(&space) {
        Some(DM_SPACE)
    } else if !known.spaces.contains_key(&space) {
        Some(NO_SPACE)
    } else {
        None
    }
}

const USERS: Table = Table {
    name: "User",
    mapping: "User -> users",
    sql: source::USERS,
    target: "users (id, name, avatar, description, category)",
    columns: 5,
};

async fn users(cx: &mut Cx<'_>, known: &mut Known) -> Result<(), ImportError> {
    let rows = cx.convert(&USERS, |r: source::User, _| Some(r)).await?;
    cx.store(&USERS, &rows, |b, r| {
        b.push_bind(r.id)
            .push_bind(&r.name)
            .push_bind(&r.avatar)
            .push_bind(&r.description)
            .push_bind(&r.category);
    })
    .await?;
    known.users.extend(rows.iter().map(|r| r.id));
    Ok(())
}

const ACCOUNTS: Table = Table {
    name: "Account",
    mapping: "Account -> accounts (bcrypt hash kept)",
    sql: source::ACCOUNTS,
    target: "accounts (user_id, email, password_hash)",
    columns: 3,
};

async fn accounts(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let mut emails = HashSet::new();
    let rows = cx
        .convert(&ACCOUNTS, |r: source::Account, t| {
            let email = convert::email(&r.email);
            if !known.users.contains(&r.id) {
                t.skip(NO_USER);
                return None;
            }
            if !emails.insert(email.clone()) {
                t.skip("email equals another account's once trimmed and lowercased");
                return None;
            }
            if email != r.email {
                t.adjust("email trimmed and lowercased");
            }
            if !convert::is_bcrypt(&r.passhash) {
                t.adjust("password hash is not bcrypt: kept, but the user must reset the password");
            }
            Some((r.id, email, r.passhash))
        })
        .await?;
    cx.store(&ACCOUNTS, &rows, |b, r| {
        b.push_bind(r.0).push_bind(&r.1).push_bind(&r.2);
    })
    .await
}

const SPACES: Table = Table {
    name: "Space",
    mapping: "Space -> spaces (DM spaces: none)",
    sql: source::SPACES,
    target: "spaces (id, name, icon, owner_id, type, visibility)",
    columns: 6,
};

async fn spaces(cx: &mut Cx<'_>, known: &mut Known) -> Result<(), ImportError> {
    let first: Vec<source::FirstMember> = source::load(cx.s, source::FIRST_MEMBERS).await.map_err(src)?;
    let first: HashMap<Uuid, Uuid> = first.into_iter().map(|m| (m.space_id, m.user_id)).collect();
    let mut dm_spaces = HashSet::new();
    let rows = cx
        .convert(&SPACES, |r: source::Space, t| {
            if r.kind == "DM" {
                t.skip("DM space: its channels become DM channels, reached through relationships");
                dm_spaces.insert(r.id);
                return None;
            }
            if let Some(owner) = r.owner_id.filter(|o| known.users.contains(o)) {
                return Some((r, owner));
            }
            match first.get(&r.id).filter(|u| known.users.contains(u)) {
                Some(&first) => {
                    t.adjust("owner missing: the first member (join order) became the owner");
                    Some((r, first))
                }
                None => {
                    t.skip("no owner and no members");
                    None
                }
            }
        })
        .await?;
    cx.store(&SPACES, &rows, |b, (r, owner)| {
        b.push_bind(r.id)
            .push_bind(&r.name)
            .push_bind(&r.icon)
            .push_bind(*owner)
            .push_bind(&r.kind)
            .push_bind(&r.visibility);
    })
    .await?;
    known.dm_spaces = dm_spaces;
    known.spaces.extend(rows.iter().map(|(r, owner)| (r.id, *owner)));
    Ok(())
}

struct RoleOut {
    id: Uuid,
    space_id: Uuid,
    name: String,
    color: Option<String>,
    permissions: i64,
    position: i32,
    is_default: bool,
}

const ROLES: Table = Table {
    name: "Role",
    mapping: "Role -> roles (permission string -> bits; @everyone | 28672)",
    sql: source::ROLES,
    target: "roles (id, space_id, name, color, permissions, position, is_default)",
    columns: 7,
};

async fn roles(cx: &mut Cx<'_>, known: &mut Known) -> Result<(), ImportError> {
    const EVERYONE: &str = "@everyone";
    let mut with_default = HashSet::new();
    let mut rows = cx
        .convert(&ROLES, |r: source::Role, t| {
            if let Some(reason) = space_gone(known, r.space_id) {
                t.skip(reason);
                return None;
            }
            let is_default = r.name == EVERYONE && with_default.insert(r.space_id);
            let bits = convert::role_permissions(&r.permissions, is_default);
            if bits.invalid {
                t.adjust("permission string is not a decimal u64: no permissions");
            }
            if bits.dropped_undefined {
                t.adjust("undefined permission bits 16-63 dropped");
            }
            let mut name = r.name;
            if !is_default && name.eq_ignore_ascii_case(EVERYONE) {
                t.adjust("a second role named @everyone renamed to `everyone (imported)`");
                name = "everyone (imported)".into();
            }
            let position = match (is_default, r.position) {
                (true, _) => -1,
                (false, p) if p < 0 => {
                    t.adjust("negative position of a non-default role set to 0");
                    0
                }
                (false, p) => p,
            };
            Some(RoleOut {
                id: r.id,
                space_id: r.space_id,
                name,
                color: r.color,
                permissions: bits.bits,
                position,
                is_default,
            })
        })
        .await?;
    let mut spaces: Vec<Uuid> = known
        .spaces
        .keys()
        .copied()
        .filter(|s| !with_default.contains(s))
        .collect();
    spaces.sort();
    for space in spaces {
        cx.entry(&ROLES)
            .adjust("space had no @everyone role: one was added with 28672");
        rows.push(RoleOut {
            id: derived_id(space, 0xe7e2_70e0),
            space_id: space,
            name: EVERYONE.into(),
            color: None,
            permissions: convert::role_permissions("0", true).bits,
            position: -1,
            is_default: true,
        });
    }
    cx.store(&ROLES, &rows, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.space_id)
            .push_bind(&r.name)
            .push_bind(&r.color)
            .push_bind(r.permissions)
            .push_bind(r.position)
            .push_bind(r.is_default);
    })
    .await?;
    known
        .roles
        .extend(rows.iter().map(|r| (r.id, (r.space_id, r.is_default))));
    Ok(())
}

const MEMBERS: Table = Table {
    name: "SpaceUser",
    mapping: "SpaceUser -> members (id kept)",
    sql: source::MEMBERS,
    target: "members (id, space_id, user_id)",
    columns: 3,
};

async fn members(cx: &mut Cx<'_>, known: &mut Known) -> Result<(), ImportError> {
    let mut pairs = HashSet::new();
    let mut rows = cx
        .convert(&MEMBERS, |r: source::Member, t| {
            if let Some(reason) = space_gone(known, r.space_id) {
                t.skip(reason);
                return None;
            }
            if !known.users.contains(&r.user_id) {
                t.skip(NO_USER);
                return None;
            }
            if r.name.is_some() {
                t.adjust("nickname dropped (alterego has no member nicknames)");
            }
            pairs.insert((r.space_id, r.user_id));
            Some((r.id, r.space_id, r.user_id))
        })
        .await?;
    // alterego counts the owner as a member (spec §5.5); Mikoto did not require the row.
    let mut owners: Vec<(Uuid, Uuid)> = known.spaces.iter().map(|(s, o)| (*s, *o)).collect();
    owners.sort();
    for (space, owner) in owners {
        if pairs.insert((space, owner)) {
            cx.entry(&MEMBERS).adjust("owner was not a member: membership added");
            rows.push((derived_id(space, 0x0e2e_0e2e), space, owner));
        }
    }
    cx.store(&MEMBERS, &rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
    })
    .await?;
    known.members.extend(rows.iter().map(|r| (r.0, (r.1, r.2))));
    Ok(())
}

const MEMBER_ROLES: Table = Table {
    name: "_RoleToSpaceUser",
    mapping: "_RoleToSpaceUser -> member_roles",
    sql: source::MEMBER_ROLES,
    target: "member_roles (space_id, user_id, role_id)",
    columns: 3,
};

async fn member_roles(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&MEMBER_ROLES, |r: source::MemberRole, t| {
            let reason = match (known.members.get(&r.member_id), known.roles.get(&r.role_id)) {
                (None, _) => "member not imported",
                (_, None) => "role not imported",
                (Some((ms, _)), Some((rs, _))) if ms != rs => "role and member are in different spaces",
                (_, Some((_, true))) => "@everyone applies implicitly and is never assigned",
                (Some((space, user)), Some(_)) => return Some((*space, *user, r.role_id)),
            };
            t.skip(reason);
            None
        })
        .await?;
    cx.store(&MEMBER_ROLES, &rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
    })
    .await
}

const BANS: Table = Table {
    name: "Ban",
    mapping: "Ban -> bans (id kept)",
    sql: source::BANS,
    target: "bans (id, space_id, user_id, reason)",
    columns: 4,
};

async fn bans(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&BANS, |r: source::Ban, t| {
            let user_gone = (!known.users.contains(&r.user_id)).then_some(NO_USER);
            keep(t, space_gone(known, r.space_id).or(user_gone), r)
        })
        .await?;
    cx.store(&BANS, &rows, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.space_id)
            .push_bind(r.user_id)
            .push_bind(&r.reason);
    })
    .await
}

const INVITES: Table = Table {
    name: "Invite",
    mapping: "Invite -> invites (code kept; unlimited, no expiry)",
    sql: source::INVITES,
    target: "invites (code, space_id, creator_id, created_at)",
    columns: 4,
};

async fn invites(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&INVITES, |r: source::Invite, t| {
            let Some(&owner) = known.spaces.get(&r.space_id) else {
                t.skip(space_gone(known, r.space_id).unwrap_or(NO_SPACE));
                return None;
            };
            let creator = r.creator_id.filter(|c| known.users.contains(c)).unwrap_or_else(|| {
                t.adjust("creator missing: the space owner is recorded as creator");
                owner
            });
            Some((r.id, r.space_id, creator, convert::timestamp(r.created_at)))
        })
        .await?;
    cx.store(&INVITES, &rows, |b, r| {
        b.push_bind(&r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3);
    })
    .await
}

const CHANNELS: Table = Table {
    name: "Channel",
    mapping: "Channel -> channels (tree kept; DM-space channels -> DM channels)",
    sql: source::CHANNELS,
    target: "channels (id, space_id, parent_id, \"order\", name, type, last_updated)",
    columns: 7,
};

async fn channels(cx: &mut Cx<'_>, known: &mut Known) -> Result<(), ImportError> {
    // Channels to import, with their alterego space (none for DM channels).
    let mut pending = cx
        .convert(&CHANNELS, |mut c: source::Channel, t| {
            let space = match c.space_id {
                Some(sp) if known.dm_spaces.contains(&sp) => None,
                Some(sp) if known.spaces.contains_key(&sp) => Some(sp),
                Some(_) => {
                    t.skip(NO_SPACE);
                    return None;
                }
                None => None,
            };
            if c.order < 0 {
                t.adjust("negative order set to 0");
                c.order = 0;
            }
            Some((c, space))
        })
        .await?;
    // A parent must be imported and in the same space; otherwise the channel becomes a root.
    let space_of: HashMap<Uuid, Option<Uuid>> = pending.iter().map(|(c, sp)| (c.id, *sp)).collect();
    for (c, sp) in pending.iter_mut() {
        if let Some(p) = c.parent_id
            && space_of.get(&p) != Some(sp)
        {
            cx.report
                .table(CHANNELS.name, CHANNELS.mapping)
                .adjust("parent not imported or in another space: channel moved to the top level");
            c.parent_id = None;
        }
    }
    // Parents before children, round by round; a round with nothing insertable means a cycle,
    // broken at its smallest id.
    let mut done: HashSet<Uuid> = HashSet::new();
    while !pending.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(c, _)| c.parent_id.is_none_or(|p| done.contains(&p)));
        pending = rest;
        if ready.is_empty() {
            cx.entry(&CHANNELS)
                .adjust("parent cycle: channel moved to the top level");
            if let Some((c, _)) = pending.iter_mut().min_by_key(|(c, _)| c.id) {
                c.parent_id = None;
            }
            continue;
        }
        cx.write(&CHANNELS, &ready, &mut |b, (c, sp)| {
            b.push_bind(c.id)
                .push_bind(*sp)
                .push_bind(c.parent_id)
                .push_bind(c.order)
                .push_bind(&c.name)
                .push_bind(&c.kind)
                .push_bind(c.last_updated.map(convert::timestamp));
        })
        .await?;
        done.extend(ready.iter().map(|(c, _)| c.id));
    }
    cx.progress.finish();
    known.channels = done;
    Ok(())
}

const DOCUMENTS: Table = Table {
    name: "Document",
    mapping: "Document -> documents (Markdown snapshot)",
    sql: source::DOCUMENTS,
    target: "documents (id, channel_id, content)",
    columns: 3,
};

async fn documents(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&DOCUMENTS, |r: source::Document, t| {
            let gone = (!known.channels.contains(&r.channel_id)).then_some(NO_CHANNEL);
            keep(t, gone, r)
        })
        .await?;
    cx.store(&DOCUMENTS, &rows, |b, r| {
        b.push_bind(r.id).push_bind(r.channel_id).push_bind(&r.content);
    })
    .await
}

/// Streams a large table in batches of `batch` rows, converting each row with `f` (which
/// records why it skips one). Rows a batch insert did not write are counted under `unwritten`.
async fn stream<S, O: write::Batch>(
    cx: &mut Cx<'_>,
    table: &Table,
    batch: usize,
    unwritten: &str,
    mut f: impl FnMut(S, &mut TableReport) -> Option<O>,
) -> Result<(), ImportError>
where
    S: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let total = source::count(cx.s, table.name).await.map_err(src)?;
    cx.progress.start(table.name, total);
    let t = cx.report.table(table.name, table.mapping);
    let mut rows = sqlx::query_as::<_, S>(table.sql).fetch(&mut *cx.s);
    let mut out: Vec<O> = Vec::with_capacity(batch);
    loop {
        let next = rows.try_next().await.map_err(src)?;
        let end = next.is_none();
        if let Some(r) = next {
            t.read += 1;
            out.extend(f(r, &mut *t));
        }
        if out.len() >= batch || (end && !out.is_empty()) {
            let written = O::write(cx.d, &out).await.map_err(dst)?;
            t.written += written;
            t.skip_n(unwritten, (out.len() as u64).saturating_sub(written));
            cx.progress.advance(out.len() as u64);
            out.clear();
        }
        if end {
            break;
        }
    }
    cx.progress.finish();
    Ok(())
}

const MESSAGES: Table = Table {
    name: "Message",
    mapping: "Message -> messages (new time-ordered ids) + imported_message_ids",
    sql: source::MESSAGES,
    target: "messages",
    columns: 6,
};

async fn messages(cx: &mut Cx<'_>, known: &Known, batch: usize) -> Result<(), ImportError> {
    stream(cx, &MESSAGES, batch, CONFLICT, |r: source::Message, t| {
        if !known.channels.contains(&r.channel_id) {
            t.skip(NO_CHANNEL);
            return None;
        }
        let author = r.author_id.filter(|a| known.users.contains(a));
        if author != r.author_id {
            t.adjust("author not imported: message kept without author");
        }
        Some(write::Message {
            id: convert::message_id(r.id, r.timestamp),
            legacy_id: r.id,
            channel_id: r.channel_id,
            author_id: author,
            timestamp: convert::timestamp(r.timestamp),
            edited_timestamp: r.edited_timestamp.map(convert::timestamp),
            content: r.content,
            has_attachments: r.has_attachments,
        })
    })
    .await
}

const ATTACHMENTS: Table = Table {
    name: "MessageAttachment",
    mapping: "MessageAttachment -> message_attachments (url kept)",
    sql: source::ATTACHMENTS,
    target: "message_attachments",
    columns: 7,
};

async fn attachments(cx: &mut Cx<'_>, known: &Known, batch: usize) -> Result<(), ImportError> {
    const GONE: &str = "message not imported, or the attachment is already in the target";
    stream(cx, &ATTACHMENTS, batch, GONE, |r: source::Attachment, t| {
        let row = MessageAttachment {
            id: r.id,
            message_id: convert::message_id(r.message_id, r.message_timestamp),
            url: r.url,
            filename: r.filename,
            content_type: r.content_type,
            size: r.size,
            order: r.order,
        };
        keep(t, (!known.channels.contains(&r.channel_id)).then_some(GONE), row)
    })
    .await
}

const UNREADS: Table = Table {
    name: "ChannelUnread",
    mapping: "ChannelUnread -> channel_unreads",
    sql: source::UNREADS,
    target: "channel_unreads (channel_id, user_id, timestamp)",
    columns: 3,
};

async fn unreads(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&UNREADS, |r: source::Unread, t| {
            let gone = if !known.channels.contains(&r.channel_id) {
                Some(NO_CHANNEL)
            } else {
                (!known.users.contains(&r.user_id)).then_some(NO_USER)
            };
            keep(t, gone, (r.channel_id, r.user_id, convert::timestamp(r.timestamp)))
        })
        .await?;
    cx.store(&UNREADS, &rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
    })
    .await
}

const RELATIONSHIPS: Table = Table {
    name: "Relationship",
    mapping: "Relationship -> relationships (DM channel link kept)",
    sql: source::RELATIONSHIPS,
    target: "relationships (id, user_id, relation_id, state, channel_id)",
    columns: 5,
};

async fn relationships(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&RELATIONSHIPS, |mut r: source::Relationship, t| {
            if r.state == "NONE" {
                t.skip("state NONE: no relationship");
                return None;
            }
            if !known.users.contains(&r.user_id) || !known.users.contains(&r.relation_id) {
                t.skip(NO_USER);
                return None;
            }
            if r.channel_id.is_some_and(|c| !known.channels.contains(&c)) {
                t.adjust("DM channel not imported: link cleared");
                r.channel_id = None;
            }
            Some(r)
        })
        .await?;
    cx.store(&RELATIONSHIPS, &rows, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.user_id)
            .push_bind(r.relation_id)
            .push_bind(&r.state)
            .push_bind(r.channel_id);
    })
    .await
}

const BOTS: Table = Table {
    name: "Bot",
    mapping: "Bot -> bots (bcrypt secret kept until the next login)",
    sql: source::BOTS,
    target: "bots (user_id, owner_id, visibility, secret_bcrypt, permissions, last_token_regenerated_at)",
    columns: 6,
};

async fn bots(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&BOTS, |r: source::Bot, t| {
            if !known.users.contains(&r.id) {
                t.skip("bot user not imported");
                return None;
            }
            if !known.users.contains(&r.owner_id) {
                t.skip("owner not imported");
                return None;
            }
            let secret = convert::is_bcrypt(&r.secret).then(|| r.secret.clone());
            if secret.is_none() {
                t.adjust("secret is not a bcrypt hash: the owner must regenerate the token");
            }
            let (permissions, dropped) = convert::bot_permissions(&r.permissions);
            if dropped {
                t.adjust("non-string permission names dropped");
            }
            Some((r, secret, permissions))
        })
        .await?;
    cx.store(&BOTS, &rows, |b, (r, secret, permissions)| {
        b.push_bind(r.id)
            .push_bind(r.owner_id)
            .push_bind(&r.visibility)
            .push_bind(secret)
            .push_bind(permissions)
            .push_bind(r.last_regenerated);
    })
    .await?;
    // A bot's user is a BOT user (spec §12.6) whatever Mikoto's row said.
    let ids: Vec<Uuid> = rows.iter().map(|(r, _, _)| r.id).collect();
    let fixed = sqlx::query("UPDATE users SET category = 'BOT' WHERE id = ANY($1) AND category IS DISTINCT FROM 'BOT'")
        .bind(&ids)
        .execute(&mut *cx.d)
        .await
        .map_err(dst)?
        .rows_affected();
    for _ in 0..fixed {
        cx.entry(&BOTS).adjust("bot user's category set to BOT");
    }
    Ok(())
}

const HANDLES: Table = Table {
    name: "Handle",
    mapping: "Handle -> handles (lowercased; attestation kept)",
    sql: source::HANDLES,
    target: "handles (handle, user_id, space_id, verified_at, created_at, attestation)",
    columns: 6,
};

async fn handles(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let mut owners = HashSet::new();
    let mut names = HashSet::new();
    let rows = cx
        .convert(&HANDLES, |r: source::Handle, t| {
            let owner = match (r.user_id, r.space_id) {
                (Some(u), None) if known.users.contains(&u) => Some(u),
                (None, Some(sp)) if known.spaces.contains_key(&sp) => Some(sp),
                (Some(_), None) => {
                    t.skip(NO_USER);
                    None
                }
                (None, Some(sp)) => {
                    t.skip(space_gone(known, sp).unwrap_or(NO_SPACE));
                    None
                }
                _ => {
                    t.skip("neither exactly one user nor one space owns it");
                    None
                }
            }?;
            let handle = convert::handle(&r.handle);
            if !names.insert(handle.clone()) {
                t.skip("equals another handle once lowercased");
                return None;
            }
            if !owners.insert(owner) {
                t.skip("owner already holds a handle (the verified, then newest, is kept)");
                return None;
            }
            if handle != r.handle {
                t.adjust("handle trimmed and lowercased");
            }
            let attestation = r.attestation.as_ref().and_then(convert::attestation);
            Some((r, handle, attestation))
        })
        .await?;
    cx.store(&HANDLES, &rows, |b, (r, handle, attestation)| {
        b.push_bind(handle)
            .push_bind(r.user_id)
            .push_bind(r.space_id)
            .push_bind(r.verified_at.map(convert::timestamp))
            .push_bind(convert::timestamp(r.created_at))
            .push_bind(attestation);
    })
    .await
}

const PREFERENCES: Table = Table {
    name: "NotificationPreference",
    mapping: "NotificationPreference -> notification_preferences",
    sql: source::PREFERENCES,
    target: "notification_preferences (user_id, space_id, level)",
    columns: 3,
};

async fn preferences(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&PREFERENCES, |r: source::Preference, t| {
            let user_gone = (!known.users.contains(&r.user_id)).then_some(NO_USER);
            keep(t, space_gone(known, r.space_id).or(user_gone), r)
        })
        .await?;
    cx.store(&PREFERENCES, &rows, |b, r| {
        b.push_bind(r.user_id).push_bind(r.space_id).push_bind(&r.level);
    })
    .await
}

const PUSH_SUBSCRIPTIONS: Table = Table {
    name: "PushSubscription",
    mapping: "PushSubscription -> push_subscriptions",
    sql: source::PUSH_SUBSCRIPTIONS,
    target: "push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)",
    columns: 6,
};

async fn push_subscriptions(cx: &mut Cx<'_>, known: &Known) -> Result<(), ImportError> {
    let rows = cx
        .convert(&PUSH_SUBSCRIPTIONS, |r: source::PushSubscription, t| {
            keep(t, (!known.users.contains(&r.user_id)).then_some(NO_USER), r)
        })
        .await?;
    cx.store(&PUSH_SUBSCRIPTIONS, &rows, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.user_id)
            .push_bind(&r.endpoint)
            .push_bind(&r.p256dh)
            .push_bind(&r.auth)
            .push_bind(convert::timestamp(r.created_at));
    })
    .await
}

/// Tables whose rows alterego does not carry, counted so that nothing is dropped silently.
async fn not_carried(s: &mut PgConnection, report: &mut Report) -> Result<(), ImportError> {
    let tables = [
        ("RefreshToken", "not carried: users sign in again (spec §1.7)"),
        (
            "AccountVerification",
            "not carried: pending email/reset tokens expire; users request new ones",
        ),
        ("Settings", "not carried: alterego stores no client settings"),
        ("UserStatus", "not carried: presence is live state (spec §12.8)"),
    ];
    for (table, reason) in tables {
        let n = source::count(s, table).await.map_err(src)?;
        let t = report.table(table, "(none)");
        t.read += n;
        t.skip_n(reason, n);
    }
    Ok(())
}
