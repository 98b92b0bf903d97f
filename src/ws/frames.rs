//! What a WebSocket client sent and the protocol has not taken yet ([`Inbound`]), released to
//! tungstenite one whole frame at a time, so that tungstenite never holds part of a frame.
//!
//! That is what lets a connection move to another process between two reads: every byte the
//! client sent is either in a message already handed on, or still here, whole frames and a
//! partial one alike (RFC 6455 §5.2 headers are read to find where each frame ends). The only
//! state the protocol keeps between frames is a fragmented message in progress, which this
//! tracks too ([`Inbound::in_fragmented_message`]): browsers send every message as one frame,
//! and a connection caught in the middle of one is not moved.
//!
//! Bounded: a frame whose header announces more than `max_frame` bytes is released as soon as
//! its header is here, so tungstenite refuses it at once, and nothing waits here for its payload.

use std::io;

use bytes::{Buf, BytesMut};

/// Opcode of a continuation frame.
const CONTINUATION: u8 = 0x0;
/// Opcodes of control frames have this bit.
const CONTROL: u8 = 0x8;

/// Bytes from the client, not yet given to the protocol.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    buf: BytesMut,
    /// Bytes of the frame being released still to give (it was whole here when it began).
    releasing: usize,
    /// The last data frame released did not end its message.
    fragmented: bool,
    /// The client will send nothing more (its side of the TCP connection is closed).
    pub(super) eof: bool,
}

/// A frame header's facts.
struct Header {
    /// Bytes of the header itself.
    head: usize,
    /// Bytes of payload it announces.
    payload: u64,
    fin: bool,
    opcode: u8,
}

/// Parses the header at the start of `b`; None until all of it is there.
fn header(b: &[u8]) -> Option<Header> {
    let (&first, rest) = b.split_first()?;
    let &second = rest.first()?;
    let masked = second & 0x80 != 0;
    let (payload, extended) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 8),
        n => (u64::from(n), 0),
    };
    let head = 2 + extended + if masked { 4 } else { 0 };
    (b.len() >= head).then_some(Header {
        head,
        payload,
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
    })
}

impl Inbound {
    /// Starting with `bytes` (read before: by hyper past the request, or by a predecessor).
    pub(super) fn with(bytes: &[u8]) -> Inbound {
        Inbound {
            buf: BytesMut::from(bytes),
            ..Inbound::default()
        }
    }

    /// Where the next read from the connection goes.
    pub(super) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether tungstenite is in the middle of a fragmented message.
    #[cfg(test)]
    fn in_fragmented_message(&self) -> bool {
        self.fragmented
    }

    /// Whether the next [`release`](Self::release) gives anything: a whole frame (or an oversized
    /// frame's header) is here, or a frame is being released.
    pub(super) fn ready(&self, max_frame: usize) -> bool {
        self.releasing > 0 || self.next_frame(max_frame).is_some()
    }

    /// The length of the frame at the start, if it can be released now.
    fn next_frame(&self, max_frame: usize) -> Option<usize> {
        let h = header(&self.buf)?;
        if h.payload > max_frame as u64 {
            // Refused by tungstenite from its header alone: give only the header.
            return Some(h.head);
        }
        let len = h.head + h.payload as usize; // at most max_frame + 14
        (len <= self.buf.len()).then_some(len)
    }

    /// Copies up to `out.len()` bytes of the next whole frame into `out`: WouldBlock while no
    /// frame is whole, 0 once the client has closed and nothing is left.
    pub(super) fn release(&mut self, out: &mut [u8], max_frame: usize) -> io::Result<usize> {
        if self.releasing == 0 {
            match self.next_frame(max_frame) {
                Some(len) => {
                    if let Some(h) = header(&self.buf) {
                        self.track(&h);
                    }
                    self.releasing = len;
                }
                None if self.eof && self.buf.is_empty() => return Ok(0),
                // A partial frame after the end can never complete: hand it over for
                // tungstenite to fail on, as a reset mid-frame.
                None if self.eof => self.releasing = self.buf.len(),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        let n = out.len().min(self.releasing);
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        self.releasing -= n;
        Ok(n)
    }

    /// Follows fragmentation as tungstenite will see it.
    fn track(&mut self, h: &Header) {
        if h.opcode & CONTROL != 0 {
            return; // control frames may come between fragments and change nothing
        }
        self.fragmented = if h.opcode == CONTINUATION {
            self.fragmented && !h.fin
        } else {
            !h.fin
        };
    }

    /// What is held, for a hand-over; only between frames (nothing being released).
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        (self.releasing == 0 && !self.fragmented).then(|| self.buf.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame: `fin`, `opcode`, `payload` (mask 0, so the bytes read plainly).
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(payload);
        f
    }

    /// Everything `inbound` releases now, in reads of at most `chunk` bytes.
    fn drain(inbound: &mut Inbound, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0; chunk];
        // Bounded: each round takes at least one byte out, or ends.
        while let Ok(n) = inbound.release(&mut buf, 1 << 20) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn only_whole_frames_are_released_whatever_the_split() {
        let a = frame(true, 1, b"hello");
        let b = frame(true, 1, &[b'x'; 300]); // 16-bit length
        let c = frame(true, 2, &vec![b'y'; 70_000]); // 64-bit length
        let all = [a.clone(), b.clone(), c.clone()].concat();
        for cut in [
            1,
            2,
            3,
            7,
            a.len(),
            a.len() + 3,
            a.len() + b.len() + 9,
            all.len() - 1,
        ] {
            let mut inbound = Inbound::default();
            inbound.buf().extend_from_slice(&all[..cut]);
            let first = drain(&mut inbound, 4096);
            // Only the frames wholly inside the first part came out; the rest is held.
            let whole = [&a, &b, &c]
                .iter()
                .scan(0, |end, f| {
                    *end += f.len();
                    Some(*end)
                })
                .filter(|&end| end <= cut)
                .last()
                .unwrap_or(0);
            assert_eq!(first, all[..whole], "cut at {cut}");
            assert_eq!(inbound.take().unwrap(), all[whole..cut], "cut at {cut}");
            inbound.buf().extend_from_slice(&all[cut..]);
            let rest = drain(&mut inbound, 1000);
            assert_eq!([first, rest].concat(), all, "cut at {cut}");
            assert_eq!(inbound.len(), 0);
        }
    }

    #[test]
    fn an_oversized_frame_is_released_by_its_header() {
        let big = frame(true, 1, &[b'z'; 500]);
        let mut inbound = Inbound::default();
        inbound.buf().extend_from_slice(&big[..10]);
        let mut out = [0u8; 64];
        // 500 > 100: the 8-byte header (2 + 2 + mask) goes at once, for tungstenite to refuse.
        assert_eq!(inbound.release(&mut out, 100).unwrap(), 8);
        assert_eq!(out[..8], big[..8]);
    }

    #[test]
    fn fragmented_messages_are_tracked_and_not_taken() {
        let mut inbound = Inbound::default();
        for (f, fragmented) in [
            (frame(false, 1, b"he"), true),
            (frame(true, 9, b""), true), // a ping between fragments
            (frame(false, 0, b"ll"), true),
            (frame(true, 0, b"o"), false),
            (frame(true, 1, b"whole"), false),
        ] {
            inbound.buf().extend_from_slice(&f);
            assert_eq!(drain(&mut inbound, 4096), f);
            assert_eq!(inbound.in_fragmented_message(), fragmented);
            assert_eq!(inbound.take().is_some(), !fragmented);
        }
    }

    #[test]
    fn the_end_releases_what_is_left_then_zero() {
        let f = frame(true, 1, b"cut short");
        let mut inbound = Inbound::default();
        inbound.buf().extend_from_slice(&f[..5]);
        let mut out = [0u8; 64];
        assert_eq!(
            inbound.release(&mut out, 1 << 20).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        inbound.eof = true;
        assert_eq!(inbound.release(&mut out, 1 << 20).unwrap(), 5);
        assert_eq!(inbound.release(&mut out, 1 << 20).unwrap(), 0);
    }
}
