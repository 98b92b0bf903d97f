//! groupchatd integration tests: one binary (one link step), grouped by subject.

mod admin;
mod bench;
mod binary;
mod chat;
mod e2e;
mod limits;
mod packaging;
mod process;
mod support;
mod systemd;
