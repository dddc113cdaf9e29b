//! What the simulator is configured with and the state every handler and task shares.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::args::MsRange;
use crate::callback::Callbacks;
use crate::stats::Stats;
use crate::store::Store;

/// Everything the simulator runs with. `Default` is the table of `docs/gateway.md`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub rates: Rates,
    pub latency_ms: MsRange,
    pub settle_ms: MsRange,
    /// How long a `slow` gateway takes to answer.
    pub slow_latency_ms: MsRange,
    pub callback_secret: Vec<u8>,
    /// `None`: a random seed, logged at start so a run can be repeated.
    pub seed: Option<u64>,
    pub max_transactions: usize,
    /// Idempotency records kept (payments, captures, cancels and refunds that carried a key).
    pub max_idempotency_keys: usize,
    pub max_callbacks: usize,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            rates: Rates { success_rate: 0.6, approval_rate: 0.7, drop_callbacks: 0.0 },
            latency_ms: MsRange::new(100, 500),
            settle_ms: MsRange::new(1000, 5000),
            slow_latency_ms: MsRange::new(2000, 6000),
            callback_secret: b"sim-secret".to_vec(),
            seed: None,
            max_transactions: 1_000_000,
            max_idempotency_keys: 4_000_000,
            max_callbacks: 10_000,
            max_in_flight: 50_000,
            retry: RetryPolicy::default(),
        }
    }
}

/// The rates `POST /sim/config` changes at run time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub success_rate: f64,
    pub approval_rate: f64,
    pub drop_callbacks: f64,
}

/// How a callback is retried: the protocol's schedule by default; tests shorten it so a
/// retry test takes milliseconds (it is not a flag: a real gateway's schedule is fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
    /// One attempt that has not been answered by then counts as failed.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Wait after failed attempt `attempt` (1-based): the first delay doubled per attempt,
    /// at most the max delay.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first_delay.saturating_mul(1u32 << doublings).min(self.max_delay)
    }
}

/// How the gateway behaves right now (`POST /sim/mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Normal,
    Slow,
    Failing,
    Down,
}

/// The simulator: cheap to clone, every clone is the same gateway.
#[derive(Clone)]
pub struct SimState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: SimConfig,
    pub seed: u64,
    pub rates: Mutex<Rates>,
    pub mode: Mutex<Mode>,
    pub dice: Mutex<StdRng>,
    pub store: Mutex<Store>,
    pub stats: Stats,
    pub callbacks: Callbacks,
    pub in_flight: Arc<Semaphore>,
}

impl SimState {
    pub fn new(config: SimConfig) -> Result<SimState, String> {
        let seed = config.seed.unwrap_or_else(|| rand::rng().random());
        let mut dice = StdRng::seed_from_u64(seed);
        // Transaction keys count up from a start drawn per run, so two runs with different
        // seeds do not hand out the same keys.
        let key_start = dice.random_range(0..1u64 << 24);
        let callbacks = Callbacks::new(config.callback_secret.clone(), config.retry, config.max_callbacks)?;
        Ok(SimState {
            inner: Arc::new(Inner {
                seed,
                rates: Mutex::new(config.rates),
                mode: Mutex::new(Mode::Normal),
                dice: Mutex::new(dice),
                store: Mutex::new(Store::new(config.max_transactions, config.max_idempotency_keys, key_start)),
                stats: Stats::default(),
                callbacks,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight.min(Semaphore::MAX_PERMITS))),
                config,
            }),
        })
    }

    /// The seed of this run's random choices.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub fn mode(&self) -> Mode {
        *self.inner.mode.lock()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock() = mode;
    }

    pub fn rates(&self) -> Rates {
        *self.inner.rates.lock()
    }

    /// A duration drawn uniformly from `range`.
    pub(crate) fn draw_ms(&self, range: MsRange) -> Duration {
        Duration::from_millis(self.inner.dice.lock().random_range(range.min_ms..=range.max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let retry = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8).map(|attempt| retry.delay_after(attempt).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(retry.delay_after(u32::MAX), Duration::from_secs(30));
    }
}
