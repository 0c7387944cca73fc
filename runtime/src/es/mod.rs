//! Event-sourcing domain types, shared by the stream store (`storage`), the aggregate and
//! projection worlds (`host`), the command path and the API: stream names and their
//! categories, expected revisions, events to append and events as recorded.
//!
//! A *stream store* (`[streams.<name>]` in the config) holds many streams, one per aggregate
//! instance (`order-42`, `order-43`, ...), in one durable log: an event's *position* is its
//! offset in that log (gapless, in commit order: the store's `$all`), its *revision* its index
//! in its stream (0-based, gapless). The *category* of a stream is the part of its name before
//! the first `-` (the whole name when it has none).

pub mod aggregate;
pub mod store;

use std::fmt;
use std::str::FromStr;

pub use aggregate::{
    AggregateDeployed, AggregateRunner, AggregateStats, CommandAnswer, CommandError,
    CommandRequest, DeployError,
};
pub use store::{Appended, Filter, StreamAppend, StreamError, StreamStore};

use crate::names::Offset;

/// Longest accepted stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 256;

/// Longest accepted event type and event id, in bytes.
pub const MAX_EVENT_LABEL_LEN: usize = 256;

/// Why a stream name, event type or event id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EsNameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What was named (`stream name`, `event type`, `event id`).
        kind: &'static str,
    },
    /// The name is too long.
    #[error("{kind} `{shown}...` is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// What was named.
        kind: &'static str,
        /// The start of the name.
        shown: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error(
        "{kind} `{name}` contains {found:?}; {kind}s use letters, digits and `.` `_` `-` `:` `@` `+` `=` and start with a letter or digit"
    )]
    BadChar {
        /// What was named.
        kind: &'static str,
        /// The name.
        name: String,
        /// The first offending character.
        found: char,
    },
}

fn validate(kind: &'static str, name: &str, max: usize) -> Result<(), EsNameError> {
    if name.is_empty() {
        return Err(EsNameError::Empty { kind });
    }
    if name.len() > max {
        return Err(EsNameError::TooLong {
            kind,
            shown: name.chars().take(40).collect(),
            len: name.len(),
            max,
        });
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric()
            || (i > 0 && matches!(c, '.' | '_' | '-' | ':' | '@' | '+' | '='));
        if !ok {
            return Err(EsNameError::BadChar {
                kind,
                name: name.to_owned(),
                found: c,
            });
        }
    }
    Ok(())
}

/// The name of one stream in a stream store, such as `order-42`. Names start with a letter or
/// digit (so names starting with `$` stay free for weir's own use).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(String);

impl StreamName {
    /// Validates and wraps a stream name.
    pub fn new(name: impl Into<String>) -> Result<StreamName, EsNameError> {
        let name = name.into();
        validate("stream name", &name, MAX_STREAM_NAME_LEN)?;
        Ok(StreamName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream's category: the part before the first `-`, or the whole name.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }
}

/// The category of a stream name: the part before the first `-`, or the whole name.
pub fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(c, _)| c)
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StreamName {
    type Err = EsNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

/// Checks an event type (`OrderPlaced`, `order.placed`).
pub fn validate_event_type(event_type: &str) -> Result<(), EsNameError> {
    validate("event type", event_type, MAX_EVENT_LABEL_LEN)
}

/// Checks an event id (the idempotency key of an event within its store).
pub fn validate_event_id(event_id: &str) -> Result<(), EsNameError> {
    validate("event id", event_id, MAX_EVENT_LABEL_LEN)
}

/// What an append expects of its stream; checked in the store's commit order, so two appends
/// expecting the same state can never both succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedRevision {
    /// No expectation.
    Any,
    /// The stream has no events (never had any, or was soft-deleted).
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this revision.
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream whose last revision is `actual` (`None`: no events) meets it.
    pub fn admits(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => actual.is_none(),
            ExpectedRevision::StreamExists => actual.is_some(),
            ExpectedRevision::Exact(n) => actual == Some(n),
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::StreamExists => f.write_str("stream-exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// Why an expected revision did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected revision `{0}` is not `any`, `no-stream`, `stream-exists` or a revision number")]
pub struct BadExpectedRevision(pub String);

impl FromStr for ExpectedRevision {
    type Err = BadExpectedRevision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedRevision::Any),
            "no-stream" => Ok(ExpectedRevision::NoStream),
            "stream-exists" => Ok(ExpectedRevision::StreamExists),
            n => n
                .parse()
                .map(ExpectedRevision::Exact)
                .map_err(|_| BadExpectedRevision(s.to_owned())),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Idempotency key, unique within the store: an append retried with the same ids to the
    /// same stream stores nothing twice and answers with the original revisions. When absent
    /// the caller (the API, the command path) derives one.
    pub event_id: String,
    /// What happened, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Version of the payload's schema, for upcasting (1 when not given).
    pub schema_version: u32,
    /// Application headers, in order.
    pub headers: Vec<(String, String)>,
    /// The event body, opaque to weir.
    pub payload: Vec<u8>,
    /// Correlates the event with others of one flow.
    pub correlation_id: Option<String>,
    /// What caused it (the command id, for events an aggregate decided).
    pub causation_id: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream: StreamName,
    /// Its index in its stream: 0-based, gapless.
    pub revision: u64,
    /// Its offset in the store's log: commit order, gapless across the store.
    pub position: Offset,
    /// Idempotency key, unique within the store.
    pub event_id: String,
    /// What happened.
    pub event_type: String,
    /// Version of the payload's schema.
    pub schema_version: u32,
    /// Application headers, in order.
    pub headers: Vec<(String, String)>,
    /// The event body.
    pub payload: Vec<u8>,
    /// When it was appended, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Correlates the event with others of one flow.
    pub correlation_id: Option<String>,
    /// What caused it.
    pub causation_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_the_part_before_the_first_dash() {
        let check = |name: &str, category: &str| {
            assert_eq!(
                StreamName::new(name).unwrap().category(),
                category,
                "{name}"
            );
        };
        check("order-42", "order");
        check("order-42-a", "order");
        check("order", "order");
        check("a.b-c", "a.b");
    }

    #[test]
    fn stream_names_are_validated() {
        assert!(StreamName::new("order-42").is_ok());
        assert!(StreamName::new("user:7@eu").is_ok());
        assert!(matches!(
            StreamName::new(""),
            Err(EsNameError::Empty { .. })
        ));
        assert!(matches!(
            StreamName::new("$all"),
            Err(EsNameError::BadChar { found: '$', .. })
        ));
        assert!(matches!(
            StreamName::new("-x"),
            Err(EsNameError::BadChar { found: '-', .. })
        ));
        assert!(matches!(
            StreamName::new("a b"),
            Err(EsNameError::BadChar { found: ' ', .. })
        ));
        assert!(matches!(
            StreamName::new("x".repeat(MAX_STREAM_NAME_LEN + 1)),
            Err(EsNameError::TooLong { .. })
        ));
    }

    #[test]
    fn expected_revisions_parse_and_admit() {
        use ExpectedRevision::*;
        assert_eq!("any".parse(), Ok(Any));
        assert_eq!("no-stream".parse(), Ok(NoStream));
        assert_eq!("stream-exists".parse(), Ok(StreamExists));
        assert_eq!("7".parse(), Ok(Exact(7)));
        assert!("-1".parse::<ExpectedRevision>().is_err());
        assert!("exact".parse::<ExpectedRevision>().is_err());
        assert!(Any.admits(None) && Any.admits(Some(3)));
        assert!(NoStream.admits(None) && !NoStream.admits(Some(0)));
        assert!(!StreamExists.admits(None) && StreamExists.admits(Some(0)));
        assert!(Exact(3).admits(Some(3)) && !Exact(3).admits(Some(2)) && !Exact(0).admits(None));
    }
}
