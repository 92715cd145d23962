//! Shared helpers for phr tests.
