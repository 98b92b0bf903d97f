//! The door: admitting a new connection (the server's and each network's limits) and why one is
//! refused. The connection rate, checked before this, is in `admission`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Hub;
use crate::client::{Client, Stream, Transport};

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_clients` reached.
    Full,
    /// `max_clients_per_ip` reached for the peer's network.
    PerIp,
    /// The peer's network is over `connect_rate`; its next connection is admitted in about this
    /// many seconds.
    ConnectRate {
        /// Whole seconds, at least 1.
        retry_secs: u32,
    },
    /// The daemon is stopping.
    ShuttingDown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full => f.write_str("server full"),
            // "address" although it counts per network: with the default prefixes (/32, /64)
            // that is what a user has, and scripts already match on it.
            Refusal::PerIp => f.write_str("too many connections from your address"),
            Refusal::ConnectRate { retry_secs } => write!(
                f,
                "too many connections from your network; try again in {retry_secs} s"
            ),
            Refusal::ShuttingDown => f.write_str("server shutting down"),
        }
    }
}

impl Hub {
    /// Admits a new plain TCP connection on `stream` (still without a nickname), or says why not
    /// and hands the stream back.
    pub fn register(
        &self,
        peer: SocketAddr,
        stream: impl Into<Stream>,
    ) -> Result<Arc<Client>, (Refusal, Stream)> {
        self.register_via(peer, stream, Transport::Tcp)
    }

    /// Like [`register`](Self::register), for a client that came by `transport` (a front end
    /// relaying TLS or WebSocket passes its end of the pipe, [`Stream::Pipe`]).
    pub fn register_via(
        &self,
        peer: SocketAddr,
        stream: impl Into<Stream>,
        transport: Transport,
    ) -> Result<Arc<Client>, (Refusal, Stream)> {
        let stream = stream.into();
        let cfg = self.config();
        // Counted per network, under the key computed now (see `counted_as`).
        let network = (cfg.max_clients_per_ip > 0 && !cfg.is_exempt(peer.ip()))
            .then(|| cfg.network_of(peer.ip()));
        let refused = {
            let mut st = self.lock();
            if st.stopping {
                Some(Refusal::ShuttingDown)
            } else if cfg.max_clients > 0 && st.clients.len() >= cfg.max_clients {
                Some(Refusal::Full)
            } else if let Some(net) = network
                && st.per_ip.get(&net).copied().unwrap_or(0) >= cfg.max_clients_per_ip
            {
                Some(Refusal::PerIp)
            } else {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                if let Some(net) = network {
                    *st.per_ip.entry(net).or_insert(0) += 1;
                    st.counted_as.insert(id, net);
                }
                let client = Arc::new(Client::new(id, peer, stream, transport));
                client
                    .outbox
                    .push_private(0, cfg.greeting.clone(), 1 + cfg.motd.len() as u32);
                st.clients.insert(id, client.clone());
                st.peak = st.peak.max(st.clients.len());
                drop(st);
                self.counters.connections.fetch_add(1, Ordering::Relaxed);
                self.changed();
                return Ok(client);
            }
        };
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Err((refused.expect("refused"), stream))
    }
}
