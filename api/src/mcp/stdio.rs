//! `surge mcp`: the MCP server over stdin/stdout, for an assistant that starts it as a child
//! process. A client of a running `surge serve` (its HTTP API, with the admin token): it
//! opens no data directory and holds no state of its own. stdout carries the protocol only;
//! logs go to stderr.

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::ServiceExt;

use super::backend::HttpBackend;
use super::SurgeMcp;

#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// The running server to ask (`http://host:port` of `surge serve`).
    #[arg(long, env = "SURGE_SERVER_URL", default_value = "http://127.0.0.1:8080")]
    pub server_url: String,
    /// The server's admin token (the tools use admin routes).
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Where `load_run_summary` reads `surge load` JSON results.
    #[arg(long, env = "SURGE_LOAD_RESULTS_DIR", default_value = super::LOAD_RESULTS_DIR_DEFAULT)]
    pub load_results_dir: PathBuf,
}

/// Serves MCP on stdin/stdout until the client closes it.
pub fn run(args: McpArgs) -> Result<(), String> {
    let backend = HttpBackend::new(&args.server_url, &args.admin_token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let server = SurgeMcp::new(Arc::new(backend), args.load_results_dir);
        let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP over stdio: {e}"))?;
        running.waiting().await.map_err(|e| format!("MCP over stdio: {e}"))?;
        Ok(())
    })
}
