//! A minimal HTTP/1.1 keep-alive client over one tokio `TcpStream`: one request at a time
//! per connection (no pipelining), `Content-Length` or chunked bodies. Enough for surge's
//! JSON API and the baseline, with no HTTP client stack between the timer and the socket.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the load goes: `http://host:port` (an optional path prefix is kept).
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub prefix: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// targets are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let with_port = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        // IPv4 first: `localhost` may resolve to ::1 while the server listens on 127.0.0.1.
        let addrs: Vec<SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&with_port).map_err(|e| format!("{url}: {e}"))?.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target { addr, host: authority.to_string(), prefix })
    }
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// `Idempotent-Replayed: true` was present.
    pub replayed: bool,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `"201"`, or `"409 insufficient_stock"` for a problem+json error.
    pub fn label(&self) -> String {
        if self.status < 400 {
            return self.status.to_string();
        }
        match problem_code(&self.body) {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// The `code` of a problem+json body, found without a full parse.
pub fn problem_code(body: &[u8]) -> Option<&str> {
    let needle = b"\"code\":\"";
    let start = body.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

/// A keep-alive connection that reconnects on the next request after a failure.
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    pub fn new(target: Target, timeout: Duration) -> Conn {
        Conn { target, stream: None, buf: Vec::with_capacity(8192), out: Vec::with_capacity(1024), timeout }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request; `headers` are extra `(name, value)` pairs. Any failure drops the
    /// connection (the next request opens a new one). Times out after the configured timeout.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, headers, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    async fn exchange(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Resp> {
        self.out.clear();
        let o = &mut self.out;
        o.extend_from_slice(method.as_bytes());
        o.push(b' ');
        o.extend_from_slice(self.target.prefix.as_bytes());
        o.extend_from_slice(path.as_bytes());
        o.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        o.extend_from_slice(self.target.host.as_bytes());
        o.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            o.extend_from_slice(k.as_bytes());
            o.extend_from_slice(b": ");
            o.extend_from_slice(v.as_bytes());
            o.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || method != "GET" {
            o.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            o.extend_from_slice(body.len().to_string().as_bytes());
            o.extend_from_slice(b"\r\n");
        }
        o.extend_from_slice(b"\r\n");
        o.extend_from_slice(body);

        let fresh = self.stream.is_none();
        if fresh {
            let s = TcpStream::connect(self.target.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.out).await?;
        let resp = read_response(stream, &mut self.buf).await?;
        if resp.1 {
            self.stream = None; // the server closes
        }
        Ok(resp.0)
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one response; returns it and whether the server will close the connection.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(Resp, bool)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("response head too large"));
        }
        fill(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("malformed status line"))?;
    let (mut len, mut chunked, mut replayed, mut close) = (None, false, false, false);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<usize>().map_err(|_| bad("bad content-length"))?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        } else if k.eq_ignore_ascii_case("idempotent-replayed") {
            replayed = v.eq_ignore_ascii_case("true");
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    buf.drain(..head_end);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(stream, buf).await?;
            };
            let size_str = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            while buf.len() < line_end + 2 + size + 2 {
                fill(stream, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        let len = len.unwrap_or(0);
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Ok((Resp { status, replayed, body }, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.prefix, "");
        let t = Target::parse("http://127.0.0.1:9/api/").unwrap();
        assert_eq!(t.prefix, "/api");
        assert!(Target::parse("https://x").is_err());
        let t = Target::parse("http://localhost:8080").unwrap();
        assert!(t.addr.is_ipv4() && t.host == "localhost:8080");
    }

    #[test]
    fn finds_problem_codes() {
        let body = br#"{"type":"about:blank","code":"insufficient_stock","status":409}"#;
        assert_eq!(problem_code(body), Some("insufficient_stock"));
        let r = Resp { status: 409, replayed: false, body: body.to_vec() };
        assert_eq!(r.label(), "409 insufficient_stock");
        assert_eq!(Resp { status: 201, replayed: false, body: vec![] }.label(), "201");
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nIdempotent-Replayed: true\r\n\r\n{}")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let mut c = Conn::new(Target::parse(&format!("http://{addr}")).unwrap(), Duration::from_secs(5));
        let r = c.request("POST", "/x", &[("a", "b")], b"{}").await.unwrap();
        assert_eq!((r.status, r.replayed, r.body.as_slice()), (201, true, b"{}".as_slice()));
        let r = c.request("GET", "/y", &[], b"").await.unwrap();
        assert_eq!((r.status, r.replayed, r.body.as_slice()), (200, false, b"abcde".as_slice()));
    }
}
