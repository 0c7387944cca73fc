//! Validated identifiers and positions: destination, plugin and binding names, offsets and
//! attempts. Everything that crosses an API boundary as a name goes through these constructors.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// What kind of name it was.
        kind: &'static str,
    },
    /// The name is too long.
    #[error("{kind} name `{name}` is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// What kind of name it was.
        kind: &'static str,
        /// The name (cut to a readable length).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error(
        "{kind} name `{name}` contains {found:?}; names use letters, digits, `.`, `_` and `-` and start with a letter or digit"
    )]
    BadChar {
        /// What kind of name it was.
        kind: &'static str,
        /// The name.
        name: String,
        /// The first offending character.
        found: char,
    },
}

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        let shown: String = name.chars().take(40).collect();
        return Err(NameError::TooLong {
            kind,
            name: format!("{shown}..."),
            len: name.len(),
        });
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(NameError::BadChar {
                kind,
                name: name.to_owned(),
                found: c,
            });
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok(Self(name))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// The name of a destination: a queue or a topic.
    DestinationName,
    "destination"
);
name_type!(
    /// The name of a plugin declared in the config.
    PluginName,
    "plugin"
);
name_type!(
    /// The name of a binding: a source consumed by a plugin.
    BindingName,
    "binding"
);

/// The name of weir's reply inbox: the log replies to requests are appended to. Reserved: a
/// config may not declare it, bind it or grant publishing to it.
pub const REPLY_INBOX: &str = "weir.replies";

impl DestinationName {
    /// The reply inbox, [`REPLY_INBOX`].
    pub fn reply_inbox() -> DestinationName {
        DestinationName(REPLY_INBOX.to_owned())
    }

    /// Whether the name is reserved for weir's own use (the reply inbox).
    pub fn is_reserved(&self) -> bool {
        self.0 == REPLY_INBOX
    }
}

/// Joins the parts of the name of a cursor weir keeps for itself, such as a dead-letter redrive
/// position. Names written by users never contain it, so such a cursor cannot collide with a
/// binding's own.
const INTERNAL_SEP: char = '~';

impl PluginName {
    /// The key-value namespace a shadow rebuild of this plugin writes (`<plugin>~rebuild`):
    /// never a configured plugin's name, so it cannot collide with one.
    pub fn shadow(&self) -> PluginName {
        PluginName(format!("{self}{INTERNAL_SEP}rebuild"))
    }

    /// Reads a key-value namespace as the store keeps it: a plugin name, or one of weir's own
    /// (valid names joined by `~`, see [`PluginName::shadow`]).
    pub fn from_stored(name: String) -> Result<PluginName, NameError> {
        for part in name.split(INTERNAL_SEP) {
            validate("plugin", part)?;
        }
        Ok(PluginName(name))
    }
}

impl BindingName {
    /// The cursor recording how far `dead_letter` has been redriven for this binding:
    /// `<binding>~redrive~<dead_letter>`. Naming the queue keeps the position right if the
    /// binding's `dead_letter` changes.
    pub fn redrive_cursor(&self, dead_letter: &DestinationName) -> BindingName {
        BindingName(format!(
            "{self}{INTERNAL_SEP}redrive{INTERNAL_SEP}{dead_letter}"
        ))
    }

    /// The key-value namespace holding the binding's parked keys (`<binding>~parked`): one
    /// entry per parked key, written by the delivery engine when a key parks and deleted when it
    /// is unparked. Never a configured plugin's name, so it cannot collide with one.
    pub fn parked_namespace(&self) -> PluginName {
        PluginName(format!("{self}{INTERNAL_SEP}parked"))
    }

    /// Reads a cursor name as the store keeps it: a binding name, or the name of one of weir's
    /// own cursors (valid names joined by `~`, see [`BindingName::redrive_cursor`]).
    pub fn from_stored(name: String) -> Result<BindingName, NameError> {
        for part in name.split(INTERNAL_SEP) {
            validate("binding", part)?;
        }
        Ok(BindingName(name))
    }
}

/// Marks the partition part of a name (`<name>~p<n>`): the binding or destination of one
/// partition, as the NATS backend hands them to the delivery engine.
const PARTITION_SEP: &str = "~p";

impl DestinationName {
    /// The log of one partition of this destination: `<destination>~p<n>`.
    pub fn partition(&self, p: u32) -> DestinationName {
        DestinationName(format!("{self}{PARTITION_SEP}{p}"))
    }

    /// For a partition's log, the destination and the partition.
    pub fn split_partition(&self) -> Option<(DestinationName, u32)> {
        split_partition(&self.0).map(|(d, p)| (DestinationName(d.to_owned()), p))
    }
}

impl BindingName {
    /// One partition of this binding, run by one host at a time: `<binding>~p<n>`.
    pub fn partition(&self, p: u32) -> BindingName {
        BindingName(format!("{self}{PARTITION_SEP}{p}"))
    }

    /// For a partition of a binding, the binding and the partition.
    pub fn split_partition(&self) -> Option<(BindingName, u32)> {
        split_partition(&self.0).map(|(b, p)| (BindingName(b.to_owned()), p))
    }
}

fn split_partition(name: &str) -> Option<(&str, u32)> {
    let (base, p) = name.rsplit_once(PARTITION_SEP)?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || validate("name", base).is_err() {
        return None;
    }
    Some((base, p.parse().ok()?))
}

/// A position in a log. The first record of a log has offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset after this one.
    #[must_use]
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A delivery attempt number, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(u32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(1);

    /// Wraps an attempt number; attempts start at 1.
    pub fn new(n: u32) -> Option<Attempt> {
        (n >= 1).then_some(Attempt(n))
    }

    /// The attempt number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The attempt after this one.
    #[must_use]
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expect: Result<(), &str>) {
        let got = DestinationName::new(name)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_ref().copied().map_err(String::as_str),
            expect,
            "name {name:?}"
        );
    }

    #[test]
    fn names() {
        check("orders", Ok(()));
        check("orders.enriched-v2_x", Ok(()));
        check("9lives", Ok(()));
        check("", Err("destination name is empty"));
        check(
            ".hidden",
            Err(
                "destination name `.hidden` contains '.'; names use letters, digits, `.`, `_` and `-` and start with a letter or digit",
            ),
        );
        check(
            "a b",
            Err(
                "destination name `a b` contains ' '; names use letters, digits, `.`, `_` and `-` and start with a letter or digit",
            ),
        );
        assert!(DestinationName::new("x".repeat(129)).is_err());
        assert!(DestinationName::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn the_reply_inbox_is_a_valid_reserved_name() {
        let inbox = DestinationName::new(REPLY_INBOX).unwrap();
        assert_eq!(inbox, DestinationName::reply_inbox());
        assert!(inbox.is_reserved());
        assert!(!DestinationName::new("replies").unwrap().is_reserved());
    }

    #[test]
    fn internal_cursor_names_cannot_collide_with_bindings() {
        let b = BindingName::new("orders.p").unwrap();
        let dlq = DestinationName::new("orders.p.dlq").unwrap();
        let cursor = b.redrive_cursor(&dlq);
        assert_eq!(cursor.as_str(), "orders.p~redrive~orders.p.dlq");
        assert!(
            BindingName::new(cursor.as_str()).is_err(),
            "users cannot write it"
        );
        let stored = BindingName::from_stored(cursor.as_str().to_owned()).unwrap();
        assert_eq!(stored, cursor);
        assert_eq!(BindingName::from_stored("orders.p".into()).unwrap(), b);
        assert!(BindingName::from_stored("a~".into()).is_err());
        let parked = b.parked_namespace();
        assert_eq!(parked.as_str(), "orders.p~parked");
        assert!(
            PluginName::new(parked.as_str()).is_err(),
            "no plugin has it"
        );
        assert_eq!(PluginName::from_stored(parked.to_string()).unwrap(), parked);
        assert!(BindingName::from_stored("a b".into()).is_err());
    }

    #[test]
    fn attempts_start_at_one() {
        assert!(Attempt::new(0).is_none());
        assert_eq!(Attempt::FIRST.next().get(), 2);
    }
}
