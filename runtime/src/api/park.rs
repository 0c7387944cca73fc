//! Unparking a binding's parked keys over HTTP.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::server::Runtime;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnparkQuery {
    /// The key to unpark (default: every parked key of the binding).
    #[serde(default)]
    key: Option<String>,
}

pub(super) async fn unpark(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<UnparkQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    // Waits for the commit's fsync: on a blocking thread, not on an async worker.
    let answer = tokio::task::spawn_blocking(move || {
        rt.unpark(&name, q.key.as_deref()).map(|done| (name, done))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (name, released) = answer?;
    Ok(Json(json!({ "binding": name, "released": released })))
}
