//! Server settings and the files in the data directory that pin them.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `surge load`'s results, listed by the console and read by `/mcp`.
    pub load_results_dir: PathBuf,
    pub admin_token: Option<String>,
    /// `None`: what the data directory was created with, else available parallelism.
    pub shards: Option<usize>,
    pub merchant_rate_limit: u32,
    pub snapshot_every_records: u64,
    /// The engine's time settings: the idempotency window and the retention of settled
    /// aggregates (`--idempotency-window`, `--retain-settled`).
    pub settings: surge_core::Settings,
    pub wal_io: surge_wal::IoMode,
    /// How far past its end the log keeps zeros written (`surge_wal::Config::zero_ahead_bytes`).
    pub wal_zero_ahead_bytes: u64,
    /// In-process relay sinks (`--kafka-brokers`, `--mariadb-url`); none by default.
    pub relay: surge_relay::setup::RelayOptions,
    /// Card payments (`--gateway-url`...); off by default.
    pub gateway: Option<GatewaySettings>,
    /// Cluster mode (`--etcd`...); off by default.
    pub cluster: Option<ClusterSettings>,
}

/// Cluster mode: this node's place in a cluster whose partitions live in etcd
/// (docs/cluster.md).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `host:port` of each etcd member.
    pub etcd_endpoints: Vec<String>,
    pub node_id: String,
    /// Where the other nodes reach this one (`host:port`).
    pub advertise: String,
    pub partitions: u32,
    pub lease_ttl_s: i64,
}

/// The card path's settings: where the gateways are, how their callbacks are signed, where
/// the key sealing card numbers lives, and the worker's deadlines.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `http://host:port`, in order of preference.
    pub urls: Vec<String>,
    pub secret: String,
    /// `None`: `http://{listen}/v1/gateway/callback` (loopback when listening on all addresses).
    pub callback_url: Option<String>,
    /// `None`: `{data_dir}/card.key`, generated at first start.
    pub card_key_file: Option<PathBuf>,
    pub submit_deadline_ms: u64,
    pub reconcile_after_ms: u64,
    pub settle_deadline_ms: u64,
    pub response_timeout_ms: u64,
    pub op_attempts_max: u32,
    pub op_deadline_ms: u64,
    pub in_flight_max: usize,
    /// The worker runs in `surge relay` and reports over the admin API.
    pub external_worker: bool,
}

pub const CARD_KEY_FILE: &str = "card.key";

pub const ADMIN_TOKEN_FILE: &str = "admin_token.sha256";
pub const SHARDS_FILE: &str = "shards";
/// One thread each: more than this is a typo, not a machine.
pub const SHARDS_MAX: usize = 256;

/// The admin token's hash: from the flag, else from the data directory, else a new token
/// that is printed once and whose hash is stored (mode 0600) so restarts keep it.
pub fn admin_token_hash(data_dir: &Path, flag: Option<&str>) -> Result<[u8; 32], String> {
    if let Some(token) = flag.filter(|t| !t.is_empty()) {
        return Ok(auth::sha256(token.as_bytes()));
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return auth::unhex32(&text).ok_or_else(|| format!("{} is not a SHA-256 hex digest", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    let token = auth::new_admin_token();
    let hash = auth::sha256(token.as_bytes());
    write_private(&path, auth::hex(&hash).as_bytes())?;
    // Printed once, on first start, on stdout (not the log).
    println!("surge: generated admin token (shown once; only its hash is stored in {}):", path.display());
    println!("{token}");
    Ok(hash)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    Ok(())
}

/// The shard count is fixed per data directory (snapshots hold one image per shard).
pub fn shard_count(data_dir: &Path, flag: Option<usize>) -> Result<usize, String> {
    let path = data_dir.join(SHARDS_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{} is malformed", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if let Some(n) = flag.filter(|n| !(1..=SHARDS_MAX).contains(n)) {
        return Err(format!("--shards {n}: must be 1..={SHARDS_MAX}"));
    }
    match (stored, flag) {
        (Some(s), Some(f)) if s != f => Err(format!(
            "{} was created with {s} shards; --shards {f} differs (the shard count is fixed per data directory)",
            data_dir.display()
        )),
        (Some(s), _) => Ok(s),
        (None, flag) => {
            let n = flag
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .clamp(1, SHARDS_MAX);
            write_private(&path, n.to_string().as_bytes())?;
            Ok(n)
        }
    }
}

/// A duration as the flags take it: a whole number and a unit, `ms`, `s`, `m`, `h` or `d`
/// (`60s`, `7d`); in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?}: expected a number and a unit, such as 60s or 7d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    number.checked_mul(unit_ms).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_a_number_and_a_unit() {
        use super::parse_duration_ms as p;
        assert_eq!(p("60s"), Ok(60_000));
        assert_eq!(p("7d"), Ok(7 * 86_400_000));
        assert_eq!(p("250ms"), Ok(250));
        assert_eq!(p("24h"), Ok(86_400_000));
        assert!(p("60").is_err() && p("s").is_err() && p("-1s").is_err() && p("99999999999999999999d").is_err());
    }
}
