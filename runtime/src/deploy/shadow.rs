//! The key-value side of shadow rebuilds: a rebuild writes its plugin's state into the shadow
//! namespace ([`PluginName::shadow`]); its swap replaces the plugin's own state with it in one
//! commit (so a crash leaves either the old state or the rebuilt one, never a mix).

use crate::names::PluginName;
use crate::storage::{Commit, KvWrites, Storage, StorageError};

/// Keys read per listing call.
const PAGE: usize = 1000;

/// The largest rebuilt state one swap commit takes, in bytes of keys and values (a journal
/// record holds at most 64 MiB).
pub const MAX_COPY_BYTES: usize = 60 << 20;

/// Every key of a namespace, in order.
fn keys(storage: &dyn Storage, ns: &PluginName) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = storage.kv_list(ns, "", out.last().map(String::as_str), PAGE);
        let done = page.len() < PAGE;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// The writes that make `to`'s state equal to `from`'s (deletes of the keys `from` lacks, then
/// every key of `from`), and their size in bytes.
pub fn copy_writes(storage: &dyn Storage, from: &PluginName, to: &PluginName) -> (KvWrites, usize) {
    let wanted = keys(storage, from);
    let mut bytes = 0;
    let mut writes = Vec::new();
    let keep: std::collections::HashSet<&str> = wanted.iter().map(String::as_str).collect();
    for k in keys(storage, to) {
        if !keep.contains(k.as_str()) {
            bytes += k.len();
            writes.push((k, None));
        }
    }
    for k in wanted {
        if let Some(v) = storage.kv_get(from, &k) {
            bytes += k.len() + v.len();
            writes.push((k, Some(v)));
        }
    }
    ((to.clone(), writes), bytes)
}

/// Makes `to`'s state equal to `from`'s in one durable commit; returns the keys written.
pub fn copy(
    storage: &dyn Storage,
    from: &PluginName,
    to: &PluginName,
) -> Result<usize, StorageError> {
    let (writes, _) = copy_writes(storage, from, to);
    let n = writes.1.len();
    if n > 0 {
        storage.commit(Commit {
            kv: Some(writes),
            ..Commit::default()
        })?;
    }
    Ok(n)
}

/// Deletes every key of a namespace (in commits of [`PAGE`] keys); returns how many.
pub fn clear(storage: &dyn Storage, ns: &PluginName) -> Result<usize, StorageError> {
    let mut n = 0;
    loop {
        let page = storage.kv_list(ns, "", None, PAGE);
        if page.is_empty() {
            return Ok(n);
        }
        n += page.len();
        storage.commit(Commit {
            kv: Some((ns.clone(), page.into_iter().map(|k| (k, None)).collect())),
            ..Commit::default()
        })?;
    }
}
