//! A binding's dead letters over HTTP: list those not yet redriven, show one, redrive.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::messages::with_bytes;
use crate::names::Offset;
use crate::server::{DeadLetter, Runtime};

/// Most dead letters one listing returns.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// List from this offset of the dead-letter queue (default: the redrive cursor; earlier
    /// offsets are already redriven).
    #[serde(default)]
    from: Option<u64>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveQuery {
    /// Redrive at most this many (default: every dead letter not yet redriven).
    #[serde(default)]
    limit: Option<u64>,
}

pub(super) async fn list(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let page = rt.dead_letters(&name, q.from.map(Offset), q.limit.min(MAX_LIMIT))?;
    let dead_letters: Vec<Value> = page.dead_letters.iter().map(to_json).collect();
    Ok(Json(json!({
        "binding": name,
        "dead_letter_queue": page.dead_letter_queue.as_str(),
        "redrive_cursor": page.redrive_cursor.0,
        "next": page.next.0,
        "end": page.end.0,
        "dead_letters": dead_letters,
    })))
}

pub(super) async fn show(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((name, offset)) = path.map_err(ApiError::bad_path)?;
    let dead_letter = rt.dead_letter(&name, Offset(offset))?;
    let mut body = to_json(&dead_letter);
    body["binding"] = name.into();
    Ok(Json(body))
}

pub(super) async fn redrive(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<RedriveQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    // Waits for fsyncs: on a blocking thread, not on an async worker.
    let answer =
        tokio::task::spawn_blocking(move || rt.redrive(&name, q.limit).map(|done| (name, done)))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
    let (name, done) = answer?;
    Ok(Json(json!({
        "binding": name,
        "source": done.source.as_str(),
        "redriven": done.redriven,
        "redrive_cursor": done.redrive_cursor.0,
    })))
}

fn to_json(d: &DeadLetter) -> Value {
    let v = json!({
        "offset": d.offset.0,
        "source_offset": d.source_offset,
        "attempts": d.attempts,
        "class": d.class,
        "reason": d.reason,
        "id": d.id,
        "key": d.key,
        "headers": d.headers,
        "timestamp_ms": d.timestamp_ms,
        "redriven": d.redriven,
    });
    with_bytes(v, "payload", &d.payload)
}
