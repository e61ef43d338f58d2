//! Handles and custom-domain verification (spec §4.1 `instance.info`, `handles.resolve`; §4.4
//! `user.setHandle`, `user.deleteHandle`, `user.*HandleVerification`; §4.8
//! `spaces.*HandleVerification`; §12.4, §12.9).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::entities::handles::{self, Challenge, HandleOwner, HandleResolution};
use crate::entities::users::{self, UserExt};
use crate::error::{Error, Result};
use crate::functions::attestation;
use crate::functions::handles::verification_domain;
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::permissions::Permissions;
use crate::functions::time::Timestamp;
use crate::functions::verification::{self, CHALLENGE_TTL, ChallengeFacts, Method};
use crate::middlewares::auth::{Auth, UserAuth};
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, SpacePath, doc};
use crate::services::access::SpaceMember;
use crate::services::profiles;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .mikoto_route(
            "/.well-known/mikoto/instance.json",
            get_with(
                instance_info,
                doc("Instance", "instance.info", "Get Instance Information", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/handles/{handle}",
            get_with(
                resolve,
                doc("Handles", "handles.resolve", "Resolve a Handle", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/users/me/handle",
            post_with(
                set_user_handle,
                doc("Users", "user.setHandle", "Set or Change User Handle", Limit::GENERAL),
            )
            .delete_with(
                delete_user_handle,
                doc("Users", "user.deleteHandle", "Release User Handle", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/users/me/handle/verify",
            post_with(
                start_user,
                doc(
                    "Users",
                    "user.startHandleVerification",
                    "Start Custom Domain Verification",
                    Limit::GENERAL,
                ),
            ),
        )
        .mikoto_route(
            "/users/me/handle/verify/complete",
            post_with(
                complete_user,
                doc(
                    "Users",
                    "user.completeHandleVerification",
                    "Complete Custom Domain Verification",
                    Limit::VERIFICATION,
                ),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/handle/verify",
            post_with(
                start_space,
                doc(
                    "Spaces",
                    "spaces.startHandleVerification",
                    "Start Custom Domain Verification",
                    Limit::GENERAL,
                ),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/handle/verify/complete",
            post_with(
                complete_space,
                doc(
                    "Spaces",
                    "spaces.completeHandleVerification",
                    "Complete Custom Domain Verification",
                    Limit::VERIFICATION,
                ),
            ),
        )
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub domain: String,
    pub handle_domain: String,
    /// The Ed25519 handle-attestation public key, base64 of 32 bytes.
    pub public_key: Option<String>,
    /// The public API URL.
    pub api_endpoint: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct HandlePayload {
    pub handle: String,
}

/// Request to initiate handle verification
#[derive(Deserialize, JsonSchema)]
pub struct VerifyHandleRequest {
    /// The domain to verify
    pub handle: String,
}

/// Verification challenge sent to the user
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationChallenge {
    /// The domain being verified
    pub handle: String,
    /// The entity type (user or space)
    pub entity_type: String,
    pub entity_id: uuid::Uuid,
    /// Random nonce for this challenge
    pub nonce: String,
    pub created_at: Timestamp,
    /// When the challenge stops being accepted (24 h after `createdAt`)
    pub expires_at: Timestamp,
    /// The DNS TXT record name (subdomain)
    pub dns_txt_name: String,
    /// The DNS TXT record to add
    pub dns_txt_record: String,
    /// The well-known file URL
    pub well_known_url: String,
    /// The well-known file content
    pub well_known_content: String,
}

/// How a domain was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum VerificationMethod {
    #[serde(rename = "dns")]
    Dns,
    #[serde(rename = "well-known")]
    WellKnown,
}

/// Result of a verification attempt
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerificationResult {
    pub success: bool,
    pub method: Option<VerificationMethod>,
    pub error: Option<String>,
}

impl VerificationResult {
    fn failed(error: impl Into<String>) -> Self {
        VerificationResult {
            success: false,
            method: None,
            error: Some(error.into()),
        }
    }

    fn verified(method: Method) -> Self {
        VerificationResult {
            success: true,
            method: Some(match method {
                Method::Dns => VerificationMethod::Dns,
                Method::WellKnown => VerificationMethod::WellKnown,
            }),
            error: None,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct HandlePath {
    pub handle: String,
}

async fn instance_info(State(state): State<AppState>) -> axum::Json<InstanceInfo> {
    let config = &state.config;
    axum::Json(InstanceInfo {
        domain: config.instance_domain.clone(),
        handle_domain: config.handle_domain.clone(),
        public_key: state.handle_keys.public_key().map(str::to_string),
        api_endpoint: config.public_url.clone(),
    })
}

/// Case-insensitive; a leading `@` (as in mentions and join links) is ignored.
async fn resolve(State(state): State<AppState>, Path(p): Path<HandlePath>) -> Result<axum::Json<HandleResolution>> {
    let handle = p.handle.trim();
    let handle = handle.strip_prefix('@').unwrap_or(handle);
    handles::resolve(&state.db, handle, &state.config.handle_domain)
        .await?
        .map(axum::Json)
        .ok_or_else(Error::not_found)
}

async fn set_user_handle(
    State(state): State<AppState>,
    auth: Auth,
    Json(p): Json<HandlePayload>,
) -> Result<axum::Json<UserExt>> {
    set_user(&state, auth.user_id, Some(&p.handle)).await
}

async fn delete_user_handle(State(state): State<AppState>, auth: Auth) -> Result<axum::Json<UserExt>> {
    set_user(&state, auth.user_id, None).await
}

/// Sets (or releases) the caller's handle; a change is announced like a profile update.
async fn set_user(state: &AppState, user: UserId, requested: Option<&str>) -> Result<axum::Json<UserExt>> {
    let mut tx = state.db.begin().await?;
    let owner = HandleOwner::User { id: user };
    let changed = handles::set_requested(&mut tx, owner, requested, &state.config.handle_domain).await?;
    tx.commit().await?;
    if changed {
        return Ok(axum::Json(profiles::announce_user(&state.db, &state.bus, user).await?));
    }
    Ok(axum::Json(
        users::get_ext(&state.db, user).await?.ok_or_else(Error::not_found)?,
    ))
}

async fn start_user(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(req): Json<VerifyHandleRequest>,
) -> Result<axum::Json<VerificationChallenge>> {
    let owner = HandleOwner::User { id: auth.user_id };
    Ok(axum::Json(start(&state, owner, &req.handle).await?))
}

async fn start_space(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<SpacePath>,
    Json(req): Json<VerifyHandleRequest>,
) -> Result<axum::Json<VerificationChallenge>> {
    require_space_manager(&state.db, p.space_id, auth.user_id).await?;
    let owner = HandleOwner::Space { id: p.space_id };
    Ok(axum::Json(start(&state, owner, &req.handle).await?))
}

async fn complete_user(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(req): Json<VerifyHandleRequest>,
) -> Result<axum::Json<VerificationResult>> {
    let owner = HandleOwner::User { id: auth.user_id };
    Ok(axum::Json(complete(&state, owner, auth.user_id, &req.handle).await?))
}

async fn complete_space(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<SpacePath>,
    Json(req): Json<VerifyHandleRequest>,
) -> Result<axum::Json<VerificationResult>> {
    require_space_manager(&state.db, p.space_id, auth.user_id).await?;
    let owner = HandleOwner::Space { id: p.space_id };
    Ok(axum::Json(complete(&state, owner, auth.user_id, &req.handle).await?))
}

/// A member (404 otherwise) holding `MANAGE_SPACE` (403 otherwise).
async fn require_space_manager(db: impl sqlx::PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<()> {
    SpaceMember::load(db, space, user)
        .await?
        .require(Permissions::MANAGE_SPACE)
}

fn facts<'a>(state: &'a AppState, owner: HandleOwner, domain: &'a str, nonce: &'a str) -> ChallengeFacts<'a> {
    ChallengeFacts {
        domain,
        handle_domain: &state.config.handle_domain,
        entity_type: owner.entity_type(),
        entity_id: owner.entity_id(),
        nonce,
    }
}

/// Stores a fresh challenge for (owner, domain), replacing the owner's earlier ones.
async fn start(state: &AppState, owner: HandleOwner, input: &str) -> Result<VerificationChallenge> {
    let domain = verification_domain(input, &state.config.handle_domain)?;
    let created_at = Timestamp::now();
    let ttl = chrono::TimeDelta::from_std(CHALLENGE_TTL).map_err(Error::internal)?;
    let challenge = Challenge {
        domain,
        nonce: verification::nonce(),
        created_at,
        expires_at: Timestamp::from(created_at.0 + ttl),
    };
    handles::put_challenge(&state.db, owner, &challenge).await?;
    let f = facts(state, owner, &challenge.domain, &challenge.nonce);
    Ok(VerificationChallenge {
        handle: challenge.domain.clone(),
        entity_type: owner.entity_type().to_string(),
        entity_id: owner.entity_id(),
        nonce: challenge.nonce.clone(),
        created_at: challenge.created_at,
        expires_at: challenge.expires_at,
        dns_txt_name: f.dns_txt_name(),
        dns_txt_record: f.dns_txt_record(),
        well_known_url: f.well_known_url(),
        well_known_content: f.well_known_content(),
    })
}

/// Checks the owner's challenge for the domain (DNS, then the well-known file) and, on success,
/// gives the domain to the owner (moving it from any previous holder), consuming the challenge.
/// Failures are `success: false` answers, not errors.
async fn complete(state: &AppState, owner: HandleOwner, caller: UserId, input: &str) -> Result<VerificationResult> {
    let handle_domain = &state.config.handle_domain;
    let domain = verification_domain(input, handle_domain)?;
    let Some(challenge) = handles::challenge(&state.db, owner, &domain).await? else {
        return Ok(VerificationResult::failed(
            "No verification was started for this domain; start one first",
        ));
    };
    if challenge.expires_at <= Timestamp::now() {
        return Ok(VerificationResult::failed(
            "The verification challenge has expired; start a new one",
        ));
    }
    // No transaction is open while the domain is contacted (up to 5 s per check).
    let f = facts(state, owner, &domain, &challenge.nonce);
    let method = match verification::verify(state.domain_probe.as_ref(), &f).await {
        Ok(m) => m,
        Err(reason) => return Ok(VerificationResult::failed(reason)),
    };

    let verified_at = Timestamp::now();
    let signed = attestation::message(
        &domain,
        owner.entity_type(),
        owner.entity_id(),
        handle_domain,
        &verified_at.to_string(),
    );
    let attestation = state.handle_keys.sign(&signed);
    let mut tx = state.db.begin().await?;
    if let HandleOwner::Space { id } = owner {
        // The caller may have lost the right to manage the space while the domain was checked.
        require_space_manager(&mut *tx, id, caller).await?;
    }
    if !handles::consume_challenge(&mut *tx, owner, &domain, &challenge.nonce).await? {
        return Ok(VerificationResult::failed(
            "The challenge was replaced or expired while it was checked; start a new one",
        ));
    }
    let previous = handles::assign_verified(&mut tx, owner, &domain, verified_at, attestation.as_deref()).await?;
    tx.commit().await?;

    announce(state, owner).await?;
    if let Some(previous) = previous {
        announce(state, previous).await?;
    }
    Ok(VerificationResult::verified(method))
}

/// The update event of a handle holder whose handle changed: `users.onUpdate` (with the
/// `members.onUpdate` fan-out) for a user, `spaces.onUpdate` for a space.
async fn announce(state: &AppState, owner: HandleOwner) -> Result<()> {
    match owner {
        HandleOwner::User { id } => {
            profiles::announce_user(&state.db, &state.bus, id).await?;
        }
        HandleOwner::Space { id } => profiles::announce_space(&state.db, &state.bus, id).await?,
    }
    Ok(())
}
