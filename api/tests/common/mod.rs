//! Router tests without a socket: `app(state)` on an engine over a temporary log.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use surge_api::engine::{Engine, EngineConfig, WalOpener};
use surge_api::{app, auth, AppState};
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token";

pub struct Server {
    pub app: Router,
    pub state: AppState,
    pub engine: Arc<Engine>,
}

pub fn engine_config(shards: usize) -> EngineConfig {
    EngineConfig {
        shards,
        snapshot_every_records: 0,
        reopen_interval: Duration::from_millis(20),
        settings: surge_core::Settings::default(),
    }
}

/// Small segments: creating a 64 MiB segment costs most of a test's time.
pub fn wal_config() -> surge_wal::Config {
    surge_wal::Config { segment_size_bytes: 8 << 20, ..surge_wal::Config::default() }
}

pub fn dir_opener(dir: &std::path::Path) -> WalOpener {
    WalOpener::dir(dir.join("wal"), wal_config())
}

pub fn server_with(opener: WalOpener, config: EngineConfig, rate_limit: u32) -> Server {
    // Logs show in the output of failing tests only.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let engine = Arc::new(Engine::start(opener, config).expect("engine starts"));
    let state = AppState::new(auth::sha256(ADMIN.as_bytes()), rate_limit);
    state.set_engine(engine.clone());
    Server { app: app(state.clone()), state, engine }
}

pub fn server(dir: &std::path::Path) -> Server {
    server_with(dir_opener(dir), engine_config(2), 0)
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts the contract's problem+json shape and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].is_string() && self.body["title"].is_string() && self.body["detail"].is_string());
    }
}

impl Server {
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request builds");
        let res = self.app.clone().oneshot(req).await.expect("router answers");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body reads");
        let body = if bytes.is_empty() {
            Value::Null
        } else if headers.get("content-type").is_some_and(|v| v.to_str().unwrap_or("").contains("json")) {
            serde_json::from_slice(&bytes).expect("JSON body")
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        Resp { status, headers, body }
    }

    pub async fn merchant(&self, id: &str) -> String {
        let auth = format!("Bearer {ADMIN}");
        let body = format!(r#"{{"id":"{id}","name":"Shop {id}","currency":"KRW"}}"#);
        let r = self.send("POST", "/v1/merchants", &[("authorization", &auth)], Some(&body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["api_key"].as_str().expect("api_key").to_string()
    }
}

/// A merchant's view of the server.
pub struct Client<'a> {
    pub server: &'a Server,
    pub auth: String,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server, key: &str) -> Client<'a> {
        Client { server, auth: format!("Bearer {key}") }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.server.send("GET", path, &[("authorization", &self.auth)], None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Resp {
        self.server.send("POST", path, &[("authorization", &self.auth)], Some(body)).await
    }

    pub async fn post_key(&self, path: &str, key: &str, body: &str) -> Resp {
        self.server.send("POST", path, &[("authorization", &self.auth), ("idempotency-key", key)], Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &str) -> Resp {
        self.server.send("PUT", path, &[("authorization", &self.auth)], Some(body)).await
    }

    pub async fn send(&self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&str>) -> Resp {
        let mut headers = vec![("authorization", self.auth.as_str())];
        headers.extend_from_slice(extra);
        self.server.send(method, path, &headers, body).await
    }
}
