//! groupchatd: a group-chat relay daemon.
#![forbid(unsafe_code)]

pub mod config;
pub mod protocol;
