//! A room's history: the last chat lines said in it, replayed to whoever enters.
//!
//! Lines are kept as slices of the very buffers the live path published (shared [`Bytes`], no
//! copy), so a replay to any number of joiners copies nothing; only a line cut from a much bigger
//! batch (a sender's read with many lines) is copied, once, so that a short line in history never
//! pins a big buffer. Bounded by lines and by bytes, whichever is reached first.
//!
//! A replay is fenced by two server lines, and each line in it is preceded by its time stamp
//! `[HH:MM] ` (UTC, said in the opening fence), a small buffer made on the first replay and shared
//! by every later one. A live line never starts with `[`, so history cannot be mistaken for live
//! chat nor faked by it. The stamp widens a line's first row by [`STAMP_COLUMNS`], which is why
//! chat lines' first rows are wrapped that much narrower (see `protocol::format`). Lines from
//! another day than the one before them (or than today, for the first) get a date line first.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::format::{self, EOL};

pub(crate) use crate::protocol::format::HISTORY_STAMP_COLUMNS as STAMP_COLUMNS;

/// A line cut from a batch more than this many times its size (plus a little) is copied.
const SHARE_RATIO: usize = 2;

/// One line said in the room.
#[derive(Debug)]
struct Said {
    /// When, in seconds since the Unix epoch.
    at: i64,
    /// The line as it went out live (wrapped rows included), CR LF at the end.
    line: Bytes,
    /// `[HH:MM] `, made on the first replay.
    stamp: OnceLock<Bytes>,
}

/// A line of history as plain data (for an upgrade's snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedLine {
    /// Unix seconds.
    pub(crate) at: i64,
    pub(crate) line: Vec<u8>,
}

/// The last lines said in one room.
#[derive(Debug, Default)]
pub(crate) struct History {
    lines: VecDeque<Said>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl History {
    /// Keeps at most `max_lines` lines and `max_bytes` bytes (0 lines: none). Rooms start from
    /// `default` and follow the settings' bounds (`RoomState::follow`).
    #[cfg(test)]
    pub(crate) fn new(max_lines: usize, max_bytes: usize) -> History {
        History {
            max_lines,
            max_bytes,
            ..History::default()
        }
    }

    /// Changes the bounds (a reload), dropping the oldest lines that no longer fit.
    pub(crate) fn set_limits(&mut self, max_lines: usize, max_bytes: usize) {
        self.max_lines = max_lines;
        self.max_bytes = max_bytes;
        self.trim();
    }

    /// True if lines are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.max_lines > 0
    }

    /// Lines kept now.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Keeps the lines of one published batch (each line a slice of it), said at `at`.
    pub(crate) fn record(&mut self, batch: &Bytes, at: SystemTime) {
        if !self.enabled() {
            return;
        }
        let secs = unix_secs(at);
        let mut start = 0;
        // Bounded by the batch: every round moves `start` forward past one line.
        while start < batch.len() {
            let end = line_end(batch, start);
            let len = end - start;
            let line = if batch.len() > SHARE_RATIO * len + 256 {
                Bytes::copy_from_slice(&batch[start..end])
            } else {
                batch.slice(start..end)
            };
            self.push(secs, line);
            start = end;
        }
    }

    fn push(&mut self, at: i64, line: Bytes) {
        if line.len() > self.max_bytes {
            return; // could never be replayed within the bound
        }
        self.bytes += line.len();
        self.lines.push_back(Said {
            at,
            line,
            stamp: OnceLock::new(),
        });
        self.trim();
    }

    fn trim(&mut self) {
        while self.lines.len() > self.max_lines || self.bytes > self.max_bytes {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.line.len(),
                None => break,
            }
        }
    }

    /// The replay for someone entering `room` at `now`: buffers in order with the lines each
    /// holds. Empty when there is no history.
    pub(crate) fn replay(&self, room: &str, now: SystemTime) -> Vec<(Bytes, u32)> {
        if self.lines.is_empty() {
            return Vec::new();
        }
        let n = self.lines.len();
        let mut out = Vec::with_capacity(2 * n + 4);
        let what = if n == 1 {
            "the last line".to_owned()
        } else {
            format!("the last {n} lines")
        };
        out.push((
            format::notice(&format!("History of {room}: {what} (times UTC)")),
            1,
        ));
        let mut day = days(unix_secs(now));
        for said in &self.lines {
            let d = days(said.at);
            if d != day {
                day = d;
                out.push((format::notice(&date(d)), 1));
            }
            let stamp = said.stamp.get_or_init(|| stamp(said.at));
            out.push((stamp.clone(), 0));
            out.push((said.line.clone(), 1));
        }
        out.push((format::notice("End of history."), 1));
        out
    }

    /// Puts lines said before any recorded here (the broker's copy of a room's history) in
    /// front of them, oldest first, within the bounds: the newest lines are the ones kept.
    pub(crate) fn seed(&mut self, older: Vec<(SystemTime, Bytes)>) {
        if !self.enabled() {
            return;
        }
        let newer: Vec<Said> = self.lines.drain(..).collect();
        self.bytes = 0;
        for (at, batch) in older {
            self.record(&batch, at);
        }
        for said in newer {
            self.bytes += said.line.len();
            self.lines.push_back(said);
            self.trim();
        }
    }

    /// The lines, oldest first, as plain data.
    pub(crate) fn export(&self) -> Vec<SavedLine> {
        self.lines
            .iter()
            .map(|s| SavedLine {
                at: s.at,
                line: s.line.to_vec(),
            })
            .collect()
    }

    /// Appends saved lines (an upgrade's), within the bounds in force.
    pub(crate) fn import(&mut self, lines: Vec<SavedLine>) {
        for l in lines {
            if !l.line.ends_with(EOL.as_bytes()) {
                continue; // every line went out whole; anything else is not ours to replay
            }
            self.push(l.at, Bytes::from(l.line));
        }
    }
}

/// The end of the line that starts at `start`: after a CR LF not followed by a continuation row.
fn line_end(batch: &[u8], start: usize) -> usize {
    let mut from = start;
    // Bounded: every round moves `from` past one LF or returns.
    loop {
        match memchr::memchr(b'\n', &batch[from..]) {
            None => return batch.len(),
            Some(i) => {
                let end = from + i + 1;
                if batch.get(end) != Some(&b' ') {
                    return end;
                }
                from = end;
            }
        }
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

/// `[HH:MM] ` for `secs`, UTC.
fn stamp(secs: i64) -> Bytes {
    let s = secs.rem_euclid(86_400);
    let text = format!("[{:02}:{:02}] ", s / 3600, s % 3600 / 60);
    debug_assert_eq!(text.len(), STAMP_COLUMNS);
    Bytes::from(text)
}

/// `YYYY-MM-DD` of day `days` since the epoch (the proleptic Gregorian calendar, H. Hinnant's
/// days-to-civil).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn text(replay: &[(Bytes, u32)]) -> String {
        replay
            .iter()
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_last_lines_within_both_bounds_and_shares_the_buffers() {
        let mut h = History::new(3, 1024);
        // 2026-12-06 21:04 UTC.
        let t = 1_796_591_040;
        for i in 0..5 {
            h.record(&Bytes::from(format!("<bob> line {i}\r\n")), at(t + i));
        }
        assert_eq!(h.len(), 3);
        let replay = h.replay("#rust", at(t + 60));
        assert_eq!(
            text(&replay),
            "*** History of #rust: the last 3 lines (times UTC)\r\n\
             [21:04] <bob> line 2\r\n[21:04] <bob> line 3\r\n[21:04] <bob> line 4\r\n\
             *** End of history.\r\n"
        );
        // The line buffers are the published ones, and a second replay shares the stamps too.
        let again = h.replay("#rust", at(t + 60));
        assert_eq!(replay[2].0.as_ptr(), again[2].0.as_ptr());
        assert_eq!(replay[1].0.as_ptr(), again[1].0.as_ptr());
        // Bytes bound: 14-byte lines, 30 bytes kept.
        h.set_limits(3, 30);
        assert_eq!(h.len(), 2);
        assert_eq!(h.replay("#r", at(t)).iter().map(|r| r.1).sum::<u32>(), 4);
    }

    #[test]
    fn a_batch_splits_into_lines_but_wrapped_rows_stay_together() {
        let mut h = History::new(10, 4096);
        let batch = Bytes::from_static(b"<a> one\r\n<a> two that\r\n    wraps\r\n* a waves\r\n");
        h.record(&batch, at(0));
        assert_eq!(h.len(), 3);
        let lines: Vec<_> = h.export().into_iter().map(|l| l.line).collect();
        assert_eq!(
            lines,
            [
                b"<a> one\r\n".to_vec(),
                b"<a> two that\r\n    wraps\r\n".to_vec(),
                b"* a waves\r\n".to_vec()
            ]
        );
        // Small batch: slices of it, no copy.
        let replay = h.replay("#r", at(0));
        let first = replay
            .iter()
            .find(|(b, _)| b.starts_with(b"<a> one"))
            .unwrap();
        assert_eq!(first.0.as_ptr(), batch.as_ptr());
    }

    #[test]
    fn a_short_line_from_a_big_batch_is_copied_rather_than_pinning_it() {
        let mut h = History::new(1, 1 << 20);
        let mut big = b"<a> x\r\n".repeat(1000);
        big.extend_from_slice(b"<a> last\r\n");
        let batch = Bytes::from(big);
        h.record(&batch, at(0));
        let replay = h.replay("#r", at(0));
        let last = &replay[2].0;
        assert_eq!(&last[..], b"<a> last\r\n");
        let inside = batch.as_ptr_range();
        assert!(!inside.contains(&last.as_ptr()));
    }

    #[test]
    fn day_changes_get_a_date_line_and_off_keeps_nothing() {
        let mut h = History::new(5, 4096);
        let day = 86_400;
        h.record(&Bytes::from_static(b"<a> old\r\n"), at(20_000 * day + 3600));
        h.record(&Bytes::from_static(b"<a> new\r\n"), at(20_001 * day + 60));
        let t = text(&h.replay("#r", at(20_001 * day + 120)));
        assert!(
            t.contains("*** 2024-10-04\r\n[01:00] <a> old\r\n*** 2024-10-05\r\n[00:01] <a> new"),
            "{t}"
        );
        let mut off = History::new(0, 4096);
        off.record(&Bytes::from_static(b"<a> x\r\n"), at(0));
        assert!(off.replay("#r", at(0)).is_empty());
        // A line bigger than the byte bound is not kept (it could never be replayed whole).
        let mut small = History::new(5, 8);
        small.record(&Bytes::from_static(b"<a> too long\r\n"), at(0));
        assert_eq!(small.len(), 0);
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(-1), "1969-12-31");
    }
}
