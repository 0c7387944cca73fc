//! Convenience accessors on [`Message`] and builders for [`Outgoing`].

use crate::{Message, Outgoing};

impl Message {
    /// The value of the first header named `name` (names are case-sensitive).
    ///
    /// ```
    /// # let msg = weir_sdk::Message {
    /// #     id: "1".into(), source: "orders".into(), key: None,
    /// #     headers: vec![("content-type".into(), "text/plain".into())],
    /// #     payload: vec![], offset: 0, attempt: 1, timestamp_ms: 0,
    /// #     reply_to: None, correlation_id: None,
    /// # };
    /// assert_eq!(msg.header("content-type"), Some("text/plain"));
    /// assert_eq!(msg.header("Content-Type"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The values of every header named `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a header named `name` is present, whatever its value.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The ordering key, when the publisher gave one.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The payload as UTF-8 text, or `None` when it is not valid UTF-8.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// Whether this message is a request that expects an
    /// [`Outcome::Reply`](crate::Outcome::Reply).
    pub fn is_request(&self) -> bool {
        self.reply_to.is_some()
    }
}

impl Outgoing {
    /// A message with this payload, no key and no headers.
    ///
    /// ```
    /// use weir_sdk::Outgoing;
    ///
    /// let out = Outgoing::new("hello").with_key("user-7").with_header("lang", "en");
    /// assert_eq!(out.payload, b"hello");
    /// assert_eq!(out.key.as_deref(), Some("user-7"));
    /// ```
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Sets the ordering / partitioning key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header (an existing header of the same name is kept).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl Default for Outgoing {
    /// An empty message: no key, no headers, empty payload.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}
