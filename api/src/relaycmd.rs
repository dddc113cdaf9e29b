//! `surge relay`: the relay as its own process on the data directory of a running server
//! (or of a stopped one, to backfill). Same sinks and code as the in-process relay of
//! `surge serve`; it only reads the log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use surge_relay::setup::RelayOptions;
use surge_relay::SinkStatus;

use crate::walcmd::wal_dir;

/// How often the standalone relay looks at its sinks (caught up? stopped?).
const WATCH_INTERVAL_MS: u64 = 100;

pub struct RelayRun {
    pub options: RelayOptions,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics_listen: Option<SocketAddr>,
    /// Exit once every sink has written everything that was durable at start.
    pub until_caught_up: bool,
}

pub fn run(data_dir: &Path, run: RelayRun) -> Result<(), String> {
    if !run.options.any() {
        return Err("nothing to relay to: give --kafka-brokers and/or --mariadb-url".into());
    }
    let wal_dir = wal_dir(data_dir);
    let target_lsn = surge_wal::Tailer::open(&wal_dir, 1)
        .map(|t| t.durable_lsn())
        .map_err(|e| format!("{}: {e}", wal_dir.display()))?;
    let Some(mut relay) = surge_relay::setup::start(wal_dir.clone(), &run.options)? else {
        return Err("no sink configured".into());
    };
    let statuses: Arc<[Arc<SinkStatus>]> = relay.statuses().into();
    tracing::info!(log = %wal_dir.display(), durable_lsn = target_lsn, sinks = statuses.len(), "relay started");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let result = runtime.block_on(async {
        if let Some(addr) = run.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
            let router = metrics_router(statuses.clone());
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        let watch = watch(statuses.clone(), run.until_caught_up.then_some(target_lsn));
        tokio::select! {
            r = watch => r,
            _ = crate::signal::shutdown_signal() => Ok(()),
        }
    });
    relay.stop();
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

fn metrics_router(statuses: Arc<[Arc<SinkStatus>]>) -> axum::Router {
    axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let statuses = statuses.clone();
            async move {
                let mut out = String::new();
                surge_relay::status::render_prometheus(&statuses, &mut out);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }
        }),
    )
}
