//! TLS for line clients (`tls_listen`): a front end that terminates TLS and relays the plaintext to
//! an ordinary session over a socket pair, so a TLS client is a chat client like any other (same
//! greeting, nickname rules, limits, sanitising, rooms, slow-consumer rule).
//!
//! - `identity`: the certificate and key, read from the PEM files and checked; the certificate
//!   new handshakes get, which a reload swaps. One [`Certificate`] serves both the TLS chat
//!   listeners and HTTPS (`https_listen`, in `http`), so a reload renews it for both at once.
//! - `relay`: one connection after admission: the handshake, then bytes both ways between TLS and
//!   the session's end of the pair, with back-pressure and half-closes kept.
//!
//! Admission comes first, exactly as for plain TCP and with the real peer address (the accept
//! loop in `server`): a connection counts against `max_clients` and the per-network limits from
//! `accept`, before any cryptography, so a flood of handshakes cannot exceed them. The session
//! starts at once too, so its `handshake_timeout_secs` runs from `accept` and covers the TLS
//! handshake and the choice of a nickname together; the relay also gives up a handshake not
//! finished by then. A network over its `connect_rate` is closed without a handshake (that is the
//! flood the limit is for); other refusals are told over TLS, a bounded number at a time.
//!
//! One crypto provider, ring, and only TLS 1.2 and 1.3: see [`provider`].

mod identity;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use identity::{Identity, TlsFileError};

use crate::client::Stream;
use crate::hub::{Hub, Refusal};
use crate::protocol::format::notice;
use crate::session;

/// Refused TLS connections being told why at once; beyond this they are closed without a word,
/// so refusals cannot be made to cost unbounded handshakes.
const MAX_TOLD_REFUSALS: usize = 64;
/// Longest a refused connection's handshake and reason may take.
const REFUSAL_LIMIT: Duration = Duration::from_secs(5);

/// The crypto provider, ring: it builds with nothing but a C compiler, where aws-lc-rs (rustls's
/// default) is a far larger C build that may also want cmake, and it has everything TLS 1.2 and
/// 1.3 need here (ECDHE over X25519 and the NIST curves, AES-GCM and ChaCha20-Poly1305; RSA,
/// ECDSA and Ed25519 keys, so whatever certbot issues).
///
/// What it lacks is post-quantum key exchange (X25519MLKEM768), and rustls 0.23.48 deprecated
/// this function for that reason; hence the `allow`. For a chat relay the simpler build wins
/// today. Switching is this function plus the `rustls` and `tokio-rustls` features in
/// Cargo.toml (`aws_lc_rs` for `ring`).
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes [`provider`] the process's default, so that no TLS configuration built anywhere in the
/// process can pick another from crate features. Every configuration built here names it anyway.
pub fn install_provider() {
    // Err only if one is installed already (by an earlier call): then it is this one.
    let _ = provider().install_default();
}

/// The certificate every TLS handshake of the process gets (TLS chat listeners and HTTPS alike):
/// set at start, swapped by a reload.
pub(crate) struct Certificate {
    current: Arc<identity::Current>,
}

impl Certificate {
    /// Serves `identity` until [`set`](Self::set).
    pub(crate) fn new(identity: &Identity) -> Arc<Certificate> {
        log_identity(identity, "TLS certificate loaded");
        Arc::new(Certificate {
            current: Arc::new(identity::Current::new(identity)),
        })
    }

    /// Serves `identity` to every handshake from now on; connections made already keep theirs.
    pub(crate) fn set(&self, identity: &Identity) {
        self.current.set(identity);
        log_identity(identity, "TLS certificate reloaded");
    }

    /// A server configuration of TLS 1.2 and 1.3 with [`provider`] that asks this certificate at
    /// each handshake, offering `alpn` (none for line clients, `http/1.1` for HTTPS).
    pub(crate) fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring has cipher suites and key exchanges for TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// The TLS front end, shared by every TLS listener of the process.
pub(crate) struct Front {
    acceptor: TlsAcceptor,
    /// Counts the relays of admitted clients, so that an upgrade can wait until they have
    /// delivered its notice.
    relays: TaskTracker,
    /// Refused connections being told why over TLS.
    refusals: Arc<Semaphore>,
}

impl Front {
    /// A front end serving `certificate`.
    pub(crate) fn new(certificate: &Certificate) -> Front {
        Front {
            acceptor: certificate.acceptor(&[]),
            relays: TaskTracker::new(),
            refusals: Arc::new(Semaphore::new(MAX_TOLD_REFUSALS)),
        }
    }

    /// Takes an accepted connection that passed the connection-rate check: admits it (or tells
    /// it why not), starts its session and its relay.
    pub(crate) fn admit(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        hub: &Arc<Hub>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) {
        let (ours, theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                warn!(peer = %peer, error = %e, "cannot relay a TLS client: no socket pair");
                return;
            }
        };
        let handshake_timeout = hub.config().handshake_timeout;
        let deadline = handshake_timeout.map(|t| Instant::now() + t);
        match hub.register_via(peer, Stream::Pipe(ours), crate::client::Transport::Tls) {
            Ok(client) => {
                let id = client.id;
                debug!(
                    client = id, peer = %peer, transport = "tls", event = "connect", "connected"
                );
                // The relay learns that the session ended from this sender being dropped.
                let (ended, session_ended) = oneshot::channel::<()>();
                let session_hub = hub.clone();
                tracker.spawn(async move {
                    session::run(session_hub, client).await;
                    drop(ended);
                });
                let admitted = relay::Admitted {
                    id,
                    peer,
                    tcp,
                    pipe: theirs,
                    deadline,
                    session_ended,
                };
                tracker.spawn(relay::serve(
                    self.acceptor.clone(),
                    admitted,
                    hub.clone(),
                    stop.clone(),
                    self.relays.token(),
                ));
            }
            Err((why, _)) => self.refuse(tcp, peer, why, handshake_timeout, hub, tracker),
        }
    }

    /// Tells a refused newcomer why over TLS, if a slot is free; else closes it at once.
    fn refuse(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        why: Refusal,
        handshake_timeout: Option<Duration>,
        hub: &Arc<Hub>,
        tracker: &TaskTracker,
    ) {
        debug!(
            peer = %peer, reason = %why, transport = "tls", event = "refused",
            "connection refused"
        );
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let limit = handshake_timeout.map_or(REFUSAL_LIMIT, |t| t.min(REFUSAL_LIMIT));
        tracker.spawn(relay::refuse(
            self.acceptor.clone(),
            tcp,
            notice(&why.to_string()),
            Instant::now() + limit,
            hub.clone(),
            permit,
        ));
    }

    /// The relays of admitted clients: an upgrade closes these clients and waits for them.
    pub(crate) fn relays(&self) -> &TaskTracker {
        &self.relays
    }
}

/// Logs the certificate in force: what an operator checks after a renewal.
fn log_identity(identity: &Identity, message: &'static str) {
    let not_after = identity::rfc3339(identity.not_after);
    info!(
        subject = %identity.subject, serial = %identity.serial, not_after = %not_after,
        event = "tls_certificate", "{message}"
    );
    if identity.expires_soon(std::time::SystemTime::now()) {
        warn!(
            subject = %identity.subject, not_after = %not_after, event = "tls_certificate_expiring",
            "the TLS certificate expires within two weeks; is renewal working?"
        );
    }
}
