//! Following a queue or topic with server-sent events: `GET
//! /v1/destinations/{name}/messages/stream` sends every stored message from an offset (or a
//! time, or after the `Last-Event-ID` a reconnecting client sends) as an event `message` whose
//! `id` is its offset and whose `data` is the message as JSON, then waits for new ones on the
//! log's end. It ends after `limit` messages, or when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use super::error::ApiError;
use super::messages::stored_json;
use crate::names::{DestinationName, Offset};
use crate::server::Runtime;
use crate::storage::Stored;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FollowQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    from_time_ms: Option<u64>,
    #[serde(default)]
    key: Option<String>,
    /// End the stream after this many messages (default: follow until the server stops).
    #[serde(default)]
    limit: Option<u64>,
}

struct Follower {
    rt: Arc<Runtime>,
    dest: DestinationName,
    key: Option<String>,
    next: Offset,
    left: u64,
    end: tokio::sync::watch::Receiver<Offset>,
    buffered: VecDeque<Stored>,
}

pub(super) async fn follow(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<FollowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let dest = DestinationName::new(name)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let storage_error = |e: crate::storage::StorageError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_error",
            e.to_string(),
        )
    };
    if !rt.storage.has_log(&dest) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_destination",
            format!("no queue or topic named `{dest}`"),
        ));
    }
    let last_event = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_header", "`Last-Event-ID` must be an offset")
                })
        })
        .transpose()?;
    let next = match (last_event, q.from_time_ms, q.from) {
        (Some(last), _, _) => Offset(last.saturating_add(1)),
        (None, Some(t), _) => rt.storage.offset_at_time(&dest, t).map_err(storage_error)?,
        (None, None, from) => Offset(from.unwrap_or(0)),
    };
    let end = rt.storage.watch_end(&dest).map_err(storage_error)?;
    let follower = Follower {
        rt,
        dest,
        key: q.key,
        next,
        left: q.limit.unwrap_or(u64::MAX),
        end,
        buffered: VecDeque::new(),
    };
    let events = stream::unfold(follower, |mut f| async move {
        let stored = f.next_message().await?;
        f.left -= 1;
        let event = Event::default()
            .event("message")
            .id(stored.offset.0.to_string())
            .data(stored_json(&stored).to_string());
        Some((Ok(event), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Follower {
    /// The next message, waiting for one; `None` when the stream should end.
    async fn next_message(&mut self) -> Option<Stored> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(s) = self.buffered.pop_front() {
                return Some(s);
            }
            if self.rt.is_closing() {
                return None;
            }
            // Marked seen before reading: an append after the read wakes the wait below.
            self.end.borrow_and_update();
            let want = self.left.min(100) as usize;
            let read = match &self.key {
                Some(key) => self.rt.storage.read_key(&self.dest, key, self.next, want),
                None => self.rt.storage.read(&self.dest, self.next, want),
            };
            let read = read.ok()?;
            if let Some(last) = read.last() {
                self.next = last.offset.next();
                self.buffered.extend(read);
                continue;
            }
            tokio::select! {
                changed = self.end.changed() => changed.ok()?,
                () = self.rt.closed() => return None,
            }
        }
    }
}
