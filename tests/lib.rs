//! Integration tests live in the test targets of this crate; this library is empty on purpose.
