//! `[broker]`: which engine keeps the messages. `embedded` (the default) is this machine's
//! disk; `nats` is a JetStream cluster several weir hosts share. What the embedded store keeps
//! that JetStream cannot is refused here, with the reason, rather than run weaker.

use std::path::PathBuf;
use std::time::Duration;

use super::file;
use super::{ConfigError, Cx};

/// The broker, validated.
#[derive(Debug, Clone, Default)]
pub enum BrokerConfig {
    /// The embedded durable store under `server.data_dir`.
    #[default]
    Embedded,
    /// A NATS JetStream cluster.
    Nats(NatsConfig),
}

impl BrokerConfig {
    /// The JetStream settings, with `kind = "nats"`.
    pub fn nats(&self) -> Option<&NatsConfig> {
        match self {
            BrokerConfig::Nats(n) => Some(n),
            BrokerConfig::Embedded => None,
        }
    }
}

/// `[broker.nats]`, validated (see `file::Nats` for what each field means and its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs, at least one.
    pub servers: Vec<String>,
    /// Replicas of every stream and bucket weir creates (1 to 5).
    pub replicas: usize,
    /// Partitions of every queue and topic (1 to 1024).
    pub partitions: u32,
    /// How long a publish id is remembered for dedup.
    pub duplicate_window: Duration,
    /// How long a claim on a partition lasts without renewal.
    pub lease: Duration,
    /// How the client authenticates.
    pub auth: NatsAuth,
    /// TLS files, when any is set.
    pub tls: NatsTls,
}

/// How the NATS client authenticates (at most one way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A credentials file (JWT and nkey seed).
    CredsFile(PathBuf),
    /// User and password.
    UserPassword(String, String),
    /// A token.
    Token(String),
}

/// TLS files (absolute); all `None` leaves TLS to the URL scheme.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// CA certificates (PEM) the servers' certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate and its key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

const DEFAULT_REPLICAS: u32 = 3;
const DEFAULT_PARTITIONS: u32 = 8;
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_LEASE: Duration = Duration::from_secs(4);

impl Cx<'_> {
    /// Validates `[broker]`'s kind and, for `nats`, its table; `base` resolves relative paths.
    pub(super) fn broker(
        &self,
        raw: &file::Broker,
        base: &std::path::Path,
    ) -> Result<BrokerConfig, ConfigError> {
        match raw.kind.get_ref() {
            file::BrokerKind::Embedded => {
                if let Some(n) = &raw.nats {
                    return Err(self.err(
                        n.span(),
                        "`[broker.nats]` is read only with `broker.kind = \"nats\"`; set the kind or remove the table".to_owned(),
                    ));
                }
                Ok(BrokerConfig::Embedded)
            }
            file::BrokerKind::Nats => {
                // Settings of the embedded log that JetStream does not have: refused, so that
                // nobody believes a setting holds that does not.
                if let Some(f) = &raw.fsync {
                    return Err(self.err(
                        f.span(),
                        "`broker.fsync` applies to the embedded store only; on `kind = \"nats\"` durability is JetStream's (a publish is acknowledged once a majority of `replicas` stored it; Debian's nats-server 2.9 fsyncs lazily and has no `sync_interval`)".to_owned(),
                    ));
                }
                for (set, key) in [
                    (raw.fsync_interval_ms.span(), "fsync_interval_ms"),
                    (raw.segment_size.span(), "segment_size"),
                ] {
                    if set != (0..0) {
                        return Err(self.err(
                            set,
                            format!("`broker.{key}` applies to the embedded store only; on `kind = \"nats\"` the JetStream servers lay out their files"),
                        ));
                    }
                }
                let Some(n) = &raw.nats else {
                    return Err(self.err(
                        raw.kind.span(),
                        "`broker.kind = \"nats\"` needs a `[broker.nats]` table with `servers = [\"nats://host:4222\", ...]`".to_owned(),
                    ));
                };
                self.nats(n, base).map(BrokerConfig::Nats)
            }
        }
    }

    fn nats(
        &self,
        n: &toml::Spanned<file::Nats>,
        base: &std::path::Path,
    ) -> Result<NatsConfig, ConfigError> {
        let raw = n.get_ref();
        let servers = match &raw.servers {
            Some(s) if !s.get_ref().is_empty() => s,
            Some(s) => {
                return Err(self.err(
                    s.span(),
                    "`broker.nats.servers` must list at least one server URL, found none"
                        .to_owned(),
                ));
            }
            None => {
                return Err(self.err(
                    n.span(),
                    "`[broker.nats]` needs `servers = [\"nats://host:4222\", ...]`".to_owned(),
                ));
            }
        };
        for url in servers.get_ref() {
            let scheme_ok = ["nats://", "tls://"].iter().any(|p| url.starts_with(p));
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            if !scheme_ok || rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(self.err(
                    servers.span(),
                    format!("`broker.nats.servers`: expected URLs such as \"nats://127.0.0.1:4222\" or \"tls://host:4222\", found {url:?}"),
                ));
            }
        }
        let replicas = match &raw.replicas {
            Some(r) if !(1..=5).contains(r.get_ref()) => {
                return Err(self.err(
                    r.span(),
                    format!(
                        "`broker.nats.replicas` must be between 1 and 5 (JetStream's limit), found {}",
                        r.get_ref()
                    ),
                ));
            }
            Some(r) => *r.get_ref(),
            None => DEFAULT_REPLICAS,
        };
        let partitions = match &raw.partitions {
            Some(p) if !(1..=1024).contains(p.get_ref()) => {
                return Err(self.err(
                    p.span(),
                    format!(
                        "`broker.nats.partitions` must be between 1 and 1024, found {}",
                        p.get_ref()
                    ),
                ));
            }
            Some(p) => *p.get_ref(),
            None => DEFAULT_PARTITIONS,
        };
        let duplicate_window = match &raw.duplicate_window {
            Some(w) if w.get_ref().0 < Duration::from_secs(1) => {
                return Err(self.err(
                    w.span(),
                    format!(
                        "`broker.nats.duplicate_window` must be at least 1s, found {} ms",
                        w.get_ref().0.as_millis()
                    ),
                ));
            }
            Some(w) => w.get_ref().0,
            None => DEFAULT_DUPLICATE_WINDOW,
        };
        let lease = match &raw.lease {
            Some(l)
                if !(Duration::from_secs(1)..=Duration::from_secs(300))
                    .contains(&l.get_ref().0) =>
            {
                return Err(self.err(
                    l.span(),
                    format!(
                        "`broker.nats.lease` must be between 1s and 5m, found {} ms",
                        l.get_ref().0.as_millis()
                    ),
                ));
            }
            Some(l) => l.get_ref().0,
            None => DEFAULT_LEASE,
        };
        let auth = match (&raw.creds_file, &raw.user, &raw.password, &raw.token) {
            (None, None, None, None) => NatsAuth::None,
            (Some(f), None, None, None) => NatsAuth::CredsFile(base.join(f)),
            (None, Some(u), Some(p), None) => NatsAuth::UserPassword(u.clone(), p.clone()),
            (None, None, None, Some(t)) => NatsAuth::Token(t.clone()),
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(self.err(
                    n.span(),
                    "`broker.nats`: `user` and `password` go together; set both or neither"
                        .to_owned(),
                ));
            }
            _ => {
                return Err(self.err(
                    n.span(),
                    "`broker.nats`: set one way to authenticate (`creds_file`, `user` with `password`, or `token`), found several".to_owned(),
                ));
            }
        };
        let client = match (&raw.tls_cert, &raw.tls_key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            _ => {
                return Err(self.err(
                    n.span(),
                    "`broker.nats`: `tls_cert` and `tls_key` go together; set both or neither"
                        .to_owned(),
                ));
            }
        };
        let tls = NatsTls {
            ca: raw.tls_ca.as_ref().map(|c| base.join(c)),
            client,
        };
        Ok(NatsConfig {
            servers: servers.get_ref().clone(),
            replicas: replicas as usize,
            partitions,
            duplicate_window,
            lease,
            auth,
            tls,
        })
    }
}

impl Cx<'_> {
    /// What a config asks for that weir cannot keep on JetStream yet, refused with the reason
    /// (never run weaker than written).
    pub(super) fn refuse_on_nats(&self, raw: &file::File) -> Result<(), ConfigError> {
        if let Some((key, _)) = raw.streams.iter().next() {
            return Err(self.err(
                key.span(),
                format!("stream store `{}`: event-sourced stream stores are not available on `broker.kind = \"nats\"` yet (their appends check revisions under one process's lock); use the embedded broker", key.get_ref()),
            ));
        }
        if let Some((key, _)) = raw.aggregates.iter().next() {
            return Err(self.err(
                key.span(),
                format!("aggregate `{}`: aggregates need a stream store, which is not available on `broker.kind = \"nats\"` yet", key.get_ref()),
            ));
        }
        for (key, d) in raw.queues.iter().chain(&raw.topics) {
            if d.compact {
                return Err(self.err(
                    key.span(),
                    format!("`{}`: `compact = true` is not available on `broker.kind = \"nats\"` (JetStream keeps the latest message per subject, and weir's subjects are partitions, not keys)", key.get_ref()),
                ));
            }
            if let Some(m) = &d.max_depth {
                return Err(self.err(
                    m.span(),
                    format!("`{}`: `max_depth` is not available on `broker.kind = \"nats\"` (the depth is the end minus the slowest partition's cursor, and a host sees only the cursors of the partitions it owns, so the limit would not hold)", key.get_ref()),
                ));
            }
        }
        for b in &raw.bindings {
            if let Some(p) = b.poison.as_ref().filter(|p| p.get_ref() == "park") {
                return Err(self.err(
                    p.span(),
                    "`poison = \"park\"` is not available on `broker.kind = \"nats\"` yet (an unpark re-reads the key's messages from the partition, which the JetStream reader does not do); use the default, `dead-letter`".to_owned(),
                ));
            }
        }
        Ok(())
    }
}
