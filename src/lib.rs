//! groupchatd: a group-chat relay daemon that people join with `nc HOST 7000`.
//!
//! Module map (see STYLE.md in the project's shared notes for the reasoning):
//! - [`protocol`]: sans-IO line framing, sanitising, command parsing, formatting.
//! - [`config`]: the TOML file, defaults and validation; `settings`: the configuration in force
//!   as one snapshot with what is derived from it, swapped whole on reload.
//! - [`hub`]: the room: membership, nicknames, its output as one append-only log (the order
//!   everyone sees), delivery to the members' sockets after the read, closing clients.
//! - `client`: one connection: its socket, counters and outbox (cursor in the room's log, private
//!   lines, the close mark, who writes); `Congestion`, the room's back-pressure.
//! - `session`: one connection's task: reading and handling input, writing only what it was
//!   handed (socket full, closing), deadlines.
//! - `server`: the accept loop and admission limits.
//! - [`tls`]: TLS for line clients: the certificate, and a front end that relays each TLS
//!   client's plaintext to an ordinary session.
//! - `http`: the HTTP listener (`/` and its assets: the browser client, `/ws`, `/healthz`,
//!   `/metrics`); `metrics`: what `/metrics` reports, read from the hub at each scrape.
//! - `ws`: WebSocket clients (`GET /ws`): the origin check, admission, and a front end that
//!   relays each one's lines to an ordinary session.
//! - [`app`]: bind, run, graceful stop, and the reload protocol; the entry point for tests.
//!   `drain` coordinates the first phase of a stop.
//! - [`admin`]: the Unix control socket, its wire format ([`admin::proto`]) and `chatctl`'s client.
//! - `reload`: what a configuration reload would change, as a plan the app applies.
//! - [`daemon`], `logging`, [`cli`]: the process around the app; [`preflight`]: the start-up
//!   checks `--check-config` runs too.
//! - `systemd`: socket activation, notifications (readiness, status, reload), the watchdog.
//! - [`ctl`]: `chatctl`'s requests, tables and exit codes.
//!
//! Only what the binaries, tests and fuzz targets use is public.

pub mod admin;
pub mod app;
pub mod cli;
pub(crate) mod client;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub(crate) mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod hex;
pub(crate) mod http;
pub mod hub;
pub(crate) mod logging;
pub(crate) mod metrics;
pub mod preflight;
pub mod protocol;
pub(crate) mod reload;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod systemd;
pub mod tls;
pub mod upgrade;
pub(crate) mod ws;
