//! Publish backpressure: a queue or topic with `max_depth` refuses publishes from outside
//! (HTTP, CLI) while its depth is at the limit, before anything is stored.
//!
//! The depth of a destination is the number of its messages the slowest binding consuming it
//! has not acknowledged: its end offset minus the lowest cursor among those bindings (a cursor
//! below the first offset still stored counts from that offset). A destination no binding
//! consumes has depth 0: nothing is waiting for a consumer, and retention bounds its size.
//!
//! Messages that handlers publish (and dead letters, and replies) are never refused: they
//! are committed together with the acknowledgement of the message that caused them, so refusing
//! one would fail that upstream message again and again, for as long as the downstream is full,
//! and eventually dead-letter it for no fault of its own. They are bounded anyway by the
//! upstream's own backlog, which its own `max_depth` can limit.
//!
//! **Invariant:** an admitted publish counts towards the depth from before its check until it
//! is visible in the log's end, so concurrent publishers never push a destination past its
//! `max_depth`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::config::Config;
use crate::names::{BindingName, DestinationName};
use crate::storage::Storage;

use super::PublishError;

/// Seconds a refused publisher is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The depth limits of the destinations that have one.
#[derive(Debug, Default)]
pub(super) struct Limits(BTreeMap<DestinationName, Limit>);

#[derive(Debug)]
struct Limit {
    max_depth: u64,
    consumers: Vec<BindingName>,
    /// Admitted publishes not yet stored (or refused by the store).
    in_flight: AtomicU64,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        let limits = config
            .max_depth
            .iter()
            .map(|(dest, max)| {
                let limit = Limit {
                    max_depth: *max,
                    consumers: consumers(config, dest),
                    in_flight: AtomicU64::new(0),
                };
                (dest.clone(), limit)
            })
            .collect();
        Limits(limits)
    }

    /// Admits one publish to `dest`, or refuses it with [`PublishError::Backpressure`]. The
    /// publish counts towards the depth until the returned guard is dropped: drop it once the
    /// record is stored (its offset is then below the log's end) or refused.
    pub fn admit(
        &self,
        storage: &dyn Storage,
        dest: &DestinationName,
    ) -> Result<Option<Admitted<'_>>, PublishError> {
        let Some(limit) = self.0.get(dest) else {
            return Ok(None);
        };
        // Counted first, then the stored depth read: every admitted publish is seen by later
        // checks, in `in_flight` or in the end offset (or both, which only refuses early).
        let before = limit.in_flight.fetch_add(1, SeqCst);
        let admitted = Admitted(&limit.in_flight);
        let depth = depth(storage, dest, &limit.consumers) + before;
        if depth >= limit.max_depth {
            return Err(PublishError::Backpressure {
                destination: dest.to_string(),
                depth,
                max_depth: limit.max_depth,
            });
        }
        Ok(Some(admitted))
    }
}

/// A publish counted towards its destination's depth; uncounted on drop.
#[derive(Debug)]
pub(super) struct Admitted<'a>(&'a AtomicU64);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// The bindings consuming `dest`.
pub(super) fn consumers(config: &Config, dest: &DestinationName) -> Vec<BindingName> {
    config
        .bindings
        .iter()
        .filter(|b| &b.source == dest)
        .map(|b| b.name.clone())
        .collect()
}

/// Messages of `dest` not yet acknowledged by the slowest of `consumers` (0 without any).
pub(super) fn depth(
    storage: &dyn Storage,
    dest: &DestinationName,
    consumers: &[BindingName],
) -> u64 {
    let Some(slowest) = consumers.iter().map(|b| storage.cursor(b)).min() else {
        return 0;
    };
    let Ok(end) = storage.watch_end(dest).map(|w| *w.borrow()) else {
        return 0;
    };
    let first = storage
        .usage(dest)
        .map(|(first, _)| first)
        .unwrap_or_default();
    end.0.saturating_sub(slowest.max(first).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Offset;
    use crate::storage::{Commit, MemoryStorage, Record};

    fn record() -> Record {
        Record {
            id: crate::ids::new_message_id(),
            key: None,
            headers: Vec::new(),
            payload: b"x".to_vec(),
            timestamp_ms: 0,
            reply_to: None,
            correlation_id: None,
        }
    }

    #[test]
    fn depth_is_counted_from_the_slowest_binding() {
        let s = MemoryStorage::new();
        let q = DestinationName::new("q").unwrap();
        s.open_log(&q).unwrap();
        s.append(&q, (0..5).map(|_| record()).collect()).unwrap();
        let (fast, slow) = (
            BindingName::new("fast").unwrap(),
            BindingName::new("slow").unwrap(),
        );
        for n in 0..4 {
            s.commit(Commit {
                acks: vec![(fast.clone(), Offset(n))],
                ..Commit::default()
            })
            .unwrap();
        }
        s.commit(Commit {
            acks: vec![(slow.clone(), Offset(0))],
            ..Commit::default()
        })
        .unwrap();
        assert_eq!(depth(&s, &q, std::slice::from_ref(&fast)), 1);
        assert_eq!(depth(&s, &q, &[fast, slow]), 4);
        assert_eq!(depth(&s, &q, &[]), 0, "nothing waits without consumers");
    }

    #[test]
    fn admitted_publishes_count_until_stored() {
        let s = MemoryStorage::new();
        let q = DestinationName::new("q").unwrap();
        s.open_log(&q).unwrap();
        let limits = Limits(BTreeMap::from([(
            q.clone(),
            Limit {
                max_depth: 2,
                consumers: vec![BindingName::new("b").unwrap()],
                in_flight: AtomicU64::new(0),
            },
        )]));
        let one = limits.admit(&s, &q).unwrap();
        let two = limits.admit(&s, &q).unwrap();
        let refused = limits.admit(&s, &q).unwrap_err();
        assert_eq!(refused.code(), "backpressure");
        assert_eq!(
            refused.to_string(),
            "`q` is full: 2 messages not yet consumed, max_depth is 2; retry later"
        );
        // Stored: now counted by the end offset instead.
        s.append(&q, vec![record()]).unwrap();
        drop(one);
        assert!(limits.admit(&s, &q).is_err());
        drop(two);
        assert!(limits.admit(&s, &q).is_ok(), "one stored, none in flight");
    }
}
