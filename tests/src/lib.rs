//! Test support lives in `all/`; this library is empty.
