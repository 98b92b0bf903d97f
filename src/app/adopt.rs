//! Start-up in an upgrade's successor: build the [`App`] around what the predecessor handed over
//! (listeners, admin socket, every client's sockets and the room) without reading or writing any
//! of it. Separate from [`bind`](super::bind) because its inputs and failures are the upgrade's
//! (a `String` the predecessor reports to `chatctl`), not a start's [`StartError`](super::StartError).

use std::sync::Arc;

use tokio::net::TcpListener;

use super::bind::{bind_admin, bind_http, bind_tls};
use super::{App, Tls};
use crate::admin::AdminSocket;
use crate::client::Stream;
use crate::config::Config;
use crate::hub::Hub;
use crate::tls;
use crate::upgrade::Takeover;
use crate::upgrade::takeover::Handed;
use crate::ws;

impl App {
    /// Takes over what a predecessor handed over (an upgrade): its listeners, its admin socket,
    /// and its room with every connection, none of them read or written yet. `config` is this
    /// process's own; its `listen`, `tls_listen`, `http_listen`, `https_listen` and
    /// `admin_socket` give way to the sockets handed over. A predecessor that had none of a
    /// kind (no TLS, no HTTPS, or a release from before HTTP) hands none over: then this process
    /// binds that list itself, as at a start. The certificate is this configuration's.
    pub fn adopt(config: Config, takeover: &mut Takeover) -> Result<App, String> {
        let adopt = |listeners: Vec<std::net::TcpListener>| {
            listeners
                .into_iter()
                .map(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .collect::<std::io::Result<Vec<_>>>()
        };
        let listeners = adopt(std::mem::take(&mut takeover.listeners))
            .map_err(|e| format!("chat listener: {e}"))?;
        let tls_listeners = adopt(std::mem::take(&mut takeover.tls_listeners))
            .map_err(|e| format!("TLS listener: {e}"))?;
        let https = adopt(std::mem::take(&mut takeover.https_listeners))
            .map_err(|e| format!("HTTPS listener: {e}"))?;
        let tls = adopt_tls(
            &config,
            takeover.tls.take(),
            tls_listeners,
            !https.is_empty(),
        )?;
        let bind =
            |key, addrs| bind_http(key, addrs).map_err(|e| format!("{:#}", anyhow::Error::new(e)));
        let http = match takeover.http_listeners.take() {
            Some(handed) => adopt(handed).map_err(|e| format!("HTTP listener: {e}"))?,
            None => bind("http_listen", &config.http_listen)?,
        };
        let https = match https {
            handed if !handed.is_empty() => handed,
            _ => bind("https_listen", &config.https_listen)?,
        };
        let admin = match takeover.admin.take() {
            Some(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("admin socket: {e}"))?;
                let l = tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("admin socket: {e}"))?;
                AdminSocket::adopt(l, takeover.snapshot.admin_owned).map_err(|e| e.to_string())?
            }
            None => bind_admin(&config).map_err(|e| e.to_string())?,
        };
        let mut streams = Vec::with_capacity(takeover.streams.len());
        let mut moved = Vec::new();
        let handed = std::mem::take(&mut takeover.streams);
        for (handed, c) in handed.into_iter().zip(&takeover.snapshot.room.clients) {
            let stream = match handed {
                Handed::Tcp(s) => Stream::Tcp(tcp(s)?),
                Handed::WebSocket {
                    session,
                    relay,
                    tcp: ws_tcp,
                } => {
                    moved.push(ws::Moved {
                        id: c.id,
                        peer: c.peer,
                        tcp: tcp(ws_tcp)?,
                        pipe: unix(relay)?,
                        state: c.websocket.clone().unwrap_or_default(),
                    });
                    Stream::Pipe(unix(session)?)
                }
            };
            streams.push(stream);
        }
        let mut hub = Hub::new(config);
        let resumed = hub.restore(takeover.snapshot.room.clone(), streams);
        let mut app = Self::assemble(hub, listeners, tls, http, admin, resumed);
        app.cluster_resume = takeover.snapshot.cluster.clone();
        app.https = https;
        app.moved = moved;
        Ok(app)
    }
}

/// TLS for a process taking over: the TLS chat listeners handed over if there are any, else this
/// configuration's `tls_listen`; the certificate is this configuration's either way (`identity`,
/// loaded before the hello). `https`: HTTPS listeners were handed over, which need it too.
fn adopt_tls(
    config: &Config,
    identity: Option<tls::Identity>,
    handed: Vec<TcpListener>,
    https: bool,
) -> Result<Option<Tls>, String> {
    if handed.is_empty() && !https && config.tls_listen.is_empty() && config.https_listen.is_empty()
    {
        return Ok(None);
    }
    // The predecessor checks the hello for this; validation guarantees it for the lists.
    let Some(identity) = identity else {
        return Err(
            "the old process listens for TLS or HTTPS clients, but this configuration names no \
             tls_cert_file and tls_key_file"
                .into(),
        );
    };
    if handed.is_empty() {
        return bind_tls(&config.tls_listen, &identity)
            .map(Some)
            .map_err(|e| format!("{e}: {}", e.source));
    }
    let certificate = tls::Certificate::new(&identity);
    Ok(Some(Tls {
        front: Arc::new(tls::Front::new(&certificate)),
        certificate,
        listeners: handed,
    }))
}

/// A client's TCP socket handed over, ready for tokio.
fn tcp(s: std::net::TcpStream) -> Result<tokio::net::TcpStream, String> {
    s.set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(s))
        .map_err(|e| format!("client socket: {e}"))
}

/// A WebSocket client's socket-pair end handed over, ready for tokio.
fn unix(s: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream, String> {
    s.set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(s))
        .map_err(|e| format!("WebSocket socket pair: {e}"))
}
