//! The load generator's own users, created through the public API and kept in a state file so
//! later runs (and worker processes) reuse them: an owner with a space and its first channel, and
//! any number of members who joined through invites.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Failure, Options, client, report};

const PASSWORD: &str = "loadgen password";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub base_url: String,
    pub space_id: String,
    pub channel_id: String,
    /// The owner's access token: the sender of `send` and `fanout`.
    pub token: String,
    pub user_id: String,
    /// Members' access tokens.
    pub members: Vec<String>,
}

impl State {
    pub fn load(path: &str) -> Result<State, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?)
    }

    fn save(&self, path: &str) -> Result<(), Failure> {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn messages_url(&self) -> String {
        format!(
            "{}/spaces/{}/channels/{}/messages/",
            self.base_url, self.space_id, self.channel_id
        )
    }
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Result<Value, Failure> {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status();
    if !status.is_success() {
        let text = res.text().await.unwrap_or_default();
        return Err(format!("POST {url}: {status} {text}").into());
    }
    Ok(res.json().await?)
}

/// Registers a fresh account; returns its access token.
async fn register(http: &reqwest::Client, base: &str, name: &str) -> Result<String, Failure> {
    let email = format!("loadgen-{}@example.org", uuid::Uuid::new_v4().simple());
    let reg = post(
        http,
        &format!("{base}/account/register"),
        None,
        json!({"email": email, "name": name, "password": PASSWORD}),
    )
    .await?;
    Ok(reg["accessToken"].as_str().ok_or("no access token")?.to_string())
}

/// An owner and a space with its first channel.
async fn found(http: &reqwest::Client, base: &str) -> Result<State, Failure> {
    let token = register(http, base, "loadgen owner").await?;
    let space = post(
        http,
        &format!("{base}/spaces/"),
        Some(&token),
        json!({"name": "loadgen"}),
    )
    .await?;
    let space_id = space["id"].as_str().ok_or("no space id")?.to_string();
    let me: Value = http
        .get(format!("{base}/users/me"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(State {
        base_url: base.to_string(),
        channel_id: space["channels"][0]["id"].as_str().ok_or("no channel")?.to_string(),
        space_id,
        token,
        user_id: me["id"].as_str().unwrap_or_default().to_string(),
        members: Vec::new(),
    })
}

/// `populate`: creates (or extends) the state file until the space has `--members` members.
pub async fn populate(opts: &Options) -> Result<(), Failure> {
    let path = opts.get("state")?.to_string();
    let wanted = opts.num("members", 100)? as usize;
    let concurrency = opts.num("concurrency", 16)?.max(1);
    let http = client()?;
    let mut state = if Path::new(&path).exists() {
        State::load(&path)?
    } else {
        found(&http, &opts.base()?).await?
    };
    let before = state.members.len();
    let missing = wanted.saturating_sub(before);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, next, errors) = (http.clone(), next.clone(), errors.clone());
        let base = state.base_url.clone();
        // An invite per task: a join consumes a use of its invite under that row's lock.
        let invite = post(
            &http,
            &format!("{base}/spaces/{}/invites/", state.space_id),
            Some(&state.token),
            json!({}),
        )
        .await?;
        let join_url = format!("{base}/spaces/join/{}", invite["id"].as_str().ok_or("no invite code")?);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            // Bounded: each index is taken once, and each failure counts towards a cap.
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < missing {
                let joined = async {
                    let token = register(&http, &base, "loadgen member").await?;
                    post(&http, &join_url, Some(&token), json!({})).await?;
                    Ok::<_, Failure>(token)
                };
                match joined.await {
                    Ok(t) => tokens.push(t),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("alterego-loadgen: member: {e}");
                        }
                        if errors.load(Ordering::Relaxed) > 100 {
                            break;
                        }
                    }
                }
            }
            tokens
        }));
    }
    for t in tasks {
        state.members.extend(t.await?);
    }
    state.save(&path)?;
    let seconds = started.elapsed().as_secs_f64();
    let created = state.members.len() - before;
    let summary = json!({
        "scenario": "populate", "members": state.members.len(), "created": created,
        "errors": errors.load(Ordering::Relaxed), "seconds": report::round(seconds),
        "membersPerSecond": report::round(created as f64 / seconds.max(1e-9)), "state": path,
    });
    report::print(
        &summary,
        &[
            "scenario",
            "members",
            "created",
            "errors",
            "seconds",
            "membersPerSecond",
        ],
    );
    if state.members.len() < wanted {
        return Err(format!("only {} of {wanted} members exist", state.members.len()).into());
    }
    Ok(())
}
