//! Constructors for [`HandlerError`] and conversions from the host's error types, so that `?`
//! works on host calls inside a handler.

use crate::{HandlerError, KvError, PublishError};

impl HandlerError {
    /// An error after which delivering the same message again may succeed (a dependency was
    /// down, state was busy). weir retries it with backoff, up to the binding's attempt limit.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that a retry cannot fix (the message is malformed, the plugin is
    /// misconfigured). weir moves the message to the dead-letter queue without retrying.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A store that is [`Unavailable`](KvError::Unavailable) is retryable; a value that is
/// [`TooLarge`](KvError::TooLarge) is fatal.
impl From<KvError> for HandlerError {
    fn from(error: KvError) -> Self {
        match error {
            KvError::TooLarge(limit) => Self::fatal(format!(
                "kv refused: key or value larger than {limit} bytes"
            )),
            KvError::Unavailable(why) => Self::retryable(format!("kv unavailable: {why}")),
        }
    }
}

/// Every publish refusal is fatal: an unknown or forbidden destination and the size and count
/// limits are configuration or plugin bugs that a retry does not fix. Map the error yourself
/// when your plugin wants otherwise.
impl From<PublishError> for HandlerError {
    fn from(error: PublishError) -> Self {
        Self::fatal(error.describe())
    }
}

impl PublishError {
    /// A one-line, lowercase description for logs and [`HandlerError`] messages, e.g.
    /// ``publish refused: no queue or topic named `orders.x` ``.
    pub fn describe(&self) -> String {
        match self {
            Self::UnknownDestination(name) => {
                format!("publish refused: no queue or topic named `{name}`")
            }
            // The host's own sentence (a refused header) or a destination name.
            Self::NotPermitted(what) if what.contains(' ') => format!("publish refused: {what}"),
            Self::NotPermitted(name) => {
                format!("publish refused: plugin may not publish to `{name}`")
            }
            Self::TooLarge(limit) => {
                format!("publish refused: message larger than {limit} bytes")
            }
            Self::TooMany(limit) => {
                format!("publish refused: more than {limit} messages in one invocation")
            }
        }
    }
}

impl KvError {
    /// A one-line, lowercase description for logs and [`HandlerError`] messages, e.g.
    /// `kv unavailable: disk full`.
    pub fn describe(&self) -> String {
        match self {
            Self::TooLarge(limit) => format!("kv refused: key or value larger than {limit} bytes"),
            Self::Unavailable(why) => format!("kv unavailable: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_retryable() {
        assert!(HandlerError::retryable("x").retryable);
        assert!(!HandlerError::fatal("x").retryable);
        assert_eq!(HandlerError::fatal("boom").message, "boom");
    }

    #[test]
    fn host_errors_convert() {
        let e = HandlerError::from(KvError::Unavailable("disk".into()));
        assert!(e.retryable);
        assert_eq!(e.message, "kv unavailable: disk");
        let e = HandlerError::from(PublishError::UnknownDestination("a.b".into()));
        assert!(!e.retryable);
        assert_eq!(e.message, "publish refused: no queue or topic named `a.b`");
    }
}
