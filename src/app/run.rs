//! Serving and stopping: [`App::run`] starts every accept loop, the admin socket, the HTTP(S)
//! front end, the cluster link and the systemd notifier, then waits for its shutdown trigger and
//! stops. The trigger is a future, so tests and `main` choose what stops it, and the stop is
//! bounded: after `shutdown_grace` the remaining sessions are dropped. The HTTP listeners stop
//! last, so `/healthz` says 503 throughout the stop. Separate from start-up (`bind`, `adopt`)
//! because it runs the same way however the sockets were obtained.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::App;
use crate::admin::{self, AdminCtx};
use crate::cluster::Cluster;
use crate::http::{self, Http};
use crate::server::{self, Transport};
use crate::systemd;
use crate::ws;

/// How long a stop waits for sessions to relay input their clients sent before it.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest the sessions taken over in an upgrade wait for the cluster link to come up.
const CLUSTER_TAKEOVER: std::time::Duration = std::time::Duration::from_secs(3);
/// Longest a stopping node waits for its cluster link to publish the leaves and release the
/// nicknames of its members.
const CLUSTER_FINISH: std::time::Duration = std::time::Duration::from_secs(2);

impl App {
    /// Serves until `shutdown` resolves, then stops gracefully: no new connections, every client is
    /// told `*** server shutting down`, queues are flushed for at most `shutdown_grace`.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Rooms shared with a cluster: the link comes up in the background (members are told if
        // it is lost); a node with its broker down still serves, refusing lines it cannot order.
        let taking_over = self.cluster_resume.is_some();
        let cluster = self.hub.config().cluster.clone().map(|c| {
            let cluster = Cluster::new(c, self.cluster_resume.take());
            cluster.start(&self.hub);
            if let Some(upgrader) = &self.upgrader {
                upgrader.set_cluster(cluster.clone());
            }
            cluster
        });
        let tls_addrs = self.tls_addrs();
        let ctx = Arc::new(AdminCtx {
            hub: self.hub.clone(),
            listen: self.local_addrs(),
            tls_listen: tls_addrs.clone(),
            reload: self.reconfigure.clone().map(|r| {
                let reload: admin::ReloadFn = Arc::new(move || r.reload());
                reload
            }),
            upgrade: self.upgrader.clone(),
            cluster: cluster.clone(),
        });
        if let Some(cluster) = cluster.as_ref().filter(|_| taking_over) {
            // Members taken over from a predecessor in a cluster carry on once the link is up
            // (a few milliseconds): their next line would otherwise be refused as undeliverable.
            cluster.wait_up(CLUSTER_TAKEOVER).await;
        }
        let ws = Arc::new(ws::Front::new(
            self.hub.clone(),
            self.tracker.clone(),
            self.ws_relays.clone(),
            self.ws_registry.clone(),
            self.stop.clone(),
            self.gate.clone(),
            self.ws_ping,
        ));
        // Connections taken over from a predecessor carry on first: the WebSocket relays before
        // the sessions, so that each relay hears of its session's end.
        for moved in std::mem::take(&mut self.moved) {
            ws.resume(moved);
        }
        for r in std::mem::take(&mut self.resumed) {
            self.tracker.spawn(ws::resume_session(
                self.hub.clone(),
                r,
                self.ws_registry.clone(),
            ));
        }
        let admin_path = self.admin.path().display().to_string();
        let addrs = self.local_addrs();
        let http_addrs = self.http_addrs();
        let https_addrs = self.https_addrs();
        let admin = tokio::spawn(admin::serve(
            self.admin,
            ctx,
            self.admin_limits,
            self.gate.clone(),
            self.tracker.clone(),
            self.stop.clone(),
        ));
        for listener in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(addr = %addr, event = "listening", "listening for chat connections");
            }
            self.tracker.spawn(server::accept_loop(
                listener,
                Transport::Plain,
                self.gate.clone(),
                self.hub.clone(),
                self.tracker.clone(),
                self.stop.clone(),
            ));
        }
        // HTTPS serves the certificate TLS chat serves, asked at each handshake.
        let https_acceptor = self
            .tls
            .as_ref()
            .map(|t| t.certificate.acceptor(&[b"http/1.1"]));
        for (listener, front) in self
            .tls
            .into_iter()
            .flat_map(|t| t.listeners.into_iter().map(move |l| (l, t.front.clone())))
        {
            if let Ok(addr) = listener.local_addr() {
                info!(addr = %addr, event = "listening_tls", "listening for TLS chat connections");
            }
            self.tracker.spawn(server::accept_loop(
                listener,
                Transport::Tls(front),
                self.gate.clone(),
                self.hub.clone(),
                self.tracker.clone(),
                self.stop.clone(),
            ));
        }
        let site = http::Site {
            metrics: crate::metrics::registry(self.hub.clone()),
            hub: self.hub.clone(),
            chat: addrs.clone(),
            stopping: self.stop.clone(),
            ws,
        };
        let mut web: Vec<_> = std::mem::take(&mut self.http)
            .into_iter()
            .map(|l| (l, http::Listening::Http))
            .collect();
        if let Some(acceptor) = https_acceptor {
            let https = std::mem::take(&mut self.https).into_iter();
            web.extend(https.map(|l| (l, http::Listening::Https(acceptor.clone()))));
        }
        let http = Http::start(web, site, self.gate.clone());
        let listen = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        systemd::notify_ready(&self.hub, &listen);
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(systemd::status_loop(
                self.hub.clone(),
                listen.clone(),
                self.stop.clone(),
            ));
        }
        if let Some(interval) = systemd::watchdog_interval() {
            tokio::spawn(systemd::watchdog_loop(
                self.hub.clone(),
                interval,
                self.stop.clone(),
            ));
        }
        let joined = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (tls_listen, http_listen) = (joined(&tls_addrs), joined(&http_addrs));
        let https_listen = joined(&https_addrs);
        info!(
            admin_socket = %admin_path, listen = %listen, tls_listen = %tls_listen,
            http_listen = %http_listen, https_listen = %https_listen, event = "ready", "ready"
        );
        shutdown.await;
        systemd::notify_stopping();
        let (connections, _, _) = self.hub.counts();
        info!(connections, event = "stopping", "shutting down");
        self.stop.cancel();
        // The admin task owns the socket file; once it returns the file is gone.
        let _ = admin.await;
        // Phase one: lines clients wrote before the stop (still in our sockets) reach the room
        // before the shutdown notice. Bounded: a session that cannot finish does not hold the stop.
        self.hub.begin_drain();
        let _ = tokio::time::timeout(DRAIN_LIMIT, self.hub.drained()).await;
        self.hub.shutdown();
        if let Some(cluster) = &cluster {
            // The other nodes hear who left, and the nicknames are free at once.
            cluster.finish(CLUSTER_FINISH).await;
        }
        self.tracker.close();
        let grace = self.hub.config().shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.tracker.len(),
                grace_secs = grace.as_secs(),
                "grace period over; dropping connections still flushing"
            );
        }
        // Last, so that /healthz said 503 all through the stop.
        http.stop().await;
        info!(event = "stopped", "stopped");
    }
}
