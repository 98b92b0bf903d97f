//! groupchatd: a group-chat relay daemon.

pub mod config;
pub mod protocol;
