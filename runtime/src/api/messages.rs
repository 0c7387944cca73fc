//! Publishing and reading messages over HTTP.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::error::ApiError;
use crate::names::{DestinationName, Offset};
use crate::server::{PublishRequest, Published, Runtime};
use crate::storage::Stored;

/// Prefix of HTTP headers that become message headers.
const HEADER_PREFIX: &str = "weir-header-";
/// Longest long poll of a read.
const MAX_WAIT_MS: u64 = 60_000;

pub(super) async fn publish(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let request = message(&rt, &headers, body)?;
    // A durable publish waits for its fsync, group-committed with concurrent publishers. A
    // message without an id awaits its append's ticket (no thread held, so hundreds of
    // publishes in flight cost no thread switches each); one with a client id needs the dedup
    // lookup, which can block, and waits on a blocking thread.
    let published = if request.id.is_none() {
        rt.publish_async(&name, request).await?
    } else {
        tokio::task::spawn_blocking(move || rt.publish(&name, request))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??
    };
    // 201 when stored, 200 when the id was already there (nothing new stored).
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(published)))
}

/// The message an HTTP request carries: body = payload; headers `weir-key`, `weir-id` and
/// `weir-header-<name>`.
pub(super) fn message(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PublishRequest, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "body exceeds the limit of {} bytes (server.max_message_size)",
                    rt.config.server.max_message_size
                ),
            )
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let text = |h: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(h)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_header",
                        format!("header `{h}` is not visible ASCII"),
                    )
                })
            })
            .transpose()
    };
    let mut message_headers = Vec::new();
    for (k, v) in headers {
        if let Some(name) = k.as_str().strip_prefix(HEADER_PREFIX) {
            let v = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("header `{k}` is not visible ASCII"),
                )
            })?;
            message_headers.push((name.to_owned(), v.to_owned()));
        }
    }
    Ok(PublishRequest {
        payload: body.to_vec(),
        key: text("weir-key")?,
        id: text("weir-id")?,
        headers: message_headers,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    #[serde(default)]
    from: u64,
    /// Only records with this key (an aggregate's events).
    #[serde(default)]
    key: Option<String>,
    /// Start at the first record published at or after this time (ms since the Unix epoch),
    /// instead of `from`.
    #[serde(default)]
    from_time_ms: Option<u64>,
    #[serde(default = "default_limit")]
    limit: usize,
    /// When nothing is there yet, wait up to this long (ms) for a message (a long poll).
    #[serde(default)]
    wait_ms: u64,
}

fn default_limit() -> usize {
    100
}

pub(super) async fn read(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let dest = DestinationName::new(name)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    if !rt.storage.has_log(&dest) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_destination",
            format!("no queue or topic named `{dest}`"),
        ));
    }
    let limit = q.limit.min(1000);
    let from = match q.from_time_ms {
        Some(t) => rt.storage.offset_at_time(&dest, t).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_error",
                e.to_string(),
            )
        })?,
        None => Offset(q.from),
    };
    if q.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`wait_ms` is at most {MAX_WAIT_MS}, found {}", q.wait_ms),
        ));
    }
    let storage_error = |e: crate::storage::StorageError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_error",
            e.to_string(),
        )
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(q.wait_ms);
    let mut end_rx = rt.storage.watch_end(&dest).map_err(storage_error)?;
    let records = loop {
        // Marked seen before reading: an append after the read wakes the wait below.
        end_rx.borrow_and_update();
        let records = match &q.key {
            Some(key) => rt.storage.read_key(&dest, key, from, limit),
            None => rt.storage.read(&dest, from, limit),
        }
        .map_err(storage_error)?;
        if !records.is_empty() || q.wait_ms == 0 || rt.is_closing() {
            break records;
        }
        tokio::select! {
            changed = end_rx.changed() => if changed.is_err() { break records },
            () = tokio::time::sleep_until(deadline) => break records,
            () = rt.closed() => break records,
        }
    };
    let end = rt
        .storage
        .watch_end(&dest)
        .map(|w| w.borrow().0)
        .unwrap_or_default();
    // Where a follower reads next.
    let next = records.last().map_or(from, |r| r.offset.next()).0;
    let messages: Vec<serde_json::Value> = records.iter().map(stored_json).collect();
    Ok(Json(serde_json::json!({
        "destination": dest.as_str(),
        "end": end,
        "next": next,
        "messages": messages,
    })))
}

/// A stored message as JSON: offset, id, key, headers, time, and the payload (see [`with_bytes`]).
pub(super) fn stored_json(s: &Stored) -> serde_json::Value {
    let r = &s.record;
    let v = serde_json::json!({
        "offset": s.offset.0,
        "id": r.id,
        "key": r.key,
        "headers": r.headers,
        "timestamp_ms": r.timestamp_ms,
    });
    with_bytes(v, "payload", &r.payload)
}

/// Adds `bytes` to a JSON object as `field` (printable UTF-8 text) or `field_hex` (anything
/// else, such as binary counters).
pub(super) fn with_bytes(mut v: serde_json::Value, field: &str, bytes: &[u8]) -> serde_json::Value {
    let obj = v.as_object_mut().expect("an object");
    let printable = |t: &str| {
        t.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    };
    match std::str::from_utf8(bytes) {
        Ok(text) if printable(text) => obj.insert(field.to_owned(), text.into()),
        _ => obj.insert(
            format!("{field}_hex"),
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into(),
        ),
    };
    v
}
