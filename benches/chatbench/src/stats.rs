//! Delivery accounting and latency percentiles.
//!
//! Sans-IO. Each receiving connection owns one [`Tally`] (no sharing, no locks on the hot path);
//! they are merged once at the end. The latency [`Histogram`] is log-linear: exact below 128 µs,
//! then 64 buckets per power of two (under 1.6 % error), so its memory does not grow with the
//! number of deliveries.
//!
//! With the connections spread over several nodes (connection `i` on node `i % nodes`, as
//! `swarm` opens them), a delivery whose sender is on another node than its receiver is also
//! counted in a second histogram: the cross-node latency of a cluster.

/// Values below this are counted exactly, one bucket each.
const LINEAR: u64 = 128;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: u64 = 64;

/// A latency histogram in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let top_bit = u64::from(63 - v.leading_zeros());
    let shift = top_bit - 6;
    let mantissa = v >> shift; // in PER_OCTAVE..2*PER_OCTAVE
    (LINEAR + (shift - 1) * PER_OCTAVE + (mantissa - PER_OCTAVE)) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let j = i - LINEAR;
    let shift = j / PER_OCTAVE + 1;
    let mantissa = j % PER_OCTAVE + PER_OCTAVE;
    // u128: the top bucket's bound is 2^64 - 1, whose successor does not fit in u64.
    let high = ((u128::from(mantissa) + 1) << shift) - 1;
    u64::try_from(high).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        let b = bucket_of(v);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value counted by `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted, exactly; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The nearest-rank quantile `per_mille`/1000 (500 = median, 999 = p99.9): the smallest value
    /// with at least that share of values at or below it, rounded up to its bucket's bound (never
    /// above the true maximum). `None` when empty.
    pub fn quantile(&self, per_mille: u64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = (self.total * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// What one sender's lines looked like to one receiver.
#[derive(Clone, Debug)]
struct Track {
    /// One bit per sequence number, to spot duplicates.
    seen: Vec<u64>,
    /// Unique lines received.
    unique: u32,
    /// Highest sequence number received so far.
    highest: Option<u32>,
    /// The sender's end line arrived or every line did: nothing more is awaited from it.
    finished: bool,
}

/// One receiving connection's account of the run.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Per sender; `None` for a sender this receiver expects nothing from (itself, without echo).
    tracks: Vec<Option<Track>>,
    messages: u32,
    unfinished: usize,
    /// This receiver's connection index.
    me: u32,
    /// Nodes the connections are spread over (connection `i` on node `i % nodes`).
    nodes: u32,
    /// What this receiver got.
    pub counts: Totals,
}

impl Tally {
    /// The tally of receiver `me` in a run of `senders` senders (connections `0..senders`) sending
    /// `messages` lines each; with `echo`, a sender also expects its own lines.
    pub fn new(senders: u32, messages: u32, me: u32, echo: bool) -> Tally {
        Tally::in_rooms(senders, messages, me, echo, 1)
    }

    /// [`Tally::new`] for a run whose connections are spread over `rooms` rooms (connection `i`
    /// in room `i % rooms`): only the senders of its own room reach a receiver, and a line from
    /// any other is counted as foreign.
    pub fn in_rooms(senders: u32, messages: u32, me: u32, echo: bool, rooms: u32) -> Tally {
        let words = (messages as usize).div_ceil(64);
        let rooms = rooms.max(1);
        let tracks: Vec<Option<Track>> = (0..senders)
            .map(|s| {
                let heard = s % rooms == me % rooms && (echo || s != me);
                heard.then(|| Track {
                    seen: vec![0; words],
                    unique: 0,
                    highest: None,
                    finished: messages == 0,
                })
            })
            .collect();
        let unfinished = tracks.iter().flatten().filter(|t| !t.finished).count();
        Tally {
            tracks,
            messages,
            unfinished,
            me,
            nodes: 1,
            counts: Totals::default(),
        }
    }

    /// The same tally in a run whose connections are spread over `nodes` nodes (connection `i`
    /// on node `i % nodes`): deliveries from a sender on another node are also counted apart.
    pub fn across_nodes(mut self, nodes: u32) -> Tally {
        self.nodes = nodes.max(1);
        self
    }

    /// The node this receiver is connected to.
    pub fn node(&self) -> u32 {
        self.me % self.nodes
    }

    /// Accounts for data line `seq` from `sender`, sent at `sent_us` and received at `now_us`.
    pub fn on_data(&mut self, sender: u32, seq: u32, sent_us: u64, now_us: u64) {
        let cross_node = sender % self.nodes != self.node();
        let track = match self.tracks.get_mut(sender as usize) {
            Some(Some(t)) if seq < self.messages => t,
            _ => {
                self.counts.foreign += 1;
                return;
            }
        };
        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        if track.seen[word] & bit != 0 {
            self.counts.duplicated += 1;
            return;
        }
        track.seen[word] |= bit;
        track.unique += 1;
        match track.highest {
            Some(h) if seq < h => self.counts.reordered += 1,
            _ => track.highest = Some(seq),
        }
        self.counts.delivered += 1;
        let latency = now_us.saturating_sub(sent_us);
        self.counts.latency.record(latency);
        if cross_node {
            self.counts.cross_node_latency.record(latency);
        }
        self.counts.last_delivery_us = self.counts.last_delivery_us.max(now_us);
        if track.unique == self.messages {
            Self::finish(track, &mut self.unfinished);
        }
    }

    /// Accounts for `sender`'s end line: whatever has not arrived from it by now is not coming in
    /// order, so stop waiting for it.
    pub fn on_end(&mut self, sender: u32) {
        match self.tracks.get_mut(sender as usize) {
            Some(Some(t)) => Self::finish(t, &mut self.unfinished),
            _ => self.counts.foreign += 1,
        }
    }

    fn finish(track: &mut Track, unfinished: &mut usize) {
        if !track.finished {
            track.finished = true;
            *unfinished -= 1;
        }
    }

    /// True once every expected sender has finished (all its lines or its end line arrived).
    pub fn complete(&self) -> bool {
        self.unfinished == 0
    }

    /// The lines this receiver expected and never got, as (sender, sequence number), given how
    /// many lines each sender sent (`sent[sender]`).
    pub fn missing<'a>(&'a self, sent: &'a [u32]) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.tracks
            .iter()
            .zip(sent)
            .enumerate()
            .filter_map(|(s, (t, &n))| Some((s as u32, t.as_ref()?, n.min(self.messages))))
            .flat_map(|(s, t, n)| {
                (0..n)
                    .filter(|&seq| t.seen[seq as usize / 64] & (1u64 << (seq % 64)) == 0)
                    .map(move |seq| (s, seq))
            })
    }
}

/// What one receiver got, or (added up) all of them.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Unique data lines received.
    pub delivered: u64,
    /// Data lines received again.
    pub duplicated: u64,
    /// Lines received after a higher sequence number from the same sender.
    pub reordered: u64,
    /// Markers that do not belong to this run's senders or sequence range, or that came back to
    /// their own sender when no echo was expected.
    pub foreign: u64,
    /// Every byte read, data lines or not (line ends, nickname prefixes, notices): divided by
    /// `delivered`, what the server wrote per delivery.
    pub received_bytes: u64,
    /// Send-to-receive time of each unique delivery, in microseconds.
    pub latency: Histogram,
    /// The same for the deliveries whose sender is connected to another node than the receiver.
    pub cross_node_latency: Histogram,
    /// Receive time of the last unique delivery, microseconds since the run's start.
    pub last_delivery_us: u64,
}

impl Totals {
    /// Adds another receiver's counts.
    pub fn add(&mut self, t: &Totals) {
        self.delivered += t.delivered;
        self.duplicated += t.duplicated;
        self.reordered += t.reordered;
        self.foreign += t.foreign;
        self.received_bytes += t.received_bytes;
        self.latency.merge(&t.latency);
        self.cross_node_latency.merge(&t.cross_node_latency);
        self.last_delivery_us = self.last_delivery_us.max(t.last_delivery_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_128_and_tight_above() {
        for v in 0..128 {
            assert_eq!(bucket_high(bucket_of(v)), v);
        }
        assert_eq!(bucket_of(128), 128);
        assert_eq!(bucket_of(129), 128);
        assert_eq!(bucket_high(128), 129);
        assert_eq!(bucket_of(130), 129);
        assert_eq!(bucket_of(255), 191);
        assert_eq!(bucket_of(256), 192);
        assert_eq!(bucket_high(192), 259);
        for v in [1000u64, 65_537, 1 << 40, u64::MAX - 1, u64::MAX] {
            let high = bucket_high(bucket_of(v));
            assert!(
                high >= v && (high - v) as f64 <= v as f64 / 64.0,
                "{v} -> {high}"
            );
            // Consecutive buckets: the previous one ends just below this one's values.
            let prev = bucket_high(bucket_of(v) - 1);
            assert!(prev < v);
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(500), None);
        assert_eq!(h.max(), None);
        // 1..=100: the median is 50, p99 is 99, p99.9 is 100 (rank ceil(99.9) = 100).
        for v in (1..=100).rev() {
            h.record(v);
        }
        assert_eq!(h.total, 100);
        assert_eq!(h.quantile(500), Some(50));
        assert_eq!(h.quantile(990), Some(99));
        assert_eq!(h.quantile(999), Some(100));
        assert_eq!(h.max(), Some(100));
        // One value: every quantile is that value.
        let mut one = Histogram::default();
        one.record(7);
        assert_eq!(one.quantile(1), Some(7));
        assert_eq!(one.quantile(999), Some(7));
    }

    #[test]
    fn quantiles_never_exceed_the_true_max_and_merge_adds() {
        let mut a = Histogram::default();
        a.record(1000); // bucket bound is 1007
        assert_eq!(a.quantile(500), Some(1000));
        let mut b = Histogram::default();
        for _ in 0..9 {
            b.record(10);
        }
        a.merge(&b);
        assert_eq!(a.total, 10);
        assert_eq!(a.quantile(900), Some(10)); // rank 9
        assert_eq!(a.quantile(910), Some(1000)); // rank ceil(9.1) = 10
        assert_eq!(a.max(), Some(1000));
    }

    #[test]
    fn a_clean_stream_counts_deliveries_and_latency() {
        // Receiver 2 of senders 0 and 1, 3 lines each.
        let mut t = Tally::new(2, 3, 2, false);
        assert!(!t.complete());
        for seq in 0..3 {
            t.on_data(0, seq, 100, 150 + u64::from(seq));
            t.on_data(1, seq, 100, 110);
        }
        assert!(t.complete());
        assert_eq!(
            (
                t.counts.delivered,
                t.counts.duplicated,
                t.counts.reordered,
                t.counts.foreign
            ),
            (6, 0, 0, 0)
        );
        assert_eq!(t.counts.latency.quantile(500), Some(10));
        assert_eq!(t.counts.latency.max(), Some(52));
        assert_eq!(t.counts.last_delivery_us, 152);
    }

    #[test]
    fn duplicates_reorders_and_strangers_are_counted_apart() {
        let mut t = Tally::new(2, 4, 1, false);
        t.on_data(0, 0, 0, 1);
        t.on_data(0, 2, 0, 1);
        t.on_data(0, 1, 0, 1); // lower than 2: reordered, still delivered
        t.on_data(0, 2, 0, 1); // seen: duplicate (not also a reorder)
        t.on_data(0, 0, 0, 1); // duplicate
        t.on_data(1, 0, 0, 1); // its own line, no echo expected: foreign
        t.on_data(5, 0, 0, 1); // no such sender
        t.on_data(0, 4, 0, 1); // beyond --messages
        assert_eq!(
            (
                t.counts.delivered,
                t.counts.duplicated,
                t.counts.reordered,
                t.counts.foreign
            ),
            (3, 2, 1, 3)
        );
        assert!(!t.complete());
        t.on_data(0, 3, 0, 1);
        assert!(t.complete());
        assert_eq!(t.counts.delivered, 4);
    }

    #[test]
    fn an_end_line_finishes_a_sender_with_losses() {
        let mut t = Tally::new(3, 10, 0, false);
        t.on_data(1, 0, 0, 0);
        t.on_end(1);
        t.on_end(1); // counted once
        assert!(!t.complete());
        t.on_end(2);
        assert!(t.complete());
        assert_eq!(t.counts.delivered, 1);
    }

    #[test]
    fn echo_expects_a_senders_own_lines() {
        let mut t = Tally::new(1, 2, 0, true);
        t.on_data(0, 0, 0, 0);
        t.on_data(0, 1, 0, 0);
        assert!(t.complete());
        assert_eq!(t.counts.foreign, 0);
        // Without echo, a lone sender expects nothing at all.
        assert!(Tally::new(1, 2, 0, false).complete());
    }

    #[test]
    fn in_rooms_only_the_senders_of_ones_own_room_count() {
        // 3 rooms: receiver 4 is in room 1 with sender 1; senders 0 and 2 are elsewhere.
        let mut t = Tally::in_rooms(3, 2, 4, false, 3);
        t.on_data(0, 0, 0, 1);
        t.on_data(2, 0, 0, 1);
        assert_eq!(t.counts.foreign, 2);
        assert!(!t.complete());
        t.on_data(1, 0, 0, 1);
        t.on_data(1, 1, 0, 1);
        assert_eq!(t.counts.delivered, 2);
        assert!(t.complete());
        // A sender in its own room expects nothing from itself, as without rooms.
        assert!(Tally::in_rooms(3, 2, 1, false, 3).complete());
    }

    #[test]
    fn deliveries_between_nodes_are_timed_apart() {
        // 3 nodes: receiver 4 is on node 1 with sender 1; senders 0 and 2 are on others.
        let mut t = Tally::new(3, 1, 4, false).across_nodes(3);
        assert_eq!(t.node(), 1);
        t.on_data(0, 0, 0, 10);
        t.on_data(1, 0, 0, 20);
        t.on_data(2, 0, 0, 30);
        t.on_data(2, 0, 0, 99); // a duplicate counts in neither histogram
        assert_eq!(t.counts.latency.count(), 3);
        assert_eq!(t.counts.cross_node_latency.count(), 2);
        assert_eq!(t.counts.cross_node_latency.max(), Some(30));
        // One node: nothing is cross-node.
        let mut one = Tally::new(2, 1, 1, false);
        one.on_data(0, 0, 0, 5);
        assert_eq!(one.node(), 0);
        assert_eq!(one.counts.cross_node_latency.count(), 0);
        let mut sum = Totals::default();
        sum.add(&t.counts);
        sum.add(&one.counts);
        assert_eq!(sum.cross_node_latency.count(), 2);
        assert_eq!(sum.latency.count(), 4);
    }

    #[test]
    fn missing_lines_are_the_sent_ones_never_seen() {
        // Receiver 2 of senders 0 and 1; sender 1 sent only 3 of its 4 lines.
        let mut t = Tally::new(2, 4, 2, false);
        t.on_data(0, 0, 0, 1);
        t.on_data(0, 3, 0, 1);
        t.on_data(1, 1, 0, 1);
        let missing: Vec<_> = t.missing(&[4, 3]).collect();
        assert_eq!(missing, [(0, 1), (0, 2), (1, 0), (1, 2)]);
        // A sender does not miss its own lines.
        assert_eq!(Tally::new(1, 4, 0, false).missing(&[4]).count(), 0);
    }

    #[test]
    fn totals_add_up() {
        let mut a = Tally::new(1, 2, 1, false);
        a.on_data(0, 0, 0, 5);
        a.on_data(0, 0, 0, 6);
        let mut b = Tally::new(1, 2, 2, false);
        b.on_data(0, 1, 0, 9);
        b.on_data(0, 0, 0, 20);
        let mut sum = Totals::default();
        sum.add(&a.counts);
        sum.add(&b.counts);
        assert_eq!((sum.delivered, sum.duplicated, sum.reordered), (3, 1, 1));
        assert_eq!(sum.last_delivery_us, 20);
        assert_eq!(sum.latency.quantile(500), Some(9));
    }
}
