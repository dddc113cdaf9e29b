//! The gateway worker's settings. Every queue, batch and wait has its limit here.

use crate::breaker::BreakerConfig;

/// One payment gateway. `name` (its URL's `host:port`) is what the log records as the
/// gateway holding a transaction and the `gateway` label in metrics, so reordering the
/// `--gateway-url` flags changes nothing for payments already made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayEndpoint {
    pub name: String,
    /// `http://host:port` without a trailing slash.
    pub base_url: String,
}

impl GatewayEndpoint {
    /// Parses `http://host:port[/]`. Only plain HTTP: TLS to the gateway is an egress proxy's job.
    pub fn parse(url: &str) -> Result<GatewayEndpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("gateway URL {url}: must start with http:// (TLS belongs to an egress proxy)"))?;
        let authority = rest.trim_end_matches('/');
        // host:port characters only: the name is a Prometheus label value and a log field.
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_');
        if authority.is_empty() || !authority.chars().all(allowed) {
            return Err(format!("gateway URL {url}: must be http://host:port with no path or credentials"));
        }
        Ok(GatewayEndpoint { name: authority.to_string(), base_url: format!("http://{authority}") })
    }
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// In order of preference: new payments go to the first whose breaker lets them.
    pub gateways: Vec<GatewayEndpoint>,
    /// Where the gateway posts its callbacks (`.../v1/gateway/callback`).
    pub callback_url: String,
    pub connect_timeout_ms: u64,
    /// A whole call (send + answer) that takes longer is a timeout.
    pub response_timeout_ms: u64,
    /// Retry waits: full jitter over `min(backoff_max_ms, backoff_min_ms * 2^attempt)`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// A payment no gateway has accepted this long after it was requested fails
    /// (`GatewayGaveUp`): the order goes back to `awaiting_payment`.
    pub submit_deadline_ms: u64,
    /// A payment accepted but not settled (no callback) this long is looked up.
    pub reconcile_after_ms: u64,
    /// Between two look-ups of a payment the gateway still reports `PENDING`.
    pub reconcile_interval_ms: u64,
    /// A payment accepted but not settled this long fails (and is voided at the gateway).
    pub settle_deadline_ms: u64,
    /// A capture, void or refund is tried at most this often...
    pub op_attempts_max: u32,
    /// ...and for at most this long, before it becomes a dead letter.
    pub op_deadline_ms: u64,
    /// Gateway calls and reports in flight at once.
    pub in_flight_max: usize,
    /// Operations held open at once; beyond it the worker stops reading the log until some
    /// finish (the log keeps what it has not read).
    pub ops_open_max: usize,
    /// Half-open breakers let this many probe calls out at once.
    pub probes_in_flight_max: usize,
    pub breaker: BreakerConfig,
    /// The reader checkpoint is stored at most this often (each store is an fsync).
    pub checkpoint_interval_ms: u64,
}

impl GatewayConfig {
    pub fn new(gateways: Vec<GatewayEndpoint>, callback_url: String) -> GatewayConfig {
        GatewayConfig {
            gateways,
            callback_url,
            connect_timeout_ms: 1_000,
            response_timeout_ms: 3_000,
            backoff_min_ms: 200,
            backoff_max_ms: 5_000,
            submit_deadline_ms: 10_000,
            reconcile_after_ms: 10_000,
            reconcile_interval_ms: 5_000,
            settle_deadline_ms: 120_000,
            op_attempts_max: 8,
            op_deadline_ms: 10 * 60_000,
            in_flight_max: 4_096,
            ops_open_max: 200_000,
            probes_in_flight_max: 2,
            // A gateway that fails now and then (a payment gateway may answer 5xx to a large
            // share of requests and still take the rest) is retried, not cut off: the breaker
            // opens when nearly every call fails or is slow, which is what down, failing and
            // overloaded look like. One successful probe closes it; a failed one reopens it.
            breaker: BreakerConfig {
                window_ms: 10_000,
                window_calls_max: 200,
                calls_min: 20,
                failure_rate_max: 0.8,
                slow_rate_max: 0.8,
                slow_call_ms: 2_000,
                open_ms: 5_000,
                probes_to_close: 1,
            },
            checkpoint_interval_ms: 200,
        }
    }

    /// At most 32 gateways (a payment's "may be at" set is a bit mask).
    pub const GATEWAYS_MAX: usize = 32;

    pub fn validate(&self) -> Result<(), String> {
        if self.gateways.is_empty() || self.gateways.len() > Self::GATEWAYS_MAX {
            return Err(format!("1..={} gateway URLs", Self::GATEWAYS_MAX));
        }
        let mut names: Vec<&str> = self.gateways.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("a gateway URL is given twice".into());
        }
        if !self.callback_url.starts_with("http://") && !self.callback_url.starts_with("https://") {
            return Err(format!("callback URL {}: must be an http(s) URL", self.callback_url));
        }
        if self.in_flight_max == 0 || self.ops_open_max == 0 || self.op_attempts_max == 0 {
            return Err("in-flight, open-operation and attempt limits must be at least 1".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err("backoff: 0 < min <= max".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_http_host_port() {
        let g = GatewayEndpoint::parse("http://127.0.0.1:9300/").expect("parses");
        assert_eq!((g.name.as_str(), g.base_url.as_str()), ("127.0.0.1:9300", "http://127.0.0.1:9300"));
        for bad in ["https://pg:443", "127.0.0.1:9300", "http://", "http://pg/api", "http://u:p@pg:1", "http://p\"g:1"]
        {
            assert!(GatewayEndpoint::parse(bad).is_err(), "{bad}");
        }
        let twice = GatewayConfig::new(vec![g.clone(), g], "http://127.0.0.1:8080/v1/gateway/callback".into());
        assert!(twice.validate().is_err());
    }
}
