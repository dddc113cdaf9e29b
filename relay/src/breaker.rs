//! A circuit breaker over a time window: too many failed or slow calls open it (calls are
//! refused without trying), after a cool-down it lets a few probes through (half-open), and
//! their outcome closes or re-opens it. Pure logic: time comes in as an argument, so tests
//! need no clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn from_u8(v: u8) -> BreakerState {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Outcomes older than this no longer count.
    pub window_ms: u64,
    /// The window keeps at most this many outcomes (oldest dropped first).
    pub window_calls_max: usize,
    /// No verdict on fewer calls than this in the window.
    pub calls_min: usize,
    /// Open when at least this share of the window's calls failed...
    pub failure_rate_max: f64,
    /// ...or at least this share took longer than `slow_call_ms`.
    pub slow_rate_max: f64,
    pub slow_call_ms: u64,
    /// How long it stays open before letting probes through.
    pub open_ms: u64,
    /// Successful probes in a row that close it again.
    pub probes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 30_000,
            window_calls_max: 100,
            calls_min: 3,
            failure_rate_max: 0.5,
            slow_rate_max: 1.0,
            slow_call_ms: 10_000,
            open_ms: 5_000,
            probes_to_close: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    Allowed,
    /// Open: try again after this long.
    Refused(Duration),
}

#[derive(Clone, Copy)]
struct Outcome {
    at: Instant,
    failed: bool,
    slow: bool,
}

pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    window: VecDeque<Outcome>,
    opened_at: Option<Instant>,
    probes_ok: u32,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        assert!(config.window_calls_max >= config.calls_min.max(1), "the window holds a verdict's calls");
        assert!(config.probes_to_close >= 1);
        Breaker { config, state: BreakerState::Closed, window: VecDeque::new(), opened_at: None, probes_ok: 0 }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a call go out now? Moves open -> half-open once the cool-down has passed.
    pub fn permit(&mut self, now: Instant) -> (Permit, Option<BreakerState>) {
        if self.state != BreakerState::Open {
            return (Permit::Allowed, None);
        }
        let opened_at = self.opened_at.unwrap_or(now);
        let until = opened_at + Duration::from_millis(self.config.open_ms);
        if now < until {
            return (Permit::Refused(until - now), None);
        }
        self.state = BreakerState::HalfOpen;
        self.probes_ok = 0;
        (Permit::Allowed, Some(BreakerState::HalfOpen))
    }

    /// Records a call's outcome; returns the new state if it changed.
    pub fn record(&mut self, now: Instant, ok: bool, took: Duration) -> Option<BreakerState> {
        let slow = took >= Duration::from_millis(self.config.slow_call_ms);
        match self.state {
            BreakerState::HalfOpen if ok && !slow => {
                self.probes_ok += 1;
                if self.probes_ok < self.config.probes_to_close {
                    return None;
                }
                self.window.clear();
                self.state = BreakerState::Closed;
                Some(BreakerState::Closed)
            }
            BreakerState::HalfOpen => self.open(now),
            // A call allowed before the breaker opened and finishing after: already counted.
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.window.push_back(Outcome { at: now, failed: !ok, slow });
                self.trim(now);
                if self.tripped() {
                    self.open(now)
                } else {
                    None
                }
            }
        }
    }

    fn open(&mut self, now: Instant) -> Option<BreakerState> {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.window.clear();
        Some(BreakerState::Open)
    }

    fn trim(&mut self, now: Instant) {
        let window = Duration::from_millis(self.config.window_ms);
        while self.window.len() > self.config.window_calls_max
            || self.window.front().is_some_and(|o| now.duration_since(o.at) > window)
        {
            self.window.pop_front();
        }
    }

    fn tripped(&self) -> bool {
        let calls = self.window.len();
        if calls < self.config.calls_min || calls == 0 {
            return false;
        }
        let failed = self.window.iter().filter(|o| o.failed).count() as f64;
        let slow = self.window.iter().filter(|o| o.slow).count() as f64;
        failed / calls as f64 >= self.config.failure_rate_max || slow / calls as f64 >= self.config.slow_rate_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_on_failure_rate_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig { calls_min: 4, open_ms: 1_000, ..BreakerConfig::default() });
        assert_eq!(b.record(t0, true, ms(1)), None);
        assert_eq!(b.record(t0, false, ms(1)), None);
        assert_eq!(b.record(t0, true, ms(1)), None);
        // 2 of 4 failed: 50% trips it.
        assert_eq!(b.record(t0, false, ms(1)), Some(BreakerState::Open));
        assert_eq!(b.permit(t0 + ms(999)), (Permit::Refused(ms(1)), None));
        assert_eq!(b.permit(t0 + ms(1_000)), (Permit::Allowed, Some(BreakerState::HalfOpen)));
        // A failed probe re-opens it for a full cool-down.
        assert_eq!(b.record(t0 + ms(1_000), false, ms(1)), Some(BreakerState::Open));
        assert!(matches!(b.permit(t0 + ms(1_500)).0, Permit::Refused(_)));
        assert_eq!(b.permit(t0 + ms(2_000)).1, Some(BreakerState::HalfOpen));
        assert_eq!(b.record(t0 + ms(2_000), true, ms(1)), Some(BreakerState::Closed));
        assert_eq!(b.permit(t0 + ms(2_000)), (Permit::Allowed, None));
    }

    #[test]
    fn slow_calls_trip_it_and_old_outcomes_age_out() {
        let t0 = Instant::now();
        let config = BreakerConfig {
            calls_min: 2,
            slow_rate_max: 0.5,
            slow_call_ms: 100,
            window_ms: 1_000,
            ..Default::default()
        };
        let mut b = Breaker::new(config);
        assert_eq!(b.record(t0, false, ms(1)), None);
        // The failure is 2 s old when the next call comes: the window holds one call.
        assert_eq!(b.record(t0 + ms(2_000), true, ms(1)), None);
        assert_eq!(b.record(t0 + ms(2_001), true, ms(150)), Some(BreakerState::Open));
    }
}
