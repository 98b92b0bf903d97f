//! The markers chatbench puts in its lines, and splitting received bytes into lines.
//!
//! Sans-IO: nothing here touches a socket, so every framing case is unit-tested directly.
//! A marker is plain ASCII between two `#`, so a sanitising server passes it through untouched and
//! whatever prefix it adds (`<u3> `, a timestamp) does not matter: markers are found anywhere in a
//! line. Formats:
//! - data: `#cb:<sender>:<seq>:<sent_us>#`, padded with `x` to the requested size;
//! - readiness probe: `#cb:p:<round>#`;
//! - end of a sender's stream: `#cb:e:<sender>:<lines sent>#`.

use std::io::Write;

use memchr::{memchr, memchr_iter};

/// Every marker starts with this, right after a `#`.
const TAG: &[u8] = b"cb:";

/// Longest marker body we try to parse; anything longer is garbage, not a marker.
const MAX_BODY: usize = 64;

/// One marker found in a received line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A measured line: `seq` from `sender`, written `sent_us` microseconds after the run's start.
    Data {
        /// Index of the sending connection.
        sender: u32,
        /// The sender's sequence number, from 0.
        seq: u32,
        /// Send time, microseconds since the run's start instant.
        sent_us: u64,
    },
    /// A readiness probe of the given round (see `swarm`).
    Probe {
        /// Probe round, from 0.
        round: u32,
    },
    /// The last line of a sender: nothing more will come from it.
    End {
        /// Index of the sending connection.
        sender: u32,
        /// How many data lines it wrote.
        sent: u32,
    },
}

/// Appends one data line to `out`: the marker, `x` padding up to `size` bytes, then LF.
///
/// The line is never shorter than the marker itself, so `size` is a minimum, not a cap.
pub fn push_data_line(out: &mut Vec<u8>, sender: u32, seq: u32, sent_us: u64, size: usize) {
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "#cb:{sender}:{seq}:{sent_us}#");
    let written = out.len() - start;
    if written < size {
        out.resize(start + size, b'x');
    }
    out.push(b'\n');
}

/// Appends a readiness probe line for `round` to `out`.
pub fn push_probe_line(out: &mut Vec<u8>, round: u32) {
    let _ = writeln!(out, "#cb:p:{round}#");
}

/// Appends the end-of-stream line of `sender`, which wrote `sent` data lines, to `out`.
pub fn push_end_line(out: &mut Vec<u8>, sender: u32, sent: u32) {
    let _ = writeln!(out, "#cb:e:{sender}:{sent}#");
}

/// The first well-formed marker anywhere in `line`, if any.
pub fn find(line: &[u8]) -> Option<Marker> {
    memchr_iter(b'#', line).find_map(|at| {
        let rest = line[at + 1..].strip_prefix(TAG)?;
        parse_body(rest)
    })
}

/// Parses what follows `#cb:` up to the closing `#`.
fn parse_body(rest: &[u8]) -> Option<Marker> {
    let close = memchr(b'#', &rest[..rest.len().min(MAX_BODY + 1)])?;
    let mut fields = rest[..close].split(|&b| b == b':');
    let first = fields.next()?;
    let marker = match first {
        b"p" => Marker::Probe {
            round: number(fields.next()?)?,
        },
        b"e" => Marker::End {
            sender: number(fields.next()?)?,
            sent: number(fields.next()?)?,
        },
        _ => Marker::Data {
            sender: number(first)?,
            seq: number(fields.next()?)?,
            sent_us: number(fields.next()?)?,
        },
    };
    // Extra fields mean this is not one of ours.
    fields.next().is_none().then_some(marker)
}

/// A plain decimal number: ASCII digits only (no sign, no spaces), no overflow.
fn number<T: TryFrom<u64>>(digits: &[u8]) -> Option<T> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    T::try_from(value).ok()
}

/// Splits a byte stream into lines on LF, whatever the read boundaries; a CR before the LF is
/// dropped. A partial line is kept between reads up to `max_line` bytes; a longer one is discarded
/// as it arrives, so a hostile peer cannot make us buffer without limit.
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
    overflowed: bool,
    /// Lines dropped for being longer than `max_line`.
    pub discarded: u64,
}

impl LineSplitter {
    /// A splitter that keeps at most `max_line` bytes of an unterminated line.
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            max_line,
            overflowed: false,
            discarded: 0,
        }
    }

    /// Feeds one read's bytes, calling `on_line` with each complete line (without its line end).
    pub fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8])) {
        while let Some(nl) = memchr(b'\n', data) {
            let head = &data[..nl];
            data = &data[nl + 1..];
            if self.overflowed {
                self.overflowed = false;
                self.discarded += 1;
            } else if self.partial.is_empty() {
                // The common case: the whole line is in this read, so no copy.
                on_line(trim_cr(head));
            } else if self.partial.len() + head.len() > self.max_line {
                self.discarded += 1;
            } else {
                self.partial.extend_from_slice(head);
                on_line(trim_cr(&self.partial));
            }
            self.partial.clear();
        }
        if self.overflowed {
            return;
        }
        if self.partial.len() + data.len() > self.max_line {
            self.overflowed = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(data);
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(sender: u32, seq: u32, sent_us: u64) -> Marker {
        Marker::Data {
            sender,
            seq,
            sent_us,
        }
    }

    #[test]
    fn data_line_is_padded_to_size_and_round_trips() {
        let mut out = Vec::new();
        push_data_line(&mut out, 3, 17, 123_456, 64);
        assert_eq!(out.len(), 65);
        assert!(out.starts_with(b"#cb:3:17:123456#xxx"));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(find(&out[..64]), Some(data(3, 17, 123_456)));
    }

    #[test]
    fn size_smaller_than_the_marker_gives_the_bare_marker() {
        let mut out = Vec::new();
        push_data_line(&mut out, 1, 2, 3, 4);
        assert_eq!(out, b"#cb:1:2:3#\n");
    }

    #[test]
    fn probe_and_end_lines_round_trip() {
        let mut out = Vec::new();
        push_probe_line(&mut out, 7);
        push_end_line(&mut out, 2, 1000);
        assert_eq!(out, b"#cb:p:7#\n#cb:e:2:1000#\n");
        assert_eq!(find(b"#cb:p:7#"), Some(Marker::Probe { round: 7 }));
        assert_eq!(
            find(b"<b9> #cb:e:2:1000#"),
            Some(Marker::End {
                sender: 2,
                sent: 1000
            })
        );
    }

    #[test]
    fn markers_are_found_anywhere_in_a_line() {
        let cases: [&[u8]; 5] = [
            b"<u3> #cb:1:2:3#xxxx",
            b"[12:00] <bob> #cb:1:2:3#",
            b"#cb:1:2:3#",
            b"* u3 says #cb:1:2:3#xx and more # text",
            b"<a#b> #cb:oops# #cb:1:2:3#",
        ];
        for line in cases {
            assert_eq!(find(line), Some(data(1, 2, 3)), "{line:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_marker() {
        let cases: [&[u8]; 12] = [
            b"",
            b"*** u3 joined",
            b"#cb:",
            b"#cb:1:2:3",
            b"#cb:1:2#",
            b"#cb:1:2:3:4#",
            b"#cb:-1:2:3#",
            b"#cb:+1:2:3#",
            b"#cb: 1:2:3#",
            b"#cb:1::3#",
            b"#cb:99999999999:2:3#",
            b"#cb:p:#",
        ];
        for line in cases {
            assert_eq!(find(line), None, "{line:?}");
        }
        // A u64 send time that overflows is rejected, not wrapped.
        assert_eq!(find(b"#cb:1:2:99999999999999999999#"), None);
    }

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(1024);
        let mut lines = Vec::new();
        for c in chunks {
            s.feed(c, |l| lines.push(l.to_vec()));
        }
        lines
    }

    #[test]
    fn lf_and_crlf_lines_lose_their_line_end() {
        let lines = split_all(&[b"a\r\nb\n\r\nc\rd\n"]);
        assert_eq!(lines, [&b"a"[..], b"b", b"", b"c\rd"]);
    }

    #[test]
    fn an_unterminated_tail_waits_for_its_line_end() {
        assert_eq!(split_all(&[b"one\ntwo"]), [b"one"]);
        assert_eq!(split_all(&[b"one\ntwo", b"\r\n"]), [b"one", b"two"]);
    }

    #[test]
    fn markers_split_across_reads_at_every_position_are_found() {
        let text = b"*** u1 joined\r\n<u3> #cb:12:345:6789#xxxxx\r\n<u4> #cb:p:2#\n";
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let lines = split_all(&[&text[..cut], &text[cut..cut2], &text[cut2..]]);
                let found: Vec<_> = lines.iter().filter_map(|l| find(l)).collect();
                assert_eq!(
                    found,
                    [data(12, 345, 6789), Marker::Probe { round: 2 }],
                    "cuts at {cut}, {cut2}"
                );
                assert_eq!(lines.len(), 3);
            }
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_lines() {
        let text = b"x\r\n#cb:1:2:3#\ny\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(split_all(&chunks), [&b"x"[..], b"#cb:1:2:3#", b"y"]);
    }

    #[test]
    fn overlong_lines_are_discarded_and_the_next_line_is_intact() {
        let mut s = LineSplitter::new(8);
        let mut lines = Vec::new();
        s.feed(b"0123456789", |l| lines.push(l.to_vec()));
        s.feed(b"abc\nok\n", |l| lines.push(l.to_vec()));
        s.feed(b"01234", |l| lines.push(l.to_vec()));
        s.feed(b"56789\nend\n", |l| lines.push(l.to_vec()));
        assert_eq!(lines, [&b"ok"[..], b"end"]);
        assert_eq!(s.discarded, 2);
    }
}
