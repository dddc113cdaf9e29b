//! The console in a real browser: Debian's `chromium`, driven over WebDriver by
//! `chromium-driver` (`scripts/browser.sh` installs both; CI's `.ci/run` calls it), against
//! `surge serve` and `surge gateway-sim` as real processes. Signs in, watches counters move
//! as orders arrive through the API, looks an order up, retries a dead letter by clicking,
//! signs out, and checks that requests without the cookie or with a wrong CSRF token change
//! nothing. A screenshot of each page lands in `target/console-screenshots/`.
//!
//! A missing browser or driver fails the test loudly; it never skips.

mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use process::{create_merchant, free_port, http, Sim, Surge, SIM_SECRET};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

fn require_browser() {
    for (what, path) in [("chromium", CHROMIUM), ("chromium-driver", DRIVER)] {
        assert!(
            std::path::Path::new(path).exists(),
            "{what} is not installed ({path}): run scripts/browser.sh (CI's .ci/run does)"
        );
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    let args =
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"];
    caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with chromium")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits until the text of `css` satisfies `check`; returns it.
async fn wait_text(c: &Client, css: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{css}: {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_api(addr: SocketAddr, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = http(addr, "GET", path, &[("Authorization", "Bearer admin")], None).expect("GET");
        if status == 200 && check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A made-up `surge load` result and report, as the Load runs page lists them.
fn load_results(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = json!({
        "scenario": "flash-sale", "mode": "open", "started_unix_s": 1_790_000_000u64, "elapsed_s": 30.0,
        "ops": 60000, "failed_ops": 0, "ops_per_s": 2000.0,
        "latency": {"p50_ms": 0.8, "p99_ms": 2.9, "p999_ms": 4.1}, "verdict": "pass",
        "checks": [{"name": "no oversell", "pass": true, "detail": "sold 1000 of 1000"}]
    });
    std::fs::write(dir.join("flash-sale-1790000000.json"), run.to_string()).unwrap();
    std::fs::write(dir.join("flash-sale-1790000000.html"), "<!doctype html><p>report</p>").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_looks_up_retries_and_signs_out_in_chromium() {
    require_browser();
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("load-results");
    load_results(&runs);
    let urls = sim.url();
    let env = [
        ("SURGE_GATEWAY_URLS", urls.as_str()),
        ("SURGE_GATEWAY_SECRET", SIM_SECRET),
        ("SURGE_ADMIN_TOKEN", "admin"),
        ("SURGE_GATEWAY_OP_ATTEMPTS_MAX", "2"),
        ("SURGE_LOAD_RESULTS_DIR", runs.to_str().unwrap()),
    ];
    let surge = Surge::start_with(&dir.path().join("data"), &env).0;
    let addr = surge.addr;
    let base = format!("http://{addr}");
    let (_driver, port) = start_driver();
    let c = browser(port).await;

    // Sign in: the form, never the token in a URL.
    c.goto(&format!("{base}/admin")).await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Id("token")).await.expect("the sign-in page");
    screenshot(&c, "sign-in").await;
    c.find(Locator::Id("token")).await.unwrap().send_keys("admin").await.unwrap();
    c.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    wait_text(&c, "#card-ready .value", |t| t.contains("ready")).await;
    assert!(!c.current_url().await.unwrap().as_str().contains("admin&"), "no token in the URL");

    // Orders through the API move the counters on the page, without a reload.
    let auth = create_merchant(addr, "Bearer admin", "shop");
    let body = r#"{"name":"Tee","price":1000,"stock":1000}"#;
    assert_eq!(http(addr, "PUT", "/v1/items/tee", &[("Authorization", &auth)], Some(body)).unwrap().0, 201);
    wait_text(&c, "#card-orders-created .value", |t| t == "0").await;
    for i in 0..5 {
        let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"none"}}"#;
        let key = format!("o{i}");
        let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key.as_str())];
        assert_eq!(http(addr, "POST", "/v1/orders", &h, Some(order)).unwrap().0, 201);
    }
    wait_text(&c, "#card-orders-created .value", |t| t == "5").await;
    // A few seconds of samples for the charts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    screenshot(&c, "overview").await;
    c.set_window_size(390, 1600).await.unwrap();
    screenshot(&c, "overview-phone").await;
    c.set_window_size(1280, 1100).await.unwrap();

    // Look-up across merchants, with the history from the log.
    c.goto(&format!("{base}/admin#lookup")).await.unwrap();
    let input = c.wait().at_most(WAIT).for_element(Locator::Id("lookup-id")).await.unwrap();
    input.send_keys("ord_3").await.unwrap();
    c.find(Locator::Id("lookup-submit")).await.unwrap().click().await.unwrap();
    wait_text(&c, "#lookup-result table.history", |t| t.contains("order.created")).await;
    let heading = wait_text(&c, "#lookup-result h3", |t| !t.is_empty()).await;
    assert!(heading.contains("shop") && heading.contains("awaiting_payment"), "{heading}");
    screenshot(&c, "lookup").await;

    // A dead letter: a capture the gateway keeps failing (as in card_e2e.rs).
    let card = r#"{"customer_id":"c-2","lines":[{"sku":"tee","qty":1}],
        "payment":{"method":"card","card":{"number":"4111-1111-1111-1451","type":"KB"},"capture":"manual"}}"#;
    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", "card")];
    let (status, order) = http(addr, "POST", "/v1/orders", &h, Some(card)).unwrap();
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + WAIT;
    let payment = loop {
        let (_, o) = http(addr, "GET", &format!("/v1/orders/{id}"), &[("Authorization", &auth)], None).unwrap();
        if o["status"] == "paid" {
            break o["payment"]["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "{o}");
        std::thread::sleep(Duration::from_millis(50));
    };
    sim.mode("down");
    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", "cap")];
    let (status, _) = http(addr, "POST", &format!("/v1/payments/{payment}/capture"), &h, Some("{}")).unwrap();
    assert_eq!(status, 200);
    wait_api(addr, "/v1/admin/dead-letters?status=open", |v| {
        v["dead_letters"].as_array().is_some_and(|d| d.len() == 1)
    });
    sim.mode("normal");
    c.goto(&format!("{base}/admin#dead-letters")).await.unwrap();
    let retry = c.wait().at_most(WAIT).for_element(Locator::Css("#dead-letters button.retry")).await.unwrap();
    screenshot(&c, "dead-letters").await;
    retry.click().await.unwrap();
    wait_api(addr, "/v1/admin/dead-letters?status=resolved", |v| {
        v["dead_letters"].as_array().is_some_and(|d| d.len() == 1)
    });
    wait_text(&c, "#dead-letters tbody", |t| t == "none").await;

    // Merchants and load runs.
    c.goto(&format!("{base}/admin#merchants")).await.unwrap();
    wait_text(&c, "#merchants tbody", |t| t.contains("shop")).await;
    screenshot(&c, "merchants").await;
    c.goto(&format!("{base}/admin#load-runs")).await.unwrap();
    wait_text(&c, "#load-runs tbody", |t| t.contains("PASS") && t.contains("no oversell")).await;
    screenshot(&c, "load-runs").await;

    // Requests without the cookie, or with it but a wrong CSRF token, change nothing.
    let cookie = c.get_named_cookie("surge_console").await.expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let cookie = format!("surge_console={}", cookie.value());
    let body = r#"{"id":"intruder","name":"X","currency":"KRW"}"#;
    let post = |headers: &[(&str, &str)], path: &str| http(addr, "POST", path, headers, Some(body)).unwrap().0;
    assert_eq!(post(&[("Cookie", &cookie), ("X-CSRF-Token", &"00".repeat(32))], "/admin/api/merchants"), 403);
    assert_eq!(post(&[("Cookie", &cookie)], "/admin/api/merchants"), 403);
    assert_eq!(post(&[], "/admin/api/merchants"), 401);
    assert_eq!(post(&[("Cookie", &cookie)], "/admin/api/merchants/shop/rotate-key"), 403);
    assert_eq!(post(&[("Cookie", &cookie)], "/admin/api/dead-letters/shop:dl_1/retry"), 403);
    let (_, merchants) = http(addr, "GET", "/admin/api/merchants", &[("Cookie", &cookie)], None).unwrap();
    let ids: Vec<&str> = merchants["merchants"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["shop"]);
    assert_eq!(http(addr, "GET", "/v1/items/tee", &[("Authorization", &auth)], None).unwrap().0, 200, "key unchanged");
    let (_, dl) = http(addr, "GET", "/v1/admin/dead-letters", &[("Authorization", "Bearer admin")], None).unwrap();
    assert_eq!(dl["dead_letters"][0]["attempts"], 1, "retried once, by the click: {dl}");

    // Sign out: back to the form, and the old cookie is no session.
    c.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Id("token")).await.expect("the sign-in page again");
    screenshot(&c, "signed-out").await;
    assert_eq!(http(addr, "GET", "/admin/api/overview", &[("Cookie", &cookie)], None).unwrap().0, 401);
    c.close().await.unwrap();
}
