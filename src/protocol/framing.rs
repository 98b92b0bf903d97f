//! Line framing of a client's byte stream, with telnet command stripping.
//!
//! [`LineFramer`] is sans-IO: the session feeds it whatever a read returned and gets complete
//! lines back. Invariants: the frames produced do not depend on how the stream was split into
//! reads; a line's content never exceeds the limit (a longer line becomes a single
//! [`Frame::TooLong`] and the rest of it is skipped without being buffered); telnet IAC sequences
//! never reach a line; and a framer that is between lines holds no heap memory.

use std::ops::ControlFlow;

use memchr::memchr3;

use telnet::{IAC, Telnet};

mod telnet;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

/// One result of framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its terminator or telnet commands. It may be empty and may
    /// contain lone CR and NUL bytes (the sanitiser removes them); it never contains 0xFF.
    Line(&'a [u8]),
    /// A line exceeded the limit. Emitted once per such line, as soon as the limit is passed;
    /// the remainder of the line is skipped.
    TooLong,
}

/// A framer between two reads, as plain data: what an upgrade hands to the next process so that a
/// line typed across the hand-over arrives whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FramerState {
    /// Limit of the line in progress.
    pub limit: usize,
    /// Limit from the next line on.
    pub next_limit: usize,
    /// The start of the line in progress.
    #[serde(with = "crate::hex")]
    pub partial: Vec<u8>,
    /// The telnet interpreter's state, as (kind, count).
    pub telnet: (u8, u16),
    /// A CR whose meaning depends on the next byte.
    pub pending_cr: bool,
    /// Skipping the rest of an overlong line.
    pub discarding: bool,
}

/// Splits a byte stream into lines ended by LF, CR LF or CR NUL, enforcing a length limit.
#[derive(Debug)]
pub struct LineFramer {
    /// Limit for the line in progress.
    limit: usize,
    /// Limit from the next line on (see [`LineFramer::set_max_line`]).
    next_limit: usize,
    /// Start of a line that did not end inside one `feed`; never longer than `limit`.
    buf: Vec<u8>,
    telnet: Telnet,
    /// The last data byte was a CR whose meaning depends on the next data byte.
    pending_cr: bool,
    /// Skipping the rest of an overlong line.
    discarding: bool,
}

impl LineFramer {
    /// Creates a framer for lines of at most `max_line` bytes. Does not allocate.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            limit: max_line,
            next_limit: max_line,
            buf: Vec::new(),
            telnet: Telnet::Data,
            pending_cr: false,
            discarding: false,
        }
    }

    /// Changes the limit (on config reload). A line already in progress keeps the old limit.
    pub fn set_max_line(&mut self, max_line: usize) {
        self.next_limit = max_line;
        if self.buf.is_empty() && !self.pending_cr && !self.discarding {
            self.limit = max_line;
        }
    }

    /// Bytes currently held for an incomplete line (including a CR whose role is not yet known).
    pub fn buffered(&self) -> usize {
        self.buf.len() + usize::from(self.pending_cr)
    }

    /// Consumes bytes from the front of `input`, calling `on_frame` for each complete frame in
    /// order, and returns how many bytes were consumed.
    ///
    /// If `on_frame` returns `Break`, `feed` stops right after that frame so the caller can
    /// throttle and feed the unconsumed rest later (the count may then be 0, when the frame was
    /// caused by a byte held over from an earlier call). Otherwise all of `input` is consumed and
    /// an incomplete trailing line is kept internally.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_frame: impl FnMut(Frame<'_>) -> ControlFlow<()>,
    ) -> usize {
        let mut pos = 0;
        // input[run..] holds data of the current line that has not been copied into `buf`, so
        // that a line lying wholly inside `input` is handed out without a copy.
        let mut run = 0;
        while pos < input.len() {
            if self.telnet != Telnet::Data {
                self.telnet = self.telnet.step(input[pos]);
                pos += 1;
                run = pos;
                continue;
            }
            if self.pending_cr {
                // Here run == pos: a CR only stays pending at the end of input or before an IAC.
                self.pending_cr = false;
                match input[pos] {
                    LF | NUL => {
                        pos += 1;
                        run = pos;
                        if self.end_line(&[], &mut on_frame).is_break() {
                            return pos;
                        }
                        continue;
                    }
                    // Telnet commands are invisible to framing, even between CR and LF.
                    IAC => {
                        self.pending_cr = true;
                        self.telnet = Telnet::Iac;
                        pos += 1;
                        run = pos;
                        continue;
                    }
                    _ if self.overflow(1).is_some() => {
                        self.start_discard();
                        if on_frame(Frame::TooLong).is_break() {
                            return pos;
                        }
                    }
                    _ => self.stash(&[CR]),
                }
            }

            let (seg_end, special) = match memchr3(LF, NUL, IAC, &input[pos..]) {
                Some(i) => (pos + i, Some(input[pos + i])),
                None => (input.len(), None),
            };
            let ends_cr = seg_end > run && input[seg_end - 1] == CR;
            // Everything in input[run..data_end] is now known to be line content. A CR right
            // before the special byte is either part of a terminator or not yet decided.
            let data_end = match special {
                Some(NUL) if !ends_cr => seg_end + 1,
                _ => seg_end - usize::from(ends_cr),
            };
            if let Some(room) = self.overflow(data_end - run) {
                let at = run + room + 1;
                self.start_discard();
                if on_frame(Frame::TooLong).is_break() {
                    return at;
                }
                pos = at;
                run = at;
                continue;
            }
            match special {
                // A NUL not preceded by CR is data: keep the run going.
                Some(NUL) if !ends_cr => pos = seg_end + 1,
                Some(LF | NUL) => {
                    pos = seg_end + 1;
                    let line = &input[run..data_end];
                    run = pos;
                    if self.end_line(line, &mut on_frame).is_break() {
                        return pos;
                    }
                }
                // IAC or end of input: the line continues past this point, so keep its start.
                _ => {
                    self.stash(&input[run..data_end]);
                    self.pending_cr = ends_cr;
                    pos = if special.is_some() {
                        self.telnet = Telnet::Iac;
                        seg_end + 1
                    } else {
                        seg_end
                    };
                    run = pos;
                }
            }
        }
        // Only a data NUL at the very end leaves a run behind.
        self.stash(&input[run..]);
        input.len()
    }

    /// At clean EOF: emits the unterminated tail as a line if it is non-empty and not being
    /// discarded, then resets the framer. A final lone CR is dropped, as the sanitiser would.
    pub fn finish(&mut self, mut on_frame: impl FnMut(Frame<'_>)) {
        let tail = std::mem::take(&mut self.buf);
        if !self.discarding && !tail.is_empty() {
            on_frame(Frame::Line(&tail));
        }
        *self = LineFramer::new(self.next_limit);
    }

    /// The state between reads (see [`FramerState`]).
    pub fn export(&self) -> FramerState {
        FramerState {
            limit: self.limit,
            next_limit: self.next_limit,
            partial: self.buf.clone(),
            telnet: self.telnet.to_parts(),
            pending_cr: self.pending_cr,
            discarding: self.discarding,
        }
    }

    /// A framer continuing from `state`, or None if the state is not one a framer can be in (a
    /// partial line over its limit, an unknown telnet state).
    pub fn import(state: FramerState) -> Option<LineFramer> {
        let telnet = Telnet::from_parts(state.telnet.0, state.telnet.1)?;
        let consistent = state.limit > 0
            && state.next_limit > 0
            && state.partial.len() <= state.limit
            && (!state.discarding || state.partial.is_empty());
        consistent.then_some(LineFramer {
            limit: state.limit,
            next_limit: state.next_limit,
            buf: state.partial,
            telnet,
            pending_cr: state.pending_cr,
            discarding: state.discarding,
        })
    }

    /// If `extra` more content bytes would overflow the line, returns how many of them still fit.
    fn overflow(&self, extra: usize) -> Option<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        (!self.discarding && extra > room).then_some(room)
    }

    fn stash(&mut self, data: &[u8]) {
        if !self.discarding {
            self.buf.extend_from_slice(data);
        }
    }

    fn start_discard(&mut self) {
        self.buf = Vec::new();
        self.pending_cr = false;
        self.discarding = true;
    }

    /// Ends the current line, whose content is `buf` followed by `tail`.
    fn end_line(
        &mut self,
        tail: &[u8],
        on_frame: &mut impl FnMut(Frame<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.limit = self.next_limit;
        if std::mem::take(&mut self.discarding) {
            return ControlFlow::Continue(());
        }
        if self.buf.is_empty() {
            return on_frame(Frame::Line(tail));
        }
        // Taking the buffer releases its memory once the line has been handed out.
        let mut line = std::mem::take(&mut self.buf);
        line.extend_from_slice(tail);
        on_frame(Frame::Line(&line))
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests;
