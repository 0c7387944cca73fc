//! Request/reply from outside (HTTP, CLI): publish a request record whose `reply_to` is the
//! reply inbox and whose `correlation_id` is fresh, then wait for the reply carrying that id, up
//! to a timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::inbox::{MAX_WAITING, Missed, Refused};
use super::{PublishError, PublishRequest, Published, Runtime};
use crate::storage::Stored;

/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request may wait for its reply.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A request and the reply it got.
#[derive(Debug, Clone)]
pub struct Replied {
    /// Where the request was stored.
    pub request: Published,
    /// The id correlating the two.
    pub correlation_id: String,
    /// The reply, as stored in the reply inbox.
    pub reply: Stored,
}

/// Why a request got no reply. A request that timed out was stored and may still be handled
/// (its late reply is then dropped); every other refusal stores nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The timeout is zero or longer than [`MAX_REQUEST_TIMEOUT`].
    #[error(
        "timeout must be between 1ms and {}ms, found {}ms",
        MAX_REQUEST_TIMEOUT.as_millis(),
        .0.as_millis()
    )]
    InvalidTimeout(Duration),
    /// A message with the request's id is already stored, so nothing was published and no
    /// reply can come.
    #[error(
        "a message with id `{id}` is already stored in `{destination}`; a request needs an id not used before"
    )]
    Duplicate {
        /// The destination.
        destination: String,
        /// The id.
        id: String,
    },
    /// Too many requests are waiting for replies already.
    #[error("{MAX_WAITING} requests are already waiting for replies; try again later")]
    TooManyWaiting,
    /// The server is shutting down and waits for no more replies.
    #[error("the server is shutting down; no reply is awaited")]
    ShuttingDown,
    /// No reply came in time.
    #[error("no reply from `{destination}` within {}ms", .timeout.as_millis())]
    Timeout {
        /// The destination the request went to.
        destination: String,
        /// How long the request waited.
        timeout: Duration,
        /// Where the request was stored.
        request: Published,
    },
}

impl RequestError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Publish(e) => e.code(),
            RequestError::InvalidTimeout(_) => "invalid_timeout",
            RequestError::Duplicate { .. } => "duplicate_request",
            RequestError::TooManyWaiting => "too_many_requests",
            RequestError::ShuttingDown => "shutting_down",
            RequestError::Timeout { .. } => "request_timeout",
        }
    }
}

impl Runtime {
    /// Publishes `request` to `destination` as a request and waits up to `timeout` for the reply
    /// of its handler (a `reply` outcome, or a publish to the message's reply-to). Needs the
    /// inbox follower that [`super::run`] starts.
    pub async fn request(
        self: &Arc<Self>,
        destination: &str,
        request: PublishRequest,
        timeout: Duration,
    ) -> Result<Replied, RequestError> {
        if timeout.is_zero() || timeout > MAX_REQUEST_TIMEOUT {
            return Err(RequestError::InvalidTimeout(timeout));
        }
        let deadline = Instant::now() + timeout;
        let correlation_id = crate::ids::new_message_id();
        // Registered before publishing: a reply that lands before the publish returns is kept.
        let mut waiter =
            self.inbox
                .wait(correlation_id.clone())
                .map_err(|refused| match refused {
                    Refused::Full => RequestError::TooManyWaiting,
                    Refused::Closed => RequestError::ShuttingDown,
                })?;
        let (rt, dest, id) = (
            Arc::clone(self),
            destination.to_owned(),
            correlation_id.clone(),
        );
        // A durable publish waits for its fsync: on a blocking thread.
        let published = tokio::task::spawn_blocking(move || rt.append(&dest, request, Some(id)))
            .await
            .expect("publishing does not panic")?;
        if published.duplicate {
            return Err(RequestError::Duplicate {
                destination: published.destination,
                id: published.id,
            });
        }
        match waiter.reply(deadline).await {
            Ok(reply) => Ok(Replied {
                request: published,
                correlation_id,
                reply,
            }),
            Err(Missed::Timeout) => Err(RequestError::Timeout {
                destination: published.destination.clone(),
                timeout,
                request: published,
            }),
            Err(Missed::Closed) => Err(RequestError::ShuttingDown),
        }
    }

    /// How many requests are waiting for a reply.
    pub fn requests_waiting(&self) -> usize {
        self.inbox.waiting()
    }
}
