//! The MCP server (Model Context Protocol, on the official Rust SDK `rmcp`): the tools an
//! assistant uses to ask what an operator asks. One implementation, two transports:
//!
//! - `surge mcp` (`stdio.rs`): over stdin/stdout, a client of a running server's HTTP API
//!   (`--server-url`, the admin token). It never opens a data directory.
//! - `/mcp` in `surge serve` (`http.rs`): streamable HTTP behind the admin token, calling
//!   the server's own router in-process with the caller's credentials.
//!
//! Either way the tools (`tools.rs`) only send HTTP requests through a `Backend`
//! (`backend.rs`): the engine decides everything, as for any client. The read-only tools
//! can only send GETs (`tools::Reads`); `retry_dead_letter` is the one that can change
//! anything, and only with `confirm: true`. `load_run_summary` reads `surge load` results
//! from one directory (`load_results.rs`); `prom.rs` reads /metrics back.

pub mod backend;
pub mod http;
pub mod load_results;
pub mod prom;
pub mod stdio;
pub mod tools;

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use backend::{Caller, SharedBackend};
use tools::*;

/// Where `load_run_summary` reads results unless told otherwise (what `surge load` writes to).
pub use crate::console::LOAD_RESULTS_DIR_DEFAULT;

/// One MCP session's handler: the tools over a backend.
#[derive(Clone)]
pub struct SurgeMcp {
    backend: SharedBackend,
    load_results_dir: Arc<PathBuf>,
    tool_router: ToolRouter<SurgeMcp>,
}

/// The credentials of the HTTP request that carried this call, if it came over HTTP.
fn caller(ctx: &RequestContext<RoleServer>) -> Caller {
    let parts = ctx.extensions.get::<axum::http::request::Parts>();
    Caller { authorization: parts.and_then(|p| p.headers.get(axum::http::header::AUTHORIZATION).cloned()) }
}

/// A tool's answer: its JSON as structured content, or its error with `isError: true` (an
/// answer the assistant reads, not a protocol failure).
fn answer(result: Result<Value, ToolError>) -> Result<CallToolResult, ErrorData> {
    Ok(match result {
        Ok(value) => CallToolResult::structured(value),
        Err(e) => CallToolResult::structured_error(e.to_json()),
    })
}

#[tool_router]
impl SurgeMcp {
    pub fn new(backend: SharedBackend, load_results_dir: PathBuf) -> SurgeMcp {
        SurgeMcp { backend, load_results_dir: Arc::new(load_results_dir), tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Is the surge server healthy right now? Readiness (recovered, log writable) and why not; storage (log failures, durable LSN, log queue, records since the last snapshot); each relay sink's lag in records and seconds, breaker (closed/open/half-open) and whether it stopped; each payment gateway's breaker, card payments pending and the oldest one's age; open dead letters. A point-in-time reading of /readyz, /metrics and the dead-letter list. Read-only.",
        annotations(title = "Health", read_only_hint = true, open_world_hint = false)
    )]
    async fn health(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::health(&Reads::new(&*self.backend, &caller)).await)
    }

    #[tool(
        description = "Traffic, payment success and latency. With minutes (1-10): over the last that many minutes, answered at once from the server's own readings of its counters and histogram buckets at the window's two ends (one reading every 10 s, ten minutes kept; a shorter window while the server has run for less): orders/s by event, payments succeeded/failed per second, p50/p99 of POST /v1/orders, records per group commit, fsync p99. Without minutes: over a short window this tool measures itself: it reads /metrics, waits window_seconds (1-60, default 5), reads it again and reports the differences per second: requests/s, 5xx share, orders/s by event (created, paid, cancelled, expired, refunded, reopened), payments requested/s and success rate (succeeded / (succeeded + failed)) per method in the window and since the server started, refusals/s, p50/p90/p99 of POST /v1/orders in the window and since start, the five busiest routes' percentiles, group commits/s, records per commit and fsync percentiles. Percentiles are interpolated from histogram buckets. Read-only.",
        annotations(title = "Metrics summary", read_only_hint = true, open_world_hint = false)
    )]
    async fn metrics_summary(
        &self,
        Parameters(p): Parameters<MetricsSummaryParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::metrics_summary(&Reads::new(&*self.backend, &caller), p).await)
    }

    #[tool(
        description = "Look up one order of a merchant by id (ord_N): the order as the API answers it (status, lines, total, its payment; from the cold store with archived_at once archived) and its history, the order's events in the log oldest first (order.created, order.paid, ...), from a bounded scan of the newest log records ('complete' says whether it covered the whole log). Read-only.",
        annotations(title = "Find order", read_only_hint = true, open_world_hint = false)
    )]
    async fn find_order(
        &self,
        Parameters(p): Parameters<FindOrderParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::find_order(&Reads::new(&*self.backend, &caller), p).await)
    }

    #[tool(
        description = "Look up one payment of a merchant by id (pay_N): the payment as the API answers it (method, status, amounts captured and refunded, card last four digits, gateway transaction key, failure reason) and its history, the payment's events in the log oldest first, from a bounded scan of the newest log records. Read-only.",
        annotations(title = "Find payment", read_only_hint = true, open_world_hint = false)
    )]
    async fn find_payment(
        &self,
        Parameters(p): Parameters<FindPaymentParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::find_payment(&Reads::new(&*self.backend, &caller), p).await)
    }

    #[tool(
        description = "Card captures, voids and refunds the gateway worker gave up on (dead letters), across merchants, newest first: id (dl_N), merchant_id, payment_id, order_id, op, amount, reason of the last failure, status (open, retried, resolved), attempts. Filter by status; limit 1-1000 (default 100). Read-only.",
        annotations(title = "List dead letters", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_dead_letters(
        &self,
        Parameters(p): Parameters<ListDeadLettersParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::list_dead_letters(&Reads::new(&*self.backend, &caller), p).await)
    }

    #[tool(
        description = "Ask the gateway worker to make an open dead letter's operation again, with the same idempotency key (nothing is charged twice). Changes state, so it needs confirm: true; without it the tool only shows the dead letter's current state and changes nothing. dead_letter_id is {merchant_id}:dl_N. The answer shows it 'retried'; it becomes 'resolved' once the gateway accepts, or 'open' again.",
        annotations(
            title = "Retry dead letter",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn retry_dead_letter(
        &self,
        Parameters(p): Parameters<RetryDeadLetterParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::retry_dead_letter(&Writes::new(&*self.backend, &caller), p).await)
    }

    #[tool(
        description = "Summarize a `surge load` run from its JSON result in the results directory (default load-results/; the newest file unless `file` names one, bare file names only): scenario, mode, verdict; throughput (ops/s, requests/s, rate asked); latency p50/p90/p99/p99.9/max; errors by answer; every invariant check with PASS/FAIL; and where the time went (generator CPU-bound?, operations never sent, slowest seconds, seconds with errors, p99 drift over the run). Also lists the other result files. Read-only.",
        annotations(title = "Load run summary", read_only_hint = true, open_world_hint = false)
    )]
    async fn load_run_summary(
        &self,
        Parameters(p): Parameters<LoadRunSummaryParams>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(tools::load_run_summary(&self.load_results_dir, p).await)
    }

    #[tool(
        description = "A merchant's trial balance: total debits and credits over every account of its double-entry ledger, whether they balance (they always must), and how many accounts it has. Read-only.",
        annotations(title = "Trial balance", read_only_hint = true, open_world_hint = false)
    )]
    async fn trial_balance(
        &self,
        Parameters(p): Parameters<TrialBalanceParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = caller(&ctx);
        answer(tools::trial_balance(&Reads::new(&*self.backend, &caller), p).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SurgeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("surge", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools over a running surge order and payment engine (as its operator, through its HTTP API): \
                 health, metrics_summary, find_order, find_payment, list_dead_letters, retry_dead_letter \
                 (needs confirm: true), load_run_summary, trial_balance. Amounts are integers in the currency's \
                 minor units; ids are per merchant (ord_N, pay_N, dl_N).",
            )
    }
}
