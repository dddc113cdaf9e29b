//! One HTTP/1.1 keep-alive connection posting binary batches: enough for surge's answers
//! (`Content-Length` bodies), with every read bounded.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of a response head; surge's are a few hundred.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most bytes of a response body: 1,000 results are 32,016 bytes; a problem+json is small.
const BODY_BYTES_MAX: usize = 1024 * 1024;

pub struct Answer {
    pub status: u16,
    pub binary: bool,
    pub body: Vec<u8>,
}

pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    head: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None, buf: Vec::with_capacity(64 * 1024), head: Vec::with_capacity(512) }
    }

    /// Posts `body`; on any failure the connection is dropped and the next post reconnects.
    pub async fn post(&mut self, host: &str, path: &str, auth: &str, body: &[u8]) -> io::Result<Answer> {
        let result = self.exchange(host, path, auth, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, host: &str, path: &str, auth: &str, body: &[u8]) -> io::Result<Answer> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().ok_or_else(|| bad("no connection"))?;
        self.head.clear();
        self.head.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Type: {}\r\nAccept: {}\r\nContent-Length: {}\r\n\r\n",
                crate::wire::MEDIA_TYPE,
                crate::wire::MEDIA_TYPE,
                body.len()
            )
            .as_bytes(),
        );
        stream.write_all(&self.head).await?;
        stream.write_all(body).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > HEAD_BYTES_MAX {
                return Err(bad("response head too long"));
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("response head not UTF-8"))?;
        let status = head.get(9..12).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| bad("no status"))?;
        let (mut length, mut binary, mut close) = (None, false, false);
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("content-type") {
                binary = value.starts_with(crate::wire::MEDIA_TYPE);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.ok_or_else(|| bad("no Content-Length"))?;
        if length > BODY_BYTES_MAX {
            return Err(bad("response body too long"));
        }
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        if close {
            self.stream = None;
        }
        Ok(Answer { status, binary, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
