//! groupchatd integration tests: one binary (one link step), grouped by subject.

mod binary;
mod chat;
mod limits;
mod support;
