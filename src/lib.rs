//! groupchatd: a group-chat relay daemon that people join with `nc HOST 7000`.
//!
//! Module map (see STYLE.md in the project's shared notes for the reasoning):
//! - [`protocol`]: sans-IO line framing, sanitising, command parsing, formatting.
//! - [`config`]: the TOML file, defaults and validation.
//! - [`client`]: one connection's shared state and bounded outbox.
//! - [`hub`]: the room: membership, nicknames, fan-out, kicks.
//! - [`session`]: one connection's task (handshake, reader, writer).
//! - [`server`]: the accept loop and admission limits.
//! - [`app`]: bind, run, graceful stop; the entry point for tests.
//! - [`admin`]: the Unix control socket, its wire format ([`admin::proto`]) and `chatctl`'s client.
//! - [`reload`]: transactional configuration reload (SIGHUP and `chatctl reload`).
//! - [`daemon`], [`logging`], [`cli`]: the process around the app.
//! - [`systemd`]: socket activation, readiness/status notifications, the watchdog.
//! - [`ctl`]: `chatctl`'s requests, tables and exit codes.

pub mod admin;
pub mod app;
pub mod cli;
pub(crate) mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub(crate) mod drain;
pub mod hub;
pub(crate) mod logging;
pub mod protocol;
pub(crate) mod reload;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod systemd;
