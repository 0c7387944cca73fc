//! The completion of a commit's outbox: a commit whose publishes wait for its journal record
//! (see `embedded`) learns where they landed only once the outbox thread has appended them.
//! [`Slot`] carries that answer to a blocking waiter or an awaiting task.

use std::sync::{Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::StorageError;
use super::log::AppendTicket;
use crate::names::Offset;

/// Where a commit's outbox records landed (in commit order), and the tickets of those appends.
pub(crate) type Landed = Result<(Vec<Offset>, Vec<AppendTicket>), StorageError>;

/// A one-shot answer, set once by the outbox thread.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<State>,
    set: Condvar,
}

#[derive(Debug, Default)]
struct State {
    landed: Option<Landed>,
    waker: Option<Waker>,
    /// The answer was taken: a second wait gets an error, not a hang.
    taken: bool,
}

impl Slot {
    /// Sets the answer and wakes whoever waits.
    pub fn set(&self, landed: Landed) {
        let waker = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.landed = Some(landed);
            s.waker.take()
        };
        self.set.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Blocks until the answer is set.
    pub fn wait(&self) -> Landed {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(l) = s.landed.take() {
                s.taken = true;
                return l;
            }
            if s.taken {
                return Err(StorageError::Log(super::log::LogError::Closed));
            }
            s = self.set.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Polls for the answer.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<Landed> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = s.landed.take() {
            s.taken = true;
            return Poll::Ready(l);
        }
        if s.taken {
            return Poll::Ready(Err(StorageError::Log(super::log::LogError::Closed)));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
