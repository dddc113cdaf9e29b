//! The command line of `surge gateway-sim` and what it resolves to.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::state::{Rates, RetryPolicy, SimConfig};

/// Longest latency or settle delay a flag may ask for: a simulated gateway that takes longer
/// than this is a typo, and every wait in the simulator stays bounded.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Flags of `surge gateway-sim` (the table in `docs/gateway.md`).
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to serve on.
    #[arg(long, env = "SURGE_GATEWAY_SIM_LISTEN", default_value = "127.0.0.1:9300")]
    pub listen: SocketAddr,
    /// Share of payment requests accepted (0..=1); the rest answer 500 and create nothing.
    #[arg(long, env = "SURGE_GATEWAY_SIM_SUCCESS_RATE", default_value_t = 0.6, value_parser = parse_rate)]
    pub success_rate: f64,
    /// Share of accepted payments approved (0..=1); the rest are declined.
    #[arg(long, env = "SURGE_GATEWAY_SIM_APPROVAL_RATE", default_value_t = 0.7, value_parser = parse_rate)]
    pub approval_rate: f64,
    /// Time to answer any /api call, uniform in MIN..MAX milliseconds (or one number).
    #[arg(long, env = "SURGE_GATEWAY_SIM_LATENCY_MS", default_value = "100..500")]
    pub latency_ms: MsRange,
    /// Time from accepting a payment to deciding it and sending its callback, MIN..MAX ms.
    #[arg(long, env = "SURGE_GATEWAY_SIM_SETTLE_MS", default_value = "1000..5000")]
    pub settle_ms: MsRange,
    /// Share of callbacks never sent (0..=1); the transaction is still decided.
    #[arg(long, env = "SURGE_GATEWAY_SIM_DROP_CALLBACKS", default_value_t = 0.0, value_parser = parse_rate)]
    pub drop_callbacks: f64,
    /// HMAC-SHA256 key of the callback signature.
    #[arg(long, env = "SURGE_GATEWAY_SECRET", default_value = "sim-secret", hide_env_values = true)]
    pub callback_secret: String,
    /// Seed of the simulator's random choices (default: random, logged at start).
    #[arg(long, env = "SURGE_GATEWAY_SIM_SEED")]
    pub seed: Option<u64>,
    /// Transactions kept; a payment request beyond them answers 503 gateway_full.
    #[arg(long, env = "SURGE_GATEWAY_SIM_MAX_TRANSACTIONS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_transactions: u64,
    /// Callbacks being delivered or waiting to retry; a callback beyond them is not sent
    /// (counted in callbacks_overflow).
    #[arg(long, env = "SURGE_GATEWAY_SIM_MAX_CALLBACKS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_callbacks: u64,
    /// /api requests being answered at once; one beyond them answers 503 gateway_busy at once.
    #[arg(long, env = "SURGE_GATEWAY_SIM_MAX_IN_FLIGHT", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,
}

impl SimArgs {
    /// The simulator's configuration, or why the flags do not make one.
    pub fn config(&self) -> Result<SimConfig, String> {
        if self.callback_secret.is_empty() {
            return Err("--callback-secret must not be empty".into());
        }
        Ok(SimConfig {
            rates: Rates {
                success_rate: self.success_rate,
                approval_rate: self.approval_rate,
                drop_callbacks: self.drop_callbacks,
            },
            latency_ms: self.latency_ms,
            settle_ms: self.settle_ms,
            callback_secret: self.callback_secret.clone().into_bytes(),
            seed: self.seed,
            // The flags' ranges fit in usize on every target surge builds for.
            max_transactions: usize::try_from(self.max_transactions).map_err(|e| e.to_string())?,
            // Room for a payment's key and a few captures, cancels and refunds per transaction.
            max_idempotency_keys: usize::try_from(self.max_transactions.saturating_mul(4))
                .map_err(|e| e.to_string())?,
            max_callbacks: usize::try_from(self.max_callbacks).map_err(|e| e.to_string())?,
            max_in_flight: usize::try_from(self.max_in_flight).map_err(|e| e.to_string())?,
            retry: RetryPolicy::default(),
            ..SimConfig::default()
        })
    }
}

/// A uniform range of milliseconds, `MIN..MAX` (both included) or a single number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl MsRange {
    pub const fn new(min_ms: u64, max_ms: u64) -> MsRange {
        MsRange { min_ms, max_ms }
    }
}

impl FromStr for MsRange {
    type Err = String;

    fn from_str(s: &str) -> Result<MsRange, String> {
        let number = |part: &str| {
            part.trim().parse::<u64>().map_err(|_| format!("{s:?}: expected MIN..MAX or a number of milliseconds"))
        };
        let (min_ms, max_ms) = match s.split_once("..") {
            Some((min, max)) => (number(min)?, number(max)?),
            None => (number(s)?, number(s)?),
        };
        if min_ms > max_ms {
            return Err(format!("{s:?}: MIN is above MAX"));
        }
        if max_ms > MAX_DELAY_MS {
            return Err(format!("{s:?}: at most {MAX_DELAY_MS} ms"));
        }
        Ok(MsRange { min_ms, max_ms })
    }
}

impl fmt::Display for MsRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.min_ms, self.max_ms)
    }
}

/// A share in 0..=1 (NaN and infinities are refused: a random choice needs a probability).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    check_rate(rate).map_err(|e| format!("{s:?}: {e}"))
}

pub(crate) fn check_rate(rate: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("a rate is a number from 0 to 1".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_range_parses_ranges_and_single_numbers() {
        assert_eq!("100..500".parse::<MsRange>(), Ok(MsRange::new(100, 500)));
        assert_eq!("7".parse::<MsRange>(), Ok(MsRange::new(7, 7)));
        assert_eq!("0..0".parse::<MsRange>(), Ok(MsRange::new(0, 0)));
        assert!("500..100".parse::<MsRange>().is_err());
        assert!("1..".parse::<MsRange>().is_err());
        assert!("-1..5".parse::<MsRange>().is_err());
        assert!("1..600001".parse::<MsRange>().is_err());
        assert!("fast".parse::<MsRange>().is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    fn parse(flags: &[&str]) -> Result<SimArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("gateway-sim").chain(flags.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn defaults_are_the_table_of_the_doc() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:9300".parse().unwrap());
        assert_eq!((args.success_rate, args.approval_rate, args.drop_callbacks), (0.6, 0.7, 0.0));
        assert_eq!((args.latency_ms, args.settle_ms), (MsRange::new(100, 500), MsRange::new(1000, 5000)));
        assert_eq!(args.seed, None);
        let config = args.config().unwrap();
        assert_eq!(config.rates, SimConfig::default().rates);
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn flags_reach_the_config() {
        let args = parse(&[
            "--listen=127.0.0.1:0",
            "--latency-ms=0..5",
            "--settle-ms=10..50",
            "--success-rate=1",
            "--approval-rate=0",
            "--drop-callbacks=0.5",
            "--callback-secret=S",
            "--seed=3",
            "--max-transactions=10",
            "--max-callbacks=2",
            "--max-in-flight=4",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(config.rates, Rates { success_rate: 1.0, approval_rate: 0.0, drop_callbacks: 0.5 });
        assert_eq!((config.latency_ms, config.settle_ms), (MsRange::new(0, 5), MsRange::new(10, 50)));
        assert_eq!((config.callback_secret.as_slice(), config.seed), (&b"S"[..], Some(3)));
        assert_eq!((config.max_transactions, config.max_callbacks, config.max_in_flight), (10, 2, 4));
        assert_eq!(config.max_idempotency_keys, 40);
        assert!(parse(&["--success-rate=2"]).is_err());
        assert!(parse(&["--latency-ms=5..1"]).is_err());
        assert!(parse(&["--max-transactions=0"]).is_err());
        assert!(parse(&["--callback-secret="]).unwrap().config().is_err());
    }

    #[test]
    fn rates_are_probabilities() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert!(parse_rate("1.01").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("inf").is_err());
    }
}
