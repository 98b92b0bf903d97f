//! The session's doorbell: how the rest of the daemon asks a client's session to act (output
//! handed to it, a close, a failed write, a stop or upgrade request), with one waker and one
//! lock, so none of those needs a channel of its own.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::{Outbox, lock};
use crate::client::leave::LeaveReason;
use crate::drain::DrainTicket;
use crate::hub::Room;
use crate::hub::handover::FreezeRequest;

/// The session's doorbell: rung when the session must act (output handed to it, a close, a
/// failed write, a stop request).
#[derive(Debug, Default)]
pub(super) struct Doorbell {
    rung: bool,
    waker: Option<Waker>,
    /// A write by someone else failed: why the session must end.
    failure: Option<LeaveReason>,
    /// The daemon is stopping: relay the client's pending input, then drop this.
    drain: Option<DrainTicket>,
    /// The daemon is upgrading: give up the input state and end the session.
    freeze: Option<FreezeRequest>,
    /// A room's delivery that a flusher handed on: the session carries it on.
    owed: Option<Arc<Room>>,
}

/// What the session is asked to do, taken from the doorbell in one go.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) owed: Option<Arc<Room>>,
    pub(crate) drain: Option<DrainTicket>,
    pub(crate) failure: Option<LeaveReason>,
}

impl Outbox {
    /// Wakes the session.
    pub(crate) fn ring(&self) {
        let waker = {
            let mut bell = lock(&self.doorbell);
            bell.rung = true;
            bell.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Hands `room`'s owed delivery to the session (see `hub::deliver`).
    pub(crate) fn hand_delivery(&self, room: Arc<Room>) {
        lock(&self.doorbell).owed = Some(room);
        self.ring();
    }

    /// Everything the session has been asked to do since it last looked, in one lock.
    pub(crate) fn take_requests(&self) -> Requests {
        let mut bell = lock(&self.doorbell);
        Requests {
            owed: bell.owed.take(),
            drain: bell.drain.take(),
            failure: bell.failure.take(),
        }
    }

    /// Asks the session to relay its client's pending input (the daemon is stopping).
    pub(crate) fn request_drain(&self, ticket: DrainTicket) {
        if self.is_closing() {
            return;
        }
        lock(&self.doorbell).drain = Some(ticket);
        self.ring();
    }

    /// Asks the session to give up its input state and end (the daemon is upgrading).
    pub(crate) fn request_freeze(&self, request: FreezeRequest) {
        if self.is_closing() {
            return;
        }
        lock(&self.doorbell).freeze = Some(request);
        self.ring();
    }

    /// A write by someone else failed: the session ends for the first such reason.
    pub(super) fn record_failure(&self, reason: LeaveReason) {
        lock(&self.doorbell).failure.get_or_insert(reason);
    }

    /// Drops a waiting stop or upgrade request: a closing client relays nothing more, so it is
    /// not waited for by either.
    pub(super) fn drop_requests(&self) {
        let (ticket, freeze) = {
            let mut bell = lock(&self.doorbell);
            (bell.drain.take(), bell.freeze.take())
        };
        drop((ticket, freeze));
    }

    /// The freeze request, if one is waiting.
    pub(crate) fn take_freeze(&self) -> Option<FreezeRequest> {
        lock(&self.doorbell).freeze.take()
    }

    /// The session's side of the doorbell: ready (and reset) if rung since the last call.
    pub(crate) fn poll_doorbell(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut bell = lock(&self.doorbell);
        if std::mem::take(&mut bell.rung) {
            return Poll::Ready(());
        }
        match &mut bell.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => bell.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
