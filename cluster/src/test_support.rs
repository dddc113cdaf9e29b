//! The etcd that tests talk to, for this crate's tests and its users': the three members
//! `scripts/etcd.sh` starts on loopback, or the endpoints in `SURGE_ETCD_ENDPOINTS`. A test
//! that finds no etcd fails when `CI` is set (CI must run it) and is skipped with a message
//! elsewhere.

use crate::client::{Etcd, EtcdConfig};

/// The endpoints of `scripts/etcd.sh`'s members, or `SURGE_ETCD_ENDPOINTS` (comma-separated).
pub fn endpoints() -> Vec<String> {
    let list = std::env::var("SURGE_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:22379,127.0.0.1:22479,127.0.0.1:22579".to_owned());
    list.split(',').map(str::to_owned).collect()
}

/// A client configuration for `endpoints()`, with a 3 s request timeout (a test that kills
/// a member waits that long for a retry on another).
pub fn config() -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints());
    c.request_timeout_ms = 3_000;
    c
}

/// Connects with `config()` and checks that etcd answers; `None` (skip) only outside CI.
pub async fn etcd() -> Option<Etcd> {
    etcd_with(config()).await
}

/// Connects with `config` and checks that etcd answers; `None` (skip) only outside CI.
pub async fn etcd_with(config: EtcdConfig) -> Option<Etcd> {
    let endpoints = config.endpoints.join(",");
    let answered = match Etcd::connect(config).await {
        Ok(etcd) => match crate::log::current_revision(&etcd).await {
            Ok(_) => Ok(etcd),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    match answered {
        Ok(etcd) => Some(etcd),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("etcd at {endpoints} does not answer ({e}); CI must start it with scripts/etcd.sh")
        }
        Err(e) => {
            eprintln!("SKIPPED: etcd at {endpoints} does not answer ({e}); run scripts/etcd.sh");
            None
        }
    }
}
