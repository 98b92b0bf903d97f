//! The new side of an upgrade: receive the sockets and the snapshot, check them, say ready, and
//! wait for the commit.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::Hello;
use super::channel::{Channel, Tag};
use super::snapshot::{self, Snapshot};
use crate::config::Config;
use crate::tls::Identity;

/// How long the new process waits for each step of the old one. The old process enforces the
/// upgrade's own timeout; this only keeps a new process from waiting forever on a stuck one.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// What a predecessor handed over, checked, not yet serving.
#[derive(Debug)]
pub struct Takeover {
    channel: Channel,
    /// The snapshot.
    pub(crate) snapshot: Snapshot,
    /// The chat listeners.
    pub(crate) listeners: Vec<std::net::TcpListener>,
    /// The TLS chat listeners.
    pub(crate) tls_listeners: Vec<std::net::TcpListener>,
    /// The admin socket, if one was passed.
    pub(crate) admin: Option<std::os::unix::net::UnixListener>,
    /// The HTTP listeners, if the predecessor said how many it had (see
    /// [`Snapshot::http_listeners`]).
    pub(crate) http_listeners: Option<Vec<std::net::TcpListener>>,
    /// The HTTPS listeners.
    pub(crate) https_listeners: Vec<std::net::TcpListener>,
    /// Each client's sockets, in the snapshot's order.
    pub(crate) streams: Vec<Handed>,
    /// The TLS certificate this process's configuration names, loaded and checked before the
    /// hello (so the predecessor knows whether its TLS listeners can be taken over).
    pub(crate) tls: Option<Identity>,
}

/// One client's sockets as handed over.
#[derive(Debug)]
pub(crate) enum Handed {
    /// A TCP client's connection.
    Tcp(std::net::TcpStream),
    /// A WebSocket client over plain HTTP: the session's end of its socket pair, the relay's
    /// end, and the WebSocket's TCP connection.
    WebSocket {
        session: std::os::unix::net::UnixStream,
        relay: std::os::unix::net::UnixStream,
        tcp: std::net::TcpStream,
    },
}

/// Tells a predecessor, if there is one, that this process cannot take over (say, its
/// configuration is invalid), so it rolls back at once rather than at its timeout.
pub fn refuse_if_upgrading(why: &str) {
    if let Some(Ok(channel)) = Channel::from_env() {
        let _ = channel.send(Tag::Refused, why.as_bytes(), &[]);
    }
}

impl Takeover {
    /// If this process was started by an upgrade: says hello, receives everything and checks it.
    /// None when not upgrading. On error the predecessor has been told why (it rolls back).
    /// `config` is this process's: a TLS certificate it names is loaded first, and one that
    /// fails its checks refuses the upgrade before anything is handed over.
    pub fn receive(config: &Config) -> Option<Result<Takeover, String>> {
        let channel = match Channel::from_env()? {
            Ok(c) => c,
            Err(e) => return Some(Err(format!("upgrade link: {e}"))),
        };
        Some(Self::receive_on(channel, config))
    }

    fn receive_on(channel: Channel, config: &Config) -> Result<Takeover, String> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => match Identity::load(cert, key) {
                Ok(identity) => Some(identity),
                Err(e) => return Err(Self::refuse(&channel, e.to_string())),
            },
            _ => None,
        };
        let hello = Hello {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            reads: snapshot::READS.to_vec(),
            tls: tls.is_some(),
        };
        let hello = serde_json::to_vec(&hello).expect("hello serializes");
        channel
            .send(Tag::Hello, &hello, &[])
            .map_err(|e| format!("upgrade link: {e}"))?;
        let deadline = Instant::now() + STEP_LIMIT;
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut body = Vec::new();
        // Bounded: every message adds descriptors or bytes, or ends the loop.
        loop {
            let (tag, payload, got) = match channel.recv(deadline) {
                Ok(m) => m,
                Err(e) => return Err(format!("upgrade link: {e}")),
            };
            match tag {
                Tag::Fds => fds.extend(got),
                Tag::Chunk if body.len() + payload.len() <= snapshot::MAX_BYTES => {
                    body.extend_from_slice(&payload)
                }
                Tag::End => break,
                Tag::Abort => return Err("the old process called the upgrade off".into()),
                other => return Err(Self::refuse(&channel, format!("unexpected {other:?}"))),
            }
        }
        let snapshot = match Snapshot::decode(&body, fds.len()) {
            Ok(s) => s,
            Err(e) => return Err(Self::refuse(&channel, e.to_string())),
        };
        let mut fds = fds.into_iter();
        let listeners = fds
            .by_ref()
            .take(snapshot.listeners)
            .map(std::net::TcpListener::from)
            .collect();
        let tls_listeners = fds
            .by_ref()
            .take(snapshot.tls_listeners)
            .map(std::net::TcpListener::from)
            .collect();
        let admin = snapshot
            .admin
            .then(|| fds.next().map(std::os::unix::net::UnixListener::from))
            .flatten();
        let http_listeners = snapshot.http_listeners.map(|n| {
            fds.by_ref()
                .take(n)
                .map(std::net::TcpListener::from)
                .collect()
        });
        let https_listeners = fds
            .by_ref()
            .take(snapshot.https_listeners)
            .map(std::net::TcpListener::from)
            .collect();
        // As many as `decode` counted for the clients, so none of these runs short.
        let mut streams = Vec::with_capacity(snapshot.room.clients.len());
        for c in &snapshot.room.clients {
            let mut next = || fds.next().ok_or("too few descriptors");
            let handed = match &c.websocket {
                None => Handed::Tcp(next()?.into()),
                Some(_) => Handed::WebSocket {
                    session: next()?.into(),
                    relay: next()?.into(),
                    tcp: next()?.into(),
                },
            };
            streams.push(handed);
        }
        Ok(Takeover {
            channel,
            snapshot,
            listeners,
            tls_listeners,
            admin,
            http_listeners,
            https_listeners,
            streams,
            tls,
        })
    }

    fn refuse(channel: &Channel, why: String) -> String {
        let _ = channel.send(Tag::Refused, why.as_bytes(), &[]);
        why
    }

    /// Refuses the hand-over after it was received (the room could not be rebuilt).
    pub fn reject(self, why: &str) {
        Self::refuse(&self.channel, why.to_owned());
    }

    /// Says everything is in place, and waits for the old process to commit. Ok when this
    /// process is to serve: on the commit, and also if the old process is gone (it cannot serve
    /// any more, and the sockets are here). Err when it called the upgrade off.
    pub fn ready_and_wait(self) -> Result<Link, String> {
        if let Some(delay) = super::test_ready_delay() {
            tracing::info!("upgrade: test delay before ready");
            std::thread::sleep(delay);
        }
        self.channel
            .send(Tag::Ready, b"{}", &[])
            .map_err(|e| format!("upgrade link: {e}"))?;
        match self.channel.recv(Instant::now() + STEP_LIMIT) {
            Ok((Tag::Commit, _, _)) => Ok(Link),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Link),
            Ok((Tag::Abort, _, _)) => Err("the old process called the upgrade off".into()),
            Ok((tag, _, _)) => Err(format!("unexpected {tag:?} instead of the commit")),
            Err(e) => Err(format!("no commit from the old process: {e}")),
        }
    }
}

/// Proof that the commit came (the link itself is closed).
#[derive(Debug)]
pub struct Link;
