//! [`AppendTicket`]: the completion of one append, waited for with [`AppendTicket::wait`] from
//! blocking code or `.await`ed from async code. No allocation per ticket: it waits on the log's
//! acknowledged end offset.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use super::error::LogError;
use super::shared::{Shared, lock};
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
        let (shared, appended) = match self.inner {
            Inner::Ready(r) => return r,
            Inner::Waiting { shared, appended } => (shared, appended),
        };
        let mut progress = lock(&shared.progress);
        loop {
            if progress.committed >= appended.end().0 {
                return Ok(appended);
            }
            if let Some(e) = &progress.stopped {
                return Err(e.clone());
            }
            progress = shared
                .progress_cv
                .wait(progress)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl IntoFuture for AppendTicket {
    type Output = Result<Appended, LogError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (shared, appended) = match self.inner {
                Inner::Ready(r) => return r,
                Inner::Waiting { shared, appended } => (shared, appended),
            };
            let mut end = shared.end_tx.subscribe();
            loop {
                {
                    let progress = lock(&shared.progress);
                    if progress.committed >= appended.end().0 {
                        return Ok(appended);
                    }
                    if let Some(e) = &progress.stopped {
                        return Err(e.clone());
                    }
                }
                if end.changed().await.is_err() {
                    return Err(LogError::Closed);
                }
            }
        })
    }
}
