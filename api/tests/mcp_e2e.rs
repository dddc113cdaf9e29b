//! The MCP server end to end, judged by a client nobody here wrote: the official Python `mcp`
//! package from PyPI (pinned, in a venv under ~/.cache/surge that `scripts/mcp_venv.sh`
//! makes), driven by `scripts/mcp_client.py`. It talks to `surge mcp` over stdio and to
//! `/mcp` of `surge serve` over streamable HTTP; `surge serve` runs with `surge gateway-sim`
//! as its gateway and holds real data: a points order, a card payment whose capture became a
//! dead letter, and a `surge load` run's result. If the venv cannot be made this test fails,
//! naming why: it never skips.

mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::{create_merchant, http, Sim, Surge, SIM_SECRET};
use serde_json::{json, Value};

const ADMIN: &str = "mcp-admin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python with the pinned `mcp`, installed if missing.
fn python() -> String {
    let out = Command::new("bash").arg(repo().join("scripts/mcp_venv.sh")).output().expect("run scripts/mcp_venv.sh");
    assert!(
        out.status.success(),
        "scripts/mcp_venv.sh could not install the Python MCP client (this test needs it, in CI too): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a path").trim().to_string()
}

/// Runs the Python client with `plan`; its JSON answer.
fn drive(python: &str, plan: &Value) -> Value {
    let out = Command::new(python)
        .arg(repo().join("scripts/mcp_client.py"))
        .arg(plan.to_string())
        .output()
        .expect("run the Python MCP client");
    assert!(
        out.status.success(),
        "the Python MCP client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn admin_get(addr: SocketAddr, path: &str) -> Value {
    let (status, v) = http(addr, "GET", path, &[("Authorization", &format!("Bearer {ADMIN}"))], None).expect("GET");
    assert_eq!(status, 200, "{path}: {v}");
    v
}

fn wait_for(what: &str, mut check: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The result of the call to `tool` (the `n`-th such call).
fn result<'a>(answer: &'a Value, tool: &str, n: usize) -> &'a Value {
    let all = answer["results"].as_array().expect("results");
    let r = all.iter().filter(|r| r["tool"] == tool).nth(n).unwrap_or_else(|| panic!("no call {n} of {tool}"));
    r
}

/// Real data: a points order (`ord_1`, paid), a card order whose capture the gateway never
/// took (a dead letter), a `surge load` result. Returns the card payment's id.
fn seed(surge: &Surge, sim: &Sim, results: &Path) -> String {
    let addr = surge.addr;
    let auth = create_merchant(addr, &format!("Bearer {ADMIN}"), "shop");
    let h = |key: &'static str| [("Authorization", auth.clone()), ("Idempotency-Key", key.to_string())];
    let send = |method: &str, path: &str, key: &'static str, body: &str| {
        let headers = h(key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(addr, method, path, &headers, Some(body)).expect("request")
    };
    assert_eq!(send("PUT", "/v1/items/tee", "i", r#"{"name":"Tee","price":1000,"stock":100}"#).0, 201);
    assert_eq!(send("POST", "/v1/customers/c-1/points/credit", "p", r#"{"amount":5000}"#).0, 200);
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":2}],"payment":{"method":"points"}}"#;
    let (status, placed) = send("POST", "/v1/orders", "o1", order);
    assert_eq!((status, placed["id"].as_str()), (201, Some("ord_1")), "{placed}");

    let card = r#"{"customer_id":"c-2","lines":[{"sku":"tee","qty":1}],
        "payment":{"method":"card","card":{"number":"4111-1111-1111-1451","type":"KB"},"capture":"manual"}}"#;
    let (status, placed) = send("POST", "/v1/orders", "o2", card);
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["id"].as_str().expect("order id").to_string();
    let get = |path: String| {
        let (status, v) = http(addr, "GET", &path, &[("Authorization", &auth)], None).expect("GET");
        assert_eq!(status, 200, "{v}");
        v
    };
    let settled = wait_for("the card payment to be authorized", || {
        let o = get(format!("/v1/orders/{order_id}"));
        (o["status"] == "paid").then_some(o)
    });
    let payment = settled["payment"]["id"].as_str().expect("payment id").to_string();
    sim.mode("down");
    let (status, p) = send("POST", &format!("/v1/payments/{payment}/capture"), "cap", "{}");
    assert_eq!((status, p["status"].as_str()), (200, Some("captured")), "{p}");
    wait_for("the capture to become a dead letter", || {
        let d = admin_get(addr, "/v1/admin/dead-letters?status=open");
        (d["dead_letters"].as_array()?.len() == 1).then_some(d)
    });

    let load = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["load", "--target", &format!("http://{addr}"), "--scenario", "flash-sale", "--rate", "100"])
        .args(["--duration", "2s", "--connections", "4", "--customers", "50", "--out-dir"])
        .arg(results)
        .env("SURGE_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run surge load");
    assert!(load.status.success(), "surge load: {}", String::from_utf8_lossy(&load.stdout));
    payment
}

/// What each transport is asked: every tool against the data of `seed`.
fn calls(payment: &str, confirm_retry: bool) -> Value {
    let mut calls = vec![
        json!({"tool": "health"}),
        json!({"tool": "metrics_summary", "arguments": {"window_seconds": 1}}),
        json!({"tool": "metrics_summary", "arguments": {"minutes": 1}}),
        json!({"tool": "find_order", "arguments": {"merchant_id": "shop", "order_id": "ord_1"}}),
        json!({"tool": "find_payment", "arguments": {"merchant_id": "shop", "payment_id": payment}}),
        json!({"tool": "list_dead_letters", "arguments": {"status": "open"}}),
        json!({"tool": "retry_dead_letter", "arguments": {"dead_letter_id": "shop:dl_1"}}),
        json!({"tool": "load_run_summary"}),
        json!({"tool": "load_run_summary", "arguments": {"file": "../../etc/passwd"}}),
        json!({"tool": "trial_balance", "arguments": {"merchant_id": "shop"}}),
        json!({"tool": "find_order", "arguments": {"merchant_id": "shop", "order_id": "ord_999"}}),
    ];
    if confirm_retry {
        calls.push(json!({"tool": "retry_dead_letter", "arguments": {"dead_letter_id": "shop:dl_1", "confirm": true}}));
    }
    Value::Array(calls)
}

/// The answers both transports must give.
fn check(answer: &Value, payment: &str) {
    assert_eq!(answer["server"], "surge");
    let tools = answer["tools"].as_array().expect("tools");
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    let expected = [
        "find_order",
        "find_payment",
        "health",
        "list_dead_letters",
        "load_run_summary",
        "metrics_summary",
        "retry_dead_letter",
        "trial_balance",
    ];
    assert_eq!(names, expected);
    for t in tools {
        assert!(t["description"].as_str().is_some_and(|d| d.len() > 80), "{t}");
        assert_eq!(t["input_schema"]["type"], "object", "{t}");
        let read_only = t["annotations"]["readOnlyHint"].as_bool();
        assert_eq!(read_only, Some(t["name"] != "retry_dead_letter"), "{t}");
    }
    let retry_schema = &tools.iter().find(|t| t["name"] == "retry_dead_letter").expect("retry")["input_schema"];
    assert!(retry_schema["properties"]["confirm"].is_object(), "{retry_schema}");

    let ok = |tool: &str, n: usize| {
        let r = result(answer, tool, n);
        assert_eq!(r["is_error"], false, "{tool}: {r}");
        r["structured"].clone()
    };
    let health = ok("health", 0);
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["dead_letters_open"], 1, "{health}");
    assert_eq!(health["gateway"]["breakers"].as_array().map(Vec::len), Some(1), "{health}");
    assert!(health["storage"]["durable_lsn"].as_f64().is_some_and(|l| l > 0.0), "{health}");

    let m = ok("metrics_summary", 0);
    assert_eq!(m["window"]["kind"], "sampled", "{m}");
    assert!(m["window"]["seconds"].as_f64().is_some_and(|s| s >= 1.0), "{m}");
    assert!(m["latency_post_orders_since_start"]["count"].as_f64().is_some_and(|n| n >= 2.0), "{m}");
    assert!(m["orders_per_s"]["created"].is_number(), "{m}");
    // The last minute from the server's own readings: every order so far was placed after
    // its first reading.
    let w = &ok("metrics_summary", 1)["window"];
    assert_eq!(w["minutes"], 1, "{w}");
    let created = w["orders_per_s"][0].as_f64().unwrap_or(0.0) * w["interval_s"].as_f64().unwrap_or(0.0);
    assert!(created >= 1.0 - 1e-6, "{w}");
    assert_eq!(w["order_events"][0], "created", "{w}");

    let order = ok("find_order", 0);
    assert_eq!((order["order"]["id"].as_str(), order["order"]["status"].as_str()), (Some("ord_1"), Some("paid")));
    assert_eq!(order["order"]["total"], 2000);
    let history = order["history"]["events"].as_array().expect("history");
    assert_eq!(history.first().map(|e| &e["type"]), Some(&json!("order.created")), "{order}");
    assert!(history.iter().any(|e| e["type"] == "order.paid"), "{order}");

    let p = ok("find_payment", 0);
    assert_eq!(p["payment"]["id"], payment, "{p}");
    assert_eq!(p["payment"]["card"]["last4"], "1451");
    assert!(p["history"]["events"].as_array().is_some_and(|e| !e.is_empty()), "{p}");

    let letters = ok("list_dead_letters", 0);
    let letter = &letters["dead_letters"][0];
    assert_eq!((letter["id"].as_str(), letter["payment_id"].as_str()), (Some("dl_1"), Some(payment)), "{letters}");

    let unconfirmed = ok("retry_dead_letter", 0);
    assert_eq!((unconfirmed["retried"].as_bool(), unconfirmed["changed_nothing"].as_bool()), (Some(false), Some(true)));
    assert_eq!(unconfirmed["dead_letter"]["status"], "open", "{unconfirmed}");

    let run = ok("load_run_summary", 0);
    assert_eq!(run["scenario"], "flash-sale", "{run}");
    assert!(run["throughput"]["ops"].as_u64().is_some_and(|n| n > 0), "{run}");
    assert!(run["latency_ms"]["p99_ms"].is_number(), "{run}");
    assert!(run["invariants"]["checked"].as_u64().is_some_and(|n| n > 0), "{run}");
    assert!(run["where_time_went"]["notes"].is_array(), "{run}");
    let traversal = result(answer, "load_run_summary", 1);
    assert_eq!(traversal["is_error"], true, "{traversal}");

    let balance = ok("trial_balance", 0);
    assert_eq!(balance["trial_balance"]["balanced"], true, "{balance}");
    let missing = result(answer, "find_order", 1);
    assert_eq!((missing["is_error"].as_bool(), missing["structured"]["status"].as_u64()), (Some(true), Some(404)));
}

#[test]
fn the_python_mcp_client_uses_every_tool_over_stdio_and_streamable_http() {
    let python = python();
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("load-results");
    std::fs::create_dir(&results).unwrap();
    let env = [
        ("SURGE_GATEWAY_URLS", sim.url()),
        ("SURGE_GATEWAY_SECRET", SIM_SECRET.to_string()),
        ("SURGE_ADMIN_TOKEN", ADMIN.to_string()),
        ("SURGE_GATEWAY_OP_ATTEMPTS_MAX", "2".to_string()),
        ("SURGE_LOAD_RESULTS_DIR", results.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (surge, _) = Surge::start_with(&dir.path().join("data"), &env);
    let payment = seed(&surge, &sim, &results);
    let addr = surge.addr;
    let letters_before = admin_get(addr, "/v1/admin/dead-letters");
    let order_before = admin_get(addr, "/v1/admin/merchants/shop/orders/ord_1");

    // stdio: `surge mcp` as the assistant would start it, a client of the server.
    let stdio = drive(
        &python,
        &json!({
            "transport": "stdio",
            "command": env!("CARGO_BIN_EXE_surge"),
            "args": ["mcp", "--server-url", format!("http://{addr}"), "--load-results-dir", results],
            "env": {"SURGE_ADMIN_TOKEN": ADMIN},
            "calls": calls(&payment, false),
        }),
    );
    check(&stdio, &payment);
    // Nothing the read-only tools (or the unconfirmed retry) did changed anything.
    assert_eq!(admin_get(addr, "/v1/admin/dead-letters"), letters_before);
    assert_eq!(admin_get(addr, "/v1/admin/merchants/shop/orders/ord_1"), order_before);

    // Streamable HTTP at /mcp, with the admin token; the gateway is back, so the confirmed
    // retry goes through.
    sim.mode("normal");
    let over_http = drive(
        &python,
        &json!({
            "transport": "http",
            "url": format!("http://{addr}/mcp"),
            "token": ADMIN,
            "calls": calls(&payment, true),
        }),
    );
    check(&over_http, &payment);
    let retried = result(&over_http, "retry_dead_letter", 1);
    assert_eq!(retried["is_error"], false, "{retried}");
    assert_eq!(retried["structured"]["retried"], true, "{retried}");
    assert_eq!(retried["structured"]["dead_letter"]["status"], "retried", "{retried}");
    wait_for("the retried dead letter to resolve", || {
        let d = admin_get(addr, "/v1/admin/dead-letters?status=resolved");
        (d["dead_letters"].as_array()?.len() == 1).then_some(d)
    });
    // Without the admin token /mcp answers 401 and runs nothing.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (status, _) = http(addr, "POST", "/mcp", &[("Authorization", "Bearer wrong")], Some(init)).unwrap();
    assert_eq!(status, 401);
}
