//! The NATS JetStream backend (`[broker] kind = "nats"`): the same [`Storage`] seam, with the
//! logs, the bindings' progress and the plugins' key-value state in a JetStream cluster that
//! several weir hosts share. ARCHITECTURE.md ("weir on NATS JetStream") has the mapping and the
//! failure windows; in short:
//!
//! - a queue or topic is a stream, one subject per partition (`streams.rs`, `layout.rs`);
//! - each binding runs per partition, on the one host holding the partition's lease
//!   (`ownership.rs`), whose progress and outbox are one commit record written with
//!   compare-and-set (`partition.rs`);
//! - plugin key-value state is one bucket, mirrored in memory (`kv.rs`);
//! - plugin versions: components by SHA-256 in a stream, each plugin's active version in a
//!   bucket written with compare-and-set (`plugins.rs`, for `deploy::cluster`).
//!
//! The trait is synchronous in places (`kv_get` runs inside a plugin, `read` inside the
//! engine's loop), so everything the engine reads is served from memory; the network calls
//! run on a runtime of the store's own (two threads), and the few synchronous methods that
//! must wait for the cluster (`append_dedup`, `begin_deliveries`, `usage`, reads before a
//! destination's follower started) wait with `block_in_place`, like the embedded store's
//! synchronous fsync waits.

mod kv;
mod layout;
pub mod observe;
mod ownership;
mod partition;
mod plugins;
mod streams;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv::Store, stream};
use tokio::sync::{oneshot, watch};

pub use ownership::PartitionId;
use partition::Partition;
use streams::LogStream;

use super::{Commit, CommitTicket, Record, Storage, StorageError, Stored};
use crate::config::{Config, NatsAuth, NatsConfig};
use crate::names::{BindingName, DestinationName, Offset, PluginName};

pub(super) fn remote(e: impl std::fmt::Display) -> StorageError {
    StorageError::Remote(e.to_string())
}

/// The error of a commit whose store went away before answering.
pub(super) fn gone() -> StorageError {
    StorageError::Remote("the NATS store stopped before the commit was durable".into())
}

/// Waits for a remote commit from synchronous code, inside a runtime or not.
pub(super) fn wait(
    done: oneshot::Receiver<Result<Vec<Offset>, StorageError>>,
) -> Result<Vec<Offset>, StorageError> {
    let recv = move || done.blocking_recv().unwrap_or_else(|_| Err(gone()));
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(recv)
    } else {
        recv()
    }
}

/// What the store's tasks share.
pub(crate) struct Inner {
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    cfg: NatsConfig,
    host_id: String,
    logs: Mutex<HashMap<DestinationName, Arc<LogStream>>>,
    parts: Mutex<HashMap<BindingName, Arc<Partition>>>,
    /// Partitions this host stopped running, until taken over here again: a take-over waits
    /// until the old run's writer is done with the key-value mirror.
    retired: Mutex<HashMap<BindingName, Arc<Partition>>>,
    kv: Arc<kv::Mirror>,
    commits: Store,
    leases: Store,
    hosts: Store,
    /// Per destination: its retention limits, enforced by JetStream as the stream's
    /// `max_age` and `max_bytes`.
    retention: HashMap<DestinationName, crate::config::Retention>,
    /// The largest message the servers take.
    max_payload: usize,
}

impl Inner {
    /// Runs `fut` on the store's runtime and waits for it.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let recv = move || {
            rx.blocking_recv()
                .expect("the NATS runtime runs while the store lives")
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(recv)
        } else {
            recv()
        }
    }

    fn log(&self, d: &DestinationName) -> Result<Arc<LogStream>, StorageError> {
        self.logs
            .lock()
            .expect("lock")
            .get(d)
            .cloned()
            .ok_or_else(|| StorageError::UnknownLog(d.clone()))
    }

    fn part(&self, b: &BindingName) -> Option<Arc<Partition>> {
        self.parts.lock().expect("lock").get(b).cloned()
    }

    fn stop_partition(&self, id: &PartitionId, why: StorageError) {
        self.retire(&id.0.partition(id.1), why);
    }

    /// Stops a partition's run on this host and keeps it until a later take-over of the same
    /// partition here has waited for it to settle.
    fn retire(&self, name: &BindingName, why: StorageError) {
        if let Some(p) = self.parts.lock().expect("lock").remove(name) {
            p.stop(why);
            self.retired.lock().expect("lock").insert(name.clone(), p);
        }
    }
}

/// The JetStream store of one weir host.
pub struct NatsStorage {
    inner: Arc<Inner>,
    ownership: Arc<ownership::Ownership>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for NatsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStorage")
            .field("servers", &self.inner.cfg.servers)
            .field("host", &self.inner.host_id)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsStorage {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl NatsStorage {
    /// Connects to the cluster of `config.broker` and makes the buckets weir needs (not the
    /// destinations' streams: [`Storage::open_log`] does).
    pub fn connect(config: &Config) -> Result<NatsStorage, StorageError> {
        let cfg = config
            .broker
            .nats()
            .ok_or_else(|| StorageError::Unsupported("the config's broker is not nats".into()))?
            .clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-nats")
            .enable_all()
            .build()
            .map_err(remote)?;
        let handle = runtime.handle().clone();
        let mut retention: HashMap<DestinationName, crate::config::Retention> = config
            .retention
            .iter()
            .map(|(d, r)| (d.clone(), *r))
            .collect();
        retention.insert(
            DestinationName::reply_inbox(),
            crate::config::Retention {
                max_age: Some(config.server.reply_retention),
                ..Default::default()
            },
        );
        let c = cfg.clone();
        let (js, client) = runtime.block_on(async move { connect(&c).await })?;
        // 1 MiB, the servers' default, if the server did not say.
        let max_payload = Some(client.server_info().max_payload)
            .filter(|m| *m > 0)
            .unwrap_or(1 << 20);
        let r = cfg.replicas;
        let (commits, leases, hosts, plugin_kv) = runtime.block_on({
            let (js, lease) = (js.clone(), cfg.lease);
            retrying(move || {
                let js = js.clone();
                async move {
                    let commits = bucket(&js, layout::COMMITS, r, None).await?;
                    let leases = bucket(&js, layout::LEASES, r, Some(lease)).await?;
                    let hosts = bucket(&js, layout::HOSTS, r, Some(lease)).await?;
                    let plugin_kv = bucket(&js, layout::PLUGIN_KV, r, None).await?;
                    Ok::<_, StorageError>((commits, leases, hosts, plugin_kv))
                }
            })
        })?;
        let mirror = Arc::new(kv::Mirror::new(plugin_kv));
        runtime.spawn(Arc::clone(&mirror).follow());
        runtime.block_on(mirror.caught_up())?;
        let inner = Arc::new(Inner {
            handle,
            js,
            cfg,
            host_id: uuid::Uuid::now_v7().simple().to_string(),
            logs: Mutex::default(),
            parts: Mutex::default(),
            retired: Mutex::default(),
            kv: mirror,
            commits,
            leases,
            hosts,
            retention,
            max_payload,
        });
        tracing::info!(host = %inner.host_id, servers = ?inner.cfg.servers, "connected to NATS JetStream");
        Ok(NatsStorage {
            inner,
            ownership: Arc::default(),
            runtime: Some(runtime),
        })
    }

    /// Starts claiming partitions of `bindings` (name and source); the receiver says which
    /// ones this host runs now. An engine whose partition leaves the set must stop, then be
    /// reported with [`NatsStorage::release`].
    pub fn own(
        &self,
        bindings: Vec<(BindingName, DestinationName)>,
    ) -> watch::Receiver<std::collections::BTreeSet<PartitionId>> {
        let rx = self.ownership.active.subscribe();
        let (own, inner) = (Arc::clone(&self.ownership), Arc::clone(&self.inner));
        self.inner.handle.spawn(own.run(inner, bindings));
        rx
    }

    /// The plugin versions the hosts of this cluster share (makes their stream and bucket).
    pub fn plugin_versions(&self) -> Result<Arc<dyn crate::deploy::SharedVersions>, StorageError> {
        Ok(Arc::new(plugins::NatsPluginVersions::open(Arc::clone(
            &self.inner,
        ))?))
    }

    /// Gives a partition back once its engine stopped.
    pub async fn release(&self, id: PartitionId) {
        let (own, inner) = (Arc::clone(&self.ownership), Arc::clone(&self.inner));
        let _ = self
            .inner
            .handle
            .spawn(async move { own.release(&inner, &id).await })
            .await;
    }

    /// Partitions of this binding this host runs now, and the lowest cursor among them.
    fn lowest_cursor(&self, binding: &BindingName) -> Option<Offset> {
        let parts = self.inner.parts.lock().expect("lock");
        parts
            .values()
            .filter(|p| p.name.split_partition().is_some_and(|(b, _)| &b == binding))
            .map(|p| p.cursor())
            .min()
    }
}

/// How long starting up waits for a cluster that answers with time-outs (one recovering from a
/// lost node elects its stream leaders again).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `f` again after a failure until it succeeds or [`SETUP_PATIENCE`] is over.
async fn retrying<T, F, Fut>(mut f: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e @ StorageError::Remote(_)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("nats: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect(
    cfg: &NatsConfig,
) -> Result<(jetstream::Context, async_nats::Client), StorageError> {
    let mut opts = match &cfg.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                StorageError::Remote(format!(
                    "cannot read the credentials file {}: {e}",
                    path.display()
                ))
            })?,
        NatsAuth::UserPassword(u, p) => {
            async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
        }
        NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
    };
    if let Some(ca) = &cfg.tls.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &cfg.tls.client {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let opts = opts
        .name("weir")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)));
    let servers: Vec<async_nats::ServerAddr> = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| StorageError::Remote(format!("server {s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let client = tokio::time::timeout(Duration::from_secs(30), opts.connect(servers))
        .await
        .map_err(|_| {
            StorageError::Remote(format!("cannot reach any of {:?} within 30 s", cfg.servers))
        })?
        .map_err(remote)?;
    Ok((jetstream::new(client.clone()), client))
}

/// Makes a key-value bucket's stream the way `create_key_value` would (which fails to parse
/// nats-server 2.9's account info), then opens it.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<Store, StorageError> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: max_age.unwrap_or_default(),
        allow_rollup: true,
        deny_delete: true,
        // Every read goes to the stream's leader. A direct get may be answered by any replica,
        // and on nats-server before 2.9.17 a replica that restarted answers with revisions
        // from before its kill until it catches up (nats-server#4162): a host then takes a
        // stale revision for the bucket's and its compare-and-set writes of the key fail.
        allow_direct: false,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut s = js.get_or_create_stream(config).await.map_err(|e| {
        StorageError::Remote(format!(
            "cannot create the bucket `{name}` with {replicas} replicas: {e}"
        ))
    })?;
    check_replicas(&mut s, replicas).await?;
    if s.cached_info().config.allow_direct {
        // Made by an earlier weir with direct gets on: turn them off (see above).
        let mut updated = s.cached_info().config.clone();
        updated.allow_direct = false;
        js.update_stream(updated).await.map_err(|e| {
            StorageError::Remote(format!(
                "cannot turn off direct gets on the bucket `{name}`: {e}"
            ))
        })?;
    }
    js.get_key_value(name).await.map_err(remote)
}

/// Refuses a stream kept with fewer replicas than asked (JetStream 2.9 answers with what it
/// made, which is all that can be trusted).
async fn check_replicas(s: &mut stream::Stream, replicas: usize) -> Result<(), StorageError> {
    let info = s.info().await.map_err(remote)?;
    if info.config.num_replicas != replicas {
        return Err(StorageError::Unsupported(format!(
            "stream `{}` has {} replicas, the config asks for {replicas}; change `broker.nats.replicas` or the stream",
            info.config.name, info.config.num_replicas
        )));
    }
    Ok(())
}

impl Storage for NatsStorage {
    fn open_log(&self, name: &DestinationName) -> Result<(), StorageError> {
        if self.has_log(name) {
            return Ok(());
        }
        let inner = &self.inner;
        let description = format!(
            "weir destination `{name}`, {} partitions",
            inner.cfg.partitions
        );
        let config = stream::Config {
            name: layout::stream(name),
            description: Some(description.clone()),
            subjects: vec![layout::subjects(name)],
            num_replicas: inner.cfg.replicas,
            duplicate_window: inner.cfg.duplicate_window,
            max_age: inner
                .retention
                .get(name)
                .and_then(|r| r.max_age)
                .unwrap_or_default(),
            max_bytes: inner
                .retention
                .get(name)
                .and_then(|r| r.max_bytes)
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        };
        let (js, replicas, window) = (
            inner.js.clone(),
            inner.cfg.replicas,
            inner.cfg.duplicate_window,
        );
        let stream = inner.block(retrying(move || {
            let (js, config, description) = (js.clone(), config.clone(), description.clone());
            async move {
            let mut s = js.get_or_create_stream(config).await.map_err(remote)?;
            check_replicas(&mut s, replicas).await?;
            let info = s.info().await.map_err(remote)?;
            if info.config.description.as_deref() != Some(description.as_str()) {
                return Err(StorageError::Unsupported(format!(
                    "stream `{}` was made for another layout ({:?}); every host must use the same `broker.nats.partitions`",
                    info.config.name, info.config.description
                )));
            }
            if info.config.duplicate_window != window {
                tracing::warn!(stream = %info.config.name, "the stream's duplicate window is {:?}, not the configured {:?} (it was made with another setting)", info.config.duplicate_window, window);
            }
            Ok::<_, StorageError>(s)
            }
        }))?;
        self.inner
            .logs
            .lock()
            .expect("lock")
            .insert(name.clone(), Arc::new(LogStream::new(name.clone(), stream)));
        Ok(())
    }

    fn has_log(&self, name: &DestinationName) -> bool {
        match name.split_partition() {
            Some((d, p)) => {
                p < self.inner.cfg.partitions
                    && self.inner.logs.lock().expect("lock").contains_key(&d)
            }
            None => self.inner.logs.lock().expect("lock").contains_key(name),
        }
    }

    fn append_dedup(
        &self,
        log: &DestinationName,
        records: Vec<Record>,
    ) -> Result<Vec<(Offset, bool)>, StorageError> {
        self.inner.log(log)?;
        let publishes: Vec<(DestinationName, Record)> =
            records.into_iter().map(|r| (log.clone(), r)).collect();
        self.check_publishes(&publishes)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .block(async move { streams::publish_all(&inner, &publishes).await })
    }

    fn read_key(
        &self,
        log: &DestinationName,
        key: &str,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let stream = self.inner.log(log)?.stream.clone();
        let subject = layout::subject(
            log,
            layout::partition_of_key(key, self.inner.cfg.partitions),
        );
        let key = key.to_owned();
        self.inner
            .block(async move { streams::read_key(stream, subject, key, from, max).await })
    }

    fn offset_at_time(
        &self,
        log: &DestinationName,
        timestamp_ms: u64,
    ) -> Result<Offset, StorageError> {
        let mut stream = self.inner.log(log)?.stream.clone();
        self.inner.block(async move {
            let state = stream.info().await.map_err(remote)?.state.clone();
            // Sequences [lo, hi) may hold the first record at or after the time.
            let (mut lo, mut hi) = (state.first_sequence.max(1), state.last_sequence + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let at = match stream.get_raw_message(mid).await {
                    Ok(m) => streams::decode(&m.payload)?.timestamp_ms,
                    Err(_) => 0,
                };
                if at >= timestamp_ms {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Ok(Offset(lo - 1))
        })
    }

    fn read(
        &self,
        log: &DestinationName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        if let Some((d, p)) = log.split_partition() {
            let _ = (d, p);
            return match self.partition_of_log(log) {
                Some(part) => Ok(part.read(from, max)),
                None => Err(StorageError::UnknownLog(log.clone())),
            };
        }
        self.inner.log(log)?.read(&self.inner, from, max)
    }

    fn watch_end(&self, log: &DestinationName) -> Result<watch::Receiver<Offset>, StorageError> {
        if log.split_partition().is_some() {
            return match self.partition_of_log(log) {
                Some(part) => Ok(part.watch_end()),
                None => Err(StorageError::UnknownLog(log.clone())),
            };
        }
        Ok(self.inner.log(log)?.follower(&self.inner)?.end.subscribe())
    }

    fn cursor(&self, binding: &BindingName) -> Offset {
        if let Some(p) = self.inner.part(binding) {
            return p.cursor();
        }
        if binding.split_partition().is_none()
            && let Some(c) = self.lowest_cursor(binding)
        {
            return c;
        }
        let (commits, key) = (self.inner.commits.clone(), layout::cursor_key(binding));
        self.inner.block(async move {
            match commits.get(key).await {
                Ok(Some(v)) if v.len() == 8 => {
                    Offset(u64::from_le_bytes(v[..].try_into().expect("8 bytes")))
                }
                _ => Offset(0),
            }
        })
    }

    fn is_acked(&self, binding: &BindingName, offset: Offset) -> bool {
        self.inner.part(binding).is_some_and(|p| p.is_acked(offset))
    }

    fn advance_cursor(&self, cursor: &BindingName, to: Offset) -> Result<(), StorageError> {
        let (commits, key) = (self.inner.commits.clone(), layout::cursor_key(cursor));
        self.inner.block(async move {
            loop {
                let entry = commits.entry(&key).await.map_err(remote)?;
                let (now, rev) = match &entry {
                    Some(e) if e.value.len() == 8 => (
                        u64::from_le_bytes(e.value[..].try_into().expect("8 bytes")),
                        e.revision,
                    ),
                    Some(e) => (0, e.revision),
                    None => (0, 0),
                };
                if now >= to.0 {
                    return Ok(());
                }
                match commits
                    .update(&key, to.0.to_le_bytes().to_vec().into(), rev)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                        continue;
                    }
                    Err(e) => return Err(remote(e)),
                }
            }
        })
    }

    fn begin_delivery(&self, binding: &BindingName, offset: Offset) -> Result<u32, StorageError> {
        Ok(self.begin_deliveries(binding, &[offset])?[0])
    }

    fn begin_deliveries(
        &self,
        binding: &BindingName,
        offsets: &[Offset],
    ) -> Result<Vec<u32>, StorageError> {
        let part = self
            .inner
            .part(binding)
            .ok_or_else(|| StorageError::Fenced(binding.clone()))?;
        let (counts, done) = part.begin_deliveries(offsets)?;
        wait(done)?;
        Ok(counts)
    }

    fn set_deliveries(
        &self,
        binding: &BindingName,
        counts: &[(Offset, u32)],
    ) -> Result<(), StorageError> {
        if let Some(p) = self.inner.part(binding) {
            p.set_deliveries(counts);
        }
        Ok(())
    }

    fn lease(
        &self,
        binding: &BindingName,
        _offset: Offset,
        _visibility: Duration,
    ) -> Result<u32, StorageError> {
        Err(StorageError::Unsupported(format!(
            "leases of `{binding}`: visibility timeouts are not available on NATS"
        )))
    }

    fn expired_leases(&self, _binding: &BindingName, _now_ms: u64) -> Vec<Offset> {
        Vec::new()
    }

    fn kv_get(&self, plugin: &PluginName, key: &str) -> Option<Vec<u8>> {
        self.inner.kv.get(plugin, key)
    }

    fn kv_list(
        &self,
        plugin: &PluginName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        self.inner.kv.list(plugin, prefix, start_after, limit)
    }

    fn usage(&self, log: &DestinationName) -> Result<(Offset, u64), StorageError> {
        let mut stream = self.inner.log(log)?.stream.clone();
        self.inner.block(async move {
            let state = stream.info().await.map_err(remote)?.state.clone();
            Ok((Offset(state.first_sequence.saturating_sub(1)), state.bytes))
        })
    }

    fn check_publishes(&self, publishes: &[(DestinationName, Record)]) -> Result<(), StorageError> {
        for (dest, record) in publishes {
            if !self.inner.logs.lock().expect("lock").contains_key(dest) {
                return Err(StorageError::UnknownLog(dest.clone()));
            }
            let size = streams::encode(dest, record).len();
            if size + 1024 > self.inner.max_payload {
                return Err(StorageError::Unsupported(format!(
                    "a record of {size} bytes for `{dest}` is larger than the NATS servers' max_payload ({} bytes) allows",
                    self.inner.max_payload
                )));
            }
        }
        Ok(())
    }

    fn submit(&self, commit: Commit) -> Result<CommitTicket, StorageError> {
        if let Some((binding, _)) = commit.acks.first() {
            let part = self
                .inner
                .part(binding)
                .ok_or_else(|| StorageError::Fenced(binding.clone()))?;
            self.check_publishes(&commit.publishes)?;
            return part.submit(&self.inner, commit);
        }
        // Publishes (external, or a handler's under at-most-once) and key-value writes
        // outside any partition: applied directly.
        self.check_publishes(&commit.publishes)?;
        let (tx, rx) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        if let Some(kv) = &commit.kv {
            inner.kv.stage(kv);
        }
        self.inner.handle.spawn(async move {
            let done = streams::publish_all(&inner, &commit.publishes).await;
            if let Some((plugin, writes)) = commit.kv {
                let mut last: std::collections::BTreeMap<String, Option<Vec<u8>>> =
                    Default::default();
                for (k, v) in writes {
                    last.insert(k, v);
                }
                let writes = last
                    .into_iter()
                    .map(|(k, v)| ((plugin.clone(), k), (v, 1)))
                    .collect();
                inner.kv.apply(writes, false).await;
            }
            let _ = tx.send(done.map(|d| d.into_iter().map(|(o, _)| o).collect()));
        });
        Ok(CommitTicket::remote(rx))
    }
}

impl NatsStorage {
    fn partition_of_log(&self, log: &DestinationName) -> Option<Arc<Partition>> {
        let (d, p) = log.split_partition()?;
        let parts = self.inner.parts.lock().expect("lock");
        parts
            .values()
            .find(|x| x.source == d && x.index == p)
            .cloned()
    }
}
