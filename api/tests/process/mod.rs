//! The real `surge` binary as a child process, and a tiny HTTP client, for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod card;
pub mod services;

/// A tiny HTTP/1.1 client: one request per connection; the status and the JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<(u16, Value)> {
    let (status, body) = http_text(addr, method, path, headers, body)?;
    let value = if body.is_empty() { Value::Null } else { serde_json::from_str(&body).ok()? };
    Some((status, value))
}

/// As [`http`], with the body as text.
pub fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<(u16, String)> {
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
    Some((status, body.to_string()))
}

/// Fails loudly (never skips) when a server a test needs (`scripts/services.sh` starts them)
/// does not answer on `host_port`.
pub fn require(what: &str, host_port: &str) {
    let addr: SocketAddr = host_port.parse().unwrap_or_else(|_| panic!("{what}: bad address {host_port}"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("{what} does not answer on {host_port}: start it with scripts/services.sh (CI's .ci/run does)");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Surge {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Surge {
    /// Starts `surge serve` (flags from the environment) and waits until /readyz is 200.
    /// Returns the generated admin token if the server printed one.
    pub fn start(data_dir: &std::path::Path) -> (Surge, Option<String>) {
        Surge::start_with(data_dir, &[])
    }

    /// Like `start`, with more environment (e.g. relay flags).
    pub fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> (Surge, Option<String>) {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_surge"))
            .arg("serve")
            .env_remove("SURGE_ADMIN_TOKEN")
            // Cluster mode only when a test asks for it (the etcd tests may export this).
            .env_remove("SURGE_ETCD_ENDPOINTS")
            .envs(env.iter().copied())
            .env("SURGE_LISTEN", addr.to_string())
            .env("SURGE_DATA_DIR", data_dir)
            .env("SURGE_SHARDS", "2")
            .stdout(Stdio::piped())
            // SURGE_TEST_LOG=1 shows the server's log in the test output.
            .stderr(if std::env::var_os("SURGE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
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

/// GET a text resource (e.g. /metrics): status and body.
pub fn get_text(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

/// The value of a Prometheus sample line `name{labels} value` in `text`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Creates merchant `id` with the admin token (`Bearer ...` header value); returns the
/// merchant's `Authorization` header value.
pub fn create_merchant(addr: SocketAddr, admin_bearer: &str, id: &str) -> String {
    let body = format!(r#"{{"id":"{id}","name":"Shop","currency":"KRW"}}"#);
    let (status, m) = http(addr, "POST", "/v1/merchants", &[("Authorization", admin_bearer)], Some(&body)).unwrap();
    assert_eq!(status, 201, "{m}");
    format!("Bearer {}", m["api_key"].as_str().unwrap())
}

/// The callback secret of every `Sim` (give it to `surge serve` as `SURGE_GATEWAY_SECRET`).
pub const SIM_SECRET: &str = "e2e-secret";

/// `surge gateway-sim` on a free port.
pub struct Sim {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Sim {
    /// Fast by default (latency 5..20 ms, settle 50..150 ms); `flags` override.
    pub fn start(flags: &[&str]) -> Sim {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut flags = flags.to_vec();
        for (flag, default) in [("--latency-ms", "5..20"), ("--settle-ms", "50..150")] {
            if !flags.contains(&flag) {
                flags.extend([flag, default]);
            }
        }
        let child = Command::new(env!("CARGO_BIN_EXE_surge"))
            .arg("gateway-sim")
            .args(["--listen", &addr.to_string(), "--callback-secret", SIM_SECRET, "--seed", "7"])
            .args(&flags)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SURGE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start surge gateway-sim");
        let sim = Sim { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(addr, "GET", "/sim/stats", &[], None).is_none() {
            assert!(Instant::now() < deadline, "gateway-sim did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Value {
        http(self.addr, "GET", "/sim/stats", &[], None).expect("sim stats").1
    }

    pub fn mode(&self, mode: &str) {
        let body = format!(r#"{{"mode":"{mode}"}}"#);
        assert_eq!(http(self.addr, "POST", "/sim/mode", &[], Some(&body)).expect("sim mode").0, 200);
    }

    pub fn rates(&self, body: &str) {
        assert_eq!(http(self.addr, "POST", "/sim/config", &[], Some(body)).expect("sim config").0, 200);
    }

    pub fn transaction(&self, key: &str) -> Value {
        let (status, tx) = http(self.addr, "GET", &format!("/api/v1/payments/{key}"), &[], None).expect("lookup");
        assert_eq!(status, 200, "{tx}");
        tx
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
