//! Key-value state private to the plugin.
//!
//! Each plugin sees only its own keys. Writes made during an invocation commit together with
//! it: under exactly-once delivery they become durable exactly when the message is
//! acknowledged, and are discarded when the invocation fails.
//!
//! ```no_run
//! # fn f() -> Result<(), weir_sdk::HandlerError> {
//! let hits = weir_sdk::kv::get("hits")?
//!     .and_then(|v| <[u8; 8]>::try_from(v).ok())
//!     .map_or(0, u64::from_le_bytes);
//! weir_sdk::kv::set("hits", (hits + 1).to_le_bytes())?;
//! # Ok(()) }
//! ```

use crate::KvError;
use crate::bindings::weir::plugin::kv as host;

/// How many keys [`list_all_keys`] asks for per host call.
const PAGE: u32 = 1000;

/// Reads the value of `key`, `None` when it is not set.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    host::get(key)
}

/// Sets `key` to `value`, replacing any previous value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    host::set(key, value.as_ref())
}

/// Deletes `key`; deleting a missing key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    host::delete(key)
}

/// Lists keys starting with `prefix` in byte order, strictly after `start_after` when given,
/// at most `limit` of them (the host may return fewer). Pass the last key returned as the next
/// `start_after` to page through.
pub fn list_keys(
    prefix: &str,
    start_after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, KvError> {
    host::list_keys(prefix, start_after, limit)
}

/// Lists every key starting with `prefix`, in byte order, paging through [`list_keys`].
pub fn list_all_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    let mut keys: Vec<String> = Vec::new();
    loop {
        let page = list_keys(prefix, keys.last().map(String::as_str), PAGE)?;
        if page.is_empty() {
            return Ok(keys);
        }
        keys.extend(page);
    }
}
