//! Micro-benchmarks of the protocol hot path: what the server does to every line a client sends.
//!
//! The groups follow a line through the session: `framing` (bytes → lines), `sanitise` (line →
//! safe text), `format` (text → wire line), and `per_line`, the whole chain frame → sanitise →
//! parse → `push_say` into one batch, as `session::lines` runs it. Inputs are built here, not
//! read from disk, and every group reports throughput so results compare across line sizes.
//! Each benchmark measures for 2 s, so `cargo bench --bench protocol` takes well under a minute.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use groupchatd::protocol::format::{Wrap, push_notice, push_say};
use groupchatd::protocol::{ClientCmd, Frame, LineFramer, parse_line, sanitise_into};

/// The server's default `max_line_bytes`.
const MAX_LINE: usize = 4096;
/// Bytes per line, terminator included, as in the S1-S3 load scenarios.
const LINE_BYTES: usize = 64;
/// One large read's worth of input.
const READ_BYTES: usize = 64 * 1024;
/// Payload of one Ethernet-sized TCP segment: reads this small split lines between them.
const SEGMENT_BYTES: usize = 1448;
/// A plausible nickname for formatting.
const NICK: &str = "alice_1";

/// `READ_BYTES` of LF-terminated printable ASCII lines of `LINE_BYTES` each, all different.
fn ascii_lines() -> Vec<u8> {
    let mut out = Vec::with_capacity(READ_BYTES);
    let mut n = 0u32;
    while out.len() + LINE_BYTES <= READ_BYTES {
        let start = out.len();
        out.extend_from_slice(format!("line {n:05} ").as_bytes());
        let fill = b"the quick brown fox jumps over the lazy dog ";
        for &b in fill.iter().cycle() {
            if out.len() == start + LINE_BYTES - 1 {
                break;
            }
            out.push(b);
        }
        out.push(b'\n');
        n += 1;
    }
    out
}

/// A 64-byte ASCII line, as typed.
fn plain_line() -> Vec<u8> {
    let mut line = ascii_lines()[..LINE_BYTES - 1].to_vec();
    line.push(b'.');
    line
}

/// A 64-byte line full of what the sanitiser removes: SGR and OSC sequences, a bell, a tab,
/// a bidi override and backspaces.
fn hostile_line() -> Vec<u8> {
    let mut line = b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07tab\there \xe2\x80\xaeevil".to_vec();
    line.extend_from_slice(b" ab\x08\x08cd x");
    line.resize(LINE_BYTES, b'z');
    line
}

/// 64 bytes of CJK text (21 three-byte characters and one ASCII byte).
fn cjk_line() -> Vec<u8> {
    let mut line = "你好世界，今天天气很好，我们一起去公园散步吧".as_bytes()[..63].to_vec();
    line.push(b'!');
    assert!(std::str::from_utf8(&line).is_ok());
    line
}

/// Frames `input` fed in pieces of at most `piece` bytes; returns the number of lines.
fn frame_all(framer: &mut LineFramer, input: &[u8], piece: usize) -> usize {
    let mut lines = 0;
    for chunk in input.chunks(piece) {
        framer.feed(chunk, |frame| {
            if let Frame::Line(line) = frame {
                lines += 1;
                black_box(line);
            }
            ControlFlow::Continue(())
        });
    }
    lines
}

fn framing(c: &mut Criterion) {
    let input = ascii_lines();
    let lines = input.len() / LINE_BYTES;
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("64KiB_of_64B_lines/one_read", |b| {
        let mut framer = LineFramer::new(MAX_LINE);
        b.iter(|| assert_eq!(frame_all(&mut framer, black_box(&input), READ_BYTES), lines));
    });
    // Segments split lines, so the framer's carry-over buffer is exercised too.
    group.bench_function("64KiB_of_64B_lines/1448B_reads", |b| {
        let mut framer = LineFramer::new(MAX_LINE);
        b.iter(|| {
            assert_eq!(
                frame_all(&mut framer, black_box(&input), SEGMENT_BYTES),
                lines
            )
        });
    });
    group.finish();
}

fn sanitise(c: &mut Criterion) {
    let mut group = c.benchmark_group("sanitise");
    for (name, line) in [
        ("ascii_64B", plain_line()),
        ("escapes_64B", hostile_line()),
        ("cjk_64B", cjk_line()),
    ] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_function(name, |b| {
            let mut out = String::with_capacity(MAX_LINE);
            b.iter(|| {
                out.clear();
                black_box(sanitise_into(black_box(&line), &mut out));
                black_box(out.len());
            });
        });
    }
    group.finish();
}

fn format(c: &mut Criterion) {
    let text = String::from_utf8(plain_line()).expect("ASCII");
    let mut group = c.benchmark_group("format");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_say_64B", |b| {
        let mut out = BytesMut::with_capacity(READ_BYTES);
        b.iter(|| {
            out.clear();
            push_say(&mut out, Wrap::at(80), black_box(NICK), black_box(&text));
            black_box(out.len());
        });
    });
    group.bench_function("push_notice_64B", |b| {
        let mut out = BytesMut::with_capacity(READ_BYTES);
        b.iter(|| {
            out.clear();
            push_notice(&mut out, black_box(&text));
            black_box(out.len());
        });
    });
    group.finish();
}

/// Runs every line of `input` through the session's chain into `batch`; returns the lines said.
fn relay_all(
    framer: &mut LineFramer,
    line: &mut String,
    batch: &mut BytesMut,
    input: &[u8],
) -> usize {
    let mut said = 0;
    framer.feed(input, |frame| {
        if let Frame::Line(raw) = frame {
            line.clear();
            sanitise_into(raw, line);
            if let ClientCmd::Say(text) = parse_line(line) {
                push_say(batch, Wrap::at(80), NICK, text);
                said += 1;
            }
        }
        ControlFlow::Continue(())
    });
    said
}

fn per_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_line");
    let plain = ascii_lines();
    // 21 three-byte characters and LF: 64 bytes on the wire, like the ASCII lines.
    let mut cjk = Vec::with_capacity(READ_BYTES);
    while cjk.len() + LINE_BYTES <= READ_BYTES {
        cjk.extend_from_slice(&cjk_line()[..LINE_BYTES - 1]);
        cjk.push(b'\n');
    }
    for (name, input) in [("ascii_64B_lines", plain), ("cjk_64B_lines", cjk)] {
        let lines = input.iter().filter(|&&b| b == b'\n').count();
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_function(format!("frame_sanitise_parse_say/{name}"), |b| {
            let mut framer = LineFramer::new(MAX_LINE);
            let mut line = String::with_capacity(MAX_LINE);
            let mut batch = BytesMut::with_capacity(2 * READ_BYTES);
            b.iter(|| {
                batch.clear();
                let said = relay_all(&mut framer, &mut line, &mut batch, black_box(&input));
                assert_eq!(said, lines);
                black_box(batch.len());
            });
        });
    }
    group.finish();
}

// Written out rather than with `criterion_group!`, whose generated `pub fn` has no doc comment.
fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    framing(&mut c);
    sanitise(&mut c);
    format(&mut c);
    per_line(&mut c);
    c.final_summary();
}
