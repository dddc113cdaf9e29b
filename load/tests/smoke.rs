//! End to end: a surge server in this process (the api crate's library, on 127.0.0.1:0 over a
//! temporary log), every scenario for a second or two at a low rate over real HTTP, and
//! every invariant check must pass.

use std::sync::Arc;
use std::time::Duration;

use surge_api::engine::{Engine, EngineConfig, WalOpener};
use surge_api::{app, auth, AppState};
use surge_load::{LoadArgs, LoopMode, ScenarioKind, Verdict};

const ADMIN: &str = "smoke-admin-token";

/// Starts the server on the current runtime; returns its base URL.
async fn start_server(dir: &std::path::Path) -> String {
    let wal = surge_wal::Config { segment_size_bytes: 8 << 20, ..surge_wal::Config::default() };
    let opener = WalOpener::dir(dir.join("wal"), wal);
    let config = EngineConfig {
        shards: 2,
        snapshot_every_records: 0,
        reopen_interval: Duration::from_millis(50),
        settings: surge_api::engine::Settings::default(),
    };
    let engine = tokio::task::spawn_blocking(move || Engine::start(opener, config)).await.unwrap().expect("engine");
    let state = AppState::new(auth::sha256(ADMIN.as_bytes()), 0);
    state.set_engine(Arc::new(engine));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    format!("http://{addr}")
}

fn args(url: &str, out: &std::path::Path, scenario: ScenarioKind) -> LoadArgs {
    let mut a = LoadArgs::for_target(url);
    a.admin_token = Some(ADMIN.to_string());
    a.scenario = scenario;
    a.rate = 100.0;
    a.duration = Duration::from_secs(2);
    a.connections = 8;
    a.customers = 50;
    a.quiet = true;
    a.out_dir = out.to_path_buf();
    a.max_error_pct = 0.0;
    a
}

async fn run_ok(a: &LoadArgs) -> surge_load::RunReport {
    let r = surge_load::run_async(a).await.expect("the run happens");
    assert!(r.passed, "{}", surge_load::report::summary(&r));
    assert_eq!(r.verdict, Verdict::Pass);
    assert!(r.ops > 0);
    assert!(r.checks.iter().any(|c| c.name == "every answer counted" && c.pass), "{:?}", r.checks);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_its_invariants_hold() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_server(dir.path()).await;
    let out = dir.path().join("results");

    // flash-sale: sells out (stock 20 per SKU, ~200 orders), so refusals are expected.
    let mut a = args(&url, &out, ScenarioKind::FlashSale);
    a.stock = 20;
    a.hot_skus = 3;
    a.json = Some(out.join("flash.json"));
    a.html = Some(out.join("flash.html"));
    let r = run_ok(&a).await;
    assert_eq!(r.planned_ops, Some(200));
    assert_eq!(r.ops + r.not_sent, 200);
    assert!(r.outcomes.iter().any(|o| o.label == "409 insufficient_stock"), "{:?}", r.outcomes);
    let sold: u64 = r.outcomes.iter().filter(|o| o.label == "201").map(|o| o.count).sum();
    assert!(sold > 0 && sold <= 60, "{sold} orders for 60 units");
    let json: surge_load::RunReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("flash.json")).unwrap()).unwrap();
    // (Floats may differ in the last bit after a JSON round trip: compare the exact fields.)
    assert_eq!((json.ops, json.requests, &json.outcomes, &json.checks), (r.ops, r.requests, &r.outcomes, &r.checks));
    assert_eq!(json.timeline.len(), r.timeline.len());
    assert!((json.latency.p99_ms - r.latency.p99_ms).abs() < 1e-9);
    let html = std::fs::read_to_string(out.join("flash.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);

    // retries: some orders sent twice; the replays must be identical.
    let mut a = args(&url, &out, ScenarioKind::Retries);
    a.retry_share = 0.5;
    let r = run_ok(&a).await;
    assert!(r.checks.iter().any(|c| c.name == "replays identical" && c.pass));
    assert!(r.outcomes.iter().any(|o| o.label == "201 (replay)"), "{:?}", r.outcomes);

    // full-flow: order, two partial refunds.
    let r = run_ok(&args(&url, &out, ScenarioKind::FullFlow)).await;
    assert!(r.checks.iter().any(|c| c.name == "refunds complete" && c.pass));
    assert_eq!(r.requests, r.ops * 3);

    // concert: a small seat map, a 2 s hold TTL (the checks wait for the expiries).
    let mut a = args(&url, &out, ScenarioKind::Concert);
    a.seats = 1000;
    a.hold_ttl = 2;
    let r = run_ok(&a).await;
    assert!(r.checks.iter().any(|c| c.name == "expired holds returned" && c.pass));

    // mixed, closed loop.
    let mut a = args(&url, &out, ScenarioKind::Mixed);
    a.mode = LoopMode::Closed;
    a.duration = Duration::from_secs(1);
    a.connections = 4;
    let r = run_ok(&a).await;
    assert_eq!(r.planned_ops, None);

    // batch: 20 orders per request.
    let mut a = args(&url, &out, ScenarioKind::Batch);
    a.rate = 10.0;
    a.batch_size = 20;
    let r = run_ok(&a).await;
    assert_eq!(r.inner_ok, Some(r.ops * 20));

    // batch-binary: 64 callers in closed loop share 2 connections, so orders travel in
    // binary batches of many; every invariant holds as for single orders.
    let mut a = args(&url, &out, ScenarioKind::BatchBinary);
    a.mode = LoopMode::Closed;
    a.duration = Duration::from_secs(1);
    a.connections = 64;
    a.client_connections = 2;
    let r = run_ok(&a).await;
    assert!(r.outcomes.iter().all(|o| o.label == "201"), "{:?}", r.outcomes);
    assert!(r.checks.iter().any(|c| c.name == "acknowledged sales recorded" && c.pass), "{:?}", r.checks);
}

/// A target that answers every order 201 and keeps nothing (as surge-baseline does).
async fn start_baseline() -> String {
    let app = axum::Router::new()
        .route("/v1/orders", axum::routing::post(|| async { (axum::http::StatusCode::CREATED, r#"{"id":"ord_1"}"#) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_set_up_checked_nothing_and_is_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_baseline().await;
    let mut a = args(&url, dir.path(), ScenarioKind::Orders);
    a.admin_token = None;
    a.skip_setup = true;
    a.duration = Duration::from_millis(500);
    let r = surge_load::run_async(&a).await.expect("the run happens");
    assert!(r.ops > 0 && r.failed_ops == 0, "{}", surge_load::report::summary(&r));
    assert!(r.checks.is_empty());
    assert_eq!(r.verdict, Verdict::Unchecked);
    assert!(!r.passed);
    assert_eq!(r.verdict.exit_code(), 3);
    assert!(surge_load::report::summary(&r).contains("no invariant was checked"));
}
