//! The cluster link (`[cluster]`): rooms shared by several nodes through NATS JetStream.
//!
//! One order everywhere: every room event (chat, `/me`, joins, leaves, renames, kicks,
//! announcements, topics) is published to one stream and delivered on every node, this one
//! included, only as it comes back through this node's single ordered consumer ([`order`]), so
//! the stream's sequence is the order every member on every node sees. The hub queues what its
//! members say instead of appending it (`hub::relay`); [`publish`] takes it from there.
//!
//! The pieces, each owning one protocol:
//! - [`link`]: the connection, the link's up/down state and what members are told about it, and
//!   the stream and buckets.
//! - [`publish`]: rooms' queued events to the stream, each acknowledged (a line whose
//!   acknowledgement fails is reported to its sender).
//! - [`order`]: the ordered consumer, the last sequence applied (where a reconnection or an
//!   upgrade resumes), and seeding a room's history and topic from the stream.
//! - [`claims`]: nicknames claimed with the key-value `create` (which fails for a present key),
//!   refreshed while held, released on leave; and the directory of members on other nodes that
//!   `/who`, `/msg` and `chatctl kick` read.
//! - [`presence`]: heartbeats, and announcing the members of a node that stopped beating as
//!   left (`node lost`), once, whichever node sees it first (a message id the stream dedupes);
//!   and the nodes `chatctl nodes` lists.
//! - [`inbox`]: private messages and operator requests addressed to this node.
//!
//! Nothing here runs without `[cluster]`: the hub then never sees a [`Cluster`].

mod claims;
mod directory;
mod inbox;
mod link;
mod order;
mod presence;
mod publish;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::ClientId;
use crate::config::ClusterConfig;
use crate::hub::relay::{Membership, Relay, RelayTotals, Remote, Waiting};
use crate::hub::{Hub, Room};
use wire::Names;

pub use presence::NodeInfo;
use presence::Seen;

/// A room to seed from the stream, and who to tell when it is done.
type SeedRequest = (String, oneshot::Sender<()>);
/// A private line for another node: (node, nickname, line).
type PrivateLine = (String, String, Bytes);

/// Longest a member waits for a room's history from the stream before entering without it.
const PREPARE_LIMIT: Duration = Duration::from_secs(3);

/// What a node carries across `chatctl upgrade`: who it is in the cluster and how far it has
/// read the stream, so the new process keeps its claims and neither repeats nor skips an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resume {
    pub(crate) inc: u64,
    pub(crate) last_seq: u64,
}

/// Totals for `chatctl stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Events published to the stream.
    pub published: AtomicU64,
    /// Of those, acknowledged by JetStream.
    pub acked: AtomicU64,
    /// Publishes, acknowledgements and key-value operations that failed.
    pub errors: AtomicU64,
    /// Events applied from the stream.
    pub applied: AtomicU64,
    /// The last broker round trip, in microseconds (0: none measured yet).
    pub rtt_us: AtomicU64,
}

/// The cluster link's shared state: the hub's [`Relay`], and what the link's tasks share.
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    names: Names,
    /// This process's incarnation: a restarted node is a new one (an upgraded one is not).
    inc: u64,
    /// This process (an upgrade keeps the incarnation, not this): part of every message id.
    process: u64,
    started: SystemTime,
    hub: OnceLock<std::sync::Weak<Hub>>,
    up: AtomicBool,
    /// The NATS client is connected...
    connected: AtomicBool,
    /// ...and the consumer has seeded the rooms and runs.
    ready: AtomicBool,
    /// Members were told the link was lost (and so are owed "restored").
    lost_told: AtomicBool,
    /// Rooms that queued events, for the publisher.
    rung: Mutex<Vec<Arc<Room>>>,
    ring: Notify,
    /// The link came back: the consumer starts again right after the last sequence applied,
    /// rather than waiting to notice that its old one went quiet.
    pub(crate) restart: Notify,
    /// Changes for the claims task (in order).
    claims_tx: mpsc::UnboundedSender<claims::Cmd>,
    claims_rx: Mutex<Option<mpsc::UnboundedReceiver<claims::Cmd>>>,
    /// Private lines for other nodes.
    private_tx: mpsc::UnboundedSender<PrivateLine>,
    private_rx: Mutex<Option<mpsc::UnboundedReceiver<PrivateLine>>>,
    /// Rooms to seed from the stream, for the consumer (it alone knows where it is).
    seed_tx: mpsc::UnboundedSender<SeedRequest>,
    seed_rx: Mutex<Option<mpsc::UnboundedReceiver<SeedRequest>>>,
    directory: Mutex<directory::Directory>,
    nodes: Mutex<HashMap<String, Seen>>,
    /// When this node last saw its own heartbeat come back through its watch.
    own_beat: Mutex<Option<Instant>>,
    /// The last stream sequence applied to the rooms here.
    last_seq: AtomicU64,
    /// The consumer stops applying (an upgrade is handing the rooms over).
    held: AtomicBool,
    conn: OnceLock<link::Conn>,
    /// Claim commands sent and not yet done.
    claims_pending: AtomicU64,
    /// Publishes sent and not yet acknowledged (or failed).
    in_flight: AtomicU64,
    /// Totals.
    pub counters: LinkCounters,
}

impl Cluster {
    /// The link's state for `cfg`, continuing `resume` (an upgrade's) if given.
    pub(crate) fn new(cfg: ClusterConfig, resume: Option<Resume>) -> Arc<Cluster> {
        let (claims_tx, claims_rx) = mpsc::unbounded_channel();
        let (private_tx, private_rx) = mpsc::unbounded_channel();
        let (seed_tx, seed_rx) = mpsc::unbounded_channel();
        let resume = resume.unwrap_or_default();
        let inc = if resume.inc != 0 {
            resume.inc
        } else {
            fresh_incarnation()
        };
        Arc::new(Cluster {
            names: Names::new(&cfg.name),
            cfg,
            inc,
            process: fresh_incarnation(),
            started: SystemTime::now(),
            hub: OnceLock::new(),
            up: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            lost_told: AtomicBool::new(false),
            rung: Mutex::new(Vec::new()),
            ring: Notify::new(),
            restart: Notify::new(),
            claims_tx,
            claims_rx: Mutex::new(Some(claims_rx)),
            private_tx,
            private_rx: Mutex::new(Some(private_rx)),
            seed_tx,
            seed_rx: Mutex::new(Some(seed_rx)),
            directory: Mutex::new(directory::Directory::default()),
            nodes: Mutex::new(HashMap::new()),
            own_beat: Mutex::new(None),
            last_seq: AtomicU64::new(resume.last_seq),
            held: AtomicBool::new(false),
            conn: OnceLock::new(),
            in_flight: AtomicU64::new(0),
            claims_pending: AtomicU64::new(0),
            counters: LinkCounters::default(),
        })
    }

    /// Connects `hub` to the cluster and starts the link's tasks (they run until the process
    /// ends). Returns at once: the link comes up in the background, and members are told when it
    /// is lost or restored.
    pub(crate) fn start(self: &Arc<Self>, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
        hub.set_relay(self.clone());
        tokio::spawn(link::run(self.clone()));
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.cfg.node_name
    }

    /// True while connected to NATS.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(std::sync::Weak::upgrade)
    }

    /// What an upgrade carries over (see [`Resume`]).
    pub(crate) fn resume_state(&self) -> Resume {
        Resume {
            inc: self.inc,
            last_seq: self.last_seq.load(Ordering::Acquire),
        }
    }

    /// Stops applying the stream and waits (up to `limit`) until every event the rooms queued
    /// has been published and acknowledged: an upgrade then hands over rooms that are exactly
    /// at [`resume_state`](Self::resume_state)'s sequence.
    pub(crate) async fn quiesce(&self, limit: Duration) -> bool {
        self.held.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + limit;
        // Bounded by the deadline; a few milliseconds per round.
        loop {
            let pending = !self
                .rung
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if !pending && self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.ring.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A stopping node: waits (up to `limit`) until its members' leaves are published and their
    /// claims released.
    pub(crate) async fn finish(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let _ = self.quiesce(limit).await;
        // Bounded by the deadline.
        while self.claims_pending.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (up to `limit`) for the link to be up.
    pub(crate) async fn wait_up(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        // Bounded by the deadline.
        while !self.is_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Takes up applying the stream again (an upgrade rolled back).
    pub(crate) fn resume_applying(&self) {
        self.held.store(false, Ordering::Release);
    }

    /// Makes sure the room called `name` exists here with its history and topic read from the
    /// stream, before a member enters it (the first member here of a room that lives on other
    /// nodes). Bounded by `limit`; on timeout the member enters a room without that history.
    pub(crate) async fn prepare_room(&self, name: &str, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.seed_tx.send((name.to_owned(), tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// Every other node's members (`chatctl list --cluster`).
    pub(crate) async fn list_remote(&self) -> Vec<(String, wire::Listed)> {
        inbox::list_remote(self).await
    }

    /// Asks the node holding `nick` to kick it; returns the nickname as spelt there.
    pub async fn kick_remote(&self, nick: &str, reason: Option<&str>) -> Option<String> {
        inbox::kick_remote(self, nick, reason).await
    }
}

impl Relay for Cluster {
    fn up(&self) -> bool {
        self.is_up()
    }

    fn ring(&self, room: &Arc<Room>) {
        {
            let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
            if !rung.iter().any(|r| Arc::ptr_eq(r, room)) {
                rung.push(room.clone());
            }
        }
        self.ring.notify_one();
    }

    fn membership(&self, change: Membership) {
        self.send_claims(claims::Cmd::Change(change));
    }

    fn remote_names(&self, room_key: &str) -> Vec<Arc<str>> {
        self.remote_names_in(room_key)
    }

    fn remote_member(&self, keys: &[Arc<str>]) -> Option<Remote> {
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .find(keys)
    }

    fn send_private(&self, node: &str, nick: &str, line: Bytes) {
        let _ = self
            .private_tx
            .send((node.to_owned(), nick.to_owned(), line));
    }

    fn claim(
        self: Arc<Self>,
        owner: ClientId,
        keys: Vec<Arc<str>>,
        nick: Arc<str>,
        room: Arc<str>,
    ) -> Waiting<Result<(), String>> {
        Box::pin(async move {
            Cluster::claim(&self, owner, keys, nick, room)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn totals(&self) -> RelayTotals {
        let n = &self.counters;
        RelayTotals {
            up: self.is_up(),
            published: n.published.load(Ordering::Relaxed),
            acked: n.acked.load(Ordering::Relaxed),
            errors: n.errors.load(Ordering::Relaxed),
            applied: n.applied.load(Ordering::Relaxed),
            rtt_secs: n.rtt_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    fn prepare_room(self: Arc<Self>, name: String) -> Waiting<()> {
        Box::pin(async move { Cluster::prepare_room(&self, &name, PREPARE_LIMIT).await })
    }
}

/// A number no earlier run of this node used (time and process id mixed).
fn fresh_incarnation() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 48)).max(1)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
