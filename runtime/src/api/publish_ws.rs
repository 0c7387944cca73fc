//! Streaming publish: `GET /v1/destinations/{name}/publish` upgraded to a WebSocket carries many
//! messages on one connection, each acknowledged with its offset once it is durable, in the
//! order sent. It is the fast path: the server reads every message the connection has buffered,
//! appends them in one commit (one journal write, one share of an fsync) and writes their
//! acknowledgements in one write, so the cost per message is a frame parse and a few dozen bytes
//! of acknowledgement instead of an HTTP request.
//!
//! Protocol (see README "Publishing over a WebSocket"):
//! - Each message from the client is one publish. A binary message is the payload (no key, id
//!   or headers); a text message is a JSON object as in a batch publish: `{"payload": "..."}` or
//!   `{"payload_hex": "..."}`, with optional `"key"`, `"id"` (dedup) and `"headers"`.
//! - For each, in order, the server sends one text message: `{"seq":N,"offset":O,"id":"..."}`
//!   (with `"duplicate":true` when the id was stored already) or `{"seq":N,"error":{"code":
//!   "...","message":"..."}}`; `seq` counts the client's messages on this connection from 0. A
//!   refused message refuses nothing else.
//! - A message over the size limit closes the connection (code 1009) after acknowledging every
//!   message before it; a message that is not a valid frame closes it with 1002 (the WebSocket
//!   library's verdict); shutdown closes it with 1001 once what was stored is acknowledged
//!   (weir waits for that, within `server.shutdown_grace`). After any close of its own the
//!   server shuts its side of the TCP connection and reads and drops what the client still
//!   sends until the client closes (at most `CLOSE_LINGER`): closing a socket with input unread
//!   would reset it, and a reset can destroy the acknowledgements and the close frame still on
//!   their way to the client.
//! - At most [`MAX_UNACKED`] messages are read and not yet acknowledged per connection: a client
//!   that stops reading its acknowledgements stops being read (its messages wait in its socket),
//!   and is disconnected once a write of acknowledgements has waited [`WRITE_TIMEOUT`]. Other
//!   connections are not affected.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::batch::BatchMessage;
use super::error::ApiError;
use crate::names::DestinationName;
use crate::server::{PublishError, PublishRequest, Published, Runtime};

/// Most messages read from one connection and not yet acknowledged.
pub const MAX_UNACKED: usize = 8192;
/// Most messages read and appended together.
const READ_BATCH: usize = 1024;
/// How long a write of acknowledgements may wait for a client that does not read them.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, after its close frame, the server reads (and drops) what the client had sent,
/// waiting for the client to close the connection.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Room for a text message's JSON beyond its payload (hex doubles it; keys and headers are
/// bounded by the validator).
const JSON_ROOM: usize = 64 << 10;

/// The WebSocket connection, on the upgraded HTTP/1.1 connection. tokio-tungstenite directly
/// (the implementation under axum's `WebSocket`), because the end of a connection needs the
/// TCP stream under it (see `finish`).
type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub(super) async fn publish(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let (mut parts, _) = request.into_parts();
    // axum's extractor checks the handshake (method, `Connection`, `Upgrade`, version, key) and
    // takes the upgrade out of the request; the upgrade handle is a shared one, so a copy
    // taken first is the same upgrade, driven here.
    let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            e.status(),
            "websocket_required",
            format!(
                "this route is a WebSocket (GET with `Upgrade: websocket`): {}",
                e.body_text()
            ),
        )
    })?;
    // Checked before the upgrade, so that a wrong name is an HTTP error, not a closed socket.
    let dest = rt.check_destination(&name)?;
    if rt.is_closing() {
        return Err(PublishError::ShuttingDown.into());
    }
    drop(upgrade);
    let (Some(on_upgrade), Some(key)) = (on_upgrade, key) else {
        // An HTTP/2 extended CONNECT: not served (HTTP/1.1 is the streaming publish's protocol).
        return Err(ApiError::new(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "websocket_required",
            "the streaming publish is a WebSocket over HTTP/1.1".to_owned(),
        ));
    };
    let limit = rt.config.server.max_message_size as usize;
    let max = 2 * limit + JSON_ROOM;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // Counted from here (not from the upgrade), so that shutdown cannot miss a connection
    // being upgraded; dropped with the task if the upgrade fails.
    let open = rt.streaming_connection();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve(&rt, &dest, socket).await;
        drop(open);
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .expect("a valid 101 response"))
}

/// The acknowledgements of one batch, to come.
type Acks<'a> = Pin<Box<dyn Future<Output = Vec<Result<Published, PublishError>>> + Send + 'a>>;

/// Runs one connection: reads batches of messages, appends each batch, and acknowledges them in
/// order as they become durable. One task does both, so nothing outlives the connection.
async fn serve(rt: &Runtime, dest: &DestinationName, mut socket: Socket) {
    let mut pending: FuturesOrdered<Acks<'_>> = FuturesOrdered::new();
    let mut unacked = 0usize;
    let mut seq: u64 = 0;
    let mut out = Vec::with_capacity(64);
    // Why the connection ends once its acknowledgements are written (None: the client closed).
    let mut ending: Option<(CloseCode, String)> = None;
    loop {
        // Checked here, not only in the `select!` below: a client that keeps sending would
        // always have a message ready, and the shutdown branch would never be taken.
        if ending.is_none() && rt.is_closing() {
            ending = Some((CloseCode::Away, "weir is shutting down".to_owned()));
        }
        let reading = ending.is_none() && unacked < MAX_UNACKED;
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(results) = pending.next(), if !pending.is_empty() => {
                unacked -= results.len();
                out.clear();
                for r in &results {
                    out.push(Message::text(ack(&mut seq, r)));
                }
                // Every batch that is durable already goes in the same write.
                while let Some(Some(more)) = pending.next().now_or_never() {
                    unacked -= more.len();
                    for r in &more {
                        out.push(Message::text(ack(&mut seq, r)));
                    }
                }
                if !write(&mut socket, out.drain(..)).await {
                    return; // the client is gone or does not read: nothing more to say
                }
            }
            first = socket.next(), if reading => {
                let mut batch = Vec::new();
                let mut next = first;
                loop {
                    match next {
                        None | Some(Ok(Message::Close(_))) => {
                            ending = Some((CloseCode::Normal, String::new()));
                            break;
                        }
                        Some(Ok(m)) => {
                            if let Some(r) = request(m) {
                                batch.push(r);
                            }
                        }
                        Some(Err(e)) => {
                            ending = Some(refusal(&e));
                            break;
                        }
                    }
                    if batch.len() >= READ_BATCH || unacked + batch.len() >= MAX_UNACKED {
                        break;
                    }
                    match socket.next().now_or_never() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                if !batch.is_empty() {
                    unacked += batch.len();
                    pending.push_back(Box::pin(rt.publish_many(dest, batch)));
                }
            }
            () = rt.closed(), if ending.is_none() => {
                ending = Some((CloseCode::Away, "weir is shutting down".to_owned()));
            }
        }
    }
    match ending {
        Some((code, reason)) if code != CloseCode::Normal => finish(socket, code, reason).await,
        // The client closed: the library's answer to its close goes out.
        _ => drop(tokio::time::timeout(WRITE_TIMEOUT, socket.close(None)).await),
    }
}

/// Ends a connection the server closes: sends the close frame, shuts the server's side of the
/// TCP connection, and reads and drops what the client still sends until it closes its side
/// (at most [`CLOSE_LINGER`]). Dropping the socket with input unread instead would reset the
/// connection, and a reset can destroy the acknowledgements and the close frame the client has
/// not read yet (after an oversized message, most of it is still unread).
async fn finish(mut socket: Socket, code: CloseCode, reason: String) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let sent = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return; // the client is gone or does not read
    }
    let tcp = socket.get_mut();
    let linger = async {
        let _ = tcp.shutdown().await;
        let mut sink = vec![0u8; 64 << 10];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, linger).await;
}

/// The publish a message asks for; `None` for pings and pongs (answered by the library).
fn request(m: Message) -> Option<Result<PublishRequest, PublishError>> {
    match m {
        Message::Binary(payload) => Some(Ok(PublishRequest {
            payload: payload.to_vec(),
            ..PublishRequest::default()
        })),
        Message::Text(text) => Some(
            serde_json::from_str::<BatchMessage>(text.as_str())
                .map_err(|e| {
                    PublishError::Invalid(format!(
                        "a text message is a JSON object {{\"payload\": \"...\"}} (or `payload_hex`, with optional `key`, `id`, `headers`): {e}"
                    ))
                })
                .and_then(|m| m.into_request("the message").map_err(PublishError::Invalid)),
        ),
        _ => None,
    }
}

/// The close code and reason for a connection the library refused reading.
fn refusal(error: &WsError) -> (CloseCode, String) {
    let code = match error {
        WsError::Capacity(_) => CloseCode::Size,
        _ => CloseCode::Protocol,
    };
    // A close reason is at most 123 bytes.
    let mut reason = error.to_string();
    while reason.len() > 120 {
        reason.pop();
    }
    (code, reason)
}

/// One acknowledgement, numbering it.
fn ack(seq: &mut u64, result: &Result<Published, PublishError>) -> String {
    let n = *seq;
    *seq += 1;
    match result {
        Ok(p) if p.duplicate => serde_json::json!({
            "seq": n, "offset": p.offset, "id": p.id, "duplicate": true
        })
        .to_string(),
        Ok(p) => format!(
            "{{\"seq\":{n},\"offset\":{},\"id\":{}}}",
            p.offset,
            serde_json::Value::String(p.id.clone())
        ),
        Err(e) => serde_json::json!({
            "seq": n, "error": { "code": e.code(), "message": e.to_string() }
        })
        .to_string(),
    }
}

/// Writes messages in one flush; false when the client is gone or has not read for
/// [`WRITE_TIMEOUT`].
async fn write(socket: &mut Socket, messages: impl Iterator<Item = Message>) -> bool {
    let send = async {
        for m in messages {
            socket.feed(m).await?;
        }
        socket.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, send).await, Ok(Ok(())))
}
