//! Unit tests for the line framer.
//!
//! A table of streams checks every rule; each stream, and thousands of random streams checked
//! against a byte-at-a-time reference model, must frame identically however it is split into
//! reads, including when the caller breaks after every frame.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Line(Vec<u8>),
    TooLong,
}
use Owned::TooLong;

fn line(s: &[u8]) -> Owned {
    Owned::Line(s.to_vec())
}

fn own(frame: Frame<'_>) -> Owned {
    match frame {
        Frame::Line(l) => line(l),
        Frame::TooLong => TooLong,
    }
}

/// Feeds `stream` cut at `cuts` (ascending offsets), then finishes.
fn frames_with_cuts(max: usize, stream: &[u8], cuts: &[usize]) -> Vec<Owned> {
    let mut framer = LineFramer::new(max);
    let mut frames = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        let chunk = &stream[start..end];
        let n = framer.feed(chunk, |f| {
            frames.push(own(f));
            ControlFlow::Continue(())
        });
        assert_eq!(n, chunk.len());
        assert!(framer.buffered() <= max + 1);
        start = end;
    }
    framer.finish(|f| frames.push(own(f)));
    assert_eq!(framer.capacity(), 0);
    frames
}

/// Feeds `stream` whole but breaks after every frame, resuming with the unconsumed rest.
fn frames_with_breaks(max: usize, stream: &[u8]) -> Vec<Owned> {
    let mut framer = LineFramer::new(max);
    let mut frames = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let before = frames.len();
        let n = framer.feed(&stream[off..], |f| {
            frames.push(own(f));
            ControlFlow::Break(())
        });
        assert!(n > 0 || frames.len() > before, "no progress at {off}");
        assert!(n == stream.len() - off || frames.len() == before + 1);
        off += n;
    }
    framer.finish(|f| frames.push(own(f)));
    frames
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// (limit, stream, frames expected however the stream is split).
fn cases() -> Vec<(usize, Vec<u8>, Vec<Owned>)> {
    let mut sb_flood = b"\xff\xfa".to_vec();
    sb_flood.extend([b'x'; 600]);
    sb_flood.push(b'\n');
    let storm = b"\xff\xfd\x01\xff\xfb\x03\xff\xfe\x22\xff\xfc\x1f".repeat(40);
    vec![
        (
            64,
            b"hello\nworld\n".to_vec(),
            vec![line(b"hello"), line(b"world")],
        ),
        (64, b"a\r\nb\r\n".to_vec(), vec![line(b"a"), line(b"b")]),
        (64, b"a\r\0b\r\0".to_vec(), vec![line(b"a"), line(b"b")]),
        // A lone CR or NUL is data.
        (64, b"a\rb\n".to_vec(), vec![line(b"a\rb")]),
        (64, b"\0a\0b\n".to_vec(), vec![line(b"\0a\0b")]),
        (64, b"\r\r\nx\n".to_vec(), vec![line(b"\r"), line(b"x")]),
        (64, b"a\rb\0c\r\0".to_vec(), vec![line(b"a\rb\0c")]),
        (
            64,
            b"\n\r\n\r\0".to_vec(),
            vec![line(b""), line(b""), line(b"")],
        ),
        // Unterminated tail at EOF; a final CR is dropped.
        (64, b"a\ntail".to_vec(), vec![line(b"a"), line(b"tail")]),
        (64, b"tail\r".to_vec(), vec![line(b"tail")]),
        // Limits: exactly at the limit is fine, whatever the terminator.
        (
            5,
            b"abcde\nxy\n".to_vec(),
            vec![line(b"abcde"), line(b"xy")],
        ),
        (
            5,
            b"abcde\r\nxy\n".to_vec(),
            vec![line(b"abcde"), line(b"xy")],
        ),
        (5, b"abcde\r\0".to_vec(), vec![line(b"abcde")]),
        (5, b"abcdef\nok\n".to_vec(), vec![TooLong, line(b"ok")]),
        (5, b"abcde\rx\nok\n".to_vec(), vec![TooLong, line(b"ok")]),
        (5, b"abcde\r\r\nok\n".to_vec(), vec![TooLong, line(b"ok")]),
        (
            3,
            b"abcdefgh\r\nok\nwxyz\n".to_vec(),
            vec![TooLong, line(b"ok"), TooLong],
        ),
        (3, b"abcdef".to_vec(), vec![TooLong]),
        (0, b"\na\n\n".to_vec(), vec![line(b""), TooLong, line(b"")]),
        // Telnet commands vanish, even between CR and LF or inside a discarded line.
        (64, storm, vec![]),
        (64, b"he\xff\xf1llo\n".to_vec(), vec![line(b"hello")]),
        (64, b"a\xff\xffb\n".to_vec(), vec![line(b"ab")]),
        (64, b"a\xff\xfb\nb\n".to_vec(), vec![line(b"ab")]),
        (
            64,
            b"\xff\xfa\x18\0\nxterm\n\xff\xff\xff\xf0hi\n".to_vec(),
            vec![line(b"hi")],
        ),
        (
            64,
            b"a\r\xff\xf1\nb\r\xff\xfd\x01\0".to_vec(),
            vec![line(b"a"), line(b"b")],
        ),
        (1000, sb_flood, vec![line(&[b'x'; 88])]),
        (
            3,
            b"abcdef\xff\xfa\n\xff\xf0gh\nok\n".to_vec(),
            vec![TooLong, line(b"ok")],
        ),
        (3, b"ab\xff\xfb\x01c\n".to_vec(), vec![line(b"abc")]),
        (64, b"hi\n\xff".to_vec(), vec![line(b"hi")]),
    ]
}

/// Asserts that `stream` gives `expected` fed whole, byte by byte, cut at every single
/// point, in random chunks, and with a break after every frame.
fn assert_split_invariant(max: usize, stream: &[u8], expected: &[Owned], rng: &mut XorShift) {
    let name = stream.escape_ascii().to_string();
    let check = |cuts: &[usize]| {
        let got = frames_with_cuts(max, stream, cuts);
        assert_eq!(got, expected, "{name} (limit {max}) cut at {cuts:?}");
    };
    check(&[]);
    check(&(1..stream.len()).collect::<Vec<_>>());
    for cut in 0..=stream.len() {
        check(&[cut]);
    }
    for _ in 0..20 {
        let mut cuts = vec![rng.below(4).min(stream.len())];
        while cuts[cuts.len() - 1] < stream.len() {
            cuts.push((cuts[cuts.len() - 1] + 1 + rng.below(7)).min(stream.len()));
        }
        check(&cuts);
    }
    assert_eq!(frames_with_breaks(max, stream), expected, "{name}: breaks");
}

#[test]
fn frames_do_not_depend_on_splitting() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (max, stream, expected) in cases() {
        assert_split_invariant(max, &stream, &expected, &mut rng);
    }
}

/// The framer's rules applied one byte at a time, as plainly as possible.
fn reference(max: usize, stream: &[u8]) -> Vec<Owned> {
    let (mut frames, mut line) = (Vec::new(), Vec::new());
    let (mut cr, mut discard, mut telnet) = (false, false, Telnet::Data);
    // `None` ends the line; `Some` adds a content byte.
    let mut push = |b: Option<u8>, line: &mut Vec<u8>, discard: &mut bool| match b {
        None => {
            if !std::mem::take(discard) {
                frames.push(Owned::Line(std::mem::take(line)));
            }
        }
        Some(_) if *discard => {}
        Some(b) => {
            line.push(b);
            if line.len() > max {
                frames.push(TooLong);
                line.clear();
                *discard = true;
            }
        }
    };
    for &b in stream {
        if telnet != Telnet::Data {
            telnet = telnet.step(b);
            continue;
        }
        if b == IAC {
            telnet = Telnet::Iac;
            continue;
        }
        if std::mem::take(&mut cr) {
            if b == LF || b == NUL {
                push(None, &mut line, &mut discard);
                continue;
            }
            push(Some(CR), &mut line, &mut discard);
        }
        match b {
            CR => cr = true,
            LF => push(None, &mut line, &mut discard),
            _ => push(Some(b), &mut line, &mut discard),
        }
    }
    if !discard && !line.is_empty() {
        frames.push(Owned::Line(line));
    }
    frames
}

#[test]
fn random_streams_match_reference() {
    const ALPHABET: &[u8] = b"ab\r\r\n\0\xff\xfa\xf0\xfb\xf1\x01";
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..3_000 {
        let max = rng.below(6);
        let len = rng.below(40);
        let stream: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        let expected = reference(max, &stream);
        assert_split_invariant(max, &stream, &expected, &mut rng);
    }
}

#[test]
fn break_reports_consumed_bytes() {
    let stream = b"one\r\ntwo\nthree";
    let mut framer = LineFramer::new(16);
    let mut frames = Vec::new();
    let mut stop = |f: Frame<'_>| {
        frames.push(own(f));
        ControlFlow::Break(())
    };
    assert_eq!(framer.feed(stream, &mut stop), 5);
    assert_eq!(framer.feed(&stream[5..], &mut stop), 4);
    assert_eq!(framer.feed(&stream[9..], &mut stop), 5);
    assert_eq!(framer.buffered(), 5);
    assert_eq!(frames, [line(b"one"), line(b"two")]);

    // TooLong breaks right after the byte that passed the limit.
    let mut framer = LineFramer::new(3);
    let n = framer.feed(b"abcdefg\nok\n", |_| ControlFlow::Break(()));
    assert_eq!(n, 4);
}

#[test]
fn zero_copy_and_memory_release() {
    let mut framer = LineFramer::new(64);
    assert_eq!(framer.capacity(), 0);
    let input = b"whole line\n";
    framer.feed(input, |f| {
        if let Frame::Line(l) = f {
            assert_eq!(l.as_ptr(), input.as_ptr(), "line was copied");
        }
        ControlFlow::Continue(())
    });
    assert_eq!((framer.buffered(), framer.capacity()), (0, 0));
    framer.feed(b"part", |_| ControlFlow::Continue(()));
    assert_eq!(framer.buffered(), 4);
    framer.feed(b"ial\nnext", |_| ControlFlow::Continue(()));
    assert_eq!(framer.buffered(), 4);
    framer.feed(b"\n", |_| ControlFlow::Continue(()));
    assert_eq!((framer.buffered(), framer.capacity()), (0, 0));
}

#[test]
fn huge_line_is_never_buffered() {
    let max = 1024;
    let mut framer = LineFramer::new(max);
    let mut frames = Vec::new();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..160 {
        framer.feed(&chunk, |f| {
            frames.push(own(f));
            ControlFlow::Continue(())
        });
        assert!(framer.buffered() <= max + 1);
        assert_eq!(framer.capacity(), 0);
    }
    framer.feed(b"\nok\n", |f| {
        frames.push(own(f));
        ControlFlow::Continue(())
    });
    assert_eq!(frames, [TooLong, line(b"ok")]);
}

/// (fed before the change, new limit, fed after the change, frames).
type LimitCase<'a> = (&'a [u8], usize, &'a [u8], Vec<Owned>);

#[test]
fn new_limit_applies_from_next_line() {
    let table: &[LimitCase<'_>] = &[
        // (before the change, new limit, after the change, frames)
        (
            b"abcdef",
            4,
            b"gh\nabcdef\n",
            vec![line(b"abcdefgh"), TooLong],
        ),
        (b"", 4, b"abcde\n", vec![TooLong]),
        (
            b"ab\n",
            16,
            b"abcdefghij\n",
            vec![line(b"ab"), line(b"abcdefghij")],
        ),
    ];
    for (before, limit, after, expected) in table {
        let mut framer = LineFramer::new(8);
        let mut frames = Vec::new();
        let mut push = |f: Frame<'_>| {
            frames.push(own(f));
            ControlFlow::Continue(())
        };
        framer.feed(before, &mut push);
        framer.set_max_line(*limit);
        framer.feed(after, &mut push);
        assert_eq!(&frames, expected);
    }
}
