//! The import, table by table in dependency order: each step reads a Mikoto table, checks every
//! reference against what earlier steps wrote, converts values, writes, and reports every row it
//! skips or changes with the reason.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::report::{Report, TableReport};
use super::write;
use super::{ImportError, Progress, convert, source};

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

/// Starts the report and the progress of a table read in one piece.
fn begin<'r>(
    report: &'r mut Report,
    progress: &mut Progress,
    table: &str,
    mapping: &str,
    read: usize,
) -> &'r mut TableReport {
    progress.start(table, read as u64);
    let t = report.table(table, mapping);
    t.read += read as u64;
    t
}

fn end(progress: &mut Progress, rows: usize) {
    progress.advance(rows as u64);
    progress.finish();
}

/// A deterministic id for a row the importer adds (an `@everyone` role or an owner's
/// membership that Mikoto lacked): derived from the space id, so re-runs agree.
fn derived_id(from: Uuid, salt: u128) -> Uuid {
    Uuid::from_u128(from.as_u128() ^ salt)
}

pub async fn run(
    src_conn: &mut PgConnection,
    dst_conn: &mut PgConnection,
    report: &mut Report,
    progress: &mut Progress,
    batch: usize,
) -> Result<(), ImportError> {
    let mut known = Known::default();
    users(src_conn, dst_conn, &mut known, report, progress).await?;
    accounts(src_conn, dst_conn, &known, report, progress).await?;
    spaces(src_conn, dst_conn, &mut known, report, progress).await?;
    roles(src_conn, dst_conn, &mut known, report, progress).await?;
    members(src_conn, dst_conn, &mut known, report, progress).await?;
    member_roles(src_conn, dst_conn, &known, report, progress).await?;
    bans(src_conn, dst_conn, &known, report, progress).await?;
    invites(src_conn, dst_conn, &known, report, progress).await?;
    channels(src_conn, dst_conn, &mut known, report, progress).await?;
    documents(src_conn, dst_conn, &known, report, progress).await?;
    messages(src_conn, dst_conn, &known, report, progress, batch).await?;
    attachments(src_conn, dst_conn, &known, report, progress, batch).await?;
    unreads(src_conn, dst_conn, &known, report, progress).await?;
    relationships(src_conn, dst_conn, &known, report, progress).await?;
    bots(src_conn, dst_conn, &known, report, progress).await?;
    handles(src_conn, dst_conn, &known, report, progress).await?;
    preferences(src_conn, dst_conn, &known, report, progress).await?;
    push_subscriptions(src_conn, dst_conn, &known, report, progress).await?;
    not_carried(src_conn, report).await
}

async fn users(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &mut Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::User> = source::load(s, source::USERS).await.map_err(src)?;
    let t = begin(report, progress, "User", "User -> users", rows.len());
    let written = write::rows(
        d,
        "users (id, name, avatar, description, category)",
        5,
        &rows,
        |b, r| {
            b.push_bind(r.id)
                .push_bind(&r.name)
                .push_bind(&r.avatar)
                .push_bind(&r.description)
                .push_bind(&r.category);
        },
    )
    .await
    .map_err(dst)?;
    record(t, rows.len(), written);
    known.users.extend(rows.iter().map(|r| r.id));
    end(progress, rows.len());
    Ok(())
}

async fn accounts(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Account> = source::load(s, source::ACCOUNTS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Account",
        "Account -> accounts (bcrypt hash kept)",
        rows.len(),
    );
    let mut emails = HashSet::new();
    let mut out = Vec::new();
    for r in &rows {
        let email = convert::email(&r.email);
        if !known.users.contains(&r.id) {
            t.skip(NO_USER);
        } else if !emails.insert(email.clone()) {
            t.skip("email equals another account's once trimmed and lowercased");
        } else {
            if email != r.email {
                t.adjust("email trimmed and lowercased");
            }
            if !convert::is_bcrypt(&r.passhash) {
                t.adjust("password hash is not bcrypt: kept, but the user must reset the password");
            }
            out.push((r.id, email, &r.passhash));
        }
    }
    let written = write::rows(d, "accounts (user_id, email, password_hash)", 3, &out, |b, r| {
        b.push_bind(r.0).push_bind(&r.1).push_bind(r.2);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn spaces(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &mut Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Space> = source::load(s, source::SPACES).await.map_err(src)?;
    let first: Vec<source::FirstMember> = source::load(s, source::FIRST_MEMBERS).await.map_err(src)?;
    let first: HashMap<Uuid, Uuid> = first.into_iter().map(|m| (m.space_id, m.user_id)).collect();
    let t = begin(
        report,
        progress,
        "Space",
        "Space -> spaces (DM spaces: none)",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if r.kind == "DM" {
            t.skip("DM space: its channels become DM channels, reached through relationships");
            known.dm_spaces.insert(r.id);
            continue;
        }
        let owner = match r.owner_id.filter(|o| known.users.contains(o)) {
            Some(o) => o,
            None => match first.get(&r.id).filter(|u| known.users.contains(u)) {
                Some(&u) => {
                    t.adjust("owner missing: the first member (join order) became the owner");
                    u
                }
                None => {
                    t.skip("no owner and no members");
                    continue;
                }
            },
        };
        out.push((r, owner));
    }
    let written = write::rows(
        d,
        "spaces (id, name, icon, owner_id, type, visibility)",
        6,
        &out,
        |b, (r, owner)| {
            b.push_bind(r.id)
                .push_bind(&r.name)
                .push_bind(&r.icon)
                .push_bind(*owner)
                .push_bind(&r.kind)
                .push_bind(&r.visibility);
        },
    )
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    known.spaces.extend(out.iter().map(|(r, owner)| (r.id, *owner)));
    end(progress, rows.len());
    Ok(())
}

/// The Mikoto reasons a row of a space-scoped table is not imported.
fn space_gone(known: &Known, space: Uuid) -> Option<&'static str> {
    if known.dm_spaces.contains(&space) {
        Some(DM_SPACE)
    } else if !known.spaces.contains_key(&space) {
        Some(NO_SPACE)
    } else {
        None
    }
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

async fn roles(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &mut Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    const EVERYONE: &str = "@everyone";
    let rows: Vec<source::Role> = source::load(s, source::ROLES).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Role",
        "Role -> roles (permission string -> bits; @everyone | 28672)",
        rows.len(),
    );
    let mut with_default = HashSet::new();
    let mut out = Vec::new();
    for r in rows.iter() {
        if let Some(reason) = space_gone(known, r.space_id) {
            t.skip(reason);
            continue;
        }
        let is_default = r.name == EVERYONE && with_default.insert(r.space_id);
        let bits = convert::role_permissions(&r.permissions, is_default);
        if bits.invalid {
            t.adjust("permission string is not a decimal u64: no permissions");
        }
        if bits.dropped_undefined {
            t.adjust("undefined permission bits 16-63 dropped");
        }
        let mut name = r.name.clone();
        if !is_default && name.eq_ignore_ascii_case(EVERYONE) {
            t.adjust("a second role named @everyone renamed to `everyone (imported)`");
            name = "everyone (imported)".into();
        }
        let position = if is_default {
            -1
        } else if r.position < 0 {
            t.adjust("negative position of a non-default role set to 0");
            0
        } else {
            r.position
        };
        out.push(RoleOut {
            id: r.id,
            space_id: r.space_id,
            name,
            color: r.color.clone(),
            permissions: bits.bits,
            position,
            is_default,
        });
    }
    let mut spaces: Vec<Uuid> = known
        .spaces
        .keys()
        .copied()
        .filter(|s| !with_default.contains(s))
        .collect();
    spaces.sort();
    for space in spaces {
        t.adjust("space had no @everyone role: one was added with 28672");
        out.push(RoleOut {
            id: derived_id(space, 0xe7e2_70e0),
            space_id: space,
            name: EVERYONE.into(),
            color: None,
            permissions: convert::role_permissions("0", true).bits,
            position: -1,
            is_default: true,
        });
    }
    let target = "roles (id, space_id, name, color, permissions, position, is_default)";
    let written = write::rows(d, target, 7, &out, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.space_id)
            .push_bind(&r.name)
            .push_bind(&r.color)
            .push_bind(r.permissions)
            .push_bind(r.position)
            .push_bind(r.is_default);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    known
        .roles
        .extend(out.iter().map(|r| (r.id, (r.space_id, r.is_default))));
    end(progress, rows.len());
    Ok(())
}

async fn members(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &mut Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Member> = source::load(s, source::MEMBERS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "SpaceUser",
        "SpaceUser -> members (id kept)",
        rows.len(),
    );
    let mut out: Vec<(Uuid, Uuid, Uuid)> = Vec::new();
    let mut pairs = HashSet::new();
    for r in &rows {
        if let Some(reason) = space_gone(known, r.space_id) {
            t.skip(reason);
        } else if !known.users.contains(&r.user_id) {
            t.skip(NO_USER);
        } else {
            if r.name.is_some() {
                t.adjust("nickname dropped (alterego has no member nicknames)");
            }
            pairs.insert((r.space_id, r.user_id));
            out.push((r.id, r.space_id, r.user_id));
        }
    }
    // alterego counts the owner as a member (spec §5.5); Mikoto did not require the row.
    let mut owners: Vec<(Uuid, Uuid)> = known.spaces.iter().map(|(s, o)| (*s, *o)).collect();
    owners.sort();
    for (space, owner) in owners {
        if pairs.insert((space, owner)) {
            t.adjust("owner was not a member: membership added");
            out.push((derived_id(space, 0x0e2e_0e2e), space, owner));
        }
    }
    let written = write::rows(d, "members (id, space_id, user_id)", 3, &out, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    known.members.extend(out.iter().map(|r| (r.0, (r.1, r.2))));
    end(progress, rows.len());
    Ok(())
}

async fn member_roles(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::MemberRole> = source::load(s, source::MEMBER_ROLES).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "_RoleToSpaceUser",
        "_RoleToSpaceUser -> member_roles",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        match (known.members.get(&r.member_id), known.roles.get(&r.role_id)) {
            (None, _) => t.skip("member not imported"),
            (_, None) => t.skip("role not imported"),
            (Some((ms, _)), Some((rs, _))) if ms != rs => t.skip("role and member are in different spaces"),
            (_, Some((_, true))) => t.skip("@everyone applies implicitly and is never assigned"),
            (Some((space, user)), Some(_)) => out.push((*space, *user, r.role_id)),
        }
    }
    let written = write::rows(d, "member_roles (space_id, user_id, role_id)", 3, &out, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn bans(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Ban> = source::load(s, source::BANS).await.map_err(src)?;
    let t = begin(report, progress, "Ban", "Ban -> bans (id kept)", rows.len());
    let mut out = Vec::new();
    for r in &rows {
        if let Some(reason) = space_gone(known, r.space_id) {
            t.skip(reason);
        } else if !known.users.contains(&r.user_id) {
            t.skip(NO_USER);
        } else {
            out.push(r);
        }
    }
    let written = write::rows(d, "bans (id, space_id, user_id, reason)", 4, &out, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.space_id)
            .push_bind(r.user_id)
            .push_bind(&r.reason);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn invites(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Invite> = source::load(s, source::INVITES).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Invite",
        "Invite -> invites (code kept; unlimited, no expiry)",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        let Some(&owner) = known.spaces.get(&r.space_id) else {
            t.skip(space_gone(known, r.space_id).unwrap_or(NO_SPACE));
            continue;
        };
        let creator = match r.creator_id.filter(|c| known.users.contains(c)) {
            Some(c) => c,
            None => {
                t.adjust("creator missing: the space owner is recorded as creator");
                owner
            }
        };
        out.push((r.id.as_str(), r.space_id, creator, convert::timestamp(r.created_at)));
    }
    let written = write::rows(
        d,
        "invites (code, space_id, creator_id, created_at)",
        4,
        &out,
        |b, r| {
            b.push_bind(r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3);
        },
    )
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn channels(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &mut Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Channel> = source::load(s, source::CHANNELS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Channel",
        "Channel -> channels (tree kept; DM-space channels -> DM channels)",
        rows.len(),
    );
    // Channels to import, with their alterego space.
    let mut pending: Vec<(source::Channel, Option<Uuid>)> = Vec::new();
    for r in &rows {
        let space = match r.space_id {
            Some(sp) if known.dm_spaces.contains(&sp) => None,
            Some(sp) if known.spaces.contains_key(&sp) => Some(sp),
            Some(_) => {
                t.skip(NO_SPACE);
                continue;
            }
            None => None,
        };
        let mut c = r.clone();
        if c.order < 0 {
            t.adjust("negative order set to 0");
            c.order = 0;
        }
        pending.push((c, space));
    }
    // A parent must be imported and in the same space; otherwise the channel becomes a root.
    let space_of: HashMap<Uuid, Option<Uuid>> = pending.iter().map(|(c, sp)| (c.id, *sp)).collect();
    for (c, sp) in pending.iter_mut() {
        if let Some(p) = c.parent_id
            && space_of.get(&p) != Some(sp)
        {
            t.adjust("parent not imported or in another space: channel moved to the top level");
            c.parent_id = None;
        }
    }
    // Insert parents before children, round by round; a round with nothing insertable means a
    // cycle, broken at its smallest id.
    let mut done: HashSet<Uuid> = HashSet::new();
    while !pending.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(c, _)| c.parent_id.is_none_or(|p| done.contains(&p)));
        pending = rest;
        if ready.is_empty() {
            t.adjust("parent cycle: channel moved to the top level");
            if let Some((c, _)) = pending.iter_mut().min_by_key(|(c, _)| c.id) {
                c.parent_id = None;
            }
            continue;
        }
        let target = "channels (id, space_id, parent_id, \"order\", name, type, last_updated)";
        let written = write::rows(d, target, 7, &ready, |b, (c, sp)| {
            b.push_bind(c.id)
                .push_bind(*sp)
                .push_bind(c.parent_id)
                .push_bind(c.order)
                .push_bind(&c.name)
                .push_bind(&c.kind)
                .push_bind(c.last_updated.map(convert::timestamp));
        })
        .await
        .map_err(dst)?;
        record(t, ready.len(), written);
        done.extend(ready.iter().map(|(c, _)| c.id));
    }
    known.channels = done;
    end(progress, rows.len());
    Ok(())
}

async fn documents(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Document> = source::load(s, source::DOCUMENTS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Document",
        "Document -> documents (Markdown snapshot)",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if known.channels.contains(&r.channel_id) {
            out.push(r);
        } else {
            t.skip(NO_CHANNEL);
        }
    }
    let written = write::rows(d, "documents (id, channel_id, content)", 3, &out, |b, r| {
        b.push_bind(r.id).push_bind(r.channel_id).push_bind(&r.content);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn messages(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
    batch: usize,
) -> Result<(), ImportError> {
    let total = source::count(s, "Message").await.map_err(src)?;
    progress.start("Message", total);
    let t = report.table(
        "Message",
        "Message -> messages (new time-ordered ids) + imported_message_ids",
    );
    let mut rows = sqlx::query_as::<_, source::Message>(source::MESSAGES).fetch(&mut *s);
    let mut out: Vec<write::Message> = Vec::with_capacity(batch);
    while let Some(r) = rows.try_next().await.map_err(src)? {
        t.read += 1;
        if !known.channels.contains(&r.channel_id) {
            t.skip(NO_CHANNEL);
            continue;
        }
        let author = r.author_id.filter(|a| known.users.contains(a));
        if author != r.author_id {
            t.adjust("author not imported: message kept without author");
        }
        out.push(write::Message {
            id: convert::message_id(r.id, r.timestamp),
            legacy_id: r.id,
            channel_id: r.channel_id,
            author_id: author,
            timestamp: convert::timestamp(r.timestamp),
            edited_timestamp: r.edited_timestamp.map(convert::timestamp),
            content: r.content,
        });
        if out.len() >= batch {
            let written = write::messages(d, &out).await.map_err(dst)?;
            record(t, out.len(), written);
            progress.advance(out.len() as u64);
            out.clear();
        }
    }
    let written = write::messages(d, &out).await.map_err(dst)?;
    record(t, out.len(), written);
    end(progress, out.len());
    Ok(())
}

async fn attachments(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
    batch: usize,
) -> Result<(), ImportError> {
    const GONE: &str = "message not imported";
    let total = source::count(s, "MessageAttachment").await.map_err(src)?;
    progress.start("MessageAttachment", total);
    let t = report.table(
        "MessageAttachment",
        "MessageAttachment -> message_attachments (url kept)",
    );
    let mut rows = sqlx::query_as::<_, source::Attachment>(source::ATTACHMENTS).fetch(&mut *s);
    let mut out: Vec<write::Attachment> = Vec::with_capacity(batch);
    let flush = |t: &mut TableReport, attempted: usize, written: u64| {
        t.written += written;
        t.skip_n(GONE, (attempted as u64).saturating_sub(written));
    };
    while let Some(r) = rows.try_next().await.map_err(src)? {
        t.read += 1;
        if !known.channels.contains(&r.channel_id) {
            t.skip(GONE);
            continue;
        }
        out.push(write::Attachment {
            id: r.id,
            message_id: convert::message_id(r.message_id, r.message_timestamp),
            url: r.url,
            filename: r.filename,
            content_type: r.content_type,
            size: r.size,
            order: r.order,
        });
        if out.len() >= batch {
            let written = write::attachments(d, &out).await.map_err(dst)?;
            flush(t, out.len(), written);
            progress.advance(out.len() as u64);
            out.clear();
        }
    }
    let written = write::attachments(d, &out).await.map_err(dst)?;
    flush(t, out.len(), written);
    end(progress, out.len());
    Ok(())
}

async fn unreads(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Unread> = source::load(s, source::UNREADS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "ChannelUnread",
        "ChannelUnread -> channel_unreads",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if !known.channels.contains(&r.channel_id) {
            t.skip(NO_CHANNEL);
        } else if !known.users.contains(&r.user_id) {
            t.skip(NO_USER);
        } else {
            out.push((r.channel_id, r.user_id, convert::timestamp(r.timestamp)));
        }
    }
    let written = write::rows(
        d,
        "channel_unreads (channel_id, user_id, timestamp)",
        3,
        &out,
        |b, r| {
            b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
        },
    )
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn relationships(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Relationship> = source::load(s, source::RELATIONSHIPS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Relationship",
        "Relationship -> relationships (DM channel link kept)",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if r.state == "NONE" {
            t.skip("state NONE: no relationship");
        } else if !known.users.contains(&r.user_id) || !known.users.contains(&r.relation_id) {
            t.skip(NO_USER);
        } else {
            let channel = r.channel_id.filter(|c| known.channels.contains(c));
            if channel != r.channel_id {
                t.adjust("DM channel not imported: link cleared");
            }
            out.push((r, channel));
        }
    }
    let target = "relationships (id, user_id, relation_id, state, channel_id)";
    let written = write::rows(d, target, 5, &out, |b, (r, channel)| {
        b.push_bind(r.id)
            .push_bind(r.user_id)
            .push_bind(r.relation_id)
            .push_bind(&r.state)
            .push_bind(*channel);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn bots(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Bot> = source::load(s, source::BOTS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Bot",
        "Bot -> bots (bcrypt secret kept until the next login)",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if !known.users.contains(&r.id) {
            t.skip("bot user not imported");
            continue;
        }
        if !known.users.contains(&r.owner_id) {
            t.skip("owner not imported");
            continue;
        }
        let secret = if convert::is_bcrypt(&r.secret) {
            Some(r.secret.as_str())
        } else {
            t.adjust("secret is not a bcrypt hash: the owner must regenerate the token");
            None
        };
        let (permissions, dropped) = convert::bot_permissions(&r.permissions);
        if dropped {
            t.adjust("non-string permission names dropped");
        }
        out.push((r, secret, permissions));
    }
    let target = "bots (user_id, owner_id, visibility, secret_bcrypt, permissions, last_token_regenerated_at)";
    let written = write::rows(d, target, 6, &out, |b, (r, secret, permissions)| {
        b.push_bind(r.id)
            .push_bind(r.owner_id)
            .push_bind(&r.visibility)
            .push_bind(*secret)
            .push_bind(permissions)
            .push_bind(r.last_regenerated);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    // A bot's user is a BOT user (spec §12.6) whatever Mikoto's row said.
    let ids: Vec<Uuid> = out.iter().map(|(r, _, _)| r.id).collect();
    let fixed = sqlx::query("UPDATE users SET category = 'BOT' WHERE id = ANY($1) AND category IS DISTINCT FROM 'BOT'")
        .bind(&ids)
        .execute(&mut *d)
        .await
        .map_err(dst)?
        .rows_affected();
    for _ in 0..fixed {
        t.adjust("bot user's category set to BOT");
    }
    end(progress, rows.len());
    Ok(())
}

async fn handles(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Handle> = source::load(s, source::HANDLES).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "Handle",
        "Handle -> handles (lowercased; attestation kept)",
        rows.len(),
    );
    let mut owners = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for r in &rows {
        let owner = match (r.user_id, r.space_id) {
            (Some(u), None) if known.users.contains(&u) => u,
            (None, Some(sp)) if known.spaces.contains_key(&sp) => sp,
            (Some(_), None) => {
                t.skip(NO_USER);
                continue;
            }
            (None, Some(sp)) => {
                t.skip(space_gone(known, sp).unwrap_or(NO_SPACE));
                continue;
            }
            _ => {
                t.skip("neither exactly one user nor one space owns it");
                continue;
            }
        };
        let handle = convert::handle(&r.handle);
        if !names.insert(handle.clone()) {
            t.skip("equals another handle once lowercased");
            continue;
        }
        if !owners.insert(owner) {
            t.skip("owner already holds a handle (the verified, then newest, is kept)");
            continue;
        }
        if handle != r.handle {
            t.adjust("handle trimmed and lowercased");
        }
        let attestation = r.attestation.as_ref().and_then(convert::attestation);
        out.push((r, handle, attestation));
    }
    let target = "handles (handle, user_id, space_id, verified_at, created_at, attestation)";
    let written = write::rows(d, target, 6, &out, |b, (r, handle, attestation)| {
        b.push_bind(handle)
            .push_bind(r.user_id)
            .push_bind(r.space_id)
            .push_bind(r.verified_at.map(convert::timestamp))
            .push_bind(convert::timestamp(r.created_at))
            .push_bind(attestation);
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn preferences(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::Preference> = source::load(s, source::PREFERENCES).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "NotificationPreference",
        "NotificationPreference -> notification_preferences",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if let Some(reason) = space_gone(known, r.space_id) {
            t.skip(reason);
        } else if !known.users.contains(&r.user_id) {
            t.skip(NO_USER);
        } else {
            out.push(r);
        }
    }
    let written = write::rows(
        d,
        "notification_preferences (user_id, space_id, level)",
        3,
        &out,
        |b, r| {
            b.push_bind(r.user_id).push_bind(r.space_id).push_bind(&r.level);
        },
    )
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
}

async fn push_subscriptions(
    s: &mut PgConnection,
    d: &mut PgConnection,
    known: &Known,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let rows: Vec<source::PushSubscription> = source::load(s, source::PUSH_SUBSCRIPTIONS).await.map_err(src)?;
    let t = begin(
        report,
        progress,
        "PushSubscription",
        "PushSubscription -> push_subscriptions",
        rows.len(),
    );
    let mut out = Vec::new();
    for r in &rows {
        if known.users.contains(&r.user_id) {
            out.push(r);
        } else {
            t.skip(NO_USER);
        }
    }
    let target = "push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)";
    let written = write::rows(d, target, 6, &out, |b, r| {
        b.push_bind(r.id)
            .push_bind(r.user_id)
            .push_bind(&r.endpoint)
            .push_bind(&r.p256dh)
            .push_bind(&r.auth)
            .push_bind(convert::timestamp(r.created_at));
    })
    .await
    .map_err(dst)?;
    record(t, out.len(), written);
    end(progress, rows.len());
    Ok(())
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
