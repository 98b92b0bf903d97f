//! groupchatd integration tests: one binary (one link step), grouped by subject.

mod admin;
mod admin_trust;
mod binary;
mod browser;
mod chat;
mod cluster;
mod e2e;
mod forgery;
mod hostile;
mod http;
mod https;
mod identity;
mod limits;
mod load;
mod nats;
mod packaging;
mod process;
mod rooms;
mod soak;
mod support;
mod systemd;
mod tls;
mod upgrade;
mod ws;
