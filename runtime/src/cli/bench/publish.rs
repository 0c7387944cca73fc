//! `weir bench publish`: publishes over the network, as a remote client sees it. Against a
//! running server (`--server URL`), or by default against a `weir run` child it starts
//! (`fsync = "always"`, one queue `bench` with no binding, in a temporary directory), keeping
//! `--in-flight` messages in flight over `--connections` connections:
//! - `--protocol http1`: each HTTP/1.1 keep-alive connection sends one `POST
//!   /v1/destinations/{dest}/messages` at a time and waits for its acknowledgement (201,
//!   durable), so there are as many connections as messages in flight;
//! - `--protocol http2`: the same requests as concurrent streams of h2c connections;
//! - `--protocol ws`: the streaming publish (`GET /v1/destinations/{dest}/publish`, a
//!   WebSocket): binary messages, each acknowledged in order with its offset once durable.
//!
//! The latency of a message is from its send to its acknowledgement. Reports msgs/s, ack
//! latency, and, for its own child, the server's CPU and the fsyncs per second it made (from
//! `/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::workdir::WorkDir;
use super::{Histogram, round3};
use crate::cli::chaos::Server;

/// `weir bench publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A running server to publish to (default: start a `weir run` child with fsync always
    /// and one queue `bench`).
    #[arg(long)]
    server: Option<String>,
    /// The queue or topic to publish to.
    #[arg(long, default_value = "bench")]
    destination: String,
    /// How messages are sent.
    #[arg(long, value_enum, default_value_t = Protocol::Http1)]
    protocol: Protocol,
    /// Messages in flight (sent and not yet acknowledged), over all connections (default 256;
    /// under http1, `--connections`).
    #[arg(long)]
    in_flight: Option<usize>,
    /// Connections (default: one per message in flight for http1, else 1). Under http1 each
    /// carries one message at a time, so it must equal `--in-flight`.
    #[arg(long)]
    connections: Option<usize>,
    /// Messages to publish.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Bearer token, for a server with `api_token` set.
    #[arg(long, env = "WEIR_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The HTTP/1.1 client: `minimal` (one task per connection writing each request in one
    /// write and parsing the answer with httparse, as load generators such as wrk do) or
    /// `hyper` (hyper's client connection: a task per connection and a channel per request).
    /// The server sees the same requests either way; the minimal client leaves it more of the
    /// machine when both run on it.
    #[arg(long, value_enum, default_value_t = HttpClient::Minimal)]
    http_client: HttpClient,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// The HTTP/1.1 client of `--protocol http1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpClient {
    Minimal,
    Hyper,
}

/// How `weir bench publish` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// One `POST .../messages` at a time per HTTP/1.1 keep-alive connection.
    Http1,
    /// `POST .../messages` as concurrent streams of h2c connections.
    Http2,
    /// The streaming publish over a WebSocket.
    Ws,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Ws => "ws",
        }
    }
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let in_flight = match args.protocol {
        Protocol::Http1 => args.in_flight.or(args.connections).unwrap_or(256),
        _ => args.in_flight.unwrap_or(256),
    };
    let connections = args.connections.unwrap_or(match args.protocol {
        Protocol::Http1 => in_flight,
        _ => 1,
    });
    if connections == 0 || args.count == 0 || in_flight == 0 {
        bail!("--connections, --in-flight and --count must be at least 1");
    }
    if args.protocol == Protocol::Http1 && connections != in_flight {
        bail!(
            "under --protocol http1 each connection carries one message at a time: --connections ({connections}) must equal --in-flight ({})",
            in_flight
        );
    }
    if connections > in_flight {
        bail!(
            "--connections ({connections}) is more than --in-flight ({}): each connection needs a message in flight",
            in_flight
        );
    }
    let mut own = None;
    let _dir;
    let url = match &args.server {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let dir = WorkDir::new("publish", &std::env::current_dir()?)?;
            std::fs::write(
                dir.path().join("weir.toml"),
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 [broker]\nfsync = \"always\"\n[queues.bench]\n",
            )?;
            let server = Server::start(dir.path())?;
            let url = server.url.clone();
            own = Some(server);
            _dir = dir;
            url
        }
    };
    let addr = url
        .strip_prefix("http://")
        .context("--server must be an http:// URL")?
        .trim_end_matches('/')
        .to_owned();
    let pid = own.as_ref().map(Server::pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let before = Usage::read(&rt, &addr, pid);
    let started = Instant::now();
    let hist = Arc::new(Histogram::new());
    let failed = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let path = match args.protocol {
        Protocol::Ws => format!("/v1/destinations/{}/publish", args.destination),
        _ => format!("/v1/destinations/{}/messages", args.destination),
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(connections);
        for i in 0..connections {
            // The messages in flight, spread over the connections.
            let window = in_flight / connections + usize::from(i < in_flight % connections);
            let c = Conn {
                addr: addr.clone(),
                path: path.clone(),
                destination: args.destination.clone(),
                token: args.api_token.clone(),
                payload: payload.clone(),
                next: Arc::clone(&next),
                count: args.count,
                hist: Arc::clone(&hist),
                failed: Arc::clone(&failed),
            };
            tasks.push(match args.protocol {
                Protocol::Http1 if args.http_client == HttpClient::Minimal => {
                    tokio::spawn(c.run_minimal())
                }
                Protocol::Http1 => tokio::spawn(c.run()),
                Protocol::Http2 => tokio::spawn(c.run_h2(window)),
                Protocol::Ws => tokio::spawn(c.run_ws(window)),
            });
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    });
    let seconds = started.elapsed().as_secs_f64();
    let after = Usage::read(&rt, &addr, pid);
    if let Some(s) = own {
        s.stop();
    }
    result?;
    let rate = args.count as f64 / seconds;
    let p = |q: f64| hist.percentile(q) as f64 / 1000.0;
    let cpu = match (before.cpu, after.cpu) {
        (Some(a), Some(b)) => Some(round3((b - a) / seconds)),
        _ => None,
    };
    let fsyncs = match (before.fsyncs, after.fsyncs) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    println!(
        "publish: {} messages of {} bytes, {} in flight over {connections} {} connections to {url}: {rate:.0} msgs/s, ack p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        args.count,
        args.payload_bytes,
        in_flight,
        args.protocol.as_str(),
        p(0.5),
        p(0.99),
        p(0.999)
    );
    if let (Some(cpu), Some(f)) = (cpu, fsyncs) {
        println!(
            "server:  {cpu:.2} cores busy, {:.0} fsyncs/s ({:.1} messages per fsync)",
            f as f64 / seconds,
            args.count as f64 / f.max(1) as f64
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "publish",
                "protocol": args.protocol.as_str(),
                "http_client": (args.protocol == Protocol::Http1).then(|| format!("{:?}", args.http_client).to_lowercase()),
                "server": args.server,
                "connections": connections,
                "in_flight": in_flight,
                "messages": args.count,
                "payload_bytes": args.payload_bytes,
                "seconds": round3(seconds),
                "msgs_per_sec": rate.round(),
                "ack_p50_ms": p(0.5),
                "ack_p99_ms": p(0.99),
                "ack_p999_ms": p(0.999),
                "server_cpu_cores": cpu,
                "fsyncs": fsyncs,
                "fsyncs_per_sec": fsyncs.map(|f| (f as f64 / seconds).round()),
            })
        );
    }
    Ok(())
}

/// One keep-alive connection publishing until the count is reached.
struct Conn {
    addr: String,
    path: String,
    destination: String,
    token: Option<String>,
    payload: Bytes,
    next: Arc<AtomicU64>,
    count: u64,
    hist: Arc<Histogram>,
    failed: Arc<AtomicBool>,
}

impl Conn {
    async fn run(self) -> anyhow::Result<()> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        while !self.failed.load(Relaxed) && self.next.fetch_add(1, Relaxed) < self.count {
            let mut req = Request::post(self.path.as_str())
                .header(hyper::header::HOST, self.addr.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
            if let Some(t) = &self.token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Full::new(self.payload.clone()))?;
            let t0 = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    self.failed.store(true, Relaxed);
                    return Err(e).context("publishing");
                }
            };
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if status != hyper::StatusCode::CREATED {
                self.failed.store(true, Relaxed);
                bail!(
                    "publish answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            self.hist.record(t0.elapsed().as_micros() as u64);
        }
        Ok(())
    }
}

impl Conn {
    /// A keep-alive HTTP/1.1 connection without a client library: each request is one write of
    /// bytes prepared once, each answer is read into one buffer and parsed with httparse.
    async fn run_minimal(self) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n",
            self.path,
            self.addr,
            self.payload.len()
        );
        if let Some(t) = &self.token {
            request.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(&self.payload);
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        while !self.failed.load(Relaxed) && self.next.fetch_add(1, Relaxed) < self.count {
            let t0 = Instant::now();
            if let Err(e) = stream.write_all(&request).await {
                self.failed.store(true, Relaxed);
                return Err(e).context("publishing");
            }
            // The answer: its head, then `content-length` bytes of body.
            let (status, body_len, head_len) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(head_len) = resp.parse(&buf)? {
                    let len: usize = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .context("an answer without content-length")?;
                    break (resp.code.unwrap_or(0), len, head_len);
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(8192);
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    self.failed.store(true, Relaxed);
                    bail!("the server closed the connection");
                }
            };
            while buf.len() < head_len + body_len {
                if stream.read_buf(&mut buf).await? == 0 {
                    self.failed.store(true, Relaxed);
                    bail!("the server closed the connection mid-answer");
                }
            }
            if status != 201 {
                self.failed.store(true, Relaxed);
                bail!(
                    "publish answered {status}: {}",
                    String::from_utf8_lossy(&buf[head_len..head_len + body_len])
                );
            }
            buf.drain(..head_len + body_len);
            self.hist.record(t0.elapsed().as_micros() as u64);
        }
        Ok(())
    }

    /// The request's answer: an error unless it is 201.
    async fn check(&self, resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<()> {
        let status = resp.status();
        if status != hyper::StatusCode::CREATED {
            let body = resp.into_body().collect().await?.to_bytes();
            self.failed.store(true, Relaxed);
            bail!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        resp.into_body().collect().await?;
        Ok(())
    }

    /// One h2c connection with `window` requests in flight as concurrent streams.
    async fn run_h2(self, window: usize) -> anyhow::Result<()> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_concurrent_reset_streams(window)
                .handshake(TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let this = Arc::new(self);
        let mut streams = Vec::with_capacity(window);
        for _ in 0..window {
            let c = Arc::clone(&this);
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                while !c.failed.load(Relaxed) && c.next.fetch_add(1, Relaxed) < c.count {
                    let mut req = Request::post(format!("http://{}{}", c.addr, c.path))
                        .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
                    if let Some(t) = &c.token {
                        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
                    }
                    let req = req.body(Full::new(c.payload.clone()))?;
                    let t0 = Instant::now();
                    sender.ready().await?;
                    let resp = match sender.send_request(req).await {
                        Ok(r) => r,
                        Err(e) => {
                            c.failed.store(true, Relaxed);
                            return Err(e).context("publishing");
                        }
                    };
                    c.check(resp).await?;
                    c.hist.record(t0.elapsed().as_micros() as u64);
                }
                anyhow::Ok(())
            }));
        }
        for s in streams {
            s.await??;
        }
        Ok(())
    }

    /// One WebSocket of the streaming publish with `window` messages in flight: it sends what
    /// the window allows in one write, then reads acknowledgements (in order) as they come.
    async fn run_ws(self, window: usize) -> anyhow::Result<()> {
        use crate::cli::stream_client;
        let server = format!("http://{}", self.addr);
        let mut ws = stream_client::connect(&server, &self.destination, self.token.as_deref())
            .await
            .inspect_err(|_| self.failed.store(true, Relaxed))?;
        // When each unacknowledged message was sent: at most `window` are, so a ring indexed
        // by sequence number holds them.
        let base = Instant::now();
        let sent: Vec<AtomicU64> = (0..window).map(|_| AtomicU64::new(0)).collect();
        let next = |seq: u64| {
            if self.failed.load(Relaxed) || self.next.fetch_add(1, Relaxed) >= self.count {
                return None;
            }
            sent[seq as usize % window].store(base.elapsed().as_micros() as u64, Relaxed);
            Some(stream_client::Message::Binary(self.payload.clone()))
        };
        let on_ack = |seq: u64, ack: &str| {
            if !ack.contains("\"offset\"") {
                bail!("publish refused: {ack}");
            }
            let t0 = sent[seq as usize % window].load(Relaxed);
            self.hist
                .record((base.elapsed().as_micros() as u64).saturating_sub(t0));
            Ok(())
        };
        let published = stream_client::publish_all(&mut ws, window, next, on_ack).await;
        if published.is_err() {
            self.failed.store(true, Relaxed);
        }
        published.map(drop)
    }
}

/// What the server had used: CPU seconds (of its process, when it is our child) and fsyncs
/// (from its `/metrics`).
pub(super) struct Usage {
    pub(super) cpu: Option<f64>,
    pub(super) fsyncs: Option<u64>,
}

impl Usage {
    pub(super) fn read(rt: &tokio::runtime::Runtime, addr: &str, pid: Option<u32>) -> Usage {
        Usage {
            cpu: pid.and_then(cpu_seconds),
            fsyncs: rt.block_on(fsyncs(addr)).ok().flatten(),
        }
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) and its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux for every architecture weir builds on.
    Some(ticks as f64 / 100.0)
}

/// `weir_log_fsyncs_total` from the server's `/metrics`.
async fn fsyncs(addr: &str) -> anyhow::Result<Option<u64>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(hyper::header::HOST, addr)
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    let text = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("weir_log_fsyncs_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64))
}
