//! The line framer against an independent model, whatever way its input is cut into reads.
//!
//! Input layout: byte 0 is the line limit (low 7 bits, times 32 if the high bit is set), byte 1
//! the mode (below), byte 2 the number (0..=15) of chunk-length bytes that follow, and the rest is
//! the client's byte stream. Fed whole, one byte at a time, in the fuzzer's chunks and in those
//! chunks with `Break` after every n-th frame (feeding the unconsumed rest again), `LineFramer`
//! must produce exactly the frames of [`Model`], a byte-at-a-time reading of the documented rules.
//! Always: no line is longer than the limit or holds LF or IAC, and `buffered()` stays within the
//! limit + 1.

use std::fmt;
use std::ops::ControlFlow;

use groupchatd::protocol::{Frame, LineFramer};

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;
const IAC: u8 = 0xFF;
const SB: u8 = 0xFA;
const SE: u8 = 0xF0;
/// Bytes after `IAC SB` after which a subnegotiation ends regardless of its content.
const SB_MAX: usize = 512;

/// Mode bit: return `Break` after every n-th frame, n = 1 + bits 2..=4.
const MODE_BREAK: u8 = 1;
/// Mode bit: change the limit with `set_max_line` after every chunk, alternating with the one
/// that bits 5..=7 pick from [`SECOND_LIMITS`].
const MODE_SET_LIMIT: u8 = 2;
const SECOND_LIMITS: [usize; 8] = [0, 1, 2, 5, 16, 64, 300, 4096];

/// Checks one framer input; see the module documentation for its layout.
pub fn check_framer(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let limit = usize::from(byte(0) & 0x7f) * if byte(0) & 0x80 != 0 { 32 } else { 1 };
    let mode = byte(1);
    let rest = data.get(3..).unwrap_or_default();
    let (chunks, stream) = rest.split_at(usize::from(byte(2) & 0x0f).min(rest.len()));

    let mut model = Model::new(limit);
    stream.iter().for_each(|&b| model.byte(b));
    model.finish();
    let expected = Frames(model.frames);

    let mut whole = Run::new(limit, limit, None);
    whole.feed(stream);
    assert_eq!(whole.finish(), expected, "fed whole, limit {limit}");

    let mut bytewise = Run::new(limit, limit, None);
    stream.chunks(1).for_each(|b| bytewise.feed(b));
    assert_eq!(
        bytewise.finish(),
        expected,
        "fed byte by byte, limit {limit}"
    );

    let break_every = (mode & MODE_BREAK != 0).then_some(1 + usize::from((mode >> 2) & 7));
    let mut chunked = Run::new(limit, limit, break_every);
    for_each_chunk(stream, chunks, |chunk, _| chunked.feed(chunk));
    assert_eq!(
        chunked.finish(),
        expected,
        "fed in chunks {chunks:?}, Break every {break_every:?} frames, limit {limit}"
    );

    if mode & MODE_SET_LIMIT != 0 {
        // A reload changes the limit between reads; the model applies the same rule.
        let second = SECOND_LIMITS[usize::from(mode >> 5)];
        let pick = |i: usize| if i.is_multiple_of(2) { second } else { limit };
        let mut run = Run::new(limit, limit.max(second), break_every);
        let mut model = Model::new(limit);
        for_each_chunk(stream, chunks, |chunk, i| {
            run.feed(chunk);
            chunk.iter().for_each(|&b| model.byte(b));
            run.framer.set_max_line(pick(i));
            model.set_max_line(pick(i));
        });
        model.finish();
        assert_eq!(
            run.finish(),
            Frames(model.frames),
            "limits {limit} and {second} alternating, chunks {chunks:?}"
        );
    }
}

/// Calls `f` with consecutive pieces of `stream` and their index, taking the lengths from
/// `lengths` in a cycle. A length of 0 gives an empty read followed by a one-byte one.
fn for_each_chunk(stream: &[u8], lengths: &[u8], mut f: impl FnMut(&[u8], usize)) {
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let len = lengths
            .get(i % lengths.len().max(1))
            .map_or(rest.len(), |&n| usize::from(n));
        if len == 0 {
            f(&[], i);
            i += 1;
        }
        let (chunk, tail) = rest.split_at(len.clamp(1, rest.len()));
        f(chunk, i);
        i += 1;
        rest = tail;
    }
}

/// A frame as owned data: `None` is [`Frame::TooLong`].
type Owned = Option<Vec<u8>>;

/// A frame sequence that prints lines as escaped text in assertion messages.
#[derive(PartialEq, Eq)]
struct Frames(Vec<Owned>);

impl fmt::Debug for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for frame in &self.0 {
            match frame {
                Some(line) => list.entry(&format_args!("Line(\"{}\")", line.escape_ascii())),
                None => list.entry(&format_args!("TooLong")),
            };
        }
        list.finish()
    }
}

/// The real framer plus the frames it produced, checking each call as it goes.
struct Run {
    framer: LineFramer,
    frames: Vec<Owned>,
    /// The largest limit in force at any time.
    max_limit: usize,
    break_every: Option<usize>,
    /// Bytes fed so far; every frame but the final one needs at least one.
    fed: usize,
}

impl Run {
    fn new(limit: usize, max_limit: usize, break_every: Option<usize>) -> Run {
        Run {
            framer: LineFramer::new(limit),
            frames: Vec::new(),
            max_limit,
            break_every,
            fed: 0,
        }
    }

    /// Feeds one read. After a `Break`, feeds what was not consumed again, as the session does
    /// once it has caught up.
    fn feed(&mut self, mut chunk: &[u8]) {
        if chunk.is_empty() {
            let used = self
                .framer
                .feed(chunk, |f| panic!("a frame from no input: {f:?}"));
            assert_eq!(used, 0);
        }
        self.fed += chunk.len();
        while !chunk.is_empty() {
            let (max, every) = (self.max_limit, self.break_every);
            let frames = &mut self.frames;
            let mut broke = false;
            let used = self.framer.feed(chunk, |frame| {
                assert!(!broke, "feed went on after Break with {frame:?}");
                frames.push(owned(frame, max));
                broke = every.is_some_and(|n| frames.len().is_multiple_of(n));
                if broke {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            assert!(
                used <= chunk.len(),
                "consumed {used} of {} bytes",
                chunk.len()
            );
            self.check_buffered();
            assert!(
                self.frames.len() <= self.fed,
                "{} frames from {} bytes",
                self.frames.len(),
                self.fed
            );
            if !broke {
                assert_eq!(used, chunk.len(), "feed stopped early without a Break");
                return;
            }
            chunk = &chunk[used..];
        }
    }

    fn finish(mut self) -> Frames {
        let max = self.max_limit;
        let mut frames = Vec::new();
        self.framer.finish(|frame| frames.push(owned(frame, max)));
        assert!(frames.len() <= 1, "finish gave {} frames", frames.len());
        assert!(!matches!(frames.first(), Some(None)), "finish gave TooLong");
        assert_eq!(self.framer.buffered(), 0, "finish left bytes buffered");
        self.frames.extend(frames);
        Frames(self.frames)
    }

    fn check_buffered(&self) {
        let held = self.framer.buffered();
        assert!(
            held <= self.max_limit + 1,
            "buffered {held} bytes with limit {}",
            self.max_limit
        );
    }
}

/// Copies a frame after checking what every line must satisfy.
fn owned(frame: Frame<'_>, limit: usize) -> Owned {
    match frame {
        Frame::TooLong => None,
        Frame::Line(line) => {
            let shown = line.escape_ascii();
            assert!(
                line.len() <= limit,
                "line over the limit {limit}: \"{shown}\""
            );
            assert!(!line.contains(&LF), "line holds LF: \"{shown}\"");
            assert!(!line.contains(&IAC), "line holds IAC: \"{shown}\"");
            Some(line.to_vec())
        }
    }
}

/// Where the model's telnet interpreter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    Iac,
    /// After WILL, WONT, DO or DONT: the next byte is the option.
    Option,
    /// Inside a subnegotiation, with the bytes seen since `IAC SB`.
    Sub(usize),
    /// Inside a subnegotiation, right after an unescaped IAC.
    SubIac(usize),
}

/// The framing rules read one byte at a time, as the README and `LineFramer`'s documentation
/// state them: lines end at LF, CR LF or CR NUL; other CRs and NULs are content; telnet commands
/// vanish, even between CR and LF; a line's content longer than the limit becomes one `TooLong`,
/// when its first excess byte arrives, and the rest of it is skipped; a new limit applies from the
/// next line on, or at once between lines; at EOF a non-empty, non-skipped tail is a line.
struct Model {
    limit: usize,
    next_limit: usize,
    line: Vec<u8>,
    /// A CR arrived whose meaning depends on the next data byte.
    cr: bool,
    skipping: bool,
    telnet: Telnet,
    frames: Vec<Owned>,
}

impl Model {
    fn new(limit: usize) -> Model {
        Model {
            limit,
            next_limit: limit,
            line: Vec::new(),
            cr: false,
            skipping: false,
            telnet: Telnet::Data,
            frames: Vec::new(),
        }
    }

    fn set_max_line(&mut self, limit: usize) {
        self.next_limit = limit;
        if self.line.is_empty() && !self.cr && !self.skipping {
            self.limit = limit;
        }
    }

    fn byte(&mut self, b: u8) {
        self.telnet = match self.telnet {
            Telnet::Data if b == IAC => Telnet::Iac,
            Telnet::Data => {
                self.data(b);
                Telnet::Data
            }
            Telnet::Iac => match b {
                0xFB..=0xFE => Telnet::Option,
                SB => Telnet::Sub(0),
                _ => Telnet::Data,
            },
            Telnet::Option => Telnet::Data,
            Telnet::SubIac(_) if b == SE => Telnet::Data,
            Telnet::Sub(n) | Telnet::SubIac(n) if n + 1 >= SB_MAX => Telnet::Data,
            Telnet::Sub(n) if b == IAC => Telnet::SubIac(n + 1),
            Telnet::Sub(n) | Telnet::SubIac(n) => Telnet::Sub(n + 1),
        };
    }

    fn data(&mut self, b: u8) {
        if std::mem::take(&mut self.cr) {
            if b == LF || b == NUL {
                self.end_line();
                return;
            }
            self.content(CR);
        }
        match b {
            LF => self.end_line(),
            CR => self.cr = true,
            _ => self.content(b),
        }
    }

    fn content(&mut self, b: u8) {
        if self.skipping {
            return;
        }
        if self.line.len() < self.limit {
            self.line.push(b);
        } else {
            self.frames.push(None);
            self.line.clear();
            self.skipping = true;
        }
    }

    fn end_line(&mut self) {
        self.limit = self.next_limit;
        if !std::mem::take(&mut self.skipping) {
            self.frames.push(Some(std::mem::take(&mut self.line)));
        }
    }

    fn finish(&mut self) {
        if !self.skipping && !self.line.is_empty() {
            self.frames.push(Some(std::mem::take(&mut self.line)));
        }
        let frames = std::mem::take(&mut self.frames);
        *self = Model::new(self.next_limit);
        self.frames = frames;
    }
}
