//! `/mcp` in `surge serve`: the same tools over MCP's streamable HTTP transport, behind the
//! admin token (checked as on every admin route, before the MCP layer sees the request). The
//! tools call the server's own router in-process with the caller's `Authorization` header,
//! so every call passes the routes' own checks.
//!
//! Stateless and JSON answers: the server keeps no MCP sessions (nothing to grow with
//! clients), and every tool answers once. The transport's Host check is off: the admin
//! token already keeps out a page that rebinds a name to this server, and operators reach
//! it by any host name.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq;

use super::backend::RouterBackend;
use super::SurgeMcp;
use crate::error::ApiError;
use crate::{auth, AppState};

/// The `/mcp` endpoint's service.
pub fn service(state: AppState) -> StreamableHttpService<SurgeMcp, NeverSessionManager> {
    let dir = state.load_results_dir();
    let backend = Arc::new(RouterBackend::new(state));
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(crate::BODY_BYTES_MAX)
        .disable_allowed_hosts();
    config.sse_keep_alive = None;
    StreamableHttpService::new(
        move || Ok(SurgeMcp::new(backend.clone(), dir.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// 401 unless the request carries the admin token as Bearer.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = auth::bearer(req.headers())
        .is_some_and(|t| bool::from(auth::sha256(t.as_bytes()).ct_eq(&state.0.admin_token_hash)));
    if !ok {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}
