//! groupchatd integration tests: one binary (one link step), grouped by subject.

mod admin;
mod binary;
mod chat;
mod limits;
mod packaging;
mod process;
mod support;
