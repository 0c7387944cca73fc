//! In-memory [`Storage`]: the foundation's broker. Nothing survives a restart; the durable
//! embedded engine replaces it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::state::{Op, State};
use super::{Commit, CommitTicket, Record, Storage, StorageError, Stored};
use crate::names::{BindingName, DestinationName, Offset, PluginName};

/// Logs, cursors and key-value state in memory, behind one lock.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    logs: HashMap<DestinationName, Log>,
    state: State,
}

#[derive(Debug)]
struct Log {
    records: Vec<Arc<Record>>,
    end: watch::Sender<Offset>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-applied commit (commits validate before
        // mutating), so the data is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn open_log(&self, name: &DestinationName) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.logs.entry(name.clone()).or_insert_with(|| Log {
            records: Vec::new(),
            end: watch::channel(Offset(0)).0,
        });
        Ok(())
    }

    fn has_log(&self, name: &DestinationName) -> bool {
        self.lock().logs.contains_key(name)
    }

    fn read(
        &self,
        log: &DestinationName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let inner = self.lock();
        let log = inner
            .logs
            .get(log)
            .ok_or_else(|| StorageError::UnknownLog(log.clone()))?;
        let start = usize::try_from(from.0)
            .unwrap_or(usize::MAX)
            .min(log.records.len());
        Ok(log.records[start..]
            .iter()
            .take(max)
            .enumerate()
            .map(|(i, r)| Stored {
                offset: Offset((start + i) as u64),
                record: Arc::clone(r),
            })
            .collect())
    }

    fn watch_end(&self, log: &DestinationName) -> Result<watch::Receiver<Offset>, StorageError> {
        let inner = self.lock();
        let log = inner
            .logs
            .get(log)
            .ok_or_else(|| StorageError::UnknownLog(log.clone()))?;
        Ok(log.end.subscribe())
    }

    fn usage(&self, log: &DestinationName) -> Result<(Offset, u64), StorageError> {
        let inner = self.lock();
        let log = inner
            .logs
            .get(log)
            .ok_or_else(|| StorageError::UnknownLog(log.clone()))?;
        Ok((
            Offset(0),
            log.records.iter().map(|r| r.payload.len() as u64).sum(),
        ))
    }

    fn append_dedup(
        &self,
        log: &DestinationName,
        records: Vec<Record>,
    ) -> Result<Vec<(Offset, bool)>, StorageError> {
        // A scan: the in-memory store serves tests and benchmarks of other layers.
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let existing = {
                let inner = self.lock();
                let l = inner
                    .logs
                    .get(log)
                    .ok_or_else(|| StorageError::UnknownLog(log.clone()))?;
                l.records.iter().position(|r| r.id == record.id)
            };
            match existing {
                Some(i) => out.push((Offset(i as u64), true)),
                None => out.push((self.append(log, vec![record])?[0], false)),
            }
        }
        Ok(out)
    }

    fn read_key(
        &self,
        log: &DestinationName,
        key: &str,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError> {
        let all = self.read(log, from, usize::MAX)?;
        Ok(all
            .into_iter()
            .filter(|s| s.record.key.as_deref() == Some(key))
            .take(max)
            .collect())
    }

    fn offset_at_time(
        &self,
        log: &DestinationName,
        timestamp_ms: u64,
    ) -> Result<Offset, StorageError> {
        let inner = self.lock();
        let l = inner
            .logs
            .get(log)
            .ok_or_else(|| StorageError::UnknownLog(log.clone()))?;
        let i = l
            .records
            .iter()
            .position(|r| r.timestamp_ms >= timestamp_ms)
            .unwrap_or(l.records.len());
        Ok(Offset(i as u64))
    }

    fn cursor(&self, binding: &BindingName) -> Offset {
        self.lock()
            .state
            .cursors
            .get(binding)
            .copied()
            .unwrap_or_default()
    }

    fn is_acked(&self, binding: &BindingName, offset: Offset) -> bool {
        self.lock().state.is_acked(binding, offset)
    }

    fn lease(
        &self,
        binding: &BindingName,
        offset: Offset,
        visibility: std::time::Duration,
    ) -> Result<u32, StorageError> {
        let count = self.begin_delivery(binding, offset)?;
        let until = crate::ids::now_ms().saturating_add(visibility.as_millis() as u64);
        self.lock().state.lease(binding, offset, until);
        Ok(count)
    }

    fn expired_leases(&self, binding: &BindingName, now_ms: u64) -> Vec<Offset> {
        self.lock().state.expired_leases(binding, now_ms)
    }

    fn advance_cursor(&self, cursor: &BindingName, to: Offset) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.state.cursors.get(cursor).is_none_or(|c| *c < to) {
            inner.state.apply(Op::Cursor {
                binding: cursor.clone(),
                offset: to,
            });
        }
        Ok(())
    }

    fn begin_delivery(&self, binding: &BindingName, offset: Offset) -> Result<u32, StorageError> {
        Ok(self.begin_deliveries(binding, &[offset])?[0])
    }

    fn kv_get(&self, plugin: &PluginName, key: &str) -> Option<Vec<u8>> {
        self.lock().state.kv.get(plugin)?.get(key).cloned()
    }

    fn kv_list(
        &self,
        plugin: &PluginName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let inner = self.lock();
        let Some(map) = inner.state.kv.get(plugin) else {
            return Vec::new();
        };
        super::list_keys(map, prefix, start_after, limit)
    }

    fn begin_deliveries(
        &self,
        binding: &BindingName,
        offsets: &[Offset],
    ) -> Result<Vec<u32>, StorageError> {
        let mut inner = self.lock();
        Ok(offsets
            .iter()
            .map(|&offset| {
                let count = inner.state.deliveries(binding, offset) + 1;
                inner.state.apply(Op::Delivered {
                    binding: binding.clone(),
                    offset,
                    count,
                });
                count
            })
            .collect())
    }

    fn set_deliveries(
        &self,
        binding: &BindingName,
        counts: &[(Offset, u32)],
    ) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for &(offset, count) in counts {
            inner.state.apply(Op::Delivered {
                binding: binding.clone(),
                offset,
                count,
            });
        }
        Ok(())
    }

    fn check_publishes(&self, publishes: &[(DestinationName, Record)]) -> Result<(), StorageError> {
        let inner = self.lock();
        match publishes.iter().find(|(d, _)| !inner.logs.contains_key(d)) {
            Some((d, _)) => Err(StorageError::UnknownLog(d.clone())),
            None => Ok(()),
        }
    }

    fn submit(&self, commit: Commit) -> Result<CommitTicket, StorageError> {
        let mut inner = self.lock();
        // Validate first so that a failing commit changes nothing.
        for (dest, _) in &commit.publishes {
            if !inner.logs.contains_key(dest) {
                return Err(StorageError::UnknownLog(dest.clone()));
            }
        }
        let mut offsets = Vec::with_capacity(commit.publishes.len());
        let mut touched = Vec::new();
        for (dest, record) in commit.publishes {
            let log = inner.logs.get_mut(&dest).expect("validated above");
            if commit.dedup
                && let Some(i) = log.records.iter().position(|r| r.id == record.id)
            {
                offsets.push(Offset(i as u64));
                continue;
            }
            offsets.push(Offset(log.records.len() as u64));
            log.records.push(Arc::new(record));
            touched.push(dest);
        }
        if let Some((plugin, writes)) = commit.kv {
            for (key, value) in writes {
                inner.state.apply(match value {
                    Some(value) => Op::KvSet {
                        plugin: plugin.clone(),
                        key,
                        value,
                    },
                    None => Op::KvDelete {
                        plugin: plugin.clone(),
                        key,
                    },
                });
            }
        }
        for (binding, offset) in commit.acks {
            inner.state.apply(Op::Ack { binding, offset });
        }
        for dest in touched {
            let log = &inner.logs[&dest];
            log.end.send_replace(Offset(log.records.len() as u64));
        }
        Ok(CommitTicket::done(offsets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DestinationName {
        DestinationName::new(s).unwrap()
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.to_owned(),
            key: None,
            headers: vec![],
            payload: id.as_bytes().to_vec(),
            timestamp_ms: 0,
            reply_to: None,
            correlation_id: None,
        }
    }

    #[test]
    fn append_read_watch() {
        let s = MemoryStorage::new();
        s.open_log(&name("q")).unwrap();
        s.open_log(&name("q")).unwrap();
        let mut end = s.watch_end(&name("q")).unwrap();
        assert_eq!(
            s.append(&name("q"), vec![record("a"), record("b")])
                .unwrap(),
            vec![Offset(0), Offset(1)]
        );
        assert!(end.has_changed().unwrap());
        assert_eq!(*end.borrow_and_update(), Offset(2));
        let got = s.read(&name("q"), Offset(1), 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.id, "b");
        assert!(s.read(&name("q"), Offset(99), 10).unwrap().is_empty());
        assert!(matches!(
            s.read(&name("nope"), Offset(0), 1),
            Err(StorageError::UnknownLog(n)) if n == name("nope")
        ));
    }

    #[test]
    fn failing_commit_changes_nothing() {
        let s = MemoryStorage::new();
        s.open_log(&name("q")).unwrap();
        let plugin = PluginName::new("p").unwrap();
        let commit = Commit {
            kv: Some((plugin.clone(), vec![("k".into(), Some(b"v".to_vec()))])),
            publishes: vec![(name("q"), record("a")), (name("missing"), record("b"))],
            acks: vec![(BindingName::new("b").unwrap(), Offset(0))],
            dedup: false,
        };
        assert!(s.commit(commit).is_err());
        assert!(s.read(&name("q"), Offset(0), 10).unwrap().is_empty());
        assert_eq!(s.kv_get(&plugin, "k"), None);
        assert_eq!(s.cursor(&BindingName::new("b").unwrap()), Offset(0));
    }

    #[test]
    fn cursors_advance_and_never_go_back() {
        let s = MemoryStorage::new();
        let c = BindingName::new("b")
            .unwrap()
            .redrive_cursor(&name("b.dlq"));
        s.advance_cursor(&c, Offset(5)).unwrap();
        s.advance_cursor(&c, Offset(3)).unwrap();
        assert_eq!(s.cursor(&c), Offset(5));
        assert_eq!(s.cursor(&BindingName::new("b").unwrap()), Offset(0));
    }

    #[test]
    fn kv_list_by_prefix() {
        let s = MemoryStorage::new();
        let p = PluginName::new("p").unwrap();
        let writes = ["a", "b/1", "b/2", "b/3", "c"].map(|k| (k.to_owned(), Some(vec![1])));
        s.commit(Commit {
            kv: Some((p.clone(), writes.to_vec())),
            ..Commit::default()
        })
        .unwrap();
        assert_eq!(s.kv_list(&p, "b/", None, 10), ["b/1", "b/2", "b/3"]);
        assert_eq!(s.kv_list(&p, "b/", Some("b/1"), 1), ["b/2"]);
        assert_eq!(s.kv_list(&p, "", None, 2), ["a", "b/1"]);
        s.commit(Commit {
            kv: Some((p.clone(), vec![("a".into(), None)])),
            ..Commit::default()
        })
        .unwrap();
        assert_eq!(s.kv_get(&p, "a"), None);
    }
}
