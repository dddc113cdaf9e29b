//! `surge relay`: the relay as its own process on the data directory of a running server
//! (or of a stopped one, to backfill). Same sinks and code as the in-process relay of
//! `surge serve`; it only reads the log. With `--gateway-url` it also runs the gateway
//! worker, which reports to the server over its admin API (the server runs with
//! `--gateway-worker external`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use surge_relay::gateway::{CardKey, GatewayStatus, GatewayWorker, HttpPort};
use surge_relay::setup::RelayOptions;
use surge_relay::SinkStatus;

use crate::config::GatewaySettings;

use crate::walcmd::wal_dir;

/// How often the standalone relay looks at its sinks (caught up? stopped?).
const WATCH_INTERVAL_MS: u64 = 100;

pub struct RelayRun {
    pub options: RelayOptions,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics_listen: Option<SocketAddr>,
    /// Exit once every sink has written everything that was durable at start.
    pub until_caught_up: bool,
    pub gateway: Option<RelayGateway>,
}

/// The gateway worker of a standalone relay.
pub struct RelayGateway {
    pub settings: GatewaySettings,
    /// `http://host:port` of the server the worker reports to.
    pub server_url: Option<String>,
    pub admin_token: Option<String>,
}

/// A report that gets no answer this long is tried again.
const REPORT_TIMEOUT_MS: u64 = 10_000;

fn start_worker(data_dir: &Path, wal_dir: &Path, gateway: RelayGateway) -> Result<GatewayWorker, String> {
    let server = gateway.server_url.ok_or("--server-url is required with --gateway-url")?;
    let token = gateway.admin_token.filter(|t| !t.is_empty()).ok_or("--admin-token is required with --gateway-url")?;
    let settings = gateway.settings;
    // The server's key: the worker opens what the server sealed, and never makes a new one.
    let key_path = settings.card_key_file.clone().unwrap_or_else(|| data_dir.join(crate::config::CARD_KEY_FILE));
    let (card_key, _) = CardKey::load(&key_path, false).map_err(|e| format!("card key: {e}"))?;
    let callback = format!("{}{}", server.trim_end_matches('/'), crate::gateway::CALLBACK_PATH);
    let config = crate::gateway::worker_config(&settings, callback)?;
    let port = HttpPort::new(&server, &token, REPORT_TIMEOUT_MS)?;
    let source = Arc::new(surge_relay::WalSource::new(wal_dir.to_path_buf()));
    GatewayWorker::spawn(source, config, card_key, Arc::new(port)).map_err(|e| format!("gateway worker: {e}"))
}

pub fn run(data_dir: &Path, run: RelayRun) -> Result<(), String> {
    if !run.options.any() && run.gateway.is_none() {
        return Err("nothing to relay to: give --kafka-brokers, --mariadb-url and/or --gateway-url".into());
    }
    if run.until_caught_up && run.gateway.is_some() {
        return Err("--until-caught-up is for sinks; the gateway worker runs until stopped".into());
    }
    let wal_dir = wal_dir(data_dir);
    let target_lsn = surge_wal::Tailer::open(&wal_dir, 1)
        .map(|t| t.durable_lsn())
        .map_err(|e| format!("{}: {e}", wal_dir.display()))?;
    let mut relay = surge_relay::setup::start(wal_dir.clone(), &run.options)?;
    let mut worker = match run.gateway {
        Some(gateway) => Some(start_worker(data_dir, &wal_dir, gateway)?),
        None => None,
    };
    let statuses: Arc<[Arc<SinkStatus>]> = relay.as_ref().map(|r| r.statuses().to_vec()).unwrap_or_default().into();
    let worker_status = worker.as_ref().map(|w| w.status().clone());
    tracing::info!(log = %wal_dir.display(), durable_lsn = target_lsn, sinks = statuses.len(), "relay started");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let result = runtime.block_on(async {
        if let Some(addr) = run.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
            let router = metrics_router(statuses.clone(), worker_status);
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        let watch = watch(statuses.clone(), run.until_caught_up.then_some(target_lsn));
        tokio::select! {
            r = watch => r,
            _ = crate::signal::shutdown_signal() => Ok(()),
        }
    });
    if let Some(relay) = relay.as_mut() {
        relay.stop();
    }
    if let Some(worker) = worker.as_mut() {
        worker.stop();
    }
    for s in statuses.iter() {
        tracing::info!(sink = s.name, written_lsn = s.written_lsn.load(Ordering::Relaxed), "relay sink position");
    }
    result
}

/// Returns when every sink reached `target_lsn` (if given), or with an error when a sink
/// stopped for good.
async fn watch(statuses: Arc<[Arc<SinkStatus>]>, target_lsn: Option<u64>) -> Result<(), String> {
    let mut interval = tokio::time::interval(Duration::from_millis(WATCH_INTERVAL_MS));
    loop {
        interval.tick().await;
        if let Some(s) = statuses.iter().find(|s| s.is_stopped()) {
            return Err(format!("the {} sink stopped on a fatal error (see the log above)", s.name));
        }
        if let Some(target) = target_lsn {
            if statuses.iter().all(|s| s.written_lsn.load(Ordering::Relaxed) >= target) {
                tracing::info!(lsn = target, "every sink caught up");
                return Ok(());
            }
        }
    }
}

fn metrics_router(statuses: Arc<[Arc<SinkStatus>]>, worker: Option<Arc<GatewayStatus>>) -> axum::Router {
    axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let (statuses, worker) = (statuses.clone(), worker.clone());
            async move {
                let mut out = String::new();
                surge_relay::status::render_prometheus(&statuses, &mut out);
                if let Some(worker) = worker {
                    worker.render_prometheus(&mut out);
                }
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }
        }),
    )
}
