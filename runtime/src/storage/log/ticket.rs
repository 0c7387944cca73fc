//! [`AppendTicket`]: the completion of one append, waited for with [`AppendTicket::wait`] from
//! blocking code or `.await`ed from async code. No channel per append: a waiting ticket registers
//! its thread or task with the end offset it needs, and the acknowledgement that reaches that
//! offset wakes it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::error::LogError;
use super::shared::{Progress, Shared, lock};
use super::waiters::Wake;
use crate::names::Offset;

/// Where an acknowledged append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub first: Offset,
    /// Number of records (offsets `first .. first + count`).
    pub count: u64,
}

impl Appended {
    /// The offset after the last record.
    pub fn end(&self) -> Offset {
        Offset(self.first.0 + self.count)
    }
}

/// The pending result of [`super::Log::append`].
#[must_use = "an append is acknowledged only when its ticket says so"]
#[derive(Debug)]
pub struct AppendTicket {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Ready(Result<Appended, LogError>),
    Waiting {
        shared: Arc<Shared>,
        appended: Appended,
    },
}

impl AppendTicket {
    pub(crate) fn ready(result: Result<Appended, LogError>) -> AppendTicket {
        AppendTicket {
            inner: Inner::Ready(result),
        }
    }

    pub(crate) fn waiting(shared: Arc<Shared>, appended: Appended) -> AppendTicket {
        AppendTicket {
            inner: Inner::Waiting { shared, appended },
        }
    }

    /// The offsets the records got, known before they are acknowledged (`None` if the append was
    /// refused outright).
    pub fn offsets(&self) -> Option<Appended> {
        match &self.inner {
            Inner::Ready(r) => r.as_ref().ok().copied(),
            Inner::Waiting { appended, .. } => Some(*appended),
        }
    }

    /// Blocks until the records are acknowledged (durable, for `Durability::Always`) or the log
    /// stopped before they were.
    pub fn wait(self) -> Result<Appended, LogError> {
        self.block_until(Stage::Acknowledged)
    }

    /// Blocks until the records are written to the OS (they survive a crash of this process,
    /// not yet one of the machine) or the log stopped before they were. Much sooner than
    /// [`AppendTicket::wait`] under `Durability::Always`.
    pub fn wait_written(self) -> Result<Appended, LogError> {
        self.block_until(Stage::Written)
    }

    fn block_until(self, stage: Stage) -> Result<Appended, LogError> {
        let (shared, appended) = match self.inner {
            Inner::Ready(r) => return r,
            Inner::Waiting { shared, appended } => (shared, appended),
        };
        let end = appended.end().0;
        let mut registered = false;
        loop {
            {
                let mut progress = lock(&shared.progress);
                let (reached, waiters) = match stage {
                    Stage::Acknowledged => (progress.committed, &mut progress.waiters),
                    Stage::Written => (progress.written, &mut progress.written_waiters),
                };
                if reached >= end {
                    return Ok(appended);
                }
                if !registered {
                    waiters.push(end, Wake::Thread(std::thread::current()));
                    registered = true;
                }
                if let Some(e) = &progress.stopped {
                    return Err(e.clone());
                }
            }
            // Woken when the end reaches ours or the log stops; a spurious wake-up just
            // checks again.
            std::thread::park();
        }
    }
}

/// How far an append has to get for a blocking wait to return.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Acknowledged: durable under `Durability::Always`.
    Acknowledged,
    /// Handed to the OS.
    Written,
}

fn outcome(progress: &Progress, appended: Appended) -> Option<Result<Appended, LogError>> {
    if progress.committed >= appended.end().0 {
        return Some(Ok(appended));
    }
    progress.stopped.clone().map(Err)
}

/// The future of an [`AppendTicket`] (`ticket.await`).
#[derive(Debug)]
pub struct AppendFuture {
    inner: Option<Inner>,
}

impl Future for AppendFuture {
    type Output = Result<Appended, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.inner.take() {
            None => Poll::Ready(Err(LogError::Closed)),
            Some(Inner::Ready(r)) => Poll::Ready(r),
            Some(Inner::Waiting { shared, appended }) => {
                let mut progress = lock(&shared.progress);
                if let Some(done) = outcome(&progress, appended) {
                    return Poll::Ready(done);
                }
                progress
                    .waiters
                    .push(appended.end().0, Wake::Task(cx.waker().clone()));
                drop(progress);
                self.inner = Some(Inner::Waiting { shared, appended });
                Poll::Pending
            }
        }
    }
}

impl IntoFuture for AppendTicket {
    type Output = Result<Appended, LogError>;
    type IntoFuture = AppendFuture;

    fn into_future(self) -> AppendFuture {
        AppendFuture {
            inner: Some(self.inner),
        }
    }
}
