//! A team's API keys.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use wrenn_types::{Id, IdKind};

use super::{
    auth::{forbidden, team_not_found},
    rules::clean_name,
};
use crate::{
    db::{ApiKeyRow, Caller, Role},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{Authed, Checked},
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::teams::{ApiKey, ApiKeyBody, CreatedApiKey};

impl From<&ApiKeyRow> for ApiKey {
    fn from(k: &ApiKeyRow) -> ApiKey {
        ApiKey {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_by: k.created_by.clone(),
            owner_id: k.owner_id.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

// API keys.

/// Keys are managed by the team's API keys and by its admins and owners.
async fn require_key_manager(state: &AppState, caller: &Caller) -> Result<()> {
    let Some(user_id) = caller.user_id() else {
        return Ok(()); // an API key of this team
    };
    match state.db.role(&caller.team_id, user_id).await? {
        Some(r) if r >= Role::Admin => Ok(()),
        Some(_) => Err(forbidden("managing API keys")),
        None => Err(team_not_found(&caller.team_id)),
    }
}

/// List API keys
///
/// The team's keys, newest first (never a secret). Any member or key of the team may.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    responses(
        (status = 200, description = "The team's keys", body = Vec<ApiKey>),
        Authed,
    )
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>> {
    let keys = state.db.api_keys(&caller.team_id).await?;
    Ok(Json(keys.iter().map(ApiKey::from).collect()))
}

/// Create an API key
///
/// The team's admins and owners, and its API keys, may. The key is shown this once. It
/// belongs to the user who makes it (or to the owner of the key that makes it) and is
/// deleted when they leave the team or are removed from it (`owner_id`).
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    request_body = ApiKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedApiKey),
        Checked,
        (status = 403, description = "`forbidden`: a plain member", body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<ApiKeyBody>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    require_key_manager(&state, &caller).await?;
    let name = match &b.name {
        Some(n) => clean_name(n, "name")?,
        None => "unnamed".to_string(),
    };
    let (row, plaintext) = state.db.create_api_key_as(&caller, &name).await?;
    let body = CreatedApiKey {
        api_key: ApiKey::from(&row),
        key: plaintext,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Delete an API key
///
/// The team's admins and owners, and its API keys, may; it stops working at once. The admin
/// key the server made at its first start (`created_by` null) is not deleted this way
/// (`conflict`): delete its file and restart the server to replace it.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "delete_api_key",
    tag = "api-keys",
    params(("id" = String, Path, description = "API key id (`key-…`)")),
    responses(
        (status = 204, description = "Deleted"),
        Authed,
        (status = 403, description = "`forbidden`: a plain member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key in the team", body = ErrorBody),
        (status = 409, description = "`conflict`: the server's admin key (replace it by deleting its file and restarting the server)", body = ErrorBody),
    )
)]
pub async fn delete_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = Id::parse(IdKind::ApiKey, &id)
        .map_err(|_| ApiError::NotFound(format!("API key {id} not found")))?
        .to_string();
    require_key_manager(&state, &caller).await?;
    state.db.delete_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
