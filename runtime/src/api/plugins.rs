//! Plugins over HTTP: list versions, deploy (upload) a component, roll back.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::deploy::{Deployed, Origin, PluginView};
use crate::server::Runtime;

/// Largest component accepted by an upload (interpreters compiled to wasm, such as Python's,
/// make components of tens of MiB).
pub(super) const MAX_COMPONENT_BYTES: usize = 256 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackQuery {
    /// The version to go back to (default: the one active before the current one).
    #[serde(default)]
    version: Option<u64>,
}

pub(super) async fn list(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    Json(json!({ "plugins": rt.plugins.list() }))
}

pub(super) async fn show(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginView>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    Ok(Json(rt.plugins.get(&name)?))
}

pub(super) async fn deploy(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "invalid_body",
            format!(
                "{} (components up to {MAX_COMPONENT_BYTES} bytes are accepted)",
                e.body_text()
            ),
        )
    })?;
    // Compiles: on a blocking thread, not on an async worker.
    let deployed =
        tokio::task::spawn_blocking(move || rt.plugins.deploy(&name, &body, Origin::Upload))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    let status = if deployed.swapped {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)))
}

pub(super) async fn rollback(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<RollbackQuery>, QueryRejection>,
) -> Result<Json<Deployed>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let deployed = tokio::task::spawn_blocking(move || rt.plugins.rollback(&name, q.version))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(deployed))
}
