//! The per-network connection-rate limit (`connect_rate`/`connect_burst`): one token bucket per
//! network (the `per_ip_prefix_v4`/`_v6` network a peer is counted under), checked by the accept
//! loop before the connection costs anything beyond the accept itself.
//!
//! Invariants:
//! - The table never holds more than [`MAX_NETWORKS`] entries. A bucket that has refilled to its
//!   burst is the same as no entry, so sweeps drop those; a sweep runs at most every
//!   [`SWEEP_EVERY`], or every [`SWEEP_WHEN_FULL`] while the table is full.
//! - When the table is full of networks still over their burst (a flood from more networks than
//!   it holds), every network not in it shares one overflow bucket of the same shape: memory stays
//!   bounded and the flood is still held to `connect_rate` in total, at the price of newcomers from
//!   unseen networks sharing that bucket until entries expire. Networks already in the table keep
//!   their own buckets, so regulars seen recently are not locked out by the flood.
//! - It has its own lock, never the room's: a connection flood does not contend with chat.
//! - Rate, burst, prefixes and exemptions are read from the settings in force at each check, so a
//!   reload applies to the next connection; entries keyed under old prefixes are just swept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Hub, Refusal};
use crate::config::{IpNet, MAX_BURST, Rate};
use crate::upgrade::snapshot::NetworkRate;

/// Most networks remembered at once: about 2 MiB of table at most.
pub(crate) const MAX_NETWORKS: usize = 16_384;
/// How often idle (refilled) entries are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often a full table is swept for room; a sweep is O(table), so not on every connection.
const SWEEP_WHEN_FULL: Duration = Duration::from_secs(1);
/// Longest "try again in N s" advised; with `connect_rate` at least 0.01/s the real wait for one
/// token is at most 100 s, so this only keeps the arithmetic total.
const MAX_RETRY_SECS: f64 = 3600.0;

/// A refused connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// Whole seconds until the network's next connection would be admitted (at least 1).
    pub(crate) retry_secs: u32,
    /// The first refusal since the network was last admitted (log once per episode).
    pub(crate) new_episode: bool,
    /// The network was not in the (full) table and was judged by the shared overflow bucket.
    pub(crate) shared: bool,
}

/// The table of recent networks, behind its own lock.
#[derive(Debug)]
pub(crate) struct ConnectRate {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpNet, Bucket>,
    /// For networks that find the table full.
    overflow: Bucket,
    /// Inside a table-full episode (logged once at its start and end).
    overflowing: bool,
    last_sweep: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Refused since the last admission.
    limited: bool,
}

impl Bucket {
    /// A bucket as full as any burst can be; the first refill clamps it to the burst in force.
    fn full(now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(MAX_BURST),
            last: now,
            limited: false,
        }
    }

    /// Tokens at `now`, without changing anything. `saturating_duration_since` because a reload
    /// or a clock read on another thread may hand us an older `now`.
    fn tokens_at(&self, now: Instant, rate: Rate) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + dt * rate.per_sec).min(f64::from(rate.burst))
    }

    /// Spends a token if there is one.
    fn take(&mut self, now: Instant, rate: Rate) -> Result<(), Limited> {
        self.tokens = self.tokens_at(now, rate);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.limited = false;
            return Ok(());
        }
        let new_episode = !std::mem::replace(&mut self.limited, true);
        // Validation keeps per_sec at 0.01 or more, so this is at most 100 s; the clamp keeps the
        // conversion total for any value.
        let wait = ((1.0 - self.tokens) / rate.per_sec).ceil();
        Err(Limited {
            retry_secs: wait.clamp(1.0, MAX_RETRY_SECS) as u32,
            new_episode,
            shared: false,
        })
    }

    fn is_full(&self, now: Instant, rate: Rate) -> bool {
        self.tokens_at(now, rate) >= f64::from(rate.burst)
    }
}

impl Default for ConnectRate {
    fn default() -> Self {
        let now = Instant::now();
        ConnectRate {
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket::full(now),
                overflowing: false,
                last_sweep: now,
            }),
        }
    }
}

impl ConnectRate {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table is updated in single steps; a panic elsewhere leaves it consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one connection from `net` at `now` under `rate`, or says how long to wait.
    pub(crate) fn check(&self, net: IpNet, rate: Rate, now: Instant) -> Result<(), Limited> {
        let mut t = self.lock();
        if now.saturating_duration_since(t.last_sweep) >= SWEEP_EVERY {
            t.sweep(now, rate);
        }
        if let Some(bucket) = t.buckets.get_mut(&net) {
            return bucket.take(now, rate);
        }
        if t.buckets.len() >= MAX_NETWORKS
            && now.saturating_duration_since(t.last_sweep) >= SWEEP_WHEN_FULL
        {
            t.sweep(now, rate);
        }
        if t.buckets.len() < MAX_NETWORKS {
            let mut bucket = Bucket::full(now);
            let admitted = bucket.take(now, rate);
            t.buckets.insert(net, bucket);
            return admitted;
        }
        if !std::mem::replace(&mut t.overflowing, true) {
            warn!(
                event = "connect_rate_table_full",
                networks = MAX_NETWORKS,
                "connection-rate table full: networks not in it now share one bucket"
            );
        }
        t.overflow.take(now, rate).map_err(|limited| Limited {
            shared: true,
            ..limited
        })
    }

    /// The table as plain data for an upgrade's snapshot (instants do not cross processes: each
    /// bucket says how long ago it was last filled). The shared overflow bucket is left out: it
    /// only exists while the table is full, and starts full again.
    pub(crate) fn export(&self, now: Instant) -> Vec<NetworkRate> {
        let t = self.lock();
        t.buckets
            .iter()
            .map(|(net, b)| NetworkRate {
                network: net.to_string(),
                tokens: b.tokens,
                since_ms: now.saturating_duration_since(b.last).as_millis() as u64,
                limited: b.limited,
            })
            .collect()
    }

    /// Takes over a predecessor's table (see [`export`](Self::export)), at most [`MAX_NETWORKS`]
    /// entries; what does not parse or is out of range is left out or brought into range.
    pub(crate) fn import(&self, entries: &[NetworkRate], now: Instant) {
        let mut t = self.lock();
        for e in entries.iter().take(MAX_NETWORKS) {
            let Ok(net) = e.network.parse::<IpNet>() else {
                continue;
            };
            let tokens = if e.tokens.is_finite() {
                e.tokens.clamp(0.0, f64::from(MAX_BURST))
            } else {
                f64::from(MAX_BURST)
            };
            let ago = Duration::from_millis(e.since_ms.min(3_600_000));
            let bucket = Bucket {
                tokens,
                last: now.checked_sub(ago).unwrap_or(now),
                limited: e.limited,
            };
            t.buckets.insert(net, bucket);
        }
    }

    /// Networks remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().buckets.len()
    }
}

impl Table {
    /// Drops every entry whose bucket has refilled: it would behave exactly like a new one.
    fn sweep(&mut self, now: Instant, rate: Rate) {
        self.buckets.retain(|_, b| !b.is_full(now, rate));
        self.last_sweep = now;
        // Give memory back after a flood, but not on every small wobble.
        if self.buckets.capacity() > 4 * self.buckets.len().max(256) {
            self.buckets.shrink_to(2 * self.buckets.len());
        }
        if self.overflowing && self.buckets.len() < MAX_NETWORKS {
            self.overflowing = false;
            info!(
                event = "connect_rate_table_full",
                networks = self.buckets.len(),
                "connection-rate table has room again"
            );
        }
    }
}

impl Hub {
    /// The per-network connection-rate limit, for a connection just accepted from `ip`: cheap (one
    /// hash lookup under a lock of its own), so the accept loop asks before anything else.
    /// Exempt networks and a disabled limit always pass.
    pub(crate) fn check_connect_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        let cfg = self.config();
        let Some(rate) = cfg.connect_rate else {
            return Ok(());
        };
        if cfg.is_exempt(ip) {
            return Ok(());
        }
        let net = cfg.network_of(ip);
        let limited = match self.connect_rate.check(net, rate, Instant::now()) {
            Ok(()) => return Ok(()),
            Err(limited) => limited,
        };
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        if limited.new_episode {
            // Once per episode per network: a flood must not turn into a log flood.
            info!(
                event = "connect_rate", peer = %ip, network = %net, shared = limited.shared,
                retry_secs = limited.retry_secs, connect_rate = rate.per_sec,
                connect_burst = rate.burst,
                "network over its connection rate; refusing its connections for now"
            );
        }
        Err(Refusal::ConnectRate {
            retry_secs: limited.retry_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(burst: u32, per_sec: f64) -> Rate {
        Rate { burst, per_sec }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// The /64 with `top` as its first 64 bits (`0x2001_0db8_0000_0000 | i`).
    fn slash64(top: u64) -> IpNet {
        let addr = std::net::Ipv6Addr::from_bits(u128::from(top) << 64);
        IpNet::new(IpAddr::V6(addr), 64).unwrap()
    }

    #[test]
    fn an_upgrade_carries_the_table_so_no_network_gets_a_fresh_burst() {
        let r = rate(3, 0.5);
        let old = ConnectRate::default();
        let t0 = Instant::now();
        let n = net("192.0.2.0/24");
        for _ in 0..3 {
            old.check(n, r, t0).unwrap();
        }
        assert!(old.check(n, r, t0).is_err());
        let mut entries = old.export(t0);
        entries.push(NetworkRate {
            network: "not a network".into(),
            tokens: f64::NAN,
            since_ms: u64::MAX,
            limited: false,
        });
        let new = ConnectRate::default();
        new.import(&entries, t0);
        assert_eq!(new.len(), 1, "the unparsable entry is left out");
        let refused = new.check(n, r, t0).unwrap_err();
        assert!(!refused.new_episode, "still the same episode");
        // And it refills at the same pace as before.
        assert_eq!(new.check(n, r, t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let r = rate(3, 0.5);
        let table = ConnectRate::default();
        let t0 = Instant::now();
        let n = net("192.0.2.0/24");
        for i in 0..3 {
            assert_eq!(table.check(n, r, t0), Ok(()), "connection {i} of the burst");
        }
        let refused = table.check(n, r, t0).unwrap_err();
        assert_eq!((refused.retry_secs, refused.new_episode), (2, true));
        // Still refused a second later, and the episode is not new any more.
        let again = table.check(n, r, t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!((again.retry_secs, again.new_episode), (1, false));
        // Two seconds in, one token has come back: one admitted, the next refused again.
        assert_eq!(table.check(n, r, t0 + Duration::from_secs(2)), Ok(()));
        assert!(
            table
                .check(n, r, t0 + Duration::from_secs(2))
                .unwrap_err()
                .new_episode
        );
        // Another network has its own bucket.
        assert_eq!(table.check(net("198.51.100.0/24"), r, t0), Ok(()));
    }

    #[test]
    fn retry_is_whole_seconds_and_bounded_at_the_slowest_rate() {
        let r = rate(1, 0.01);
        let table = ConnectRate::default();
        let t0 = Instant::now();
        let n = net("2001:db8::/64");
        assert_eq!(table.check(n, r, t0), Ok(()));
        assert_eq!(table.check(n, r, t0).unwrap_err().retry_secs, 100);
        // A `now` older than the bucket's (another thread read the clock first) is harmless.
        let earlier = t0.checked_sub(Duration::from_secs(5)).unwrap_or(t0);
        assert_eq!(table.check(n, r, earlier).unwrap_err().retry_secs, 100);
    }

    #[test]
    fn refilled_entries_are_swept() {
        let r = rate(2, 1.0);
        let table = ConnectRate::default();
        let t0 = Instant::now();
        for i in 0..100u8 {
            let n = IpNet::new(IpAddr::from([10, 0, i, 0]), 24).unwrap();
            assert_eq!(table.check(n, r, t0), Ok(()));
        }
        assert_eq!(table.len(), 100);
        // After SWEEP_EVERY every bucket is full again: the next check sweeps them all.
        let later = t0 + SWEEP_EVERY;
        assert_eq!(table.check(net("10.1.0.0/24"), r, later), Ok(()));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_table_stays_bounded_and_still_limits_in_total() {
        let r = rate(2, 0.01);
        let table = ConnectRate::default();
        let t0 = Instant::now();
        // A /64-rotating flood: every connection from a new network, each spending one token.
        for i in 0..MAX_NETWORKS as u64 {
            assert_eq!(table.check(slash64(0x2001_0db8 << 32 | i), r, t0), Ok(()));
        }
        assert_eq!(table.len(), MAX_NETWORKS);
        // Beyond the table: networks share the overflow bucket (burst 2), then are refused.
        let fresh = |i: u64| slash64(0x2001_0db9 << 32 | i);
        let mut verdicts = Vec::new();
        for i in 0..5 {
            verdicts.push(table.check(fresh(i), r, t0));
        }
        assert_eq!(&verdicts[..2], &[Ok(()), Ok(())]);
        assert!(
            verdicts[2..]
                .iter()
                .all(|v| matches!(v, Err(Limited { shared: true, .. })))
        );
        assert_eq!(table.len(), MAX_NETWORKS, "the table did not grow");
        // A network already in the table keeps its own bucket meanwhile.
        let known = slash64(0x2001_0db8 << 32);
        assert_eq!(table.check(known, r, t0), Ok(()));
        // Once the entries have refilled, a sweep makes room and newcomers get their own again.
        let later = t0 + Duration::from_secs(300);
        assert_eq!(table.check(fresh(9), r, later), Ok(()));
        assert_eq!(table.len(), 1);
    }
}
