//! The appenders waiting for their records to be acknowledged, ordered by the end offset each
//! waits for, so an acknowledgement wakes exactly the threads and tasks it completes (no
//! thundering herd when hundreds of appenders wait).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::task::Waker;
use std::thread::Thread;

/// A blocked thread or a pending task.
#[derive(Debug)]
pub(crate) enum Wake {
    Thread(Thread),
    Task(Waker),
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => w.wake(),
        }
    }
}

#[derive(Debug)]
struct Waiter {
    end: u64,
    wake: Wake,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Waiter) -> bool {
        self.end == other.end
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Waiter) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    fn cmp(&self, other: &Waiter) -> Ordering {
        self.end.cmp(&other.end)
    }
}

/// Waiters, smallest end offset first.
#[derive(Debug, Default)]
pub(crate) struct Waiters(BinaryHeap<Reverse<Waiter>>);

impl Waiters {
    /// Registers a waiter for the acknowledgement of everything before `end`.
    pub fn push(&mut self, end: u64, wake: Wake) {
        self.0.push(Reverse(Waiter { end, wake }));
    }

    /// Wakes every waiter whose end is at most `committed`.
    pub fn wake_until(&mut self, committed: u64) {
        while self.0.peek().is_some_and(|w| w.0.end <= committed) {
            if let Some(Reverse(w)) = self.0.pop() {
                w.wake.wake();
            }
        }
    }

    /// Wakes every waiter (the log stopped).
    pub fn wake_all(&mut self) {
        for Reverse(w) in self.0.drain() {
            w.wake.wake();
        }
    }
}
