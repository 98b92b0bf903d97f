//! groupchatd integration tests: one binary (one link step), grouped by subject.

mod bench;
mod binary;
mod chat;
mod limits;
mod support;
