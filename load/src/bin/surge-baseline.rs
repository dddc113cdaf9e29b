//! `surge-baseline`: a bare axum server with one route, `POST /v1/orders`, that parses the
//! same JSON body as surge (serde, from the raw bytes, as surge does) and answers 201 with a
//! small JSON body. No state, no log, no auth: the ceiling that surge's `POST /v1/orders` is
//! measured against (`benches/http_vs_baseline.sh`).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "surge-baseline", about = "bare axum POST /v1/orders (parses the JSON, keeps nothing)")]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SURGE_BASELINE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[allow(dead_code)] // parsed, not used: the work being measured is the parse
#[derive(Deserialize)]
struct Line {
    sku: String,
    qty: u64,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Payment {
    method: String,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct OrderBody {
    customer_id: String,
    #[serde(default)]
    lines: Option<Vec<Line>>,
    #[serde(default)]
    hold_id: Option<String>,
    payment: Payment,
}

async fn create_order(body: Bytes) -> Response {
    match serde_json::from_slice::<OrderBody>(&body) {
        Ok(b) => {
            let total: u64 = b.lines.iter().flatten().map(|l| l.qty).sum();
            let out =
                format!(r#"{{"id":"1","status":"paid","total":{total},"payment":{{"id":"1","status":"captured"}}}}"#);
            (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], out).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/problem+json")],
            format!(
                r#"{{"status":400,"code":"invalid_request","detail":{}}}"#,
                serde_json::Value::String(e.to_string())
            ),
        )
            .into_response(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        b.worker_threads(cli.threads);
    }
    let rt = match b.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("surge-baseline: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| format!("binding {}: {e}", cli.listen))?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new()
            .route("/v1/orders", post(create_order))
            .route("/healthz", get(|| async { r#"{"status":"ok"}"# }));
        eprintln!("surge-baseline: listening on {}", cli.listen);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge-baseline: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
