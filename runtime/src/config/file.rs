//! The raw TOML shape of `weir.toml`, exactly as written by a user. Every table denies unknown
//! keys; every default is stated next to its field. [`super::Config`] validates this into typed
//! form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::duration::Span;
use super::size::ByteSize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// HTTP API and local state. Default: see [`Server`].
    #[serde(default)]
    pub server: Server,
    /// Which broker keeps the messages. Default: `embedded`.
    #[serde(default)]
    pub broker: Broker,
    /// Point-to-point queues, by name. Default: none.
    #[serde(default)]
    pub queues: BTreeMap<Spanned<String>, Destination>,
    /// Pub/sub topics, by name. Default: none.
    #[serde(default)]
    pub topics: BTreeMap<Spanned<String>, Destination>,
    /// Event-sourced stream stores, by name: each holds many streams (`order-42`, ...) in one
    /// log. Default: none.
    #[serde(default)]
    pub streams: BTreeMap<Spanned<String>, StreamStore>,
    /// Plugins, by name. Default: none.
    #[serde(default)]
    pub plugins: BTreeMap<Spanned<String>, Plugin>,
    /// Event-sourced aggregates (world `aggregate`), by name. Default: none.
    #[serde(default)]
    pub aggregates: BTreeMap<Spanned<String>, Aggregate>,
    /// Which plugin consumes which source. Default: none.
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Server {
    /// Address of the HTTP API. Default: `127.0.0.1:7070`. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Directory for weir's own state (precompiled plugin cache, ...), relative to the config
    /// file. Default: `.weir`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest message payload accepted, in bytes or with a unit. Default: `1MiB`.
    #[serde(default = "default_max_message")]
    pub max_message_size: Spanned<ByteSize>,
    /// Bearer token every API request must carry (`Authorization: Bearer <token>`), except
    /// `GET /v1/health`. The environment variable `WEIR_API_TOKEN` overrides it, so the secret
    /// need not be in the file. Default: none (no authentication; listen on loopback only).
    #[serde(default)]
    pub api_token: Option<Spanned<String>>,
    /// On SIGTERM or Ctrl-C, how long in-flight requests and invocations get to finish before
    /// weir exits anyway (what did not finish is delivered again after a restart). Default:
    /// `"30s"`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Spanned<Span>,
    /// A changed plugin file that gave no sign of being complete (closed after writing, or
    /// renamed into place), or that does not load, is taken (or refused) once it stayed
    /// unchanged this long. Default: `"300ms"`.
    #[serde(default = "default_reload_quiet")]
    pub reload_quiet: Spanned<Span>,
    /// Compiled code of recently loaded plugin versions kept in memory, so that swapping back
    /// to one (a rollback, a redeploy) does not read its precompiled file again; `0` keeps
    /// none. Default: `"128MiB"`.
    #[serde(default = "default_compiled_cache_memory")]
    pub compiled_cache_memory: Spanned<ByteSize>,
}

fn default_compiled_cache_memory() -> Spanned<ByteSize> {
    Spanned::new(
        0..0,
        ByteSize(crate::host::DEFAULT_MEMORY_CACHE_BYTES as u64),
    )
}

fn default_reload_quiet() -> Spanned<Span> {
    Spanned::new(0..0, Span(std::time::Duration::from_millis(300)))
}

fn default_shutdown_grace() -> Spanned<Span> {
    Spanned::new(0..0, Span(std::time::Duration::from_secs(30)))
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:7070".to_owned())
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".weir")
}
fn default_max_message() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(1 << 20))
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: default_listen(),
            data_dir: default_data_dir(),
            max_message_size: default_max_message(),
            api_token: None,
            shutdown_grace: default_shutdown_grace(),
            reload_quiet: default_reload_quiet(),
            compiled_cache_memory: default_compiled_cache_memory(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Broker {
    /// `embedded` (the default): durable logs on this machine's disk, under `server.data_dir`.
    #[serde(default = "default_kind")]
    pub kind: Spanned<BrokerKind>,
    /// `kind = "nats"`: the cluster. Default: none.
    #[serde(default)]
    pub nats: Option<Spanned<Nats>>,
    /// `always` (the default): a publish is acknowledged only once it is on disk (fdatasync,
    /// group-committed); `interval`: acknowledged after the write, fsynced every
    /// `fsync_interval_ms`; `never`: left to the OS.
    #[serde(default)]
    pub fsync: Option<Spanned<Fsync>>,
    /// Fsync period for `fsync = "interval"`, in milliseconds. Default: 100.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: Spanned<u64>,
    /// Size at which a log's segment file is sealed and a new one started. Default: `256MiB`.
    #[serde(default = "default_segment_size")]
    pub segment_size: Spanned<ByteSize>,
    /// How often retention limits are enforced. Default: `"60s"`.
    #[serde(default = "default_retention_interval")]
    pub retention_interval: Spanned<Span>,
    /// How long replies are kept in weir's reply inbox (`weir.replies`), by age; retention
    /// removes whole sealed segments. A waiting request takes its reply as soon as it lands, so
    /// this only bounds the disk the inbox uses. Default: `"10m"`.
    #[serde(default = "default_reply_retention")]
    pub reply_retention: Spanned<Span>,
}

fn default_kind() -> Spanned<BrokerKind> {
    Spanned::new(0..0, BrokerKind::default())
}

fn default_reply_retention() -> Spanned<Span> {
    Spanned::new(0..0, Span(std::time::Duration::from_secs(600)))
}

fn default_retention_interval() -> Spanned<Span> {
    Spanned::new(0..0, Span(std::time::Duration::from_secs(60)))
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            kind: default_kind(),
            nats: None,
            fsync: None,
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_size: default_segment_size(),
            retention_interval: default_retention_interval(),
            reply_retention: default_reply_retention(),
        }
    }
}

fn default_fsync_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}
fn default_segment_size() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(256 << 20))
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Fsync {
    #[default]
    Always,
    Interval,
    Never,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum BrokerKind {
    #[default]
    Embedded,
    /// A NATS JetStream cluster shared by several weir hosts (`[broker.nats]`).
    Nats,
}

/// `[broker.nats]`: how to reach the JetStream cluster and how to lay weir out on it. Only read
/// with `kind = "nats"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Nats {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client connects to one and
    /// learns the rest of the cluster. Required, at least one.
    #[serde(default)]
    pub servers: Option<Spanned<Vec<String>>>,
    /// Replicas of every stream and bucket weir creates. Default: 3 (a cluster smaller than that
    /// refuses to create them: weir never silently keeps fewer copies than asked).
    #[serde(default)]
    pub replicas: Option<Spanned<u32>>,
    /// Partitions of every queue and topic: a key always lands in the same one, and each
    /// partition of a binding is run by one host at a time, so this bounds how many hosts share
    /// a binding's work. Fixed when the destination's stream is created. Default: 8.
    #[serde(default)]
    pub partitions: Option<Spanned<u32>>,
    /// How long JetStream remembers a publish id (`Nats-Msg-Id`) to drop a duplicate. Default:
    /// `"10m"`.
    #[serde(default)]
    pub duplicate_window: Option<Spanned<Span>>,
    /// How long a host's claim on a partition lasts without renewal: a host that died loses its
    /// partitions after this. Default: `"4s"`.
    #[serde(default)]
    pub lease: Option<Spanned<Span>>,
    /// A NATS credentials file (JWT and nkey seed). Default: none.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// User name, with `password`. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// An authentication token. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// PEM file of the CA certificates that sign the servers' certificates; setting it (or
    /// `tls_cert`) requires TLS. Default: none (the system's roots for `tls://` URLs).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, with `tls_key`, for mutual TLS. Default: none.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default: none.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// A queue or a topic: both are logs, with the same retention settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Destination {
    /// Remove records older than this (whole segments, oldest first). Default: keep forever.
    #[serde(default)]
    pub retention_max_age: Option<Spanned<Span>>,
    /// Remove the oldest records (whole segments) while the log is larger than this. Default:
    /// no size limit.
    #[serde(default)]
    pub retention_max_bytes: Option<Spanned<ByteSize>>,
    /// Keep only the latest record per key in sealed segments (records without a key are
    /// kept). Default: false.
    #[serde(default)]
    pub compact: bool,
    /// Refuse publishes from outside (HTTP 429 `backpressure`) while this many messages are not
    /// yet acknowledged by the slowest binding consuming the destination. Default: no limit.
    #[serde(default)]
    pub max_depth: Option<Spanned<u64>>,
}

/// A stream store: many streams in one log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamStore {
    /// Remove events older than this (whole segments, oldest first). Default: keep forever.
    #[serde(default)]
    pub retention_max_age: Option<Spanned<Span>>,
    /// Reads of one stream see at most its latest this many events (older ones read as
    /// truncated; retention frees their space). Default: no limit.
    #[serde(default)]
    pub max_count: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Plugin {
    /// The component file, relative to the config file. Required.
    pub path: Spanned<PathBuf>,
    /// Linear memory limit per instance. Default: `64MiB`.
    #[serde(default = "default_memory")]
    pub memory: Spanned<ByteSize>,
    /// Wall-clock limit per invocation, in milliseconds. Default: 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Fuel (roughly, wasm instructions) per invocation. Default: unlimited.
    #[serde(default)]
    pub fuel: Option<Spanned<u64>>,
    /// Destinations the plugin may publish to. Default: none.
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    /// Warm instances kept for reuse. Default: 4.
    #[serde(default = "default_instances")]
    pub instances: Spanned<u32>,
    /// Reload the plugin when its component file changes. Default: true.
    #[serde(default = "default_watch")]
    pub watch: bool,
    /// A new version is judged over its first this many invocations (0: never rolled back
    /// automatically). Default: 20.
    #[serde(default = "default_rollback_after")]
    pub rollback_after: Spanned<u32>,
    /// A new version is rolled back when more than this fraction of those invocations fail.
    /// Default: 0.5.
    #[serde(default = "default_rollback_failure_rate")]
    pub rollback_failure_rate: Spanned<f64>,
}

/// An aggregate: a Decider component over the streams of one category of a stream store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Aggregate {
    /// The component file, relative to the config file. Required.
    pub path: Spanned<PathBuf>,
    /// The stream store its streams live in. Required.
    pub store: Spanned<String>,
    /// The category of its streams (`<category>-<id>`). Default: the aggregate's name.
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    /// Linear memory limit per instance. Default: `64MiB`.
    #[serde(default = "default_memory")]
    pub memory: Spanned<ByteSize>,
    /// Wall-clock limit per call (`decide`, one `evolve`), in milliseconds. Default: 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Fuel per call. Default: unlimited.
    #[serde(default)]
    pub fuel: Option<Spanned<u64>>,
    /// A snapshot of a stream's state is kept every this many events (0: never). Default: 100.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: Spanned<u64>,
    /// A command whose append loses a race is decided again at most this many times.
    /// Default: 5.
    #[serde(default = "default_conflict_retries")]
    pub conflict_retries: Spanned<u32>,
}

fn default_snapshot_every() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}
fn default_conflict_retries() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

fn default_watch() -> bool {
    true
}
fn default_rollback_after() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_rollback_failure_rate() -> Spanned<f64> {
    Spanned::new(0..0, 0.5)
}

fn default_memory() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(64 << 20))
}
fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}
fn default_instances() -> Spanned<u32> {
    Spanned::new(0..0, 4)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Binding {
    /// Name used in stats and the API. Default: `<source>.<plugin>`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// The queue or topic consumed. Required.
    pub source: Spanned<String>,
    /// The plugin that handles its messages. Required.
    pub plugin: Spanned<String>,
    /// `at-most-once`, `at-least-once` or `exactly-once`. Default: `at-least-once`.
    #[serde(default)]
    pub guarantee: Option<Spanned<String>>,
    /// `none`, `fifo` or `key`. Default: `key`.
    #[serde(default)]
    pub ordering: Option<Spanned<String>>,
    /// Invocations running at once. Default: 4 (1 under `fifo`).
    #[serde(default)]
    pub concurrency: Option<Spanned<u32>>,
    /// Time limit of one invocation. Default: the plugin's `timeout_ms`.
    #[serde(default)]
    pub timeout: Option<Spanned<Span>>,
    /// Attempts before a message is dead-lettered. Default: 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: Spanned<u32>,
    /// Delays between attempts.
    #[serde(default)]
    pub backoff: Option<Spanned<Backoff>>,
    /// Queue receiving messages that failed for good. Default: `<binding name>.dlq`, created
    /// automatically.
    #[serde(default)]
    pub dead_letter: Option<Spanned<String>>,
    /// Under `key` ordering, what a message that fails for good does to its key:
    /// `dead-letter` (and the key moves on) or `park` (the key waits). Default: `dead-letter`.
    #[serde(default)]
    pub poison: Option<Spanned<String>>,
    /// Messages read ahead and in flight at most. Default: 4096.
    #[serde(default)]
    pub max_in_flight: Option<Spanned<u32>>,
}

fn default_max_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

/// `backoff = { initial = "100ms", max = "1m", multiplier = 2.0, jitter = 0.2 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Backoff {
    #[serde(default)]
    pub initial: Option<Span>,
    #[serde(default)]
    pub max: Option<Span>,
    #[serde(default)]
    pub multiplier: Option<f64>,
    #[serde(default)]
    pub jitter: Option<f64>,
}
