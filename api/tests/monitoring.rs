//! Monitoring kept true against the real thing: `surge serve` (and `surge gateway-sim`) as
//! processes over real HTTP.
//!
//! 1. A scripted workload moves the business counters of `/metrics` by exactly what it did.
//! 2. Every PromQL expression of the Grafana dashboard and of the alert rules parses
//!    (`promtool check rules`) and names only metrics, and labels of them, that a server with
//!    the relay (Kafka, MariaDB) and the gateway worker on exposes; the exposition itself
//!    passes `promtool check metrics`.
//! 3. The alert rules' unit tests pass (`promtool test rules`): every alert has a series
//!    that fires it and one that does not.
//!
//! promtool comes from Debian's `prometheus` package, which `scripts/services.sh` installs
//! (CI runs it first), as Kafka and MariaDB do: without it these tests fail, naming it.

mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::{create_merchant, get_text, http, require, Sim, Surge, SIM_SECRET};
use serde_json::Value;

// ---- the exposition format ----

type Labels = BTreeMap<String, String>;

/// One scrape: metric name -> its series (labels -> value).
#[derive(Debug, Default)]
struct Scrape {
    series: BTreeMap<String, Vec<(Labels, f64)>>,
    /// Names with a `# HELP` line, and their `# TYPE`.
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
}

impl Scrape {
    fn of(addr: SocketAddr) -> Scrape {
        let (status, text) = get_text(addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        Scrape::parse(&text)
    }

    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(rest.len() > name.len() + 1, "no HELP text: {line}");
                scrape.helps.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
                scrape.types.insert(name.to_string(), kind.to_string());
            } else if !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                scrape.series.entry(name.to_string()).or_default().push((labels, value));
            }
        }
        scrape
    }

    /// The value of `name` whose labels include `labels` (`a="b",c="d"`); 0 when none.
    fn value(&self, name: &str, labels: &str) -> f64 {
        let want = parse_labels(labels);
        let found: Vec<f64> = self
            .series
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(l, _)| want.iter().all(|(k, v)| l.get(k) == Some(v)))
            .map(|(_, v)| *v)
            .collect();
        assert!(found.len() <= 1, "{name}{{{labels}}} names {} series", found.len());
        found.first().copied().unwrap_or(0.0)
    }

    /// The label names series of `name` carry.
    fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.series.get(name).into_iter().flatten().flat_map(|(l, _)| l.keys().cloned()).collect()
    }
}

fn parse_labels(text: &str) -> Labels {
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("label {pair}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

// ---- the server ----

const ADMIN: &str = "Bearer admin";

fn put(addr: SocketAddr, auth: &str, path: &str, body: &str) -> (u16, Value) {
    http(addr, "PUT", path, &[("Authorization", auth)], Some(body)).expect("PUT")
}

fn post(addr: SocketAddr, auth: &str, path: &str, key: &str, body: Option<&str>) -> (u16, Value) {
    http(addr, "POST", path, &[("Authorization", auth), ("Idempotency-Key", key)], body).expect("POST")
}

fn get(addr: SocketAddr, auth: &str, path: &str) -> (u16, Value) {
    http(addr, "GET", path, &[("Authorization", auth)], None).expect("GET")
}

/// Waits until `check` holds of a scrape; returns it.
fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::of(addr);
        if check(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn order_body(customer: &str, sku: &str, qty: u64, method: &str) -> String {
    let card = if method == "card" { r#","card":{"number":"4111-1111-1111-1451","type":"KB"}"# } else { "" };
    format!(
        r#"{{"customer_id":"{customer}","lines":[{{"sku":"{sku}","qty":{qty}}}],"payment":{{"method":"{method}"{card}}}}}"#
    )
}

#[test]
fn business_counters_move_exactly_as_the_workload_says() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let urls = sim.url();
    let env = [
        ("SURGE_ADMIN_TOKEN", "admin"),
        ("SURGE_GATEWAY_URLS", urls.as_str()),
        ("SURGE_GATEWAY_SECRET", SIM_SECRET),
        ("SURGE_MERCHANT_RATE_LIMIT", "100"),
    ];
    let (surge, _) = Surge::start_with(dir.path(), &env);
    let addr = surge.addr;
    let before = Scrape::of(addr);
    let shop = create_merchant(addr, ADMIN, "shop");
    let auth = shop.as_str();
    assert_eq!(put(addr, auth, "/v1/items/tee", r#"{"name":"Tee","price":10,"stock":100}"#).0, 201);
    assert_eq!(put(addr, auth, "/v1/items/cap", r#"{"name":"Cap","price":50,"stock":3}"#).0, 201);
    let credit = r#"{"amount":1000,"reason":"welcome"}"#;
    assert_eq!(post(addr, auth, "/v1/customers/c1/points/credit", "credit", Some(credit)).0, 200);

    // 10 orders paid by points, one of them refunded in full.
    let mut paid = Vec::new();
    for i in 0..10 {
        let (status, order) =
            post(addr, auth, "/v1/orders", &format!("o{i}"), Some(&order_body("c1", "tee", 1, "points")));
        assert_eq!(status, 201, "{order}");
        paid.push(order["payment"]["id"].as_str().unwrap().to_string());
    }
    let refund = post(addr, auth, &format!("/v1/payments/{}/refund", paid[0]), "refund", Some("{}"));
    assert_eq!(refund.0, 200, "{}", refund.1);
    // The last 3 caps, held by an unpaid order that is then cancelled.
    let (status, caps) = post(addr, auth, "/v1/orders", "caps", Some(&order_body("c1", "cap", 3, "none")));
    assert_eq!(status, 201, "{caps}");
    let cancel = format!("/v1/orders/{}/cancel", caps["id"].as_str().unwrap());
    assert_eq!(post(addr, auth, &cancel, "cancel", None).0, 200);
    // Refused: no points; an idempotent replay; the same key with another body.
    assert_eq!(post(addr, auth, "/v1/orders", "poor", Some(&order_body("c2", "tee", 1, "points"))).0, 402);
    let unpaid = order_body("c1", "tee", 1, "none");
    assert_eq!(post(addr, auth, "/v1/orders", "same", Some(&unpaid)).0, 201);
    let replay =
        http(addr, "POST", "/v1/orders", &[("Authorization", auth), ("Idempotency-Key", "same")], Some(&unpaid));
    assert_eq!(replay.map(|r| r.0), Some(201));
    assert_eq!(post(addr, auth, "/v1/orders", "same", Some(&order_body("c1", "tee", 2, "none"))).0, 422);
    // Two holds of one tee: one released, one left to expire after a second.
    let hold = r#"{"customer_id":"c1","lines":[{"sku":"tee","qty":1}],"ttl_seconds":1}"#;
    assert_eq!(post(addr, auth, "/v1/holds", "h1", Some(hold)).0, 201);
    let (status, h2) = post(addr, auth, "/v1/holds", "h2", Some(hold));
    assert_eq!(status, 201, "{h2}");
    let release = format!("/v1/holds/{}/release", h2["id"].as_str().unwrap());
    assert_eq!(post(addr, auth, &release, "release", None).0, 200);
    // A waiting room of one slot for a second: two tokens, both activated, both expired.
    assert_eq!(put(addr, auth, "/v1/queues/q", r#"{"max_active":1,"active_ttl_seconds":1}"#).0, 200);
    for c in ["c1", "c2"] {
        let body = format!(r#"{{"customer_id":"{c}"}}"#);
        assert_eq!(post(addr, auth, "/v1/queues/q/tokens", &format!("t-{c}"), Some(&body)).0, 201);
    }
    // Card: one approved, then one declined (its order reopened).
    let (status, card) = post(addr, auth, "/v1/orders", "card1", Some(&order_body("c3", "tee", 1, "card")));
    assert_eq!(status, 202, "{card}");
    let card1 = format!("/v1/orders/{}", card["id"].as_str().unwrap());
    wait_for_order(addr, auth, &card1, "paid");
    sim.rates(r#"{"approval_rate":0}"#);
    let (status, card) = post(addr, auth, "/v1/orders", "card2", Some(&order_body("c3", "tee", 1, "card")));
    assert_eq!(status, 202, "{card}");
    wait_for_order(addr, auth, &format!("/v1/orders/{}", card["id"].as_str().unwrap()), "awaiting_payment");
    // Another merchant goes over its 100 requests per second.
    let noisy = create_merchant(addr, ADMIN, "noisy");
    let mut limited = 0;
    for _ in 0..2_000 {
        limited += usize::from(get(addr, &noisy, "/v1/items/none").0 == 429);
        if limited == 10 {
            break;
        }
    }
    assert_eq!(limited, 10, "2,000 requests as fast as they go should meet a limit of 100/s");

    let after = scrape_until(addr, "the hold and both tokens expired", |s| {
        s.value("surge_holds_total", r#"event="expired""#) >= 1.0
            && s.value("surge_queue_tokens_total", r#"event="expired""#) >= 2.0
    });
    let delta = |name: &str, labels: &str| after.value(name, labels) - before.value(name, labels);
    let expect = [
        ("surge_orders_total", r#"event="created""#, 14.0),
        ("surge_orders_total", r#"event="paid""#, 11.0),
        ("surge_orders_total", r#"event="cancelled""#, 1.0),
        ("surge_orders_total", r#"event="expired""#, 0.0),
        ("surge_orders_total", r#"event="refunded""#, 1.0),
        ("surge_orders_total", r#"event="reopened""#, 1.0),
        ("surge_payments_total", r#"method="points",event="requested""#, 10.0),
        ("surge_payments_total", r#"method="points",event="succeeded""#, 10.0),
        ("surge_payments_total", r#"method="points",event="failed""#, 0.0),
        ("surge_payments_total", r#"method="points",event="refunded""#, 1.0),
        ("surge_payments_total", r#"method="card",event="requested""#, 2.0),
        ("surge_payments_total", r#"method="card",event="succeeded""#, 1.0),
        ("surge_payments_total", r#"method="card",event="failed""#, 1.0),
        ("surge_payments_total", r#"method="card",event="voided""#, 0.0),
        ("surge_points_total", r#"event="credited""#, 1010.0),
        ("surge_points_total", r#"event="spent""#, 100.0),
        ("surge_holds_total", r#"event="granted""#, 2.0),
        ("surge_holds_total", r#"event="released""#, 1.0),
        ("surge_holds_total", r#"event="expired""#, 1.0),
        ("surge_holds_total", r#"event="converted""#, 0.0),
        // Reserved: 3 caps, the unpaid tee, 2 holds, 2 card orders while pending.
        ("surge_inventory_units_total", r#"event="reserved""#, 8.0),
        // Released: the cancelled caps, both holds. The declined card order keeps its tee.
        ("surge_inventory_units_total", r#"event="released""#, 5.0),
        ("surge_inventory_units_total", r#"event="sold""#, 11.0),
        ("surge_inventory_units_total", r#"event="returned""#, 0.0),
        ("surge_items_sold_out_total", "", 1.0),
        ("surge_queue_tokens_total", r#"event="issued""#, 2.0),
        ("surge_queue_tokens_total", r#"event="activated""#, 2.0),
        ("surge_queue_tokens_total", r#"event="expired""#, 2.0),
        ("surge_idempotent_replays_total", "", 1.0),
        ("surge_commands_refused_total", r#"code="insufficient_points""#, 1.0),
        ("surge_commands_refused_total", r#"code="idempotency_key_reused""#, 1.0),
        ("surge_commands_refused_total", r#"code="idempotency_key_in_use""#, 0.0),
        ("surge_rate_limited_requests_total", "", limited as f64),
        ("surge_http_requests_total", r#"route="/v1/orders",method="POST",status="402""#, 1.0),
        ("surge_http_requests_total", r#"route="/v1/items/{sku}",method="GET",status="429""#, limited as f64),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(name, labels, want)| delta(name, labels) != *want)
        .map(|(name, labels, want)| format!("{name}{{{labels}}}: moved {} (want {want})", delta(name, labels)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The gateway worker's view settles too: nothing pending, nothing dead-lettered.
    scrape_until(addr, "no card payment pending", |s| s.value("surge_gateway_payments_pending", "") == 0.0);
    assert_eq!(after.value("surge_dead_letters_open", ""), 0.0);
}

fn wait_for_order(addr: SocketAddr, auth: &str, path: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, order) = get(addr, auth, path);
        assert_eq!(code, 200, "{order}");
        if order["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} not {status}: {order}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- promtool ----

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs promtool (`input` on its standard input); fails loudly (never skips) when it is not
/// installed, and when it finds a problem.
fn promtool(args: &[&str], input: Option<&[u8]>) -> String {
    use std::process::Stdio;
    let mut child = Command::new(std::env::var("SURGE_PROMTOOL").unwrap_or_else(|_| "promtool".into()))
        .args(args)
        .current_dir(repo())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e}. Install it with scripts/services.sh (Debian's prometheus package; CI's .ci/run does)"
            )
        });
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::io::Write::write_all(&mut stdin, input).expect("promtool's input");
    }
    let out = child.wait_with_output().expect("promtool's output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn alert_rules_unit_tests_pass() {
    let out = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The `expr`s of `deploy/prometheus/alerts.yml`, one per alert. A hand reader of the one
/// shape the file uses (`expr: ...` on one line, or `expr: |` and an indented block), checked
/// against the count of alerts so that an expression it missed fails the test.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            if expr == "|" || expr == ">" {
                let indent = lines[i].len() - line.len();
                let mut block = String::new();
                while i + 1 < lines.len() && (lines[i + 1].len() - lines[i + 1].trim_start().len() > indent) {
                    i += 1;
                    block.push_str(lines[i].trim());
                    block.push(' ');
                }
                exprs.push((alert.clone(), block));
            } else {
                exprs.push((alert.clone(), expr.to_string()));
            }
        }
        i += 1;
    }
    let alerts = lines.iter().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert_eq!(exprs.len(), alerts, "one expr per alert");
    exprs
}

/// Every `expr` of the dashboard's panels, with its panel's title; Grafana's own variables
/// replaced by what Prometheus would see.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {target}"));
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            exprs.push((panel["title"].as_str().unwrap_or_default().to_string(), expr));
        }
    }
    exprs
}

/// PromQL words that are not metric names: operators, modifiers, and the aggregations,
/// which may stand before their `by (...)` rather than their `(`.
const KEYWORDS: [&str; 22] = [
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "atan2",
    "start",
    "end",
];

/// Labels Prometheus adds to what it scrapes, and series it makes up itself.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
const SYNTHETIC_SERIES: [&str; 1] = ["up"];

/// The metric names an expression selects, each with the label names its matchers use.
/// A small scanner: strings are skipped, a word followed by `(` is a function or an
/// aggregation, one inside `by (...)`/`on (...)` is a label, one followed by `{` or standing
/// alone is a metric.
fn selectors(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut grouping_depth: Option<usize> = None;
    let mut depth = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'[' {
            // A range or subquery duration.
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
        } else if c == b'(' {
            depth += 1;
            i += 1;
        } else if c == b')' {
            if grouping_depth == Some(depth) {
                grouping_depth = None;
            }
            depth -= 1;
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start();
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word) {
                if next.starts_with('(') {
                    grouping_depth = Some(depth + 1);
                }
            } else if grouping_depth.is_some() || next.starts_with('(') || KEYWORDS.contains(&word) {
                // A label of a grouping, a function or aggregation, a keyword.
            } else if start > 0 && b[start - 1].is_ascii_digit() {
                // A duration's unit or an exponent.
            } else {
                let mut labels = BTreeSet::new();
                if next.starts_with('{') {
                    let open = expr.len() - next.len();
                    let close = expr[open..].find('}').map(|n| open + n).expect("a closing brace");
                    for matcher in matchers(&expr[open + 1..close]) {
                        labels.insert(matcher);
                    }
                    i = close + 1;
                }
                out.push((word.to_string(), labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The label names of a `{...}` body (`a="x", b=~"y|z"`).
fn matchers(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some(op) = rest.find(['=', '!']) else { break };
        names.push(rest[..op].trim().to_string());
        let Some(open) = rest[op..].find('"').map(|n| op + n) else { break };
        let Some(close) = rest[open + 1..].find('"').map(|n| open + 1 + n) else { break };
        rest = &rest[close + 1..];
    }
    names
}

#[test]
fn the_scanner_finds_metrics_and_their_labels() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(surge_http_request_duration_seconds_bucket{route!="/metrics"}[5m])))
           / on (route) group_left clamp_min(sum(rate(surge_x_total{a="1",b=~"x|y"}[1m] offset 5m)), 1e-3) > bool 2 or vector(0)"#,
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["surge_http_request_duration_seconds_bucket", "surge_x_total"]);
    assert_eq!(found[1].1, ["a", "b"].iter().map(|s| s.to_string()).collect());
}

/// A fresh database on the test MariaDB for the relay; dropped by nobody (tests share the
/// server, each with its own name).
fn mariadb_url() -> String {
    let base = std::env::var("SURGE_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let host = base.rsplit('@').next().unwrap_or_default().split('/').next().unwrap_or_default().to_string();
    require("MariaDB", &host);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("monitoring_{}_{nanos}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use mysql_async::prelude::Queryable;
        let pool = mysql_async::Pool::new(base.as_str());
        let mut c = pool.get_conn().await.expect("connect to MariaDB");
        c.query_drop(format!("CREATE DATABASE `{name}`")).await.expect("create database");
        drop(c);
        pool.disconnect().await.expect("disconnect");
    });
    format!("{base}/{name}")
}

#[test]
fn dashboard_and_alert_rules_parse_and_name_only_exposed_metrics() {
    let alerts_path = "deploy/prometheus/alerts.yml";
    // prometheus.yml loads alerts.yml: checking it checks both.
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"], None);
    let alerts = std::fs::read_to_string(repo().join(alerts_path)).expect("alerts.yml");
    let dashboard_path = repo().join("deploy/grafana/dashboards/surge.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).expect("the dashboard")).expect("JSON");
    let datasources = std::fs::read_to_string(repo().join("deploy/grafana/provisioning/datasources/surge.yml"))
        .expect("the datasource provisioning");
    let uid = dashboard["templating"]["list"][0]["current"]["value"].as_str().expect("the datasource variable");
    assert!(datasources.contains(&format!("uid: {uid}\n")), "the dashboard expects datasource uid {uid}");
    let from_dashboard = dashboard_exprs(&dashboard);
    assert!(from_dashboard.len() >= 20, "the dashboard has {} expressions", from_dashboard.len());

    // The dashboard's expressions as recording rules, for promtool to parse.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in from_dashboard.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let rules_path = dir.path().join("dashboard_rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    promtool(&["check", "rules", rules_path.to_str().unwrap()], None);

    // A server with everything on, after a little traffic of every kind.
    let brokers = std::env::var("SURGE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    require("the Kafka-protocol broker", brokers.split(',').next().unwrap_or_default());
    let mariadb = mariadb_url();
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let urls = sim.url();
    let prefix = format!("monitoring{}.", std::process::id());
    let env = [
        ("SURGE_ADMIN_TOKEN", "admin"),
        ("SURGE_GATEWAY_URLS", urls.as_str()),
        ("SURGE_GATEWAY_SECRET", SIM_SECRET),
        ("SURGE_KAFKA_BROKERS", brokers.as_str()),
        ("SURGE_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("SURGE_MARIADB_URL", mariadb.as_str()),
    ];
    let (surge, _) = Surge::start_with(dir.path().join("data").as_path(), &env);
    let addr = surge.addr;
    let auth = create_merchant(addr, ADMIN, "shop");
    assert_eq!(put(addr, &auth, "/v1/items/tee", r#"{"name":"Tee","price":10,"stock":100}"#).0, 201);
    let (status, card) = post(addr, &auth, "/v1/orders", "card", Some(&order_body("c", "tee", 1, "card")));
    assert_eq!(status, 202, "{card}");
    wait_for_order(addr, &auth, &format!("/v1/orders/{}", card["id"].as_str().unwrap()), "paid");
    assert_eq!(http(addr, "GET", "/nope", &[], None).map(|r| r.0), Some(404));
    let scrape = scrape_until(addr, "both sinks caught up", |s| {
        s.series.get("surge_relay_written_lsn").is_some_and(|v| v.len() == 2 && v.iter().all(|(_, lsn)| *lsn > 0.0))
    });

    let (_, text) = get_text(addr, "/metrics").expect("GET /metrics");
    lint_exposition(&Scrape::parse(&text), &text);

    let mut problems = Vec::new();
    let all = alert_exprs(&alerts).into_iter().map(|(a, e)| (format!("alert {a}"), e));
    let all = all.chain(from_dashboard.into_iter().map(|(p, e)| (format!("panel {p:?}"), e)));
    for (source, expr) in all {
        let found = selectors(&expr);
        if found.is_empty() {
            problems.push(format!("{source}: selects no metric: {expr}"));
        }
        for (name, labels) in found {
            if SYNTHETIC_SERIES.contains(&name.as_str()) {
                continue;
            }
            if !scrape.series.contains_key(&name) {
                problems.push(format!("{source}: {name} is not exposed"));
                continue;
            }
            let exposed = scrape.label_names(&name);
            for label in labels.difference(&exposed).filter(|l| !TARGET_LABELS.contains(&l.as_str())) {
                problems.push(format!("{source}: {name} has no label {label} (it has {exposed:?})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The exposition keeps Prometheus' conventions: promtool's lint (counters end in `_total`,
/// units in names, HELP text), and HELP and TYPE on every family.
fn lint_exposition(scrape: &Scrape, text: &str) {
    promtool(&["check", "metrics"], Some(text.as_bytes()));
    for name in scrape.series.keys() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| scrape.types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(scrape.helps.contains(family), "{name}: no HELP");
        assert!(scrape.types.contains_key(family), "{name}: no TYPE");
    }
}
