//! Request/reply over HTTP: publish a request and answer with its handler's reply, or 504
//! `request_timeout` when none came in time.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::error::ApiError;
use super::messages;
use crate::names::REPLY_INBOX;
use crate::server::{DEFAULT_REQUEST_TIMEOUT, Runtime};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestQuery {
    /// How long to wait for the reply, in milliseconds. Default: 5000; at most 300000.
    #[serde(default)]
    timeout_ms: Option<u64>,
}

pub(super) async fn request(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<RequestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let message = messages::message(&rt, &headers, body)?;
    let timeout = q
        .timeout_ms
        .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis);
    let replied = rt.request(&name, message, timeout).await?;
    let mut reply = messages::stored_json(&replied.reply);
    reply["destination"] = REPLY_INBOX.into();
    Ok(Json(serde_json::json!({
        "correlation_id": replied.correlation_id,
        "request": replied.request,
        "reply": reply,
    })))
}
