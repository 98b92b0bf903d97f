//! Hooks for the fuzz targets, which are a crate of their own (`fuzz/`) and see only public items.
//! [`limits_at_extremes`] runs the daemon's private arithmetic for one configuration the way the
//! daemon would, at the extreme points, so the config target can check that nothing an accepted
//! configuration allows can panic: with `panic = "abort"`, one overflow there ends every session.
//! Not API: hidden from the docs and free to change with the code it reaches into.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::hub::admission::ConnectRate;
use crate::server::socket_times;
use crate::session::flood::TokenBucket;

/// What the arithmetic produced, for the fuzz oracle to check against the documented bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Extremes {
    /// The longest flood pause scheduled for a client that sends far past its burst at once, then
    /// again after a year of silence; `None` when flood control is off.
    pub flood_wait: Option<Duration>,
    /// The "try again in N s" a network gets just past its connect burst, then a year later past
    /// it again; `None` when the connection-rate limit is off.
    pub connect_retry_secs: Option<(u32, u32)>,
    /// Keepalive (idle s, interval s) and the user timeout in ms, as set on every client socket.
    pub keepalive: Option<(u32, u32)>,
    /// See [`Extremes::keepalive`].
    pub user_timeout_ms: u32,
}

/// Runs, for `config`: the flood token bucket and the deadline the session would set from its
/// wait; the connection-rate table for IPv4, IPv6 and IPv4-mapped peers; the session's write,
/// linger, handshake and idle deadlines (the idle one after 49 days of activity, the most a
/// `u32` of milliseconds holds); and the socket timers. Panics exactly where the daemon would.
pub fn limits_at_extremes(config: &Config) -> Extremes {
    let now = Instant::now();
    let year = Duration::from_secs(365 * 24 * 3600);

    let flood_wait = config.flood.map(|flood| {
        let mut bucket = TokenBucket::new(flood);
        let mut longest = Duration::ZERO;
        // Past the burst at one instant: more debt than the session (which stops reading at the
        // first wait) ever runs up, so the waits here bound the real ones.
        for _ in 0..=flood.burst.saturating_add(11) {
            if bucket.spend(now, flood) {
                let wait = bucket.wait(flood);
                let _deadline = now + wait;
                longest = longest.max(wait);
            }
        }
        let later = now + year;
        for _ in 0..=flood.burst.saturating_add(1) {
            if bucket.spend(later, flood) {
                let wait = bucket.wait(flood);
                let _deadline = later + wait;
                longest = longest.max(wait);
            }
        }
        longest
    });

    let connect_retry_secs = config.connect_rate.map(|rate| {
        let table = ConnectRate::default();
        let peers = [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1)),
            IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped()),
        ];
        let mut retry = (0, 0);
        let t0 = std::time::Instant::now();
        for (i, at) in [t0, t0 + year].into_iter().enumerate() {
            for peer in peers {
                let net = config.network_of(peer);
                for _ in 0..rate.burst {
                    let _ = table.check(net, rate, at);
                }
                if let Err(limited) = table.check(net, rate, at) {
                    let slot = if i == 0 { &mut retry.0 } else { &mut retry.1 };
                    *slot = (*slot).max(limited.retry_secs);
                }
            }
        }
        retry
    });

    // The session's deadlines (session/mod.rs and session/lines.rs), from the same `now`.
    let _write = now + config.write_timeout;
    let _final_flush = now + config.write_timeout.min(Duration::from_secs(2));
    let _handshake = config.handshake_timeout.map(|d| now + d);
    let active = Duration::from_millis(u64::from(u32::MAX));
    let _idle = config.idle_timeout.map(|d| now + active + d);
    let _grace = now + config.shutdown_grace;

    let times = socket_times(config.tcp_keepalive, config.write_timeout);
    Extremes {
        flood_wait,
        connect_retry_secs,
        keepalive: times.keepalive,
        user_timeout_ms: times.user_timeout_ms,
    }
}
