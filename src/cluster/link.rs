//! The connection to NATS and the link's state: connecting (and reconnecting, which the client
//! does by itself), making the stream and buckets the cluster uses, and telling this node's
//! members, once each time, when the link is lost and when it is restored.
//!
//! The link is up when the client is connected and the stream and buckets have been made; while
//! it is down the hub refuses members' lines with a clear message (`hub::relay::NOT_SENT`)
//! rather than delivering them here out of the cluster's order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tracing::{info, warn};

use super::{Cluster, claims, inbox, order, presence, publish};

/// Told to every member here when the link to NATS is lost...
pub(crate) const LOST: &str = "cluster link lost; messages are not being delivered";
/// ...and when it is back.
pub(crate) const RESTORED: &str = "cluster link restored";

/// Events the stream keeps per room and kind, at least: how far a node may fall behind and still
/// apply everything (with 64-byte lines, about 2 MB of store per busy room).
const RETAIN_PER_SUBJECT: usize = 10_000;

/// Longest wait between attempts to make the stream and buckets.
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the link's tasks share once connected.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) nicks: kv::Store,
    pub(crate) nodes: kv::Store,
}

impl Cluster {
    /// The client connected or lost its connection.
    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.refresh_up();
    }

    /// The rooms here have been seeded from the stream and the consumer runs: the link can
    /// carry members' lines (and claims) from now on.
    pub(crate) fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.refresh_up();
    }

    /// The link is up when connected and ready; members hear of each change.
    fn refresh_up(&self) {
        let now = self.connected.load(Ordering::Acquire)
            && self.ready.load(Ordering::Acquire)
            && self.conn.get().is_some();
        let was = self.up.swap(now, Ordering::AcqRel);
        if was == now {
            return;
        }
        if now {
            info!(event = "cluster_link", state = "up", node = %self.cfg.node_name, "cluster link up");
        } else {
            warn!(event = "cluster_link", state = "down", node = %self.cfg.node_name, "cluster link lost");
        }
        if let Some(hub) = self.hub() {
            // The first time the link comes up there is nothing to restore.
            if now && self.lost_told.swap(false, Ordering::AcqRel) {
                self.restart.notify_one();
                hub.tell_everyone_here(RESTORED);
            } else if !now {
                self.lost_told.store(true, Ordering::Release);
                hub.tell_everyone_here(LOST);
            }
        }
    }
}

async fn connect(cluster: &Arc<Cluster>) -> Result<async_nats::Client, String> {
    let cfg = &cluster.cfg;
    let events = cluster.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("groupchatd {}", cfg.node_name))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            // Quick at first (a broker restart takes about a second), then at most 2 s apart.
            Duration::from_millis((100 * attempts as u64).min(2000))
        })
        .event_callback(move |event| {
            let cluster = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => cluster.set_connected(true),
                    async_nats::Event::Disconnected => cluster.set_connected(false),
                    other => info!(event = "cluster_event", detail = %other, "NATS client event"),
                }
            }
        });
    if let Some(path) = &cfg.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("cannot read nats_creds_file {}: {e}", path.display()))?;
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.clone());
    }
    if let Some(ca) = &cfg.ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls = cfg.nats_urls.join(", ");
    opts.connect(cfg.nats_urls.as_slice())
        .await
        .map_err(|e| format!("cannot connect to NATS at {urls}: {e}"))
}

/// Longest wait for an answer to one JetStream request (or a publish acknowledgement).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes (or updates) the stream and the buckets.
async fn setup(cluster: &Cluster, client: &async_nats::Client) -> Result<Conn, String> {
    let mut js = jetstream::new(client.clone());
    // A request sent while the JetStream cluster has no leader (a NATS server just died) gets no
    // answer at all: it must fail soon and be sent again, not hold the consumer or a claim for
    // the client's default 10 s. Every handle made from this context (stream, buckets) keeps it.
    js.set_timeout(REQUEST_TIMEOUT);
    let names = &cluster.names;
    let hub = cluster.hub().ok_or("the daemon is stopping")?;
    let s = hub.config();
    // The stream is each node's delivery log as well as the rooms' history: it keeps far more per
    // room than history needs, so a node that falls behind (a slow moment, a reconnection) still
    // finds every event it has not applied. History reads the last `history_lines` of it.
    let per_subject = s.history_lines_most().max(RETAIN_PER_SUBJECT);
    let config = stream::Config {
        name: names.stream(),
        subjects: vec![names.stream_subjects()],
        max_messages_per_subject: per_subject as i64,
        storage: stream::StorageType::File,
        num_replicas: cluster.cfg.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let stream = match js.get_stream(names.stream()).await {
        Ok(mut existing) => {
            let current = existing
                .info()
                .await
                .map_err(|e| e.to_string())?
                .config
                .clone();
            if current.max_messages_per_subject != config.max_messages_per_subject
                || current.subjects != config.subjects
            {
                js.update_stream(config.clone())
                    .await
                    .map_err(|e| format!("cannot update stream {}: {e}", names.stream()))?;
            }
            existing
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map_err(|e| format!("cannot create stream {}: {e}", names.stream()))?,
    };
    let ttl = cluster.cfg.presence_ttl;
    let nicks = open_bucket(&js, &names.nicks_bucket(), ttl, cluster.cfg.replicas).await?;
    let nodes = open_bucket(&js, &names.nodes_bucket(), ttl, cluster.cfg.replicas).await?;
    Ok(Conn {
        client: client.clone(),
        js,
        stream,
        nicks,
        nodes,
    })
}

/// Opens a key-value bucket, making it if needed. Made here as the stream a bucket is (the
/// client's own `create_key_value` first asks for the account's limits in a form nats-server 2.9,
/// Debian bookworm's, does not answer in): one value per key, entries expiring after `ttl`.
async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_stream(config)
        .await
        .map_err(|e| format!("cannot create key-value bucket {name}: {e}"))?;
    js.get_key_value(name)
        .await
        .map_err(|e| format!("cannot open key-value bucket {name}: {e}"))
}

/// The link's life: connect, make the stream and buckets (retrying until NATS has JetStream),
/// then run every task of the link.
pub(super) async fn run(cluster: Arc<Cluster>) {
    let client = match connect(&cluster).await {
        Ok(c) => c,
        Err(e) => {
            warn!(event = "cluster_link", state = "down", error = %e, "cluster link failed");
            return;
        }
    };
    let mut backoff = Duration::from_millis(200);
    let conn = loop {
        match setup(&cluster, &client).await {
            Ok(conn) => break conn,
            Err(e) => {
                warn!(event = "cluster_setup", error = %e, "cannot set up the cluster's stream and buckets yet");
                if cluster.hub().is_none() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(SETUP_BACKOFF_MAX);
            }
        }
    };
    let _ = cluster.conn.set(conn.clone());
    info!(
        event = "cluster_ready", node = %cluster.cfg.node_name, stream = %cluster.names.stream(),
        "cluster stream and buckets ready"
    );
    tokio::spawn(order::run(cluster.clone(), conn.clone()));
    tokio::spawn(publish::run(cluster.clone(), conn.clone()));
    tokio::spawn(claims::run(cluster.clone(), conn.clone()));
    tokio::spawn(claims::watch(cluster.clone(), conn.clone()));
    tokio::spawn(presence::run(cluster.clone(), conn.clone()));
    tokio::spawn(presence::watch(cluster.clone(), conn.clone()));
    tokio::spawn(inbox::run(cluster.clone(), conn.clone()));
    tokio::spawn(inbox::send_private(cluster.clone(), conn));
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    cluster.set_connected(connected);
}
