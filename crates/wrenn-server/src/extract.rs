//! The request extractors of the API's handlers: their rejections are API errors
//! (`{"error":{"code","message"}}`, `invalid_request` for a bad body or query). A handler that
//! must check something else first takes `Result<JsonBody<T>, ApiError>` and answers the
//! body's error when it gets to it.

use axum::{
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::request::Parts,
    Json,
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Result};

/// A JSON body; malformed JSON, wrong types and unknown fields are `invalid_request` (a body
/// over the limit is `too_large`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(v))
    }
}

/// A query string; unknown or malformed parameters are `invalid_request`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryParams(v))
    }
}
