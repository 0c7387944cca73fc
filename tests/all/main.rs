//! Integration tests for weir.
