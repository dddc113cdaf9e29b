//! How the MCP tools reach the server: its HTTP API, and nothing else. Over stdio
//! (`surge mcp`) that is a real HTTP client to `--server-url`; inside `surge serve` (`/mcp`)
//! the same requests go through the server's own router in-process, so they pass the same
//! authentication, limits and handlers as any client's. Either way the engine decides; the
//! tools never see its state, its log or its data directory.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, HeaderValue, Method};

/// Answers larger than this are refused: every answer the tools read (JSON of one resource,
/// at most 1,000 dead letters or events, the /metrics text) is far smaller.
pub const ANSWER_BYTES_MAX: usize = 8 << 20;
/// How long one request to the server may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server answered: its status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Result<serde_json::Value, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| BackendError::Malformed(e.to_string()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("the server did not answer: {0}")]
    Unreachable(String),
    #[error("the server's answer is over {ANSWER_BYTES_MAX} bytes")]
    TooLarge,
    #[error("the server's answer does not parse: {0}")]
    Malformed(String),
}

/// Who is calling, as far as the transport knows: over streamable HTTP the request that
/// carried the call was authenticated with the admin token, and the in-process backend
/// presents that same header to the routes it calls.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub authorization: Option<HeaderValue>,
}

/// The server's HTTP API, as the admin. Only [`crate::mcp::tools`] calls it, through
/// `Reads` (GET only) for the read-only tools.
pub trait Backend: Send + Sync + 'static {
    /// `method` `path_and_query`, without a body.
    fn send<'a>(
        &'a self,
        caller: &'a Caller,
        method: Method,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Answer, BackendError>>;
}

/// `surge mcp`: a client of a running server at `base_url`, with the admin token.
pub struct HttpBackend {
    client: reqwest::Client,
    base_url: String,
    authorization: HeaderValue,
}

impl HttpBackend {
    pub fn new(base_url: &str, admin_token: &str) -> Result<HttpBackend, String> {
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!("--server-url must be http://host:port, not {base_url:?}"));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {admin_token}"))
            .map_err(|_| "the admin token holds characters a header cannot".to_string())?;
        authorization.set_sensitive(true);
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpBackend { client, base_url, authorization })
    }
}

impl Backend for HttpBackend {
    fn send<'a>(
        &'a self,
        _caller: &'a Caller,
        method: Method,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(async move {
            let url = format!("{}{path}", self.base_url);
            let mut res = self
                .client
                .request(method, url)
                .header(header::AUTHORIZATION, self.authorization.clone())
                .send()
                .await
                .map_err(|e| BackendError::Unreachable(e.to_string()))?;
            let status = res.status().as_u16();
            // Read in chunks so a huge answer is refused before it is all in memory.
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| BackendError::Unreachable(e.to_string()))? {
                if body.len() + chunk.len() > ANSWER_BYTES_MAX {
                    return Err(BackendError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer { status, body })
        })
    }
}

/// `/mcp` inside `surge serve`: the server's own router, called in-process with the caller's
/// `Authorization` header. Built on first use (the router holds the `/mcp` route itself).
pub struct RouterBackend {
    state: crate::AppState,
    router: OnceLock<axum::Router>,
}

impl RouterBackend {
    pub fn new(state: crate::AppState) -> RouterBackend {
        RouterBackend { state, router: OnceLock::new() }
    }
}

impl Backend for RouterBackend {
    fn send<'a>(
        &'a self,
        caller: &'a Caller,
        method: Method,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(async move {
            use tower::ServiceExt;
            let router = self.router.get_or_init(|| crate::app(self.state.clone())).clone();
            let mut req = axum::http::Request::builder().method(method).uri(path);
            if let Some(auth) = &caller.authorization {
                req = req.header(header::AUTHORIZATION, auth.clone());
            }
            let req = req.body(axum::body::Body::empty()).map_err(|e| BackendError::Malformed(e.to_string()))?;
            let res = match tokio::time::timeout(REQUEST_TIMEOUT, router.oneshot(req)).await {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => return Err(BackendError::Unreachable("timed out".into())),
            };
            let status = res.status().as_u16();
            let body =
                axum::body::to_bytes(res.into_body(), ANSWER_BYTES_MAX).await.map_err(|_| BackendError::TooLarge)?;
            Ok(Answer { status, body: body.to_vec() })
        })
    }
}

/// A backend shared by every session of a server.
pub type SharedBackend = Arc<dyn Backend>;
