//! Replay over HTTP: re-deliver a range of a binding's source to that binding alone.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiError;
use crate::names::Offset;
use crate::server::{Replayed, Runtime};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    from_time_ms: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    /// The replay's id; a fresh one when absent.
    #[serde(default)]
    run: Option<String>,
}

pub(super) async fn replay(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<Json<Replayed>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let run = q.run.unwrap_or_else(crate::ids::new_message_id);
    let internal = |e: tokio::task::JoinError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    };
    let done = tokio::task::spawn_blocking(move || {
        let from = match q.from_time_ms {
            Some(t) => {
                let source = rt
                    .config
                    .bindings
                    .iter()
                    .find(|b| b.name.as_str() == name)
                    .map(|b| b.source.clone());
                match source {
                    Some(s) => rt
                        .storage
                        .offset_at_time(&s, t)
                        .map_err(crate::server::ReplayError::from)?,
                    None => Offset(0), // `replay` names the unknown binding
                }
            }
            None => Offset(q.from),
        };
        rt.replay(&name, from, q.to.map(Offset), q.limit, &run)
    })
    .await
    .map_err(internal)??;
    Ok(Json(done))
}
