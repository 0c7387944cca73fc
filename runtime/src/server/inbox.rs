//! The reply inbox: one log (`weir.replies`, [`REPLY_INBOX`]) that replies to requests are
//! appended to, the table of requests waiting for a reply by correlation id, and the task that
//! follows the inbox's tail and hands each reply to its waiting request.
//!
//! **Invariant:** a waiting request is in the table from before its request record is published
//! until it gets its reply, times out or is abandoned (its [`Waiter`] dropped), so a reply is
//! never missed and the table never holds a request nobody waits for.
//!
//! [`REPLY_INBOX`]: crate::names::REPLY_INBOX

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::names::{DestinationName, Offset};
use crate::storage::{Storage, StorageError, Stored};

/// Most requests waiting for a reply at once; more are refused until some finish.
pub const MAX_WAITING: usize = 10_000;
/// Inbox records read at a time.
const READ_BATCH: usize = 256;

/// Requests waiting for replies, by correlation id.
#[derive(Debug, Default)]
struct Waiting {
    by_id: HashMap<String, oneshot::Sender<Stored>>,
    /// Set at shutdown: nothing waits any more.
    closed: bool,
}

/// The reply inbox of a server.
#[derive(Debug)]
pub(super) struct Inbox {
    name: DestinationName,
    waiting: Mutex<Waiting>,
}

/// Why a request cannot wait for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// [`MAX_WAITING`] requests are already waiting.
    Full,
    /// The server is shutting down.
    Closed,
}

/// Why a waiting request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missed {
    /// None came before the deadline.
    Timeout,
    /// The server is shutting down.
    Closed,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox {
            name: DestinationName::reply_inbox(),
            waiting: Mutex::default(),
        }
    }

    /// The inbox's log.
    pub fn name(&self) -> &DestinationName {
        &self.name
    }

    /// How many requests are waiting for a reply.
    pub fn waiting(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Registers a request waiting for the reply carrying `correlation_id`. Call it before
    /// publishing the request, so that a reply arriving first is not missed.
    pub fn wait(&self, correlation_id: String) -> Result<Waiter<'_>, Refused> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        if waiting.closed {
            return Err(Refused::Closed);
        }
        if waiting.by_id.len() >= MAX_WAITING {
            return Err(Refused::Full);
        }
        waiting.by_id.insert(correlation_id.clone(), tx);
        Ok(Waiter {
            inbox: self,
            correlation_id,
            reply: rx,
        })
    }

    /// Hands a reply to the request waiting for it, if any (a late or duplicate reply, or one
    /// to a request from before a restart, has nobody waiting and is left in the log).
    fn complete(&self, stored: Stored) {
        let Some(id) = stored.record.correlation_id.as_deref() else {
            return;
        };
        let waiter = self.lock().by_id.remove(id);
        if let Some(tx) = waiter {
            // The request may have timed out just now; then nobody takes it.
            let _ = tx.send(stored);
        }
    }

    /// Ends every wait at once (their requests answer [`Missed::Closed`]) and refuses new ones:
    /// at shutdown, so that the server does not wait for long timeouts to run out.
    pub fn close(&self) {
        let mut waiting = self.lock();
        waiting.closed = true;
        waiting.by_id.clear();
    }

    /// Starts following the inbox at its current end: every reply appended from now on is seen.
    /// Synchronous, so the starting point is fixed before any request can be published.
    pub fn follow(&self, storage: Arc<dyn Storage>) -> Result<Follower, StorageError> {
        let end = storage.watch_end(&self.name)?;
        let next = *end.borrow();
        Ok(Follower { storage, end, next })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request waiting for its reply; dropping it (timeout, abandoned HTTP request) removes it
/// from the table.
#[derive(Debug)]
pub(super) struct Waiter<'a> {
    inbox: &'a Inbox,
    correlation_id: String,
    reply: oneshot::Receiver<Stored>,
}

impl Waiter<'_> {
    /// The reply, unless none came before `deadline` or the inbox closed.
    pub async fn reply(&mut self, deadline: Instant) -> Result<Stored, Missed> {
        match tokio::time::timeout_at(deadline, &mut self.reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Missed::Closed),
            Err(_) => Err(Missed::Timeout),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.inbox.lock().by_id.remove(&self.correlation_id);
    }
}

/// Follows the inbox's tail from where [`Inbox::follow`] started it.
#[derive(Debug)]
pub(super) struct Follower {
    storage: Arc<dyn Storage>,
    end: watch::Receiver<Offset>,
    next: Offset,
}

impl Follower {
    /// Reads every reply appended to the inbox and completes its request, until `stop` turns
    /// true. Waits on the log's end offset between appends; never polls.
    pub async fn run(
        mut self,
        inbox: &Inbox,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), StorageError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let batch = self.storage.read(&inbox.name, self.next, READ_BATCH)?;
            let Some(last) = batch.last() else {
                tokio::select! {
                    changed = self.end.changed() => if changed.is_err() { return Ok(()) },
                    _ = stop.changed() => {}
                }
                continue;
            };
            self.next = last.offset.next();
            for stored in batch {
                inbox.complete(stored);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::{MemoryStorage, Record};

    fn reply(correlation_id: &str) -> Record {
        Record {
            id: crate::ids::new_message_id(),
            key: None,
            headers: Vec::new(),
            payload: correlation_id.as_bytes().to_vec(),
            timestamp_ms: crate::ids::now_ms(),
            reply_to: None,
            correlation_id: Some(correlation_id.to_owned()),
        }
    }

    fn started() -> (Arc<Inbox>, Arc<dyn Storage>, watch::Sender<bool>) {
        let inbox = Arc::new(Inbox::new());
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        storage.open_log(inbox.name()).unwrap();
        // A reply from before the follower started is not handed to anyone.
        storage.append(inbox.name(), vec![reply("old")]).unwrap();
        let follower = inbox.follow(Arc::clone(&storage)).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let i = Arc::clone(&inbox);
        tokio::spawn(async move { follower.run(&i, stop_rx).await });
        (inbox, storage, stop)
    }

    #[tokio::test]
    async fn replies_reach_their_waiters_by_correlation_id() {
        let (inbox, storage, _stop) = started();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut a = inbox.wait("a".to_owned()).unwrap();
        let mut b = inbox.wait("b".to_owned()).unwrap();
        let mut old = inbox.wait("old".to_owned()).unwrap();
        storage
            .append(inbox.name(), vec![reply("b"), reply("nobody"), reply("a")])
            .unwrap();
        assert_eq!(a.reply(deadline).await.unwrap().record.payload, b"a");
        assert_eq!(b.reply(deadline).await.unwrap().record.payload, b"b");
        assert_eq!(inbox.waiting(), 1, "completed requests leave the table");
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            old.reply(soon).await.unwrap_err(),
            Missed::Timeout,
            "replies from before the start are not followed"
        );
        drop((a, b, old));
        assert_eq!(inbox.waiting(), 0);
    }

    #[tokio::test]
    async fn a_timed_out_or_abandoned_request_leaves_the_table() {
        let (inbox, storage, _stop) = started();
        let mut late = inbox.wait("late".to_owned()).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert_eq!(late.reply(deadline).await.unwrap_err(), Missed::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(late);
        assert_eq!(inbox.waiting(), 0);
        // The late reply finds nobody and is ignored.
        storage.append(inbox.name(), vec![reply("late")]).unwrap();

        let abandoned = inbox.wait("gone".to_owned()).unwrap();
        assert_eq!(inbox.waiting(), 1);
        drop(abandoned);
        assert_eq!(inbox.waiting(), 0);
    }

    #[test]
    fn waiting_requests_are_bounded() {
        let inbox = Inbox::new();
        let waiters: Vec<_> = (0..MAX_WAITING)
            .map(|i| inbox.wait(i.to_string()).unwrap())
            .collect();
        assert_eq!(
            inbox.wait("one more".to_owned()).unwrap_err(),
            Refused::Full
        );
        drop(waiters);
        assert!(inbox.wait("one more".to_owned()).is_ok());
    }

    #[tokio::test]
    async fn closing_ends_every_wait_and_refuses_new_ones() {
        let inbox = Inbox::new();
        let mut waiter = inbox.wait("a".to_owned()).unwrap();
        inbox.close();
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(waiter.reply(deadline).await.unwrap_err(), Missed::Closed);
        assert_eq!(inbox.wait("b".to_owned()).unwrap_err(), Refused::Closed);
        assert_eq!(inbox.waiting(), 0);
    }
}
