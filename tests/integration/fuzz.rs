//! A schema-driven fuzz run: Schemathesis (PyPI, pinned in tests/python/requirements.txt) sends
//! thousands of generated requests, valid and invalid, to every operation of `/api.json` as a member
//! of a populated space, and checks that no response is a 5xx and that every status code, content
//! type and body is one the document declares for the operation.
//!
//! Real ids for path and query parameters and body fields come from
//! tests/python/schemathesis_hooks.py, so requests reach the handlers instead of stopping at 404;
//! operations that delete get spare ids, so the rest keep reaching them. Each run uses a fresh seed, printed, so a failure can be
//! replayed with `ALTEREGO_FUZZ_SEED=<seed>`; `ALTEREGO_FUZZ_ARGS` adds Schemathesis arguments.

use std::sync::Arc;
use std::time::Duration;

use alterego::functions::permissions::Permissions;
use alterego::functions::push_transport::{HostResolver, PushNetwork};
use alterego::functions::verification::DomainProbe;
use alterego::functions::webpush::VapidKeys;
use alterego::services::push::Pusher;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::common::fixtures::{Target, assign_role, befriend, channel, id, ids, ranked_role, set_override, space};
use crate::common::{Resp, TestApp, TestUser};

/// The Schemathesis checks the run applies (the four the issue names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Generated cases per operation and phase; about 100 operations make this well over 2,000 cases.
const EXAMPLES_PER_OPERATION: u32 = 25;

/// The run's floor: fewer cases means generation broke and the run proves little.
const MIN_CASES: u64 = 2_000;

/// The bound on the whole run; it takes a minute or two on a 2-core machine.
const TIME_LIMIT: Duration = Duration::from_secs(300);

/// Operations that end the fuzzing member's session or membership, so that every later request
/// would be a 401 or 404 and prove nothing: logging out (the caller's own session when the body
/// names no refresh token), logging out everywhere, leaving the space. The member is not the
/// space's owner, so deleting or handing over the space is refused and stays in the run; their
/// password differs from the documented example's, so `account.change_password` stays in too.
const SESSION_ENDERS: [&str; 3] = ["account.logout", "account.logout_all", "spaces.leave"];

/// DNS that answers nothing: the fuzzed push endpoints and handle domains never leave the machine.
struct Offline;

impl HostResolver for Offline {
    fn lookup<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<std::net::IpAddr>, String>> {
        Box::pin(async { Err("offline test resolver".to_string()) })
    }
}

impl DomainProbe for Offline {
    fn txt<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn well_known<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async { Err("offline test probe".to_string()) })
    }
}

/// A server with every optional feature configured (Web Push, voice), so those handlers run
/// instead of answering 503, and without rate limits, which would otherwise turn most of the run
/// into 429s: Schemathesis sends from one address and one user (the upload buckets stay, and
/// answer their documented 429 now and then).
async fn fuzz_server() -> TestApp {
    let (public, private) = crate::push::vapid_pair();
    TestApp::builder()
        .config(move |c| {
            c.rate_limits = false;
            c.database_max_connections = 10;
            c.vapid_public_key = Some(public);
            c.vapid_private_key = Some(private);
            c.vapid_subject = Some("mailto:ops@alterego.test".into());
            c.livekit_url = Some("wss://voice.alterego.test".into());
            c.livekit_api_key = Some("APIfuzz".into());
            c.livekit_api_secret = Some("fuzz-secret-fuzz-secret-fuzz-secret".into());
        })
        .state(|s| {
            s.domain_probe = Arc::new(Offline);
            let keys = VapidKeys::new(
                s.config.vapid_public_key.as_deref().expect("public key"),
                s.config.vapid_private_key.as_deref().expect("private key"),
                "mailto:ops@alterego.test",
            )
            .expect("VAPID keys");
            let network = PushNetwork::with_resolver(Arc::new(Offline), Vec::new(), None).expect("push network");
            s.push = Some(Pusher::start(keys, network, s.db.clone(), s.gateway.clone(), &s.config));
        })
        .spawn()
        .await
}

/// Posts `n` messages to `path` as `user`; returns their ids.
async fn messages(app: &TestApp, user: &TestUser, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = app
            .post(path, Some(&user.access), json!({"content": format!("message {i}")}))
            .await;
        r.expect(200, None);
        out.push(id(&r.body));
    }
    out
}

/// A space owned by someone else that the member (a moderator) shares with four other users: text,
/// voice and document channels, roles, an override, messages, an invite; the member's DM with a
/// friend, a pending friend request, a bot, a handle and an uploaded file; and spares for the
/// operations that delete (see [`spares`]). Returns the member and the ids for the hooks.
async fn populate(app: &TestApp) -> (TestUser, Value) {
    let owner = app.register("Owner").await;
    // Not the documented examples' password, which `account.change_password`'s example sends.
    let member = app
        .register_with_password("Fuzz", &format!("fuzz {}", uuid::Uuid::new_v4()))
        .await;
    let [carol, dave, erin, frank] = [
        app.register("Carol").await,
        app.register("Dave").await,
        app.register("Erin").await,
        app.register("Frank").await,
    ];
    let (sid, general) = space(app, &owner, &[&member, &carol, &dave, &erin, &frank]).await;
    let mut channels = vec![general.clone(), channel(app, &owner, &sid, "random").await];
    for (name, kind) in [("Lounge", "VOICE"), ("Notes", "DOCUMENT")] {
        let r = app
            .post(
                &format!("/spaces/{sid}/channels/"),
                Some(&owner.access),
                json!({"name": name, "type": kind}),
            )
            .await;
        r.expect(200, None);
        channels.push(id(&r.body));
    }
    // The member's own role also grants what @everyone does: the run may take it from @everyone.
    let moderation = Permissions::DEFAULT_EVERYONE
        | Permissions::MANAGE_CHANNELS
        | Permissions::MANAGE_ROLES
        | Permissions::ASSIGN_ROLES
        | Permissions::MANAGE_INVITES
        | Permissions::MANAGE_MESSAGES
        | Permissions::MANAGE_MEMBER_PROFILES
        | Permissions::BAN;
    let moderator = ranked_role(app, &owner, &sid, "Moderator", moderation.bits(), 5).await;
    let helper = ranked_role(app, &owner, &sid, "Helper", 0, 1).await;
    assign_role(app, &owner, &sid, &member, &moderator).await;
    assign_role(app, &owner, &sid, &carol, &helper).await;
    set_override(app, &owner, &sid, &general, Target::Role(&helper), 0, 1 << 13).await;
    let (mut space_messages, mut anchors) = (serde_json::Map::new(), Vec::new());
    for (author, cid) in [(&owner, &channels[0]), (&member, &channels[1])] {
        let posted = messages(app, author, &format!("/spaces/{sid}/channels/{cid}/messages/"), 3).await;
        anchors.extend(posted.iter().cloned());
        space_messages.insert(cid.clone(), posted.into());
    }
    let invite = invite(app, &owner, &sid).await;
    let dm = befriend(app, &member, &carol).await;
    let dm_messages = messages(app, &carol, &format!("/dm/{dm}/messages/"), 3).await;
    app.post(
        &format!("/relations/{}/request", dave.id),
        Some(&member.access),
        json!({}),
    )
    .await
    .expect(200, None);
    let bot = bot(app, &member, "Helper bot").await;
    app.post("/users/me/handle", Some(&owner.access), json!({"handle": "owner"}))
        .await
        .expect(200, None);
    let upload = app
        .upload(
            "attachment",
            Some(&member.access),
            "notes.txt",
            "text/plain",
            b"hello".to_vec(),
        )
        .await;
    upload.expect(200, None);
    let name = upload.body["url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("upload url")
        .to_string();
    let (spare, spare_dm) = spares(app, [&owner, &member, &carol], &sid, &dm, [&erin, &frank]).await;
    let roles = ids(&app
        .get(&format!("/spaces/{sid}/roles/"), Some(&owner.access))
        .await
        .body);
    let users: Vec<&str> = [&owner, &member, &carol, &dave].map(|u| u.id.as_str()).to_vec();
    let mut targets = roles.clone();
    targets.extend(users.iter().map(|u| u.to_string()));
    let pools = json!({
        "space": {
            "spaceId": [sid],
            "channelId": channels,
            "messageId": space_messages,
            "userId": users,
            "relationId": users,
            "roleId": roles,
            "targetId": targets,
            "inviteId": [invite],
            "invite": [invite],
            "botId": [bot],
            "handle": ["owner.alterego.test"],
            "store": ["attachment"],
            "name": [name],
            "roleIds": [[helper.clone()], [helper.clone(), moderator.clone()], []],
            // Query parameters: page anchors, a search term that matches, presence ids.
            "before": anchors, "after": anchors, "around": anchors,
            "q": ["message"],
            "ids": [users.join(","), users[0]],
        },
        "dm": {
            "channelId": [dm],
            "messageId": {(dm.clone()): dm_messages.clone()},
            "before": dm_messages, "after": dm_messages, "around": dm_messages,
        },
        "spare": spare,
        "spare_dm": spare_dm,
        "within": {"messageId": "channelId"},
    });
    (member, pools)
}

/// Expendable ids for the operations that delete or cut off (the hooks use them for every DELETE,
/// for blocking, banning and permission overrides), so that the ids every other operation uses
/// survive the run: two channels with messages and an override, a role held by a member, an
/// invite, a bot, two members who are the member's friends, and more messages in the DM. Returns
/// the pools for space paths and for DM paths.
async fn spares(
    app: &TestApp,
    [owner, member, carol]: [&TestUser; 3],
    sid: &str,
    dm: &str,
    friends: [&TestUser; 2],
) -> (Value, Value) {
    let mut channels = Vec::new();
    let mut messages_in = serde_json::Map::new();
    for name in ["spare-1", "spare-2"] {
        let cid = channel(app, owner, sid, name).await;
        let posted = messages(app, owner, &format!("/spaces/{sid}/channels/{cid}/messages/"), 5).await;
        messages_in.insert(cid.clone(), posted.into());
        channels.push(cid);
    }
    let role = ranked_role(app, owner, sid, "Spare", 0, 2).await;
    assign_role(app, owner, sid, friends[0], &role).await;
    set_override(app, owner, sid, &channels[0], Target::Role(&role), 1 << 13, 0).await;
    let users: Vec<&str> = friends.iter().map(|u| u.id.as_str()).collect();
    for friend in friends {
        befriend(app, member, friend).await;
    }
    let dm_messages = messages(app, carol, &format!("/dm/{dm}/messages/"), 3).await;
    let space = json!({
        "channelId": channels,
        "messageId": messages_in,
        "userId": users,
        "relationId": users,
        "roleId": [role],
        "targetId": [role, users[0]],
        "inviteId": [invite(app, owner, sid).await],
        "botId": [bot(app, member, "Spare bot").await],
    });
    (space, json!({"messageId": {dm: dm_messages}}))
}

/// A new invite to `sid` by `owner`; returns its code.
async fn invite(app: &TestApp, owner: &TestUser, sid: &str) -> String {
    let r = app
        .post(&format!("/spaces/{sid}/invites/"), Some(&owner.access), json!({}))
        .await;
    r.expect(200, None);
    id(&r.body)
}

/// A new bot of `owner`; returns its id.
async fn bot(app: &TestApp, owner: &TestUser, name: &str) -> String {
    let r = app.post("/bots/", Some(&owner.access), json!({"name": name})).await;
    r.expect(200, None);
    id(&r.body)
}

/// The number of generated cases in Schemathesis's summary (`Test cases:` then `N generated, …`).
fn cases_run(output: &str) -> Option<u64> {
    let summary = &output[output.rfind("Test cases:")?..];
    let line = summary.lines().nth(1)?;
    line.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure() {
    let app = fuzz_server().await;
    let (member, pools) = populate(&app).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let schemathesis = format!("{root}/tests/python/.venv/bin/schemathesis");
    assert!(
        std::path::Path::new(&schemathesis).exists(),
        "{schemathesis} is missing: run ./scripts/test.sh (it installs tests/python/requirements.txt)"
    );
    let work = tempfile::tempdir().expect("temp dir");
    let ids_file = work.path().join("ids.json");
    std::fs::write(&ids_file, serde_json::to_vec(&pools).expect("json")).expect("write ids");
    let seed = std::env::var("ALTEREGO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes")));
    eprintln!("schemathesis seed {seed} (replay with ALTEREGO_FUZZ_SEED={seed})");
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .current_dir(work.path())
        .env(
            "SCHEMATHESIS_HOOKS",
            format!("{root}/tests/python/schemathesis_hooks.py"),
        )
        .env("ALTEREGO_FUZZ_IDS", &ids_file)
        .args(["run", &app.url("/api.json")])
        .args(["--header", &format!("Authorization: Bearer {}", member.access)])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &EXAMPLES_PER_OPERATION.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "2", "--request-timeout", "30"])
        // Hypothesis's health checks judge generation, not the API: with a `map_case` hook it counts
        // every impossible negative case (an unconstrained string path parameter cannot be made
        // invalid) as filtered, and on a loaded machine generation can look slow.
        .args(["--suppress-health-check", "filter_too_much,too_slow"])
        .args(["--generation-database", "none", "--no-color"]);
    for op in SESSION_ENDERS {
        command.args(["--exclude-operation-id", op]);
    }
    // Later arguments win: `ALTEREGO_FUZZ_ARGS="--max-examples 100"` for a longer hunt,
    // `--include-operation-id ID` to replay one operation.
    if let Ok(extra) = std::env::var("ALTEREGO_FUZZ_ARGS") {
        command.args(extra.split_whitespace());
    }
    command.kill_on_drop(true);
    let out = tokio::time::timeout(TIME_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {TIME_LIMIT:?} (seed {seed})"))
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = cases_run(&text);
    eprintln!("{text}\nschemathesis ran {cases:?} cases (seed {seed})");
    assert!(out.status.success(), "schemathesis failed (seed {seed}):\n{text}");
    assert!(
        cases.is_some_and(|n| n >= MIN_CASES),
        "schemathesis ran {cases:?} cases, fewer than {MIN_CASES} (seed {seed}):\n{text}"
    );
}

// =============================================================================================
// What the fuzz run found, each pinned by a focused test: the answer is one `/api.json` documents.

/// Asserts that `r`, the answer of `method path` (`path` as `/api.json` spells it), is documented
/// there: its status, its content type and, for JSON, its body's schema.
#[track_caller]
fn assert_documented(doc: &Value, method: &str, path: &str, r: &Resp) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in /api.json");
    let documented = &op["responses"][r.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path}: status {} is not documented: {}",
        r.status,
        r.text
    );
    let Some(content) = documented["content"].as_object() else {
        return;
    };
    let essence = r
        .header("content-type")
        .and_then(|t| t.split(';').next())
        .unwrap_or_default()
        .trim();
    let media = content
        .iter()
        .find(|(ty, _)| *ty == "*/*" || *ty == essence)
        .map(|(_, media)| media)
        .unwrap_or_else(|| panic!("{method} {path}: {essence} is not among {:?}", content.keys()));
    if essence == "application/json" {
        let mut schema = media["schema"].clone();
        schema["components"] = doc["components"].clone();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        let errors: Vec<String> = validator.iter_errors(&r.body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {path}: {} does not match: {errors:?}",
            r.text
        );
    }
}

/// U+0000 in a query is refused at the edge with 400 `ValidationFailed`, which every operation
/// documents, also those without parameters (it used to list only `InvalidQuery`).
#[tokio::test]
async fn nul_in_a_query_is_a_documented_400() {
    let app = TestApp::spawn().await;
    let user = app.register("Ada").await;
    let doc = app.get("/api.json", None).await.body;
    let (sid, _) = space(&app, &user, &[]).await;
    for (url, path) in [
        ("/users/presence?ids=%00".to_string(), "/users/presence"),
        (
            format!("/spaces/{sid}/invites/?cursor=a%00"),
            "/spaces/{spaceId}/invites/",
        ),
        ("/users/me?x=%00".to_string(), "/users/me"),
    ] {
        let r = app.get(&url, Some(&user.access)).await;
        r.expect(400, Some("ValidationFailed"));
        assert_documented(&doc, "get", path, &r);
    }
}

/// Bytes that are not an image, uploaded as an avatar: 415 `UnsupportedFileType`, documented
/// (`media.upload` listed only `UnsupportedMediaType`, the code for a body that is not multipart).
#[tokio::test]
async fn an_upload_of_the_wrong_type_is_a_documented_415() {
    let app = TestApp::spawn().await;
    let user = app.register("Ada").await;
    let doc = app.get("/api.json", None).await.body;
    let r = app
        .upload(
            "avatar",
            Some(&user.access),
            "a.png",
            "image/png",
            b"not an image".to_vec(),
        )
        .await;
    r.expect(415, Some("UnsupportedFileType"));
    assert_documented(&doc, "post", "/media/{store}", &r);
}

/// A stored object is served with the type detected at upload, and a `Range` with 206: both
/// documented (`media.get` listed only `application/octet-stream`, and no 206).
#[tokio::test]
async fn a_served_object_has_a_documented_type_and_range_answer() {
    let app = TestApp::spawn().await;
    let user = app.register("Ada").await;
    let doc = app.get("/api.json", None).await.body;
    let up = app
        .upload(
            "attachment",
            Some(&user.access),
            "notes.txt",
            "text/plain",
            b"hello".to_vec(),
        )
        .await;
    up.expect(200, None);
    let name = up.body["url"].as_str().and_then(|u| u.rsplit('/').next()).expect("url");
    let url = format!("/media/attachment/{name}");
    let whole = app.get(&url, None).await;
    whole.expect(200, None);
    assert_eq!(
        whole.header("content-type").map(|t| t.starts_with("text/plain")),
        Some(true)
    );
    assert_documented(&doc, "get", "/media/{store}/{name}", &whole);
    let res = app
        .http
        .get(app.url(&url))
        .header("range", "bytes=0-1")
        .send()
        .await
        .expect("range request");
    let part = TestApp::read(res).await;
    part.expect(206, None);
    assert_eq!(part.text, "he");
    assert_documented(&doc, "get", "/media/{store}/{name}", &part);
}

/// An upload whose body stops arriving is a 408 `RequestTimeout`, documented, as for a stalled JSON
/// body (it was an undocumented 503 `ServiceUnavailable`; found reviewing `media.upload`'s statuses).
#[tokio::test]
async fn a_stalled_upload_is_a_documented_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder()
        .config(|c| c.request_timeout = Duration::from_secs(2))
        .spawn()
        .await;
    let user = app.register("Ada").await;
    let doc = app.get("/api.json", None).await.body;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /media/attachment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 10000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello",
        user.access
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 408"), "{text}");
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(body["code"], "RequestTimeout", "{text}");
    let r = Resp {
        status: 408,
        headers: reqwest::header::HeaderMap::from_iter([(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        )]),
        body,
        text: text.to_string(),
    };
    assert_documented(&doc, "post", "/media/{store}", &r);
}
