//! A client of the streaming publish (`GET /v1/destinations/{name}/publish`, a WebSocket; see
//! `runtime/src/api/publish_ws.rs`), shared by `weir publish --lines`, `weir chaos --scenario
//! append`, `weir bench publish --protocol ws` and `weir bench e2e --network`. It keeps up to a window of messages unacknowledged
//! and hands each acknowledgement to its caller, in order.

use std::collections::VecDeque;

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
pub(crate) use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An open streaming publish.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket URL of `destination`'s streaming publish on the server at `server` (an
/// `http://` URL, as every client command takes).
pub(crate) fn url(server: &str, destination: &str) -> anyhow::Result<String> {
    let server = server.trim_end_matches('/');
    let Some(host) = server.strip_prefix("http://") else {
        bail!(
            "the streaming publish needs an http:// server URL (got {server}); put a TLS proxy in front of weir for wss://"
        );
    };
    Ok(format!(
        "ws://{host}/v1/destinations/{}/publish",
        super::client::encode(destination)
    ))
}

/// Opens the streaming publish of `destination`; an HTTP refusal (unknown destination, a
/// stream store, a wrong token) is an error carrying the server's message.
pub(crate) async fn connect(
    server: &str,
    destination: &str,
    token: Option<&str>,
) -> anyhow::Result<Socket> {
    let url = url(server, destination)?;
    let mut req = url.as_str().into_client_request()?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    match tokio_tungstenite::connect_async_with_config(req, None, true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.into_owned());
            bail!("{url} answered {}: {message}", resp.status())
        }
        Err(e @ (tungstenite::Error::Io(_) | tungstenite::Error::ConnectionClosed)) => {
            Err(e).with_context(|| {
                format!(
                    "cannot reach weir at {server} (is `weir run` running? set --server or WEIR_SERVER)"
                )
            })
        }
        Err(e) => Err(e).with_context(|| format!("opening a WebSocket to {url}")),
    }
}

/// Sends the messages `next` gives (called with each message's sequence number until it gives
/// `None`), keeping at most `window` unacknowledged, and calls `on_ack` with each
/// acknowledgement's sequence number and text, in order. Returns once every message sent is
/// acknowledged and the connection is closed; an error if the connection ends before that (a
/// close by the server says its code and reason) or `on_ack` fails.
pub(crate) async fn publish_all(
    ws: &mut Socket,
    window: usize,
    mut next: impl FnMut(u64) -> Option<Message>,
    mut on_ack: impl FnMut(u64, &str) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let window = window.max(1);
    let mut unacked: VecDeque<u64> = VecDeque::with_capacity(window);
    let mut seq = 0u64;
    let mut sending = true;
    loop {
        let mut fed = false;
        while sending && unacked.len() < window {
            let Some(m) = next(seq) else {
                sending = false;
                break;
            };
            ws.feed(m).await.context("sending a message")?;
            unacked.push_back(seq);
            seq += 1;
            fed = true;
        }
        if fed {
            ws.flush().await.context("sending messages")?;
        }
        if unacked.is_empty() {
            break;
        }
        // Every acknowledgement already here, then back to sending.
        let mut got = ws.next().await;
        loop {
            match got {
                Some(Ok(Message::Text(text))) => {
                    let s = unacked
                        .pop_front()
                        .context("the server acknowledged more messages than were sent")?;
                    on_ack(s, text.as_str())?;
                }
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => bail!(
                        "the server closed the stream ({} {}) with {} messages unacknowledged",
                        u16::from(f.code),
                        f.reason,
                        unacked.len()
                    ),
                    None => bail!(
                        "the server closed the stream with {} messages unacknowledged",
                        unacked.len()
                    ),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(e).context("reading acknowledgements");
                }
                None => bail!(
                    "the connection ended with {} messages unacknowledged",
                    unacked.len()
                ),
            }
            match ws.next().now_or_never() {
                Some(n) => got = n,
                None => break,
            }
        }
    }
    ws.close(None).await.ok();
    Ok(seq)
}
