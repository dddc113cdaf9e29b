//! End to end: the real `surge` binary on a socket, killed with SIGKILL mid-traffic and
//! restarted on the same data directory. Every acknowledged order must be there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A tiny HTTP/1.1 client: one request per connection.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let value = if body.is_empty() { Value::Null } else { serde_json::from_str(body).ok()? };
    Some((status, value))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Surge {
    child: Child,
    addr: SocketAddr,
}

impl Surge {
    /// Starts `surge serve` (flags from the environment) and waits until /readyz is 200.
    /// Returns the generated admin token if the server printed one.
    fn start(data_dir: &std::path::Path) -> (Surge, Option<String>) {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_surge"))
            .arg("serve")
            .env("SURGE_LISTEN", addr.to_string())
            .env("SURGE_DATA_DIR", data_dir)
            .env("SURGE_SHARDS", "2")
            .env_remove("SURGE_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let token = Arc::new(Mutex::new(None));
        let t = token.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("adm_") {
                    *t.lock().unwrap() = Some(line);
                }
            }
        });
        let started = Instant::now();
        loop {
            if let Some((200, _)) = http(addr, "GET", "/readyz", &[], None) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "surge did not become ready");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("surge exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let token = token.lock().unwrap().clone();
        (Surge { child, addr }, token)
    }
}

impl Drop for Surge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ORDER: &str = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (surge, token) = Surge::start(dir.path());
    let admin = format!("Bearer {}", token.expect("an admin token is printed at first start"));
    let addr = surge.addr;
    let (status, m) = http(
        addr,
        "POST",
        "/v1/merchants",
        &[("Authorization", &admin)],
        Some(r#"{"id":"m-1","name":"Shop","currency":"KRW"}"#),
    )
    .unwrap();
    assert_eq!(status, 201);
    let auth = format!("Bearer {}", m["api_key"].as_str().unwrap());
    let a = [("Authorization", auth.as_str())];
    assert_eq!(
        http(addr, "PUT", "/v1/items/tee", &a, Some(r#"{"name":"Tee","price":100,"stock":1000}"#)).unwrap().0,
        201
    );
    let credit = [("Authorization", auth.as_str()), ("Idempotency-Key", "credit-1")];
    let r = http(addr, "POST", "/v1/customers/c-1/points/credit", &credit, Some(r#"{"amount":100000,"reason":"x"}"#));
    assert_eq!(r.unwrap().0, 200);

    // Traffic from 4 threads; kill -9 in the middle of it.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, auth) = (acked.clone(), stop.clone(), auth.clone());
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}-{i}");
                    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key.as_str())];
                    match http(addr, "POST", "/v1/orders", &h, Some(ORDER)) {
                        Some((201, body)) => acked.lock().unwrap().push(body["id"].as_str().unwrap().to_string()),
                        Some((status, body)) => panic!("unexpected {status}: {body}"),
                        None => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    drop(surge); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "some orders were acknowledged before the kill");
    eprintln!("{} orders acknowledged before SIGKILL", acked.len());

    let (surge, token) = Surge::start(dir.path());
    assert!(token.is_none(), "the admin token is printed only at first start");
    let addr = surge.addr;
    let a = [("Authorization", auth.as_str())];
    for id in &acked {
        let (status, o) = http(addr, "GET", &format!("/v1/orders/{id}"), &a, None).unwrap();
        assert_eq!(status, 200, "acknowledged order {id} is missing");
        assert_eq!(o["status"], "paid");
    }
    let (_, item) = http(addr, "GET", "/v1/items/tee", &a, None).unwrap();
    let sold = item["sold"].as_u64().unwrap();
    assert!(sold >= acked.len() as u64);
    assert_eq!(item["available"].as_u64().unwrap() + item["held"].as_u64().unwrap() + sold, 1000);
    let (_, points) = http(addr, "GET", "/v1/customers/c-1/points", &a, None).unwrap();
    assert_eq!(points["balance"].as_u64().unwrap(), 100_000 - 100 * sold);
    let (_, tb) = http(addr, "GET", "/v1/ledger/trial-balance", &a, None).unwrap();
    assert_eq!(tb["balanced"], true);
    // The persisted admin token still works.
    let (status, _) = http(
        addr,
        "POST",
        "/v1/merchants",
        &[("Authorization", &admin)],
        Some(r#"{"id":"m-2","name":"Two","currency":"KRW"}"#),
    )
    .unwrap();
    assert_eq!(status, 201);
    drop(surge);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut surge, _) = Surge::start(dir.path());
    let status = Command::new("kill").arg("-TERM").arg(surge.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = surge.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "surge did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
