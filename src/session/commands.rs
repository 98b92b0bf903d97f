//! Handling one client's lines: the nickname handshake, chat lines (batched into one publish per
//! read), commands and their replies, and the decision that the client leaves.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::info;

use super::flood::TokenBucket;
use super::lines::{LINE_BUF, Leaving};
use crate::client::{Client, ClientId, Lag, LeaveReason};
use crate::hub::relay::{Membership, Waiting};
use crate::hub::{Hub, NickRefused, Room};
use crate::protocol::format::{self, REASON_MAX_CHARS, notice, notices};
use crate::protocol::{ClientCmd, Frame, HELP, NICK_PROMPT, parse_line, sanitise_into};
use crate::settings::Snapshot;

/// Longest a newcomer in a cluster waits for its join to come back through the broker.
const ARRIVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Said instead of a reply that would not fit beside the replies still on their way.
const REPLY_SKIPPED: &str = "(Reply skipped: your earlier replies are still being sent.)";

/// Everything a line needs while being handled (kept apart from the framer that calls it).
pub(super) struct LineCtx {
    pub(super) hub: Arc<Hub>,
    pub(super) client: Arc<Client>,
    pub(super) cfg: Snapshot,
    /// The nickname once joined; None while still choosing one.
    pub(super) phase: Option<Arc<str>>,
    /// The room it sits in, as last seen (an operator may have moved it since: a publish that
    /// finds it gone looks again).
    pub(super) room: Option<Arc<Room>>,
    pub(super) bucket: Option<TokenBucket>,
    /// Chat lines produced by the current read, published together.
    pub(super) batch: Vec<u8>,
    pub(super) batch_lines: u32,
    pub(super) told_utf8: bool,
    /// The time of the read being handled: one clock read per read, not per line.
    pub(super) now: Instant,
    /// Set when a line ends the session (quit, overflow of our own replies).
    /// Boxed: it is set once per connection, and every byte of session state is paid by every
    /// idle connection.
    pub(super) leave: Option<Box<Leaving>>,
    /// Set when the bucket ran dry: stop consuming input until it refills.
    pub(super) throttle: bool,
    /// Publishes made (wraps; only compared for change).
    pub(super) published: u32,
    /// Set when a publish found the room congested: pause before consuming more input.
    pub(super) congested: bool,
    /// An answer the cluster owes (a nickname claim, a room's history) before the line that
    /// asked can be finished; nothing more is read meanwhile. Boxed twice: an idle session pays
    /// one pointer for it.
    pub(super) pending: Option<Box<Pending>>,
}

/// What finishes a line once the cluster has answered.
pub(super) type Resume = Box<dyn FnOnce(&mut LineCtx) + Send>;
/// The cluster's answer on its way.
pub(super) type Pending = Waiting<Resume>;

impl LineCtx {
    pub(super) fn id(&self) -> ClientId {
        self.client.id
    }

    /// Queues a reply for this client alone. A client that does not read its own replies is as slow
    /// as one that does not read the room, but asking twice must not make a reader too slow: a
    /// reply that would not fit beside output still queued for the client is skipped (the answer
    /// before it, still on its way, answers the same question: `/who` twice in one write gets one
    /// list), with a short note if that fits. One reply into an empty queue always goes, however
    /// big (a `/who` of a huge room).
    pub(super) fn reply(&mut self, buf: Bytes, lines: u32) {
        let limit = self.cfg.settings.max_queue_bytes;
        let end = self.room.as_ref().map_or(0, |r| r.log_end());
        let queued = self.client.outbox.lag(end);
        let fits = |len: usize| queued + len as u64 <= limit as u64;
        let (buf, lines) = if queued == 0 || fits(buf.len()) {
            (buf, lines)
        } else {
            let note = notice(REPLY_SKIPPED);
            if !fits(note.len()) {
                return;
            }
            (note, 1)
        };
        if self
            .hub
            .reply(&self.client, self.room.as_deref(), buf, lines, limit)
            == Lag::Overflow
        {
            self.set_leave(LeaveReason::QueueFull, None);
        }
    }

    pub(super) fn say(&mut self, text: &str) {
        self.reply(format::wrapped_notice(self.cfg.settings.wrap, text), 1);
    }

    /// Counts a line added to the batch, publishing early when the batch is big: one publish must stay
    /// a small fraction of a recipient's queue limit, or a reader that keeps up but has one batch in
    /// flight would look slow.
    pub(super) fn batched(&mut self) {
        self.batch_lines += 1;
        let cap = (self.cfg.settings.max_queue_bytes / 8).clamp(1024, 16 * 1024);
        if self.batch.len() >= cap {
            self.flush();
        }
    }

    /// Publishes the chat lines gathered so far as one shared buffer, in the client's room.
    pub(super) fn flush(&mut self) {
        if self.batch_lines == 0 {
            return;
        }
        self.published = self.published.wrapping_add(1);
        let buf = Bytes::from(std::mem::take(&mut self.batch));
        let lines = std::mem::take(&mut self.batch_lines);
        // Bounded: a member is moved by the operator or a reload, not in a loop; after a few
        // misses it is leaving, and the lines go nowhere (nobody could receive them).
        for _ in 0..4 {
            let Some(room) = &self.room else { return };
            match self.hub.publish(room, self.id(), buf.clone(), lines) {
                Some(congested) => {
                    self.congested |= congested;
                    return;
                }
                None => self.room = self.hub.room_of(self.id()),
            }
        }
    }

    /// Why the client leaves when its handshake or idle deadline passes, and what it is told.
    pub(super) fn timed_out(&self) -> (LeaveReason, String) {
        match self.phase {
            None => {
                let secs = self
                    .cfg
                    .settings
                    .handshake_timeout
                    .unwrap_or_default()
                    .as_secs();
                let text = format!("No nickname within {secs} s; goodbye.");
                (LeaveReason::HandshakeTimeout, text)
            }
            Some(_) => {
                let secs = self.cfg.settings.idle_timeout.unwrap_or_default().as_secs();
                (
                    LeaveReason::Idle,
                    format!("Idle for {secs} s; disconnecting."),
                )
            }
        }
    }

    /// Decides that the client leaves (the first reason wins), with an optional last line. The
    /// line is queued by the hub together with the removal, so nothing can follow it.
    pub(super) fn set_leave(&mut self, reason: LeaveReason, farewell: Option<&str>) {
        if self.leave.is_none() {
            self.leave = Some(Box::new(Leaving {
                reason,
                farewell: farewell.map(notice),
            }));
        }
    }

    pub(super) fn on_frame(&mut self, frame: Frame<'_>) -> ControlFlow<()> {
        let raw = match frame {
            Frame::TooLong => {
                let max = self.cfg.settings.max_line_bytes;
                self.say(&format!(
                    "Line too long (limit {max} bytes); it was not sent."
                ));
                return self.next_step();
            }
            Frame::Line(raw) => raw,
        };
        LINE_BUF.with_borrow_mut(|line| {
            line.clear();
            let invalid = sanitise_into(raw, line);
            if invalid && !self.told_utf8 {
                self.told_utf8 = true;
                self.say("This server expects UTF-8; invalid bytes were replaced with \u{FFFD}.");
            }
            if line.is_empty() {
                return ControlFlow::Continue(());
            }
            self.client.stats.lines_in.fetch_add(1, Ordering::Relaxed);
            self.client.touch();
            match &self.phase {
                None => self.on_nick_line(line.trim()),
                Some(nick) => {
                    let nick = nick.clone();
                    self.on_chat_line(&nick, line);
                }
            }
            if let (Some(bucket), Some(flood)) = (&mut self.bucket, self.cfg.settings.flood)
                && bucket.spend(self.now, flood)
            {
                self.throttle = true;
                if !bucket.throttled {
                    bucket.throttled = true;
                    self.hub.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    info!(
                        client = self.id(),
                        event = "throttle",
                        "flood limit reached; slowing reads"
                    );
                }
            }
            self.next_step()
        })
    }

    pub(super) fn next_step(&self) -> ControlFlow<()> {
        if self.leave.is_some() || self.throttle || self.congested || self.pending.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// After `/join` or `/part`: the room it is in now, or why it stayed.
    fn entered(&mut self, entered: Result<Arc<Room>, crate::hub::EnterRefused>) {
        match entered {
            Ok(room) => self.room = Some(room),
            Err(crate::hub::EnterRefused::Gone) => {}
            Err(why) => self.say(&format!("Cannot join: {why}.")),
        }
    }

    pub(super) fn on_nick_line(&mut self, nick: &str) {
        if nick.eq_ignore_ascii_case("/quit") || nick.to_ascii_lowercase().starts_with("/quit ") {
            self.set_leave(LeaveReason::Quit(None), Some("Goodbye."));
            return;
        }
        if let Some(relay) = self.hub.relay_handle() {
            // In a cluster the name must be free on every node first.
            match self.hub.nick_keys(nick) {
                Ok((nick, keys)) => {
                    let room = self.hub.default_room_name();
                    let claim = relay.claim(self.id(), keys.clone(), nick.clone(), room);
                    self.wait_for(async move {
                        let claimed = claim.await;
                        Box::new(move |ctx: &mut LineCtx| ctx.join_claimed(&nick, keys, claimed))
                            as Resume
                    });
                }
                Err(why) => self.refuse_nick(&why.to_string()),
            }
            return;
        }
        self.join(nick);
    }

    fn join(&mut self, nick: &str) -> bool {
        match self.hub.join(self.id(), nick) {
            Ok((nick, room)) => {
                self.phase = Some(nick);
                self.room = Some(room);
                return true;
            }
            Err(NickRefused::Gone) => self.set_leave(LeaveReason::ShuttingDown, None),
            Err(why) => self.refuse_nick(&why.to_string()),
        }
        false
    }

    fn refuse_nick(&mut self, why: &str) {
        self.reply(notices([why, NICK_PROMPT]), 2);
    }

    /// Reads nothing more until `answer` is in, then runs what it returns.
    fn wait_for(&mut self, answer: impl std::future::Future<Output = Resume> + Send + 'static) {
        self.pending = Some(Box::new(Box::pin(answer)));
    }

    /// The cluster answered a nickname claim made at the prompt.
    fn join_claimed(
        &mut self,
        nick: &str,
        keys: Vec<std::sync::Arc<str>>,
        claimed: Result<(), String>,
    ) {
        match claimed {
            Ok(()) => {
                if !self.join(nick) {
                    self.release(keys);
                } else if let Some(arrival) = self.hub.arrival(self.id()) {
                    // Nothing more is read until the member has its seat in the cluster's order
                    // (a few milliseconds); if its join is lost on the way, it sits down here.
                    self.wait_for(async move {
                        let came = tokio::time::timeout(ARRIVAL_WAIT, arrival).await;
                        Box::new(move |ctx: &mut LineCtx| {
                            if !matches!(came, Ok(Ok(()))) {
                                ctx.hub.arrive_here(ctx.id());
                            }
                        }) as Resume
                    });
                }
            }
            Err(why) => self.refuse_nick(&why),
        }
    }

    /// Gives back cluster claims this client made and did not use.
    fn release(&self, keys: Vec<std::sync::Arc<str>>) {
        if let Some(relay) = self.hub.relay_handle()
            && !keys.is_empty()
        {
            relay.membership(Membership::Released { keys });
        }
    }

    /// `/nick`, once the cluster has the new name claimed (or at once, alone).
    fn rename(&mut self, new: &str, fresh: Vec<std::sync::Arc<str>>) {
        match self.hub.rename(self.id(), new) {
            Ok((_, new)) => {
                self.phase = Some(new);
            }
            Err(why) => {
                self.release(fresh);
                match why {
                    NickRefused::Gone => self.set_leave(LeaveReason::ShuttingDown, None),
                    why => self.say(&format!("Cannot change nickname: {why}")),
                }
            }
        }
    }

    pub(super) fn on_chat_line(&mut self, nick: &str, line: &str) {
        match parse_line(line) {
            ClientCmd::Say(text) => {
                format::push_say(&mut self.batch, self.cfg.settings.wrap, nick, text);
                self.batched();
            }
            ClientCmd::Me(text) => {
                format::push_action(&mut self.batch, self.cfg.settings.wrap, nick, text);
                self.batched();
            }
            other => {
                // Anything but chat is handled in order: publish what came before it first.
                self.flush();
                self.on_command(nick, other);
            }
        }
    }

    pub(super) fn on_command(&mut self, nick: &str, cmd: ClientCmd<'_>) {
        // Commands are rare: look again where the client sits (an operator may have moved it).
        self.room = self.hub.room_of(self.id());
        match cmd {
            ClientCmd::Say(_) | ClientCmd::Me(_) => unreachable!("chat lines are batched"),
            ClientCmd::Nick(new) => match self.hub.relay_handle() {
                None => self.rename(new, Vec::new()),
                Some(relay) => match (self.hub.nick_keys(new), self.hub.nick_keys(nick)) {
                    (Ok((new, keys)), Ok((_, old))) => {
                        let room = self
                            .room
                            .as_ref()
                            .map_or_else(|| self.hub.default_room_name(), |r| r.name.clone());
                        let claim = relay.claim(self.id(), keys.clone(), new.clone(), room);
                        // Keys this member holds already (a change of case) stay its own.
                        let fresh: Vec<_> = keys.into_iter().filter(|k| !old.contains(k)).collect();
                        self.wait_for(async move {
                            let claimed = claim.await;
                            Box::new(move |ctx: &mut LineCtx| match claimed {
                                Ok(()) => ctx.rename(&new, fresh),
                                Err(why) => ctx.say(&format!("Cannot change nickname: {why}")),
                            }) as Resume
                        });
                    }
                    (Err(why), _) | (_, Err(why)) => {
                        self.say(&format!("Cannot change nickname: {why}"))
                    }
                },
            },
            ClientCmd::Who => {
                let lines = self.hub.who_lines(self.id());
                self.reply(lines, 1);
            }
            ClientCmd::Join(name) => match self.hub.relay_handle() {
                None => {
                    let entered = self.hub.enter(self.id(), name, None, false);
                    self.entered(entered);
                }
                Some(relay) => {
                    // A room that lives on other nodes gets its history from the stream first.
                    let ready = relay.prepare_room(name.to_owned());
                    let name = name.to_owned();
                    self.wait_for(async move {
                        ready.await;
                        Box::new(move |ctx: &mut LineCtx| {
                            let entered = ctx.hub.enter(ctx.id(), &name, None, false);
                            ctx.entered(entered);
                        }) as Resume
                    });
                }
            },
            ClientCmd::Part => {
                let entered = self.hub.part(self.id());
                self.entered(entered);
            }
            ClientCmd::Rooms => {
                let lines = self.hub.rooms_lines(self.id());
                self.reply(lines, 1);
            }
            ClientCmd::Topic(None) => match self.hub.topic(self.id()) {
                Some((room, topic)) if topic.is_empty() => {
                    self.say(&format!("{room} has no topic; /topic TEXT sets one."))
                }
                Some((room, topic)) => self.say(&format!("Topic of {room}: {topic}")),
                None => {}
            },
            ClientCmd::Topic(Some(text)) => {
                if let Err(why) =
                    self.hub
                        .set_topic(crate::hub::TopicOf::MemberOf(self.id()), text, Some(nick))
                {
                    self.say(&format!("Cannot set the topic: {why}."));
                }
            }
            ClientCmd::Msg { to, text } => {
                let mut line = BytesMut::new();
                format::push_private(&mut line, self.cfg.settings.wrap, nick, text);
                match self.hub.send_private(to, line.freeze()) {
                    Some(to) => self.say(&format!("-> *{to}* {text}")),
                    None => self.say(&format!("No such nickname: {to}")),
                }
            }
            ClientCmd::Quit(reason) => {
                self.set_leave(
                    // Capped: the reason goes out inside a genuine server line.
                    LeaveReason::Quit(
                        reason.map(|r| format::clip(r, REASON_MAX_CHARS).into_owned()),
                    ),
                    Some("Goodbye."),
                );
            }
            ClientCmd::Help => self.reply(notices(HELP.iter().copied()), HELP.len() as u32),
            ClientCmd::Usage(usage) => self.say(usage),
            ClientCmd::Unknown(name) => self.say(&format!(
                "Unknown command /{name}; type /help for the list."
            )),
        }
    }
}
