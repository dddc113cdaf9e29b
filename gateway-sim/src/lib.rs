//! `surge gateway-sim`: the card payment gateway of `docs/gateway.md` over real HTTP, for
//! tests, load runs and demos. It accepts payment requests, decides them after a settle
//! delay, and tells the caller by a signed callback, with the failures real gateways have
//! (500s, declines, slow answers, lost callbacks, outages) at rates set by flags and changed
//! at run time under `/sim`.
//!
//! Invariants:
//! - One transaction per (Idempotency-Key, request): the same key with the same method, path
//!   and JSON body replays the first answer; with another request it is 422 and changes
//!   nothing. A request without a key is never deduplicated.
//! - A 5xx answer did nothing: no transaction, capture, cancel or refund.
//! - A transaction is decided once. A cancelled transaction is never approved and gets no
//!   callback; a captured one is never cancelled; refunds never exceed the captured amount.
//! - The callback of a decided transaction is sent at most once to a 2xx (retried on any
//!   other answer, at most `RetryPolicy::max_attempts` times), or never (drop share, or the
//!   callback bound is full), and the transaction stays decided either way.
//! - Everything is bounded: stored transactions and idempotency keys (503 `gateway_full`
//!   beyond), callbacks under way (not sent beyond), requests in flight (503 `gateway_busy`),
//!   refunds per transaction, every delay and retry loop.
//! - A card number is never stored, logged or answered: only its last four digits.
//! - Random choices come from one seeded generator (`--seed`): the same calls in the same
//!   order get the same outcomes.

mod api;
mod args;
mod callback;
mod control;
mod error;
mod settle;
mod state;
mod stats;
mod store;

use std::future::Future;
use std::process::ExitCode;

use axum::Router;
use tokio::net::TcpListener;

pub use api::{MAX_AMOUNT, MAX_BODY_BYTES};
pub use args::{MsRange, SimArgs, MAX_DELAY_MS};
pub use callback::signature;
pub use state::{Mode, Rates, RetryPolicy, SimConfig, SimState};
pub use stats::StatsSnapshot;
pub use store::MAX_REFUNDS_PER_TRANSACTION;

/// The whole HTTP surface: `/api/v1/...` (the gateway) and `/sim/...` (its control).
pub fn app(state: SimState) -> Router {
    Router::new()
        .nest("/api", api::routes(state.clone()))
        .merge(control::routes())
        .fallback(api::not_found)
        .with_state(state)
}

impl SimState {
    /// What `GET /sim/stats` answers.
    pub fn stats(&self) -> StatsSnapshot {
        let charged_twice = self.inner.store.lock().charged_twice();
        self.inner.stats.snapshot(charged_twice)
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes the answers in
/// flight. Settlements and callbacks still pending belong to the runtime and end with it.
pub async fn serve(
    listener: TcpListener,
    state: SimState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // No Nagle delay on small answers: the simulated latency is the only one wanted.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

/// `surge gateway-sim`: serves until SIGTERM or Ctrl-C. Logs through the caller's `tracing`
/// subscriber.
pub fn run(args: SimArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge gateway-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: SimArgs) -> Result<(), String> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen).await.map_err(|e| format!("binding {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let state = SimState::new(config)?;
        let rates = state.rates();
        tracing::info!(
            %local, seed = state.seed(), success_rate = rates.success_rate, approval_rate = rates.approval_rate,
            drop_callbacks = rates.drop_callbacks, latency_ms = %args.latency_ms, settle_ms = %args.settle_ms,
            "gateway-sim listening"
        );
        serve(listener, state, shutdown_signal()).await.map_err(|e| format!("serving: {e}"))?;
        tracing::info!("gateway-sim stopped");
        Ok(())
    })
}

/// Resolves on the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal: finishing the answers in flight, then stopping");
}
