//! Moving WebSocket connections over plain HTTP to a new process (`chatctl upgrade`).
//!
//! A WebSocket client is a session (which freezes and moves like a TCP client's, with the
//! session's end of the socket pair as its socket) plus a relay here. [`Relays`] knows every
//! relay that can move, and [`Relays::freeze`] asks each to stop between two of its steps and
//! give up what it holds ([`WsState`]): client bytes not yet turned into a message (whole frames
//! are given to tungstenite one at a time, so that is all of its input state; see `frames`),
//! framed bytes owed to the client, the rest of a line owed to the session, and session output
//! not yet a whole line. With the relay's end of the pair and the TCP connection, that is the
//! whole connection: what sits in the kernel's buffers moves with the sockets. The new process
//! rebuilds the relay around them and starts the ping clock afresh.
//!
//! A relay in the middle of a fragmented message (browsers do not send those) cannot move; it
//! says so, and the upgrade tells its client to reconnect, as it tells TLS and `wss://` clients
//! (whose TLS session cannot move at all, so they never register here). Nothing is read or written
//! by a frozen relay until the upgrade commits (the process exits) or rolls back ([`Frozen`]
//! thaws every relay when dropped without [`Frozen::commit`]).
//!
//! The registry also carries each session's end to its relay ([`Relays::session_left`]): a
//! session that freezes has not ended, and after a roll-back the resumed session is another task.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::ClientId;
use crate::drain::{Drain, DrainTicket};

/// A relay's state at a hand-over, as the snapshot carries it (in hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsState {
    /// Bytes from the client not yet turned into a message: at most a few frames, the last
    /// perhaps partial.
    #[serde(with = "crate::hex")]
    pub inbound: Vec<u8>,
    /// Frames for the client, ready for the wire, not yet written.
    #[serde(with = "crate::hex")]
    pub to_client: Vec<u8>,
    /// The rest of a line (with its LF) not yet written to the session.
    #[serde(with = "crate::hex")]
    pub to_session: Vec<u8>,
    /// Session output read but not yet a whole line.
    #[serde(with = "crate::hex")]
    pub row: Vec<u8>,
}

/// What a frozen relay gives up: its sockets (still its own: the process either exits or thaws
/// it) and its state.
#[derive(Debug)]
pub(crate) struct Given {
    /// The relay's end of the socket pair.
    pub(crate) pipe: RawFd,
    /// The WebSocket's TCP connection.
    pub(crate) tcp: RawFd,
    pub(crate) state: WsState,
}

/// What the relays answered.
#[derive(Debug, Default)]
struct Answers {
    given: HashMap<ClientId, Given>,
    cannot: Vec<ClientId>,
}

/// One relay's part in a freeze.
#[derive(Debug)]
pub(super) struct FreezeRequest {
    _ticket: DrainTicket,
    answers: Arc<Mutex<Answers>>,
    thaw: CancellationToken,
}

impl FreezeRequest {
    /// Hands over `id`'s relay; the relay then waits for [`thawed`](Self::thawed).
    pub(super) fn give(&self, id: ClientId, given: Given) {
        lock(&self.answers).given.insert(id, given);
    }

    /// `id`'s relay cannot move now; it carries on.
    pub(super) fn cannot(self, id: ClientId) {
        lock(&self.answers).cannot.push(id);
    }

    /// Resolves when the upgrade rolled back (never, if it committed: the process exits).
    pub(super) async fn thawed(self) {
        let thaw = self.thaw.clone();
        drop(self);
        thaw.cancelled().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics under these locks; a poisoned one still holds a whole value.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the registry holds for one relay.
#[derive(Debug, Default)]
pub(super) struct Control {
    /// Cancelled when the session has left.
    session_left: CancellationToken,
    freeze: Mutex<Option<FreezeRequest>>,
    asked: Notify,
}

impl Control {
    /// Resolves once the client's session has left.
    pub(super) async fn session_left(&self) {
        self.session_left.cancelled().await;
    }

    /// Resolves with a freeze request, when one comes.
    pub(super) async fn freeze_requested(&self) -> FreezeRequest {
        // Bounded: a wake-up without a request (one withdrawn) waits again.
        loop {
            let asked = self.asked.notified();
            if let Some(request) = lock(&self.freeze).take() {
                return request;
            }
            asked.await;
        }
    }
}

/// The relays of WebSocket clients over plain HTTP: those an upgrade can move.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    relays: Mutex<HashMap<ClientId, Arc<Control>>>,
}

/// Keeps a relay registered while it lives.
pub(super) struct Registered {
    relays: Arc<Relays>,
    id: ClientId,
    pub(super) control: Arc<Control>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.relays.relays).remove(&self.id);
    }
}

impl Relays {
    /// Registers `id`'s relay until the guard is dropped.
    pub(super) fn register(self: &Arc<Self>, id: ClientId) -> Registered {
        let control = Arc::new(Control::default());
        lock(&self.relays).insert(id, control.clone());
        Registered {
            relays: self.clone(),
            id,
            control,
        }
    }

    /// Tells `id`'s relay (if it has one here) that its session has left.
    pub(crate) fn session_left(&self, id: ClientId) {
        if let Some(control) = lock(&self.relays).get(&id) {
            control.session_left.cancel();
        }
    }

    /// Asks every relay to stop and give up its state, and waits at most `limit` for the
    /// answers. A relay that did not answer in time is withdrawn and counted as one that cannot
    /// move. Dropping the result without [`Frozen::commit`] lets every frozen relay go on.
    pub(crate) async fn freeze(&self, limit: Duration) -> Frozen {
        let drain = Drain::default();
        let answers = Arc::new(Mutex::new(Answers::default()));
        let thaw = CancellationToken::new();
        let controls: Vec<(ClientId, Arc<Control>)> = lock(&self.relays)
            .iter()
            .map(|(&id, c)| (id, c.clone()))
            .collect();
        for (_, control) in &controls {
            *lock(&control.freeze) = Some(FreezeRequest {
                _ticket: drain.ticket(),
                answers: answers.clone(),
                thaw: thaw.clone(),
            });
            control.asked.notify_one();
        }
        let _ = tokio::time::timeout(limit, drain.finished()).await;
        let mut answers = std::mem::take(&mut *lock(&answers));
        for (id, control) in &controls {
            // Withdrawn: it did not answer, so it is not frozen and carries on.
            if lock(&control.freeze).take().is_some() {
                answers.cannot.push(*id);
            }
        }
        Frozen {
            given: answers.given,
            cannot: answers.cannot,
            thaw: Some(thaw),
        }
    }
}

/// The relays stopped for an upgrade.
#[derive(Debug)]
pub(crate) struct Frozen {
    /// Each frozen relay's sockets and state.
    pub(crate) given: HashMap<ClientId, Given>,
    /// Relays that cannot move (a fragmented message in progress, or no answer): their clients
    /// are to be told to reconnect.
    pub(crate) cannot: Vec<ClientId>,
    thaw: Option<CancellationToken>,
}

impl Frozen {
    /// The upgrade committed: the relays stay stopped until the process exits.
    pub(crate) fn commit(mut self) {
        self.thaw = None;
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(thaw) = self.thaw.take() {
            thaw.cancel();
        }
    }
}
