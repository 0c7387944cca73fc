//! The limits every message weir stores is held to, whoever writes it: an external publisher
//! (HTTP, CLI), a plugin (publishes, replies), a stream append, or weir itself (dead letters).
//! One place, so that a record the server would refuse never reaches the store from another
//! path, where the log's own frame limits would refuse it later and fail a whole commit.
//!
//! Header names starting with `weir-` (in any case) are weir's own (replay routing, dead-letter
//! history, event-sourcing metadata): nobody outside weir may set them, or a publisher could,
//! for example, make every binding of a topic skip a message by claiming it was replayed for
//! another binding.

use std::fmt;

/// Longest message key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest message id, in bytes.
pub const MAX_ID: usize = 256;
/// Most headers per message.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values per message.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Longest failure text kept from a guest (a handler error, a dead-letter reason), in bytes:
/// longer text is cut.
pub const MAX_REASON: usize = 4 << 10;
/// The prefix of weir's own header names.
pub const RESERVED_PREFIX: &str = "weir-";

/// Whether a header name is weir's (`weir-` in any case), not the application's.
pub fn is_reserved(name: &str) -> bool {
    name.as_bytes()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The key is longer than [`MAX_KEY`].
    KeyTooLong(usize),
    /// The id is empty, longer than [`MAX_ID`] or has control characters.
    BadId(usize),
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders(usize),
    /// More than [`MAX_HEADER_BYTES`] of header names and values.
    HeadersTooLarge(usize),
    /// A header name that is empty or uses characters other than letters, digits, `-_.`.
    BadHeaderName(String),
    /// A header name starting with `weir-`.
    ReservedHeader(String),
    /// The payload is larger than the limit (`server.max_message_size`).
    PayloadTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Invalid {
    /// The limit in bytes a size refusal is about (for WIT errors that carry one); `None` for
    /// the others.
    pub fn byte_limit(&self) -> Option<usize> {
        match self {
            Invalid::KeyTooLong(_) => Some(MAX_KEY),
            Invalid::BadId(_) => Some(MAX_ID),
            Invalid::HeadersTooLarge(_) => Some(MAX_HEADER_BYTES),
            Invalid::PayloadTooLarge { limit, .. } => Some(*limit),
            Invalid::TooManyHeaders(_) | Invalid::BadHeaderName(_) | Invalid::ReservedHeader(_) => {
                None
            }
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::KeyTooLong(n) => write!(f, "key is {n} bytes; the limit is {MAX_KEY}"),
            Invalid::BadId(n) => write!(
                f,
                "message id must be 1 to {MAX_ID} bytes without control characters, found {n} bytes"
            ),
            Invalid::TooManyHeaders(n) => write!(f, "{n} headers; the limit is {MAX_HEADERS}"),
            Invalid::HeadersTooLarge(n) => {
                write!(f, "headers are {n} bytes; the limit is {MAX_HEADER_BYTES}")
            }
            Invalid::BadHeaderName(name) => write!(
                f,
                "header name {:?} must be non-empty and use letters, digits, `-`, `_` and `.`",
                cut(name, 64)
            ),
            Invalid::ReservedHeader(name) => write!(
                f,
                "header name {name:?} starts with `{RESERVED_PREFIX}`, which is reserved for weir's own headers"
            ),
            Invalid::PayloadTooLarge { size, limit } => write!(
                f,
                "payload is {size} bytes; the limit is {limit} (server.max_message_size)"
            ),
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks a message's key, headers and payload size. `reserved` allows `weir-` header names
/// (for records weir writes itself).
pub fn check(
    key: Option<&str>,
    headers: &[(String, String)],
    payload: usize,
    limit: usize,
) -> Result<(), Invalid> {
    if payload > limit {
        return Err(Invalid::PayloadTooLarge {
            size: payload,
            limit,
        });
    }
    check_key(key)?;
    check_headers(headers)
}

/// Checks a key.
pub fn check_key(key: Option<&str>) -> Result<(), Invalid> {
    match key {
        Some(k) if k.len() > MAX_KEY => Err(Invalid::KeyTooLong(k.len())),
        _ => Ok(()),
    }
}

/// Checks a client-chosen message id.
pub fn check_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(Invalid::BadId(id.len()));
    }
    Ok(())
}

/// Checks application headers: count, size, names, and that none is weir's.
pub fn check_headers(headers: &[(String, String)]) -> Result<(), Invalid> {
    if headers.len() > MAX_HEADERS {
        return Err(Invalid::TooManyHeaders(headers.len()));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(Invalid::HeadersTooLarge(bytes));
    }
    for (k, _) in headers {
        let ok = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(Invalid::BadHeaderName(k.clone()));
        }
        if is_reserved(k) {
            return Err(Invalid::ReservedHeader(k.clone()));
        }
    }
    Ok(())
}

/// `text` cut to at most `max` bytes at a character boundary, saying how much was cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let end = cut(&text, max.saturating_sub(40)).len();
    text.truncate(end);
    text.push_str(&format!("… ({} of {total} bytes cut)", total - end));
    text
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), "v".to_owned())]
    }

    #[test]
    fn reserved_names_in_any_case_and_never_a_panic() {
        assert!(is_reserved("weir-replay-for"));
        assert!(is_reserved("WEIR-dlq-reason"));
        assert!(!is_reserved("weir"));
        assert!(!is_reserved("weirdo"));
        assert!(!is_reserved("wéir-x"), "a multi-byte character at the cut");
        assert_eq!(
            check_headers(&h("Weir-Replay-For")),
            Err(Invalid::ReservedHeader("Weir-Replay-For".into()))
        );
        assert_eq!(check_headers(&h("x-weir-ok")), Ok(()));
    }

    #[test]
    fn limits() {
        let many: Vec<(String, String)> =
            (0..65).map(|i| (format!("h{i}"), String::new())).collect();
        assert_eq!(check_headers(&many), Err(Invalid::TooManyHeaders(65)));
        let big = vec![("h".to_owned(), "v".repeat(MAX_HEADER_BYTES))];
        assert_eq!(
            check_headers(&big),
            Err(Invalid::HeadersTooLarge(MAX_HEADER_BYTES + 1))
        );
        assert_eq!(
            check_headers(&h("")),
            Err(Invalid::BadHeaderName(String::new()))
        );
        assert_eq!(
            check_headers(&h("a b")),
            Err(Invalid::BadHeaderName("a b".into()))
        );
        let key = "k".repeat(MAX_KEY + 1);
        assert_eq!(check_key(Some(&key)), Err(Invalid::KeyTooLong(MAX_KEY + 1)));
        assert_eq!(check_key(Some(&key[1..])), Ok(()));
        assert_eq!(
            check(None, &[], 11, 10),
            Err(Invalid::PayloadTooLarge {
                size: 11,
                limit: 10
            })
        );
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"i".repeat(MAX_ID + 1)).is_err());
        assert_eq!(check_id("ok"), Ok(()));
    }

    #[test]
    fn truncation_keeps_characters_whole_and_says_so() {
        assert_eq!(truncate("short".into(), 100), "short");
        let long = "é".repeat(10_000);
        let cut = truncate(long, MAX_REASON);
        assert!(cut.len() <= MAX_REASON, "{}", cut.len());
        assert!(cut.ends_with("bytes cut)"), "{cut}");
        assert!(cut.starts_with("éé"));
    }
}
