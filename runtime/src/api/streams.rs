//! Event-sourced streams over HTTP: appends with expected revisions (one stream, or several
//! of one store atomically), reads of a stream, a category, an event type or the whole store,
//! deletes, and a catch-up subscription with server-sent events.
//!
//! An event in JSON: `{"type", "id", "data"}` (`data` any JSON value; or `payload` as text,
//! or `payload_hex`), with optional `headers`, `schema_version`, `correlation_id`,
//! `causation_id`. Reads answer events as `{"stream", "revision", "position", "id", "type",
//! "schema_version", "timestamp_ms", "headers", "data" (when the payload is JSON) or
//! "payload"/"payload_hex", "correlation_id", "causation_id"}`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use super::error::ApiError;
use crate::es::{
    ExpectedRevision, Filter, NewEvent, RecordedEvent, StreamAppend, StreamError, StreamName,
    StreamStore,
};
use crate::names::{DestinationName, Offset};
use crate::server::Runtime;

/// Largest body of an append.
pub(super) const MAX_APPEND_BYTES: usize = 16 << 20;

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> ApiError {
        let status = match &e {
            StreamError::WrongExpectedRevision { .. } | StreamError::IdConflict(_) => {
                StatusCode::CONFLICT
            }
            StreamError::Tombstoned(_) => StatusCode::GONE,
            StreamError::NotFound(_) => StatusCode::NOT_FOUND,
            StreamError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StreamError::Storage(_) | StreamError::Corrupt { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let mut error = ApiError::new(status, e.code(), e.to_string());
        if let StreamError::WrongExpectedRevision { stream, actual, .. } = &e {
            error = error.with_details(serde_json::json!({
                "stream": stream,
                "actual_revision": actual,
            }));
        }
        error
    }
}

/// An expected revision in JSON: `"any"`, `"no-stream"`, `"stream-exists"` or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expected {
    Exact(u64),
    Named(String),
}

fn expected(e: Option<Expected>) -> Result<ExpectedRevision, ApiError> {
    match e {
        None => Ok(ExpectedRevision::Any),
        Some(Expected::Exact(n)) => Ok(ExpectedRevision::Exact(n)),
        Some(Expected::Named(s)) => s.parse().map_err(|e: crate::es::BadExpectedRevision| {
            ApiError::bad_request("invalid_expected_revision", e.to_string())
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_hex: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OneStream {
    #[serde(default)]
    expected_revision: Option<Expected>,
    events: Vec<EventJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManyStreams {
    appends: Vec<StreamJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamJson {
    stream: String,
    #[serde(default)]
    expected_revision: Option<Expected>,
    events: Vec<EventJson>,
}

fn new_event(e: EventJson, at: &str) -> Result<NewEvent, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_json", format!("{at}: {m}"));
    let payload = match (e.data, e.payload, e.payload_hex) {
        (Some(v), None, None) => serde_json::to_vec(&v).map_err(|e| bad(e.to_string()))?,
        (None, Some(text), None) => text.into_bytes(),
        (None, None, Some(hex)) => super::batch::unhex(&hex)
            .ok_or_else(|| bad("`payload_hex` is not an even number of hex digits".into()))?,
        (None, None, None) => Vec::new(),
        _ => return Err(bad("give one of `data`, `payload` and `payload_hex`".into())),
    };
    Ok(NewEvent {
        event_id: e.id.unwrap_or_else(crate::ids::new_message_id),
        event_type: e.event_type,
        schema_version: e.schema_version.unwrap_or(1),
        headers: e.headers,
        payload,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
    })
}

fn store(rt: &Runtime, name: &str) -> Result<Arc<StreamStore>, ApiError> {
    let dest = DestinationName::new(name)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    rt.streams.get(&dest).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_stream_store",
            format!("no stream store named `{dest}`; declare it as [streams.{dest}]"),
        )
    })
}

fn stream_name(name: String) -> Result<StreamName, ApiError> {
    StreamName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("an append body is at most {MAX_APPEND_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("expected {shape}: {e}")))
}

async fn run_append(
    rt: &Runtime,
    store: &StreamStore,
    appends: Vec<StreamAppend>,
) -> Result<(StatusCode, Vec<crate::es::Appended>), ApiError> {
    if rt.is_closing() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "weir is shutting down and takes no new events; retry against the restarted server",
        ));
    }
    let appended = store.append(appends)?.durable().await?;
    let status = if appended.iter().all(|a| a.duplicate) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, appended))
}

/// `POST /v1/streams/{store}/streams/{stream}`: append to one stream.
pub(super) async fn append_one(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path((store_name, stream)) = path.map_err(ApiError::bad_path)?;
    let store = store(&rt, &store_name)?;
    let stream = stream_name(stream)?;
    let body: OneStream = json_body(
        body,
        r#"{"expected_revision": "any" | "no-stream" | "stream-exists" | N, "events": [{"type": "...", "id": "...", "data": ...}]}"#,
    )?;
    let mut events = Vec::with_capacity(body.events.len());
    for (i, e) in body.events.into_iter().enumerate() {
        events.push(new_event(e, &format!("events[{i}]"))?);
    }
    let append = StreamAppend {
        stream,
        expected: expected(body.expected_revision)?,
        events,
    };
    let (status, appended) = run_append(&rt, &store, vec![append]).await?;
    let one = appended.into_iter().next();
    Ok((status, Json(serde_json::to_value(one).unwrap_or_default())))
}

/// `POST /v1/streams/{store}/append`: append to several streams of one store, all or nothing.
pub(super) async fn append_many(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path(store_name) = path.map_err(ApiError::bad_path)?;
    let store = store(&rt, &store_name)?;
    let body: ManyStreams = json_body(
        body,
        r#"{"appends": [{"stream": "...", "expected_revision": ..., "events": [...]}]}"#,
    )?;
    let mut appends = Vec::with_capacity(body.appends.len());
    for (i, a) in body.appends.into_iter().enumerate() {
        let mut events = Vec::with_capacity(a.events.len());
        for (j, e) in a.events.into_iter().enumerate() {
            events.push(new_event(e, &format!("appends[{i}].events[{j}]"))?);
        }
        appends.push(StreamAppend {
            stream: stream_name(a.stream)?,
            expected: expected(a.expected_revision)?,
            events,
        });
    }
    let (status, appended) = run_append(&rt, &store, appends).await?;
    Ok((
        status,
        Json(serde_json::json!({ "store": store_name, "appends": appended })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/streams/{store}/streams/{stream}`: read one stream.
pub(super) async fn read_stream(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((store_name, stream)) = path.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let store = store(&rt, &store_name)?;
    let stream = stream_name(stream)?;
    let backwards = match q.direction.as_deref() {
        None | Some("forward" | "forwards") => false,
        Some("backward" | "backwards") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`direction` is `forward` or `backward`, found `{other}`"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page =
        tokio::task::spawn_blocking(move || store.read_stream(&stream, q.from, backwards, limit))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    Ok(Json(serde_json::json!({
        "store": store_name,
        "last_revision": page.last_revision,
        "next": page.next,
        "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

fn filter(category: Option<String>, event_type: Option<String>) -> Result<Filter, ApiError> {
    match (category, event_type) {
        (None, None) => Ok(Filter::All),
        (Some(c), None) => Ok(Filter::Category(c)),
        (None, Some(t)) => Ok(Filter::EventType(t)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_query",
            "give `category` or `type`, not both",
        )),
    }
}

/// `GET /v1/streams/{store}/events`: read the store, a category or an event type.
pub(super) async fn read_all(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AllQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(store_name) = path.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let store = store(&rt, &store_name)?;
    let filter = filter(q.category, q.event_type)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let from = Offset(q.from.unwrap_or(0));
    let page = tokio::task::spawn_blocking(move || store.read_all(from, &filter, limit))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(serde_json::json!({
        "store": store_name,
        "next": page.next.0,
        "end": page.end.0,
        "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    expected_revision: Option<String>,
    #[serde(default)]
    hard: Option<bool>,
}

/// `DELETE /v1/streams/{store}/streams/{stream}`: soft delete, or `?hard=true` (tombstone).
pub(super) async fn delete(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((store_name, stream)) = path.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let store = store(&rt, &store_name)?;
    let stream = stream_name(stream)?;
    let expected = match q.expected_revision {
        None => ExpectedRevision::Any,
        Some(s) => s.parse().map_err(|e: crate::es::BadExpectedRevision| {
            ApiError::bad_request("invalid_expected_revision", e.to_string())
        })?,
    };
    let hard = q.hard.unwrap_or(false);
    let done = store.delete(&stream, expected, hard)?.durable().await?;
    let position = done.first().map_or(0, |a| a.first_position);
    Ok(Json(serde_json::json!({
        "store": store_name,
        "stream": stream.as_str(),
        "deleted": if hard { "hard" } else { "soft" },
        "position": position,
    })))
}

/// An event as JSON: `data` when the payload is a JSON document, else `payload` (UTF-8) or
/// `payload_hex`.
pub(crate) fn event_json(e: &RecordedEvent) -> serde_json::Value {
    let mut v = serde_json::json!({
        "stream": e.stream.as_str(),
        "revision": e.revision,
        "position": e.position.0,
        "id": e.event_id,
        "type": e.event_type,
        "schema_version": e.schema_version,
        "timestamp_ms": e.timestamp_ms,
        "headers": e.headers,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
    });
    let is_json = matches!(e.payload.first(), Some(b'{' | b'[' | b'"'))
        || e.payload.first().is_some_and(|b| b.is_ascii_digit());
    match serde_json::from_slice::<serde_json::Value>(&e.payload) {
        Ok(data) if is_json || matches!(e.payload.as_slice(), b"true" | b"false" | b"null") => {
            v["data"] = data;
            v
        }
        _ => super::messages::with_bytes(v, "payload", &e.payload),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FollowQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

struct Follower {
    rt: Arc<Runtime>,
    store: Arc<StreamStore>,
    filter: Filter,
    next: Offset,
    left: u64,
    end: tokio::sync::watch::Receiver<Offset>,
    buffered: VecDeque<RecordedEvent>,
    caught_up: bool,
}

enum Item {
    Event(RecordedEvent),
    CaughtUp(Offset),
}

/// `GET /v1/streams/{store}/events/follow`: catch-up subscription. Sends every event from a
/// position (or after `Last-Event-ID`) as an event `event` whose `id` is its position, then one
/// `caught-up` event (data: `{"position": N}`, the next position) when it reaches the store's
/// end, then new events as they are stored.
pub(super) async fn follow(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FollowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(store_name) = path.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let store = store(&rt, &store_name)?;
    let filter = filter(q.category, q.event_type)?;
    let last_event = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_header", "`Last-Event-ID` must be a position")
                })
        })
        .transpose()?;
    let next = match last_event {
        Some(last) => Offset(last.saturating_add(1)),
        None => Offset(q.from.unwrap_or(0)),
    };
    let end = rt.storage.watch_end(store.name()).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_error",
            e.to_string(),
        )
    })?;
    let follower = Follower {
        rt,
        store,
        filter,
        next,
        left: q.limit.unwrap_or(u64::MAX),
        end,
        buffered: VecDeque::new(),
        caught_up: false,
    };
    let events = stream::unfold(follower, |mut f| async move {
        let event = match f.next_item().await? {
            Item::Event(e) => {
                f.left -= 1;
                Event::default()
                    .event("event")
                    .id(e.position.0.to_string())
                    .data(event_json(&e).to_string())
            }
            Item::CaughtUp(at) => Event::default()
                .event("caught-up")
                .data(serde_json::json!({ "position": at.0 }).to_string()),
        };
        Some((Ok(event), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Follower {
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(e) = self.buffered.pop_front() {
                return Some(Item::Event(e));
            }
            if self.rt.is_closing() {
                return None;
            }
            self.end.borrow_and_update();
            let want = self.left.min(100) as usize;
            let store = Arc::clone(&self.store);
            let filter = self.filter.clone();
            let from = self.next;
            let page = tokio::task::spawn_blocking(move || store.read_all(from, &filter, want))
                .await
                .ok()?
                .ok()?;
            let progressed = page.next > self.next;
            self.next = page.next;
            if !page.events.is_empty() {
                self.buffered.extend(page.events);
                continue;
            }
            if progressed {
                continue;
            }
            if !self.caught_up && self.next >= page.end {
                self.caught_up = true;
                return Some(Item::CaughtUp(self.next));
            }
            tokio::select! {
                changed = self.end.changed() => changed.ok()?,
                () = self.rt.closed() => return None,
            }
        }
    }
}
