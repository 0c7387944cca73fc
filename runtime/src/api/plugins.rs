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
use crate::server::{RebuildError, RebuildView, Runtime};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployQuery {
    /// Rebuild the new version's key-value state in shadow before swapping it in.
    #[serde(default)]
    rebuild: bool,
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
    query: Result<Query<DeployQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
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
    if q.rebuild {
        let started = tokio::task::spawn_blocking(move || rt.start_rebuild(&name, body.to_vec()))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
        return Ok((StatusCode::ACCEPTED, Json(json!(started))));
    }
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
    Ok((status, Json(json!(deployed))))
}

pub(super) async fn rebuild(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RebuildView>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    rt.plugins.get(&name)?;
    rt.rebuild(&name).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_rebuild",
            format!("plugin `{name}` has not been rebuilt since the server started"),
        )
    })
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

impl From<RebuildError> for ApiError {
    fn from(e: RebuildError) -> ApiError {
        let status = match e {
            RebuildError::Deploy(d) => return d.into(),
            RebuildError::Busy(_) | RebuildError::Bindings { .. } => StatusCode::CONFLICT,
            RebuildError::HistoryGone { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}
