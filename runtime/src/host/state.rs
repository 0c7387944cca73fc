//! Per-instance host state (`Store` data) and the host side of every granted import: log,
//! publish, key-value and clock. Writes and publishes are buffered in [`Effects`] and applied by
//! the caller only when the invocation succeeds.
//!
//! **Invariant:** a plugin publishes only to the destinations of its `publish` grant, and, while
//! it handles a request, to that request's reply-to when it is weir's reply inbox; such a publish
//! carries the request's correlation id, so it answers the request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;

use super::bindings::Outgoing;
use super::bindings::weir::plugin::{clock, kv, log, publish, types};
use super::gate::{KvGate, KvGuard};
use super::invoke::Effects;
use crate::names::{DestinationName, PluginName};
use crate::storage::{Record, Storage};

/// Largest key-value key, in bytes.
pub(super) const MAX_KV_KEY: usize = 1024;
/// Largest key-value value, in bytes.
pub(super) const MAX_KV_VALUE: usize = 1 << 20;
/// Most keys one `list-keys` call returns.
pub(super) const MAX_LIST: u32 = 1000;
/// Most messages one invocation may publish.
pub(super) const MAX_PUBLISHES: u32 = 1000;
/// Most bytes of effects (values written plus payloads published) one invocation may buffer.
pub(super) const MAX_EFFECT_BYTES: usize = 32 << 20;
/// Longest log line kept; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// What a plugin was granted, shared by all its instances.
pub(crate) struct Grants {
    pub plugin: PluginName,
    pub publish: BTreeSet<DestinationName>,
    pub max_message_size: usize,
    pub storage: Arc<dyn Storage>,
    pub kv_gate: Arc<KvGate>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("plugin", &self.plugin)
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

/// `Store` data of one instance.
pub(crate) struct HostState {
    pub grants: Arc<Grants>,
    pub effects: Effects,
    /// The plugin's key-value gate, taken at the invocation's first key-value call.
    pub kv_guard: Option<KvGuard>,
    effect_bytes: usize,
    /// Id of the message being handled, for log lines.
    pub message_id: String,
    /// When the message being handled is a request: its reply-to (the reply inbox) and its
    /// correlation id.
    reply: Option<(DestinationName, String)>,
    pub memory_limit: usize,
    /// Set when the instance asked for more memory than its limit.
    pub memory_exceeded: bool,
    epoch: Instant,
}

impl HostState {
    pub fn new(grants: Arc<Grants>, memory_limit: usize) -> HostState {
        HostState {
            grants,
            effects: Effects::default(),
            kv_guard: None,
            effect_bytes: 0,
            message_id: String::new(),
            reply: None,
            memory_limit,
            memory_exceeded: false,
            epoch: Instant::now(),
        }
    }

    /// Resets per-invocation state for handling `message`.
    pub fn begin(&mut self, message: &types::Message) {
        self.effects = Effects::default();
        self.kv_guard = None;
        self.effect_bytes = 0;
        self.memory_exceeded = false;
        self.message_id.clear();
        self.message_id.push_str(&message.id);
        self.reply = match (&message.reply_to, &message.correlation_id) {
            (Some(to), Some(correlation_id)) if to == crate::names::REPLY_INBOX => {
                Some((DestinationName::reply_inbox(), correlation_id.clone()))
            }
            _ => None,
        };
    }

    /// Takes the plugin's key-value gate if this invocation does not hold it yet.
    fn hold_kv(&mut self) {
        if self.kv_guard.is_none() {
            self.kv_guard = Some(self.grants.kv_gate.acquire());
        }
    }

    fn charge(&mut self, bytes: usize) -> bool {
        if self.effect_bytes + bytes > MAX_EFFECT_BYTES {
            return false;
        }
        self.effect_bytes += bytes;
        true
    }
}

/// Memory and table limits of one instance.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let plugin = self.grants.plugin.as_str();
        let id = self.message_id.as_str();
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "weir::plugin", plugin, message_id = id, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "weir::plugin", plugin, message_id = id, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "weir::plugin", plugin, message_id = id, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "weir::plugin", plugin, message_id = id, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "weir::plugin", plugin, message_id = id, "{message}")
            }
        }
    }
}

impl publish::Host for HostState {
    fn publish(
        &mut self,
        destination: String,
        message: Outgoing,
    ) -> Result<(), publish::PublishError> {
        use publish::PublishError;
        let Ok(dest) = DestinationName::new(destination.as_str()) else {
            return Err(PublishError::UnknownDestination(destination));
        };
        // Answering the request being handled needs no grant.
        let correlation_id = match &self.reply {
            Some((to, correlation_id)) if *to == dest => Some(correlation_id.clone()),
            _ if self.grants.publish.contains(&dest) => None,
            _ => return Err(PublishError::NotPermitted(destination)),
        };
        if !self.grants.storage.has_log(&dest) {
            return Err(PublishError::UnknownDestination(destination));
        }
        // The limits of an external publish, and no `weir-` header: refused here, to the
        // guest, rather than by the store when the invocation commits.
        let checked = crate::validate::check(
            message.key.as_deref(),
            &message.headers,
            message.payload.len(),
            self.grants.max_message_size,
        );
        if let Err(e) = checked {
            return Err(match e.byte_limit() {
                Some(limit) => PublishError::TooLarge(limit as u64),
                None => PublishError::NotPermitted(format!("{e} (publishing to `{destination}`)")),
            });
        }
        if self.effects.publishes.len() >= MAX_PUBLISHES as usize {
            return Err(PublishError::TooMany(MAX_PUBLISHES));
        }
        let size = message.payload.len()
            + message.key.as_ref().map_or(0, String::len)
            + message
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if !self.charge(size) {
            return Err(PublishError::TooLarge(MAX_EFFECT_BYTES as u64));
        }
        let record = Record {
            id: crate::ids::new_message_id(),
            key: message.key,
            headers: message.headers,
            payload: message.payload,
            timestamp_ms: crate::ids::now_ms(),
            reply_to: None,
            correlation_id,
        };
        self.effects.publishes.push((dest, record));
        Ok(())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        if key.len() > MAX_KV_KEY {
            return Err(kv::KvError::TooLarge(MAX_KV_KEY as u64));
        }
        if let Some(v) = self.effects.kv.get(&key) {
            return Ok(v.clone());
        }
        self.hold_kv();
        Ok(self.grants.storage.kv_get(&self.grants.plugin, &key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        if key.len() > MAX_KV_KEY {
            return Err(kv::KvError::TooLarge(MAX_KV_KEY as u64));
        }
        if value.len() > MAX_KV_VALUE {
            return Err(kv::KvError::TooLarge(MAX_KV_VALUE as u64));
        }
        if !self.charge(key.len() + value.len()) {
            return Err(kv::KvError::TooLarge(MAX_EFFECT_BYTES as u64));
        }
        self.hold_kv();
        self.effects.kv.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        if key.len() > MAX_KV_KEY {
            return Err(kv::KvError::TooLarge(MAX_KV_KEY as u64));
        }
        if !self.charge(key.len()) {
            return Err(kv::KvError::TooLarge(MAX_EFFECT_BYTES as u64));
        }
        self.hold_kv();
        self.effects.kv.insert(key, None);
        Ok(())
    }

    fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, kv::KvError> {
        if prefix.len() > MAX_KV_KEY || start_after.as_ref().is_some_and(|s| s.len() > MAX_KV_KEY) {
            return Err(kv::KvError::TooLarge(MAX_KV_KEY as u64));
        }
        self.hold_kv();
        let limit = limit.min(MAX_LIST) as usize;
        let after = start_after.as_deref();
        let in_range = |k: &str| k.starts_with(prefix.as_str()) && after.is_none_or(|a| k > a);
        // Keys this invocation deleted may hide stored ones: ask for that many more.
        let deleted = self
            .effects
            .kv
            .iter()
            .filter(|(k, v)| v.is_none() && in_range(k))
            .count();
        let stored =
            self.grants
                .storage
                .kv_list(&self.grants.plugin, &prefix, after, limit + deleted);
        let mut keys: BTreeSet<String> = stored.into_iter().collect();
        for (k, v) in &self.effects.kv {
            if in_range(k) {
                match v {
                    Some(_) => keys.insert(k.clone()),
                    None => keys.remove(k),
                };
            }
        }
        Ok(keys.into_iter().take(limit).collect())
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        crate::ids::now_ms()
    }

    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
