//! Plugin key-value state on JetStream: one bucket (`weir_kv`) for every plugin, mirrored in
//! memory on every host, because [`crate::storage::Storage::kv_get`] is synchronous and called
//! from inside a running plugin. A watcher keeps the mirror current with other hosts' writes;
//! this host's own writes are visible in it at once (at submit) and applied to the bucket with
//! compare-and-set on the revision the mirror last saw.
//!
//! **Invariant:** a key with a write of this host not yet applied is never overwritten in the
//! mirror by the watcher (its pending count is above zero), so an invocation always reads the
//! value the invocations before it wrote.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::layout;
use super::remote;
use crate::names::PluginName;
use crate::storage::{KvWrites, StorageError};

/// A plugin's key.
pub(super) type KvKey = (PluginName, String);
/// Final values to apply, each with how many staged writes it covers.
pub(super) type KvApply = Vec<(KvKey, (Option<Vec<u8>>, u32))>;

#[derive(Debug, Default)]
struct Meta {
    /// The bucket revision of the value the mirror holds as applied (0: none seen).
    revision: u64,
    /// Writes of this host staged but not yet applied.
    pending: u32,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<PluginName, BTreeMap<String, Vec<u8>>>,
    meta: HashMap<KvKey, Meta>,
}

/// The in-memory mirror of the plugin key-value bucket.
#[derive(Debug)]
pub(super) struct Mirror {
    pub store: Store,
    state: Mutex<State>,
    /// The highest bucket revision the watcher delivered.
    seen: watch::Sender<u64>,
    /// Writes that met another writer's value (keys shared across partitions).
    pub conflicts: std::sync::atomic::AtomicU64,
    /// Makes the watcher start again from the last revision it saw (it fell silent).
    restart: tokio::sync::Notify,
}

/// How long [`Mirror::caught_up`] waits for the watcher before restarting it.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a key may read older in the bucket than in the mirror before a write takes the
/// bucket's revision and writes the mirror's value again (see [`Applied::Behind`]).
const BEHIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What applying one write came to.
enum Applied {
    Done,
    Conflict(String),
    /// The bucket answered with a revision of the key below one this host saw applied. A
    /// stream leader elected after a node kill can answer before it has applied everything
    /// committed (nats-server 2.9), so this is taken for a stale answer and tried again; only
    /// if it lasts [`BEHIND_PATIENCE`] is it taken for writes the bucket lost.
    Behind {
        rev: u64,
        seen: u64,
    },
}

impl Mirror {
    pub fn new(store: Store) -> Mirror {
        Mirror {
            store,
            state: Mutex::default(),
            seen: watch::Sender::new(0),
            conflicts: Default::default(),
            restart: tokio::sync::Notify::new(),
        }
    }

    /// Follows the bucket from its start (the latest value per key, then every change) until
    /// the task is dropped; restarts from the last revision seen after an error.
    pub async fn follow(self: std::sync::Arc<Self>) {
        loop {
            let from = *self.seen.borrow();
            let watch = if from == 0 {
                self.store.watch_with_history(">").await
            } else {
                self.store.watch_all_from_revision(from + 1).await
            };
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("nats: cannot watch the key-value bucket: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    e = watch.next() => e,
                    () = self.restart.notified() => {
                        tracing::warn!("nats: the key-value watcher fell behind; starting it again");
                        break;
                    }
                };
                let Some(entry) = entry else { break };
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("nats: key-value watch failed: {e}; resuming");
                        break;
                    }
                };
                if let Some((plugin, key)) = layout::parse_kv_key(&entry.key) {
                    let value = (entry.operation == Operation::Put).then(|| entry.value.to_vec());
                    self.remote_write(plugin, key, value, entry.revision);
                }
                self.seen.send_modify(|s| *s = (*s).max(entry.revision));
            }
        }
    }

    fn remote_write(&self, plugin: PluginName, key: String, value: Option<Vec<u8>>, rev: u64) {
        let mut s = self.state.lock().expect("mirror lock");
        let meta = s.meta.entry((plugin.clone(), key.clone())).or_default();
        if meta.pending > 0 || rev <= meta.revision {
            return;
        }
        meta.revision = rev;
        let map = s.values.entry(plugin).or_default();
        match value {
            Some(v) => map.insert(key, v),
            None => map.remove(&key),
        };
    }

    /// Waits until the mirror holds everything the bucket held when this was called.
    pub async fn caught_up(&self) -> Result<(), StorageError> {
        let mut stream = self.store.stream.clone();
        let last = stream.info().await.map_err(remote)?.state.last_sequence;
        let mut seen = self.seen.subscribe();
        // A watcher can fall silent (its consumer went away while this host was paused, say):
        // start it again after a while, and again, until it delivers.
        for _ in 0..6 {
            match tokio::time::timeout(CATCH_UP, seen.wait_for(|s| *s >= last)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(_)) => break,
                Err(_) => self.restart.notify_one(),
            }
        }
        Err(StorageError::Remote(format!(
            "the key-value mirror did not catch up with revision {last}"
        )))
    }

    pub fn get(&self, plugin: &PluginName, key: &str) -> Option<Vec<u8>> {
        let s = self.state.lock().expect("mirror lock");
        s.values.get(plugin)?.get(key).cloned()
    }

    pub fn list(
        &self,
        plugin: &PluginName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let s = self.state.lock().expect("mirror lock");
        s.values.get(plugin).map_or_else(Vec::new, |m| {
            crate::storage::list_keys(m, prefix, start_after, limit)
        })
    }

    /// Makes a commit's writes visible at once; each key counts one pending write until
    /// [`Mirror::apply`] is told about it.
    pub fn stage(&self, writes: &KvWrites) {
        let (plugin, writes) = writes;
        let mut s = self.state.lock().expect("mirror lock");
        let mut keys = std::collections::HashSet::new();
        for (key, value) in writes {
            let map = s.values.entry(plugin.clone()).or_default();
            match value {
                Some(v) => map.insert(key.clone(), v.clone()),
                None => map.remove(key),
            };
            keys.insert(key.clone());
        }
        for key in keys {
            s.meta.entry((plugin.clone(), key)).or_default().pending += 1;
        }
    }

    /// Applies the final value of each written key to the bucket, with compare-and-set on the
    /// revision the mirror holds, all at once. `pending` is how many staged writes each key's
    /// value covers. With `reapply` (a take-over re-applying the last commit record), a key
    /// whose value is already the one written counts as applied.
    pub async fn apply(self: &std::sync::Arc<Self>, writes: KvApply, reapply: bool) {
        let mut tasks = tokio::task::JoinSet::new();
        for ((plugin, key), (value, pending)) in writes {
            let me = std::sync::Arc::clone(self);
            tasks.spawn(async move {
                let mut wait = std::time::Duration::from_millis(20);
                let mut behind_since: Option<std::time::Instant> = None;
                loop {
                    let rewrite = behind_since.is_some_and(|t| t.elapsed() >= BEHIND_PATIENCE);
                    match me.apply_one(&plugin, &key, value.as_deref(), reapply, rewrite).await {
                        Ok(Applied::Done) => break,
                        Ok(Applied::Behind { rev, seen }) => {
                            if behind_since.is_none() {
                                tracing::warn!(plugin = %plugin, key, "nats: the key-value bucket answered with revision {rev} of the key, this host saw {seen} applied; trying again (a stream leader that has not caught up)");
                                behind_since = Some(std::time::Instant::now());
                            }
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(std::time::Duration::from_secs(2));
                        }
                        Ok(Applied::Conflict(why)) => {
                            me.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::error!(plugin = %plugin, key, "nats: key-value write not applied: {why}");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(plugin = %plugin, key, "nats: key-value write failed: {e}; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(std::time::Duration::from_secs(2));
                        }
                    }
                }
                let mut s = me.state.lock().expect("mirror lock");
                if let Some(m) = s.meta.get_mut(&(plugin, key)) {
                    m.pending = m.pending.saturating_sub(pending);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Takes back staged writes that will never be applied (their commit was refused): each
    /// key counts `n` fewer pending writes and, once none is left, holds the bucket's value
    /// again (the watcher skipped the key's changes while it had pending writes).
    pub async fn unstage(&self, keys: Vec<(KvKey, u32)>) {
        for ((plugin, key), n) in keys {
            {
                let mut s = self.state.lock().expect("mirror lock");
                if let Some(m) = s.meta.get_mut(&(plugin.clone(), key.clone())) {
                    m.pending = m.pending.saturating_sub(n);
                }
            }
            let k = layout::kv_key(&plugin, &key);
            let mut wait = std::time::Duration::from_millis(20);
            let entry = loop {
                match self.store.entry(&k).await {
                    Ok(e) => break e,
                    Err(e) => {
                        tracing::warn!(plugin = %plugin, key, "nats: cannot read a key back: {e}; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(2));
                    }
                }
            };
            let mut s = self.state.lock().expect("mirror lock");
            let meta = s.meta.entry((plugin.clone(), key.clone())).or_default();
            if meta.pending > 0 {
                continue;
            }
            let (value, rev) = match entry {
                Some(e) if e.operation == Operation::Put => (Some(e.value.to_vec()), e.revision),
                Some(e) => (None, e.revision),
                None => (None, 0),
            };
            // The watcher may have delivered a newer value while the key was being read back.
            if rev < meta.revision {
                continue;
            }
            meta.revision = rev;
            let map = s.values.entry(plugin).or_default();
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
    }

    async fn apply_one(
        &self,
        plugin: &PluginName,
        key: &str,
        value: Option<&[u8]>,
        reapply: bool,
        rewrite: bool,
    ) -> Result<Applied, StorageError> {
        let k = layout::kv_key(plugin, key);
        let revision = {
            let s = self.state.lock().expect("mirror lock");
            let revision = s
                .meta
                .get(&(plugin.clone(), key.to_owned()))
                .map_or(0, |m| m.revision);
            let current = s.values.get(plugin).and_then(|m| m.get(key));
            if reapply && current.map(Vec::as_slice) == value {
                return Ok(Applied::Done);
            }
            revision
        };
        let written = match value {
            Some(v) => self
                .store
                .update(&k, v.to_vec().into(), revision)
                .await
                .map(Some)
                .map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None if revision == 0 => return Ok(Applied::Done),
            None => match self.store.delete_expect_revision(&k, Some(revision)).await {
                Ok(()) => Ok(None),
                Err(e) => Err((e.to_string().contains("wrong last"), e.to_string())),
            },
        };
        match written {
            Ok(rev) => {
                let rev = match rev {
                    Some(r) => r,
                    // A delete does not say its revision: ask.
                    None => self.revision_of(&k).await?,
                };
                self.set_applied(plugin, key, rev, reapply.then_some(value));
                Ok(Applied::Done)
            }
            Err((true, _)) => {
                // Someone wrote the key since the mirror saw it: this host's own write applied
                // before (a take-over's re-apply, an ambiguous answer), or another writer.
                let entry = self.store.entry(&k).await.map_err(remote)?;
                let (now, rev) = match &entry {
                    Some(e) if e.operation == Operation::Put => {
                        (Some(e.value.to_vec()), e.revision)
                    }
                    Some(e) => (None, e.revision),
                    None => (None, 0),
                };
                if now.as_deref() == value {
                    self.set_applied(plugin, key, rev, reapply.then_some(value));
                    Ok(Applied::Done)
                } else if rev < revision && !rewrite {
                    // Never take an older value for the key's: a stale answer (see
                    // `Applied::Behind`). The mirror keeps what it holds.
                    Ok(Applied::Behind {
                        rev,
                        seen: revision,
                    })
                } else if rev < revision {
                    // Older for `BEHIND_PATIENCE`: the bucket went back (JetStream lost
                    // acknowledged writes). The mirror's value is the committed one, so it is
                    // written again over what the bucket holds now; without this every later
                    // write of the key would be refused. Should the answer have been stale
                    // after all, the write's compare-and-set fails and the key is read again.
                    tracing::error!(plugin = %plugin, key, "nats: the key-value bucket went back (revision {rev}, this host saw {revision}) for {BEHIND_PATIENCE:?}; writing the key again");
                    let mut s = self.state.lock().expect("mirror lock");
                    if let Some(m) = s.meta.get_mut(&(plugin.clone(), key.to_owned())) {
                        m.revision = rev;
                    }
                    Err(StorageError::Remote(
                        "the key-value bucket went back".into(),
                    ))
                } else {
                    // The mirror holds what the bucket holds, not the write that was refused
                    // (unless the watcher already brought something newer).
                    let mut s = self.state.lock().expect("mirror lock");
                    let meta = s.meta.entry((plugin.clone(), key.to_owned())).or_default();
                    if rev >= meta.revision {
                        meta.revision = rev;
                        let map = s.values.entry(plugin.clone()).or_default();
                        match now {
                            Some(v) => map.insert(key.to_owned(), v),
                            None => map.remove(key),
                        };
                    }
                    drop(s);
                    Ok(Applied::Conflict(format!(
                        "the key changed under this host's write (revision {rev}, expected {revision}): written by another partition or a host that took this one over"
                    )))
                }
            }
            Err((false, e)) => Err(StorageError::Remote(e)),
        }
    }

    async fn revision_of(&self, k: &str) -> Result<u64, StorageError> {
        Ok(self
            .store
            .entry(k)
            .await
            .map_err(remote)?
            .map_or(0, |e| e.revision))
    }

    /// Records that the bucket holds this host's write at `rev`. A take-over's re-apply
    /// (`value` given) staged nothing, so the mirror may still hold the key's value from
    /// before the write: it takes the written value too, unless the key has writes of this
    /// host staged (their value is newer) or the watcher already brought a later revision.
    /// (The watcher skips revisions at or below the one recorded here, so without this the
    /// mirror would keep the old value for good.)
    fn set_applied(&self, plugin: &PluginName, key: &str, rev: u64, value: Option<Option<&[u8]>>) {
        let mut s = self.state.lock().expect("mirror lock");
        let m = s.meta.entry((plugin.clone(), key.to_owned())).or_default();
        let newer = rev > m.revision;
        let staged = m.pending > 0;
        m.revision = m.revision.max(rev);
        if let Some(value) = value
            && newer
            && !staged
        {
            let map = s.values.entry(plugin.clone()).or_default();
            match value {
                Some(v) => map.insert(key.to_owned(), v.to_vec()),
                None => map.remove(key),
            };
        }
    }
}
