//! Documents (spec §4.12, §9.5): the Markdown snapshot of a DOCUMENT channel and the bootstrap
//! claim of its collaborative state. Any other channel answers 404.

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;

use crate::entities::channels::{self, ChannelType};
use crate::entities::documents::{self, ClaimBootstrapResponse, Document, DocumentPatch};
use crate::entities::media;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::functions::media_ref;
use crate::functions::permissions::Permissions;
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{ChannelPath, RouterExt, doc};
use crate::services::access;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary| doc("Documents", id, summary, Limit::GENERAL);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/documents/",
            get_with(get, op("documents.get", "Get Document"))
                .patch_with(update, op("documents.update", "Update Document")),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/documents/claim-bootstrap",
            post_with(
                claim_bootstrap,
                op("documents.claimBootstrap", "Claim Document Bootstrap"),
            ),
        )
}

/// The caller's permissions in a DOCUMENT channel they can view (404 otherwise).
async fn document_channel(state: &AppState, auth: &Auth, p: &ChannelPath) -> Result<Permissions> {
    let (kind, perms) = access::channel(&state.db, p.space_id, p.channel_id, auth.user_id).await?;
    if kind != ChannelType::Document {
        return Err(Error::not_found());
    }
    Ok(perms)
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<ChannelPath>) -> Result<axum::Json<Document>> {
    document_channel(&state, &auth, &p).await?;
    match documents::get(&state.db, p.channel_id).await? {
        Some(d) => Ok(axum::Json(d)),
        // A DOCUMENT channel without its row (imported data): an empty snapshot.
        None => Ok(axum::Json(documents::set_content(&state.db, p.channel_id, "").await?)),
    }
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
    Json(body): Json<DocumentPatch>,
) -> Result<axum::Json<Document>> {
    let perms = document_channel(&state, &auth, &p).await?;
    access::require_bits(perms, Permissions::SEND_MESSAGES)?;
    let Some(content) = body.content else {
        return get(State(state), auth, Path(p)).await;
    };
    if content.chars().count() > documents::MAX_CONTENT {
        return Err(Error::validation("content", "A document has at most 262144 characters"));
    }
    let mut tx = state.db.begin().await?;
    let document = documents::set_content(&mut *tx, p.channel_id, &content).await?;
    media::claim_keys(&mut *tx, &media_ref::attachment_keys(&content)).await?;
    channels::touch(&mut *tx, p.channel_id).await?;
    let channel = channels::get(&mut *tx, p.space_id, p.channel_id)
        .await?
        .ok_or_else(Error::not_found)?;
    tx.commit().await?;
    Event::ChannelUpdated(p.space_id, &channel).publish(&state.bus).await;
    Ok(axum::Json(document))
}

/// `shouldBootstrap` only for a writer who wins the claim while no Y state exists (spec §9.5).
async fn claim_bootstrap(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
) -> Result<axum::Json<ClaimBootstrapResponse>> {
    let perms = document_channel(&state, &auth, &p).await?;
    let should_bootstrap =
        perms.contains(Permissions::SEND_MESSAGES) && state.collab.claim_bootstrap(p.channel_id).await?;
    Ok(axum::Json(ClaimBootstrapResponse { should_bootstrap }))
}
