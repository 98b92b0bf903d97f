//! Start-up from nothing: bind every chat, TLS, HTTP and HTTPS listener and the admin socket, or
//! adopt those systemd passed. Everything is bound before anything is served, so a failure here
//! is a [`StartError`] and nothing has been touched yet. Kept apart from the serving code because
//! an upgrade's successor ([`adopt`](super::adopt)) builds the same [`App`] from handed-over
//! sockets and shares only the binding helpers below.

use std::net::SocketAddr;
use std::sync::Arc;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpSocket};

use super::{App, BindError, StartError, Tls};
use crate::admin::{self, AdminError, AdminSocket};
use crate::config::Config;
use crate::preflight;
use crate::systemd::Inherited;
use crate::tls;

/// Listen backlog: deep enough that a join storm waits in the kernel rather than being refused.
const BACKLOG: u32 = 4096;

impl App {
    /// Binds every `listen`, `tls_listen`, `http_listen` and `https_listen` address of `config`,
    /// then the admin socket.
    pub fn bind(config: Config) -> Result<App, StartError> {
        Self::bind_with(config, Inherited::default())
    }

    /// Like [`bind`](Self::bind), but uses sockets systemd passed instead of binding where it did:
    /// inherited chat listeners replace `listen`, an inherited admin socket replaces `admin_socket`.
    /// First runs the [`preflight`] checks `--check-config` runs, for what is not inherited, and
    /// serves the TLS certificate they loaded. TLS and HTTP(S) listeners are always bound here.
    pub fn bind_with(config: Config, inherited: Inherited) -> Result<App, StartError> {
        let checked = preflight::check(
            &config,
            preflight::Inherited {
                chat: !inherited.chat.is_empty(),
                admin: inherited.admin.is_some(),
            },
        )?;
        let listeners = if inherited.chat.is_empty() {
            config
                .listen
                .iter()
                .map(|&addr| listen(addr).map_err(|source| BindError { addr, source }))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let adopt = |l: std::net::TcpListener| {
                let addr = l
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                TcpListener::from_std(l).map_err(|source| BindError { addr, source })
            };
            inherited
                .chat
                .into_iter()
                .map(adopt)
                .collect::<Result<Vec<_>, _>>()?
        };
        let tls = match checked.tls {
            Some(identity) => Some(bind_tls(&config.tls_listen, &identity)?),
            None => None,
        };
        let http = bind_http("http_listen", &config.http_listen)?;
        let https = bind_http("https_listen", &config.https_listen)?;
        let admin = match inherited.admin {
            Some(l) => {
                let path = admin::path::resolve(config.admin_socket.as_deref());
                AdminSocket::from_listener(
                    tokio::net::UnixListener::from_std(l).map_err(|e| AdminError::Io(path, e))?,
                )
            }
            None => bind_admin(&config)?,
        };
        let mut app = Self::with_listeners(config, listeners, http, admin);
        app.tls = tls;
        app.https = https;
        Ok(app)
    }
}

/// Binds one listening socket. IPv6 sockets are IPv6-only so `0.0.0.0:P` and `[::]:P` can both be listed.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        setsockopt(&socket, sockopt::Ipv6V6Only, &true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds every `tls_listen` address, serving `identity` (to HTTPS too).
pub(super) fn bind_tls(addrs: &[SocketAddr], identity: &tls::Identity) -> Result<Tls, BindError> {
    let listeners = addrs
        .iter()
        .map(|&addr| listen(addr).map_err(|source| BindError { addr, source }))
        .collect::<Result<Vec<_>, _>>()?;
    let certificate = tls::Certificate::new(identity);
    Ok(Tls {
        front: Arc::new(tls::Front::new(&certificate)),
        certificate,
        listeners,
    })
}

/// Binds every address of `addrs`, the value of `key` (`http_listen` or `https_listen`).
pub(super) fn bind_http(
    key: &'static str,
    addrs: &[SocketAddr],
) -> Result<Vec<TcpListener>, StartError> {
    addrs
        .iter()
        .map(|&addr| listen(addr).map_err(|source| StartError::Http { key, addr, source }))
        .collect()
}

/// Binds the admin socket where the configuration (or the default resolution) says.
pub(super) fn bind_admin(config: &Config) -> Result<AdminSocket, AdminError> {
    let path = admin::path::resolve(config.admin_socket.as_deref());
    AdminSocket::bind(
        &path,
        config.admin_socket_mode,
        config.admin_group.as_deref(),
    )
}
