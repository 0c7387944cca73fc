//! Where weir's things live on JetStream: stream, subject, bucket and key names, and which
//! partition a record goes to. Names are escaped so that every weir name maps to exactly one
//! JetStream name and back: letters, digits and `-` stay, every other byte becomes `_` and two
//! hex digits (`orders.eu` is `orders_2eeu`).

use crate::names::{BindingName, DestinationName, PluginName};
use crate::storage::Record;

/// Bucket of commit records (one per binding partition) and weir's own cursors.
pub const COMMITS: &str = "weir_commits";
/// Bucket of partition leases (entries expire after the lease).
pub const LEASES: &str = "weir_leases";
/// Bucket of live hosts (entries expire after the lease).
pub const HOSTS: &str = "weir_hosts";
/// Bucket of every plugin's key-value state.
pub const PLUGIN_KV: &str = "weir_kv";
/// Bucket of each plugin's active-version record (see `plugins.rs`).
pub const PLUGIN_VERSIONS: &str = "weir_plugins";
/// Stream of plugin components, by SHA-256.
pub const PLUGIN_COMPONENTS: &str = "WEIR_plugins";
/// The subjects of [`PLUGIN_COMPONENTS`] start with this.
pub const PLUGIN_SUBJECTS: &str = "weir.plugins";

/// `name` with every byte but `[A-Za-z0-9-]` written as `_xx`.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape`].
pub fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'_' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The stream of a destination.
pub fn stream(d: &DestinationName) -> String {
    format!("WEIR_{}", escape(d.as_str()))
}

/// The subject of one partition of a destination.
pub fn subject(d: &DestinationName, p: u32) -> String {
    format!("weir.d.{}.{p}", escape(d.as_str()))
}

/// Every partition's subject of a destination.
pub fn subjects(d: &DestinationName) -> String {
    format!("weir.d.{}.*", escape(d.as_str()))
}

/// The partition a record goes to: by its key (FNV-1a), so a key always lands in the same
/// one, or by its id when it has none (deterministic, so a re-published output goes where the
/// first went).
pub fn partition_of(record: &Record, partitions: u32) -> u32 {
    partition_of_key(record.key.as_deref().unwrap_or(&record.id), partitions)
}

/// The partition of the records with this key (or, without a key, this id).
pub fn partition_of_key(by: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in by.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions)) as u32
}

/// The commit record's key of one binding partition.
pub fn commit_key(b: &BindingName, p: u32) -> String {
    format!("c.{}.{p}", escape(b.as_str()))
}

/// The key of a cursor weir keeps for itself (a dead-letter redrive position).
pub fn cursor_key(name: &BindingName) -> String {
    format!("cursor.{}", escape(name.as_str()))
}

/// The lease key of one binding partition.
pub fn lease_key(b: &BindingName, p: u32) -> String {
    format!("{}.{p}", escape(b.as_str()))
}

/// A plugin's key in the key-value bucket: `<plugin>.k<key>` escaped (the `k` keeps an empty
/// key a valid token).
pub fn kv_key(plugin: &PluginName, key: &str) -> String {
    format!("{}.k{}", escape(plugin.as_str()), escape(key))
}

/// The inverse of [`kv_key`].
pub fn parse_kv_key(s: &str) -> Option<(PluginName, String)> {
    let (plugin, key) = s.split_once(".k")?;
    let plugin = PluginName::from_stored(unescape(plugin)?).ok()?;
    Some((plugin, unescape(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_one_to_one() {
        for name in ["orders", "orders.eu", "a_b", "a.b", "a~redrive~q", "", "ü"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_ne!(escape("a_2eb"), escape("a.b"));
        assert_eq!(escape("orders.eu"), "orders_2eeu");
        let plugin = PluginName::new("counter").unwrap();
        for key in ["", "k", "a.b", "x.ky"] {
            let enc = kv_key(&plugin, key);
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            );
            assert_eq!(parse_kv_key(&enc), Some((plugin.clone(), key.to_owned())));
        }
    }

    #[test]
    fn a_key_keeps_its_partition() {
        let rec = |key: Option<&str>, id: &str| Record {
            id: id.into(),
            key: key.map(Into::into),
            headers: vec![],
            payload: vec![],
            timestamp_ms: 0,
            reply_to: None,
            correlation_id: None,
        };
        let p = partition_of(&rec(Some("alice"), "1"), 8);
        assert_eq!(partition_of(&rec(Some("alice"), "2"), 8), p);
        let spread: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| partition_of(&rec(Some(&format!("k{i}")), "x"), 8))
            .collect();
        assert_eq!(spread.len(), 8, "64 keys reach every one of 8 partitions");
    }
}
