//! `weir.toml`: parsing (strict: unknown keys are errors) and validation into a typed
//! [`Config`]. Every error names the file, the line and the key or value at fault.

mod binding;
mod broker;
mod duration;
mod file;
mod size;
mod suggest;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use binding::{Backoff, Guarantee, Ordering, Poison};
pub use broker::{BrokerConfig, NatsAuth, NatsConfig, NatsTls};
pub use duration::Span;
pub use size::ByteSize;

use crate::names::{BindingName, DestinationName, PluginName};

/// The validated configuration of one weir server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// HTTP API and local state.
    pub server: ServerConfig,
    /// Which broker keeps the messages.
    pub broker: BrokerConfig,
    /// Queues and topics.
    pub destinations: BTreeMap<DestinationName, DestinationKind>,
    /// Retention limits of the destinations that have any.
    pub retention: BTreeMap<DestinationName, Retention>,
    /// Depth limits (`max_depth`, in messages) of the destinations that have one.
    pub max_depth: BTreeMap<DestinationName, u64>,
    /// Stream stores (also in `destinations`, as [`DestinationKind::Stream`]).
    pub streams: BTreeMap<DestinationName, StreamConfig>,
    /// Plugins by name.
    pub plugins: BTreeMap<PluginName, PluginConfig>,
    /// Aggregates, by name.
    pub aggregates: BTreeMap<PluginName, AggregateConfig>,
    /// Bindings, in file order.
    pub bindings: Vec<BindingConfig>,
}

/// HTTP API and local state.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Directory for weir's own state (absolute).
    pub data_dir: PathBuf,
    /// Largest message payload accepted, in bytes.
    pub max_message_size: u64,
    /// When publishes are acknowledged relative to fsync.
    pub fsync: FsyncPolicy,
    /// Segment file size of each log, in bytes.
    pub segment_bytes: u64,
    /// How often retention limits are enforced.
    pub retention_interval: Duration,
    /// How long replies are kept in the reply inbox.
    pub reply_retention: Duration,
    /// Open damaged logs by keeping everything before the damage (`weir run --repair`) instead
    /// of refusing to start.
    pub repair: bool,
    /// Bearer token the HTTP API requires, when set (`server.api_token`, or `WEIR_API_TOKEN`
    /// through [`Config::apply_env`]).
    pub api_token: Option<String>,
    /// How long a graceful shutdown may take before weir exits anyway.
    pub shutdown_grace: Duration,
    /// How long a changed plugin file must stay unchanged to be taken without a completion
    /// signal, or refused.
    pub reload_quiet: Duration,
    /// Bytes of compiled code of recently loaded plugin versions kept in memory.
    pub compiled_cache_memory: u64,
}

/// How much of a log is kept. Records go by whole segments, oldest first; the segment being
/// written is never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Remove records older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest records while the log is larger than this many bytes.
    pub max_bytes: Option<u64>,
    /// Keep only the latest record per key in sealed segments.
    pub compact: bool,
}

/// When a publish is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Only once on disk (group-committed fdatasync).
    Always,
    /// After the write; fsync at least this often.
    Interval(Duration),
    /// After the write; the OS decides when it reaches the disk.
    Never,
}

/// What kind of destination a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationKind {
    /// Point-to-point: each message handled by one consumer.
    Queue,
    /// Pub/sub: each binding gets every message.
    Topic,
    /// A store of event-sourced streams: appended to only through the stream API (with
    /// expected revisions); bindings consume it like a topic, in commit order.
    Stream,
}

impl DestinationKind {
    /// `queue`, `topic` or `stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
            DestinationKind::Stream => "stream",
        }
    }
}

/// One stream store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamConfig {
    /// Reads of one stream see at most its latest this many events.
    pub max_count: Option<u64>,
}

/// One aggregate (`[aggregates.<name>]`).
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// The component file (absolute).
    pub path: PathBuf,
    /// The stream store its streams live in.
    pub store: DestinationName,
    /// The category of its streams.
    pub category: String,
    /// Sandbox limits per call.
    pub limits: Limits,
    /// A snapshot every this many events (0: never).
    pub snapshot_every: u64,
    /// Most times a command is decided again after losing a race.
    pub conflict_retries: u32,
}

/// One plugin.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The component file (absolute).
    pub path: PathBuf,
    /// Sandbox limits.
    pub limits: Limits,
    /// Destinations the plugin may publish to.
    pub publish: BTreeSet<DestinationName>,
    /// Warm instances kept for reuse.
    pub instances: u32,
    /// Reload when the component file changes.
    pub watch: bool,
    /// When a newly deployed version is rolled back automatically.
    pub rollback: AutoRollback,
}

/// Automatic rollback of a newly deployed plugin version: it is judged over its first `after`
/// invocations, and rolled back to the version before it as soon as more than
/// `max_failure_rate` of them have failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoRollback {
    /// Invocations a new version is judged over; 0 turns automatic rollback off.
    pub after: u32,
    /// Fraction of those invocations that may fail.
    pub max_failure_rate: f64,
}

impl AutoRollback {
    /// Failures among the first `after` invocations that roll the version back (the first
    /// count above the allowed fraction); `None` when automatic rollback is off.
    pub fn failures_to_roll_back(&self) -> Option<u32> {
        (self.after > 0).then(|| (f64::from(self.after) * self.max_failure_rate).floor() as u32 + 1)
    }
}

impl Default for AutoRollback {
    fn default() -> Self {
        AutoRollback {
            after: 20,
            max_failure_rate: 0.5,
        }
    }
}

/// Sandbox limits of a plugin, applied to each invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time per invocation.
    pub timeout: Duration,
    /// Fuel per invocation, when metered.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(1),
            fuel: None,
        }
    }
}

/// One binding: a source consumed by a plugin.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    /// Name used in stats and the API.
    pub name: BindingName,
    /// The consumed queue or topic.
    pub source: DestinationName,
    /// The plugin handling its messages.
    pub plugin: PluginName,
    /// How often a message's handling may take effect.
    pub guarantee: Guarantee,
    /// In which order messages are handled.
    pub ordering: Ordering,
    /// Invocations running at once (1 under `fifo`).
    pub concurrency: u32,
    /// Time limit of one invocation (at most the plugin's own).
    pub timeout: Duration,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Where messages that failed for good go.
    pub dead_letter: DestinationName,
    /// Under `key` ordering, what a message that failed for good does to its key.
    pub poison: Poison,
    /// Messages read ahead and in flight at most.
    pub max_in_flight: u32,
}

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when the problem is at a place in the file.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Limits accepted for plugin settings.
const MAX_MEMORY: u64 = 4 << 30;
const MIN_MEMORY: u64 = 64 << 10;
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const MAX_INSTANCES: u32 = 256;
const MAX_ATTEMPTS: u32 = 1000;
const DEFAULT_CONCURRENCY: u32 = 4;
const MAX_CONCURRENCY: u32 = 256;
const DEFAULT_MAX_IN_FLIGHT: u32 = 4096;
const MAX_IN_FLIGHT: u32 = 1 << 20;

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx { file: path, text };
        let raw: file::File = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = suggest::explain(text, &span, e.message());
            cx.err(span, message)
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        cx.validate(raw, &base)
    }
}

/// The environment variable that overrides `server.api_token`.
pub const API_TOKEN_ENV: &str = "WEIR_API_TOKEN";

impl Config {
    /// Applies overrides from the environment: `WEIR_API_TOKEN` (when set and not empty)
    /// replaces `server.api_token`. The binary calls this; the library never reads the
    /// environment on its own.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Some(token) = std::env::var_os(API_TOKEN_ENV).filter(|t| !t.is_empty()) {
            let token = token
                .into_string()
                .map_err(|_| "it is not UTF-8".to_owned())
                .and_then(|t| api_token(&t));
            self.server.api_token = Some(token.map_err(|e| ConfigError {
                file: self.file.clone(),
                position: None,
                message: format!("environment variable {API_TOKEN_ENV}: {e}"),
            })?);
        }
        Ok(())
    }
}

/// ` (did you mean `x`? declared: `a`, `b`)`, or ` (none is declared)`.
fn declared_hint<'a>(name: &str, declared: impl Iterator<Item = &'a str>) -> String {
    let declared: Vec<&str> = declared.collect();
    if declared.is_empty() {
        return " (none is declared)".to_owned();
    }
    let list = declared
        .iter()
        .map(|d| format!("`{d}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match suggest::nearest(name, &declared) {
        Some(near) => format!(" (did you mean `{near}`? declared: {list})"),
        None => format!(" (declared: {list})"),
    }
}

/// Checks an API token: visible ASCII (it travels in an HTTP header), 16 to 4096 bytes.
fn api_token(t: &str) -> Result<String, String> {
    if !(16..=4096).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`server.api_token` must be 16 to 4096 visible ASCII characters (no spaces), found {} bytes",
            t.len()
        ));
    }
    Ok(t.to_owned())
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        let position = (span != (0..0)).then(|| {
            let before = &self.text[..span.start.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        ConfigError {
            file: self.file.to_owned(),
            position,
            message,
        }
    }

    fn name<T>(
        &self,
        s: &toml::Spanned<String>,
        new: fn(String) -> Result<T, crate::names::NameError>,
    ) -> Result<T, ConfigError> {
        new(s.get_ref().clone()).map_err(|e| self.err(s.span(), e.to_string()))
    }

    /// A destination name, refusing the names weir reserves for itself.
    fn destination(&self, s: &toml::Spanned<String>) -> Result<DestinationName, ConfigError> {
        let name = self.name(s, DestinationName::new)?;
        if name.is_reserved() {
            return Err(self.err(
                s.span(),
                format!("`{name}` is reserved for weir's reply inbox; choose another name"),
            ));
        }
        Ok(name)
    }

    fn validate(&self, raw: file::File, base: &Path) -> Result<Config, ConfigError> {
        let listen = raw
            .server
            .listen
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| {
                self.err(
                    raw.server.listen.span(),
                    format!(
                        "`server.listen` must be an address such as \"127.0.0.1:7070\", found {:?}",
                        raw.server.listen.get_ref()
                    ),
                )
            })?;
        let max_message_size = raw.server.max_message_size.get_ref().0;
        if max_message_size == 0 || max_message_size > 64 << 20 {
            return Err(self.err(
                raw.server.max_message_size.span(),
                format!("`server.max_message_size` must be between 1B and 64MiB, found {max_message_size}"),
            ));
        }
        let broker = self.broker(&raw.broker, base)?;
        if broker.nats().is_some() {
            self.refuse_on_nats(&raw)?;
        }
        let interval = *raw.broker.fsync_interval_ms.get_ref();
        if !(1..=60_000).contains(&interval) {
            return Err(self.err(
                raw.broker.fsync_interval_ms.span(),
                format!("`broker.fsync_interval_ms` must be between 1 and 60000, found {interval}"),
            ));
        }
        let fsync = match raw
            .broker
            .fsync
            .as_ref()
            .map(|f| *f.get_ref())
            .unwrap_or_default()
        {
            file::Fsync::Always => FsyncPolicy::Always,
            file::Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(interval)),
            file::Fsync::Never => FsyncPolicy::Never,
        };
        let segment_bytes = raw.broker.segment_size.get_ref().0;
        // The log's indexes address a segment with 32-bit positions: at most 2 GiB.
        if !((1 << 20)..=(2 << 30)).contains(&segment_bytes) {
            return Err(self.err(
                raw.broker.segment_size.span(),
                format!(
                    "`broker.segment_size` must be between 1MiB and 2GiB, found {}",
                    raw.broker.segment_size.get_ref()
                ),
            ));
        }
        let server = ServerConfig {
            listen,
            data_dir: base.join(&raw.server.data_dir),
            max_message_size,
            fsync,
            segment_bytes,
            retention_interval: raw
                .broker
                .retention_interval
                .get_ref()
                .0
                .max(Duration::from_millis(10)),
            reply_retention: raw.broker.reply_retention.get_ref().0,
            repair: false,
            api_token: match &raw.server.api_token {
                Some(t) => Some(api_token(t.get_ref()).map_err(|e| self.err(t.span(), e))?),
                None => None,
            },
            shutdown_grace: {
                let grace = raw.server.shutdown_grace.get_ref().0;
                if grace > Duration::from_secs(3600) {
                    return Err(self.err(
                        raw.server.shutdown_grace.span(),
                        format!(
                            "`server.shutdown_grace` must be at most 1h, found {} s",
                            grace.as_secs()
                        ),
                    ));
                }
                grace
            },
            reload_quiet: {
                let quiet = raw.server.reload_quiet.get_ref().0;
                if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&quiet) {
                    return Err(self.err(
                        raw.server.reload_quiet.span(),
                        format!(
                            "`server.reload_quiet` must be between 10ms and 60s, found {} ms",
                            quiet.as_millis()
                        ),
                    ));
                }
                quiet
            },
            compiled_cache_memory: {
                let bytes = raw.server.compiled_cache_memory.get_ref().0;
                if bytes > 64 << 30 {
                    return Err(self.err(
                        raw.server.compiled_cache_memory.span(),
                        format!(
                            "`server.compiled_cache_memory` must be at most 64GiB, found {}",
                            raw.server.compiled_cache_memory.get_ref()
                        ),
                    ));
                }
                bytes
            },
        };

        let mut destinations = BTreeMap::new();
        let mut retention = BTreeMap::new();
        let mut max_depth = BTreeMap::new();
        let declared = raw
            .queues
            .iter()
            .map(|(k, d)| (k, d, DestinationKind::Queue))
            .chain(
                raw.topics
                    .iter()
                    .map(|(k, d)| (k, d, DestinationKind::Topic)),
            );
        for (key, dest, kind) in declared {
            let name = self.destination(key)?;
            let limits = Retention {
                max_age: dest.retention_max_age.as_ref().map(|s| s.get_ref().0),
                max_bytes: dest.retention_max_bytes.as_ref().map(|b| b.get_ref().0),
                compact: dest.compact,
            };
            if let Some(b) = dest
                .retention_max_bytes
                .as_ref()
                .filter(|b| b.get_ref().0 < segment_bytes && broker.nats().is_none())
            {
                return Err(self.err(
                    b.span(),
                    format!(
                        "`{name}`: `retention_max_bytes` ({}) is smaller than one segment ({}); retention removes whole segments, so raise it or lower `broker.segment_size`",
                        b.get_ref(),
                        raw.broker.segment_size.get_ref()
                    ),
                ));
            }
            if limits != Retention::default() {
                retention.insert(name.clone(), limits);
            }
            if let Some(max) = &dest.max_depth {
                if *max.get_ref() == 0 {
                    return Err(self.err(
                        max.span(),
                        format!("`{name}`: `max_depth` must be at least 1, found 0; omit it for no limit"),
                    ));
                }
                max_depth.insert(name.clone(), *max.get_ref());
            }
            if destinations.insert(name.clone(), kind).is_some() {
                return Err(self.err(
                    key.span(),
                    format!("`{name}` is declared both as a queue and as a topic; destination names are shared"),
                ));
            }
        }

        let mut streams = BTreeMap::new();
        for (key, store) in &raw.streams {
            let name = self.destination(key)?;
            if destinations.contains_key(&name) {
                return Err(self.err(
                    key.span(),
                    format!("`{name}` is declared both as a stream store and as a queue or topic; destination names are shared"),
                ));
            }
            if let Some(max) = store.max_count.as_ref().filter(|m| *m.get_ref() == 0) {
                return Err(self.err(
                    max.span(),
                    format!("stream store `{name}`: `max_count` must be at least 1, found 0; omit it for no limit"),
                ));
            }
            if let Some(age) = &store.retention_max_age {
                retention.insert(
                    name.clone(),
                    Retention {
                        max_age: Some(age.get_ref().0),
                        ..Retention::default()
                    },
                );
            }
            destinations.insert(name.clone(), DestinationKind::Stream);
            streams.insert(
                name,
                StreamConfig {
                    max_count: store.max_count.as_ref().map(|m| *m.get_ref()),
                },
            );
        }

        let mut plugins = BTreeMap::new();
        for (key, p) in &raw.plugins {
            let name = self.name(key, PluginName::new)?;
            plugins.insert(name.clone(), self.plugin(&name, p, base)?);
        }

        let mut aggregates = BTreeMap::new();
        for (key, a) in &raw.aggregates {
            let name = self.name(key, PluginName::new)?;
            if plugins.contains_key(&name) {
                return Err(self.err(
                    key.span(),
                    format!("`{name}` is declared both as a plugin and as an aggregate; their key-value state would be shared, so give them distinct names"),
                ));
            }
            aggregates.insert(name.clone(), self.aggregate(&name, a, base, &streams)?);
        }

        let mut bindings = Vec::new();
        let mut binding_names = BTreeSet::new();
        for b in &raw.bindings {
            let binding = self.binding(b, &destinations, &plugins)?;
            if !binding_names.insert(binding.name.clone()) {
                let span = b.name.as_ref().map_or(b.source.span(), |n| n.span());
                return Err(self.err(
                    span,
                    format!(
                        "two bindings are named `{}`; give one a distinct `name`",
                        binding.name
                    ),
                ));
            }
            bindings.push(binding);
        }
        // Default dead-letter queues are created for the bindings that use them.
        for b in &bindings {
            destinations
                .entry(b.dead_letter.clone())
                .or_insert(DestinationKind::Queue);
        }
        for (key, p) in &raw.plugins {
            for d in &p.publish {
                let dest = self.destination(d)?;
                if destinations.get(&dest) == Some(&DestinationKind::Stream) {
                    return Err(self.err(
                        d.span(),
                        format!(
                            "plugin `{}` may publish to `{dest}`, but that is a stream store: events are appended to it only with expected revisions (through the stream API or an aggregate)",
                            key.get_ref()
                        ),
                    ));
                }
                if !destinations.contains_key(&dest) {
                    return Err(self.err(
                        d.span(),
                        format!(
                            "plugin `{}` may publish to `{dest}`, but no queue or topic of that name is declared",
                            key.get_ref()
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            file: self.file.to_owned(),
            server,
            broker,
            destinations,
            retention,
            max_depth,
            streams,
            plugins,
            aggregates,
            bindings,
        })
    }

    fn aggregate(
        &self,
        name: &PluginName,
        a: &file::Aggregate,
        base: &Path,
        streams: &BTreeMap<DestinationName, StreamConfig>,
    ) -> Result<AggregateConfig, ConfigError> {
        let path = base.join(a.path.get_ref());
        if !path.is_file() {
            return Err(self.err(
                a.path.span(),
                format!(
                    "aggregate `{name}`: component file `{}` does not exist; fix `path` (relative to the config file's directory) or build it (`scripts/build-plugins` builds the examples)",
                    path.display()
                ),
            ));
        }
        let store = self.destination(&a.store)?;
        if !streams.contains_key(&store) {
            return Err(self.err(
                a.store.span(),
                format!(
                    "aggregate `{name}`: `store` names `{store}`, which is not a declared stream store{}; declare it as [streams.{store}]",
                    declared_hint(store.as_str(), streams.keys().map(DestinationName::as_str))
                ),
            ));
        }
        let category = match &a.category {
            Some(c) => {
                let text = c.get_ref();
                let ok = !text.is_empty()
                    && text.len() <= 128
                    && !text.contains('-')
                    && crate::es::StreamName::new(format!("{text}-x")).is_ok();
                if !ok {
                    return Err(self.err(
                        c.span(),
                        format!("aggregate `{name}`: `category` must be 1 to 128 characters of a stream name without `-`, found {text:?}"),
                    ));
                }
                text.clone()
            }
            None => {
                let text = name.as_str().to_owned();
                if text.contains('-') || crate::es::StreamName::new(format!("{text}-x")).is_err() {
                    return Err(self.err(
                        a.path.span(),
                        format!("aggregate `{name}`: its name cannot be a stream category (it has a `-`); set `category`"),
                    ));
                }
                text
            }
        };
        let memory_bytes = a.memory.get_ref().0;
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_bytes) {
            return Err(self.err(
                a.memory.span(),
                format!(
                    "aggregate `{name}`: `memory` must be between 64KiB and 4GiB, found {}",
                    a.memory.get_ref()
                ),
            ));
        }
        let timeout_ms = *a.timeout_ms.get_ref();
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(self.err(
                a.timeout_ms.span(),
                format!("aggregate `{name}`: `timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, found {timeout_ms}"),
            ));
        }
        let fuel = match &a.fuel {
            Some(f) if *f.get_ref() == 0 => {
                return Err(self.err(
                    f.span(),
                    format!(
                        "aggregate `{name}`: `fuel` must be positive; omit it for unlimited fuel"
                    ),
                ));
            }
            Some(f) => Some(*f.get_ref()),
            None => None,
        };
        let retries = *a.conflict_retries.get_ref();
        if retries > 100 {
            return Err(self.err(
                a.conflict_retries.span(),
                format!(
                    "aggregate `{name}`: `conflict_retries` must be at most 100, found {retries}"
                ),
            ));
        }
        Ok(AggregateConfig {
            path,
            store,
            category,
            limits: Limits {
                memory_bytes,
                timeout: Duration::from_millis(timeout_ms),
                fuel,
            },
            snapshot_every: *a.snapshot_every.get_ref(),
            conflict_retries: retries,
        })
    }

    fn plugin(
        &self,
        name: &PluginName,
        p: &file::Plugin,
        base: &Path,
    ) -> Result<PluginConfig, ConfigError> {
        let path = base.join(p.path.get_ref());
        if !path.is_file() {
            return Err(self.err(
                p.path.span(),
                format!(
                    "plugin `{name}`: component file `{}` does not exist; fix `path` (relative to the config file's directory) or build the plugin (`scripts/build-plugins` builds the examples)",
                    path.display()
                ),
            ));
        }
        let memory_bytes = p.memory.get_ref().0;
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_bytes) {
            return Err(self.err(
                p.memory.span(),
                format!(
                    "plugin `{name}`: `memory` must be between 64KiB and 4GiB, found {}",
                    p.memory.get_ref()
                ),
            ));
        }
        let timeout_ms = *p.timeout_ms.get_ref();
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(self.err(
                p.timeout_ms.span(),
                format!("plugin `{name}`: `timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, found {timeout_ms}"),
            ));
        }
        let fuel = match &p.fuel {
            Some(f) if *f.get_ref() == 0 => {
                return Err(self.err(
                    f.span(),
                    format!("plugin `{name}`: `fuel` must be positive; omit it for unlimited fuel"),
                ));
            }
            Some(f) => Some(*f.get_ref()),
            None => None,
        };
        let instances = *p.instances.get_ref();
        if !(1..=MAX_INSTANCES).contains(&instances) {
            return Err(self.err(
                p.instances.span(),
                format!("plugin `{name}`: `instances` must be between 1 and {MAX_INSTANCES}, found {instances}"),
            ));
        }
        let mut publish = BTreeSet::new();
        for d in &p.publish {
            publish.insert(self.destination(d)?);
        }
        let rate = *p.rollback_failure_rate.get_ref();
        if !(0.0..1.0).contains(&rate) {
            return Err(self.err(
                p.rollback_failure_rate.span(),
                format!("plugin `{name}`: `rollback_failure_rate` must be at least 0 and below 1 (the fraction of a new version's first invocations that may fail), found {rate}"),
            ));
        }
        Ok(PluginConfig {
            path,
            limits: Limits {
                memory_bytes,
                timeout: Duration::from_millis(timeout_ms),
                fuel,
            },
            publish,
            instances,
            watch: p.watch,
            rollback: AutoRollback {
                after: *p.rollback_after.get_ref(),
                max_failure_rate: rate,
            },
        })
    }

    fn binding(
        &self,
        b: &file::Binding,
        destinations: &BTreeMap<DestinationName, DestinationKind>,
        plugins: &BTreeMap<PluginName, PluginConfig>,
    ) -> Result<BindingConfig, ConfigError> {
        let source = self.destination(&b.source)?;
        if !destinations.contains_key(&source) {
            return Err(self.err(
                b.source.span(),
                format!(
                    "binding source `{source}` is not a declared queue, topic or stream store{}; declare it as [queues.{source}], [topics.{source}] or [streams.{source}]",
                    declared_hint(source.as_str(), destinations.keys().map(DestinationName::as_str))
                ),
            ));
        }
        let plugin = self.name(&b.plugin, PluginName::new)?;
        if !plugins.contains_key(&plugin) {
            return Err(self.err(
                b.plugin.span(),
                format!(
                    "binding plugin `{plugin}` is not declared{}; declare it as [plugins.{plugin}]",
                    declared_hint(plugin.as_str(), plugins.keys().map(PluginName::as_str))
                ),
            ));
        }
        let name = match &b.name {
            Some(n) => self.name(n, BindingName::new)?,
            None => BindingName::new(format!("{source}.{plugin}"))
                .map_err(|e| self.err(b.source.span(), e.to_string()))?,
        };
        let max_attempts = *b.max_attempts.get_ref();
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(self.err(
                b.max_attempts.span(),
                format!("binding `{name}`: `max_attempts` must be between 1 and {MAX_ATTEMPTS}, found {max_attempts}"),
            ));
        }
        let dead_letter = match &b.dead_letter {
            Some(d) => {
                let dest = self.destination(d)?;
                if destinations.get(&dest) != Some(&DestinationKind::Queue) {
                    return Err(self.err(
                        d.span(),
                        format!("binding `{name}`: dead-letter queue `{dest}` is not a declared queue; declare [queues.{dest}] or omit `dead_letter` for the default `{name}.dlq`"),
                    ));
                }
                dest
            }
            None => DestinationName::new(format!("{name}.dlq"))
                .map_err(|e| self.err(b.source.span(), e.to_string()))?,
        };
        if dead_letter == source {
            return Err(self.err(
                b.source.span(),
                format!("binding `{name}` consumes its own dead-letter queue `{source}`"),
            ));
        }
        let guarantee = self.choice(&b.guarantee, &name)?;
        // A stream store is consumed in commit order unless the binding asks otherwise: a
        // projection then sees the store's global order, not only each stream's.
        let ordering = match b.ordering {
            None if destinations.get(&source) == Some(&DestinationKind::Stream) => Ordering::Fifo,
            _ => self.choice(&b.ordering, &name)?,
        };
        let poison = self.choice(&b.poison, &name)?;
        let concurrency = match &b.concurrency {
            None if ordering == Ordering::Fifo => 1,
            None => DEFAULT_CONCURRENCY,
            Some(c) => {
                let n = *c.get_ref();
                if !(1..=MAX_CONCURRENCY).contains(&n) {
                    return Err(self.err(c.span(), format!("binding `{name}`: `concurrency` must be between 1 and {MAX_CONCURRENCY}, found {n}")));
                }
                if ordering == Ordering::Fifo && n > 1 {
                    return Err(self.err(c.span(), format!("binding `{name}`: `fifo` ordering handles one message at a time, so `concurrency` must be 1 (found {n}); use `ordering = \"key\"` for parallel ordered handling")));
                }
                n
            }
        };
        let plugin_timeout = plugins[&plugin].limits.timeout;
        let timeout = match &b.timeout {
            None => plugin_timeout,
            Some(t) => {
                let t = t.get_ref().0;
                if t.is_zero() || t > plugin_timeout {
                    return Err(self.err(b.timeout.as_ref().map_or(0..0, |t| t.span()), format!("binding `{name}`: `timeout` must be more than 0 and at most the plugin's `timeout_ms` ({} ms), found {} ms", plugin_timeout.as_millis(), t.as_millis())));
                }
                t
            }
        };
        let backoff = match &b.backoff {
            None => Backoff::default(),
            Some(s) => {
                let f = s.get_ref();
                let d = Backoff::default();
                let backoff = Backoff {
                    initial: f.initial.map_or(d.initial, |s| s.0),
                    max: f.max.map_or(d.max, |s| s.0),
                    multiplier: f.multiplier.unwrap_or(d.multiplier),
                    jitter: f.jitter.unwrap_or(d.jitter),
                };
                let problem = if !(1.0..=100.0).contains(&backoff.multiplier) {
                    Some(format!(
                        "`multiplier` must be between 1 and 100, found {}",
                        backoff.multiplier
                    ))
                } else if !(0.0..=1.0).contains(&backoff.jitter) {
                    Some(format!(
                        "`jitter` must be between 0 and 1, found {}",
                        backoff.jitter
                    ))
                } else if backoff.initial > backoff.max {
                    Some(format!(
                        "`initial` ({} ms) is longer than `max` ({} ms)",
                        backoff.initial.as_millis(),
                        backoff.max.as_millis()
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(self.err(s.span(), format!("binding `{name}`: backoff {problem}")));
                }
                backoff
            }
        };
        let max_in_flight = match &b.max_in_flight {
            None => DEFAULT_MAX_IN_FLIGHT,
            Some(m) => {
                let n = *m.get_ref();
                if !(1..=MAX_IN_FLIGHT).contains(&n) {
                    return Err(self.err(m.span(), format!("binding `{name}`: `max_in_flight` must be between 1 and {MAX_IN_FLIGHT}, found {n}")));
                }
                n
            }
        };
        Ok(BindingConfig {
            name,
            source,
            plugin,
            guarantee,
            ordering,
            concurrency,
            timeout,
            max_attempts,
            backoff,
            dead_letter,
            poison,
            max_in_flight,
        })
    }

    /// Parses an optional named setting (`guarantee`, `ordering`, `poison`), located on error.
    fn choice<T: std::str::FromStr<Err = String> + Default>(
        &self,
        value: &Option<toml::Spanned<String>>,
        binding: &BindingName,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(T::default()),
            Some(v) => v
                .get_ref()
                .parse()
                .map_err(|e| self.err(v.span(), format!("binding `{binding}`: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests;
