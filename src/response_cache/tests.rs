//! Unit tests of `response_cache`.
