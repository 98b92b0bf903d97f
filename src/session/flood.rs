//! Per-client flood control: a token bucket (see [`TokenBucket`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Flood;

/// Per-client flood control: a token bucket that pauses reading when empty. Its rate and burst
/// are read from the configuration in force (not copied here: every byte of session state is paid
/// by every idle connection).
///
/// The bucket may run into debt by what one timer tick ([`TICK`]) refills: a pause shorter than
/// the timer's resolution would last a whole tick anyway and cap a high `flood_rate` at `burst`
/// lines per tick. So a line is only held back when the wait is worth a timer, and a limiter that
/// lets lines through costs nothing but arithmetic.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    /// Inside a throttle episode (counted and logged once per episode).
    pub(super) throttled: bool,
}

/// The runtime timer's resolution.
const TICK: Duration = Duration::from_millis(1);

impl TokenBucket {
    pub(crate) fn new(flood: Flood) -> Self {
        TokenBucket {
            tokens: f64::from(flood.burst),
            last: Instant::now(),
            throttled: false,
        }
    }

    fn refill(&mut self, now: Instant, flood: Flood) {
        let burst = f64::from(flood.burst);
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * flood.per_sec).min(burst);
        self.last = now;
    }

    /// Spends a token for one line; returns true when the next line must wait.
    pub(crate) fn spend(&mut self, now: Instant, flood: Flood) -> bool {
        self.refill(now, flood);
        if self.tokens >= f64::from(flood.burst) {
            self.throttled = false;
        }
        self.tokens -= 1.0;
        let slack = flood.per_sec * TICK.as_secs_f64();
        self.tokens < 1.0 - slack
    }

    /// How long until one token is available (at least a tick when [`spend`](Self::spend) said
    /// to wait). Validation keeps the rate at 0.01/s or more, so the wait is minutes at most; the
    /// clamp keeps it finite and `Instant + wait` in range for any rate whatsoever (a rate of
    /// 1e-19 once overflowed that sum and aborted the daemon).
    pub(crate) fn wait(&self, flood: Flood) -> Duration {
        let secs = ((1.0 - self.tokens) / flood.per_sec).max(0.0);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_FLOOD_WAIT)
            .min(MAX_FLOOD_WAIT)
    }
}

/// A bucket as plain data, for the upgrade snapshot: its level and how long ago it was last filled
/// (instants do not cross processes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BucketState {
    tokens: f64,
    since_ms: u64,
    throttled: bool,
}

impl TokenBucket {
    pub(crate) fn export(&self, now: Instant) -> BucketState {
        BucketState {
            tokens: self.tokens,
            since_ms: now.saturating_duration_since(self.last).as_millis() as u64,
            throttled: self.throttled,
        }
    }

    /// The bucket `state` describes, as of `now`; a level that is not a number, or out of what
    /// `flood` allows, is brought back into range rather than trusted.
    pub(crate) fn import(state: BucketState, now: Instant, flood: Flood) -> TokenBucket {
        let burst = f64::from(flood.burst);
        let tokens = if state.tokens.is_finite() {
            state.tokens.clamp(-burst, burst)
        } else {
            burst
        };
        let ago = Duration::from_millis(state.since_ms.min(MAX_FLOOD_WAIT.as_millis() as u64));
        TokenBucket {
            tokens,
            last: now.checked_sub(ago).unwrap_or(now),
            throttled: state.throttled,
        }
    }
}

/// The longest a flood pause lasts in one go (the bucket is checked again after it): keeps the
/// deadline arithmetic finite for any rate the configuration accepts.
pub(crate) const MAX_FLOOD_WAIT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(burst: u32, per_sec: f64) -> Flood {
        Flood { burst, per_sec }
    }

    #[test]
    fn a_high_rate_is_let_through_without_pauses() {
        // 1e6 lines/s with a burst of 10: a thousand lines in a millisecond never wait.
        let f = flood(10, 1e6);
        let mut b = TokenBucket::new(f);
        let t0 = b.last;
        for i in 0..1000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            assert!(!b.spend(now, f), "line {i} was held back");
        }
    }

    #[test]
    fn a_low_rate_waits_and_the_wait_is_finite_for_any_accepted_rate() {
        let f = flood(10, 2.0);
        let mut b = TokenBucket::new(f);
        let t0 = b.last;
        let held = (0..11).any(|_| b.spend(t0, f));
        assert!(held, "the eleventh line at once must wait");
        assert!(b.wait(f) > Duration::ZERO && b.wait(f) <= Duration::from_secs(1));
        // Validation now refuses rates below 0.01, but the bucket stays total even at 1e-19 (the
        // rate that once aborted the daemon on the eleventh line).
        let tiny = flood(10, 1e-19);
        let mut b = TokenBucket::new(tiny);
        for _ in 0..11 {
            b.spend(t0, tiny);
        }
        assert_eq!(b.wait(tiny), MAX_FLOOD_WAIT);
        let _deadline = t0 + b.wait(tiny); // must not panic
    }
}
