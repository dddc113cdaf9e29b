//! The batching client against a server on a real socket that answers every op of a binary
//! batch with a 201 result (the server's decisions are not what is tested here; surge's
//! own answers are, in `api/tests` and `surge load --scenario batch-binary`).

use std::net::SocketAddr;
use std::time::Duration;

use surge_client::batcher::{Client, Config, Order};
use surge_client::wire::{self, Batch, ResultRecord, BATCH_OPS_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves keep-alive connections: each request's ops get one 201 result each.
async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer_batches(stream));
    }
}

async fn answer_batches(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("the client sends Content-Length");
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let ops = Batch::decode(&buf[head_end..head_end + length]).expect("the client's batch decodes").len();
        buf.drain(..head_end + length);
        let result = ResultRecord { status: 201u16.to_le(), ..ResultRecord::default() };
        let body = wire::encode_results(&vec![result; ops]);
        let reply =
            format!("HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n", wire::MEDIA_TYPE, body.len());
        if stream.write_all(reply.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            return;
        }
    }
}

async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(serve(listener));
    addr
}

fn client(addr: SocketAddr, connections: usize) -> Client {
    Client::start(Config {
        addr,
        host: addr.to_string(),
        auth: "Bearer sk_test".into(),
        path: "/v1/batch".into(),
        connections,
        queue_max: 4 * BATCH_OPS_MAX,
        timeout: Duration::from_secs(5),
    })
}

fn order(i: usize) -> Order {
    Order {
        customer: format!("c-{i}"),
        lines: vec![("sku-1".into(), 1)],
        payment: wire::PAYMENT_POINTS,
        key: Some((i as u128).to_le_bytes()),
    }
}

/// One order more than a batch holds, all queued at once, then no more: the first
/// connection fills a batch and carries the last order over, while the second holds the
/// queue waiting for an order that never comes. The carried order must still be sent.
/// (On a current-thread runtime the tasks run in that order every time.)
#[tokio::test(flavor = "current_thread")]
async fn an_order_carried_over_a_full_batch_is_sent_when_no_more_come() {
    let client = client(server().await, 2);
    let callers: Vec<_> = (0..=BATCH_OPS_MAX)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.order(order(i)).await })
        })
        .collect();
    let all = async {
        for caller in callers {
            let result = caller.await.expect("caller task");
            assert_eq!(result.map(|r| r.status()), Ok(201));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("every caller answered (an order was left waiting for the queue's lock)");
}

/// Orders from many callers over several connections all get their own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_an_answer_under_closed_loop_load() {
    let client = client(server().await, 4);
    let callers: Vec<_> = (0..2_000)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let result = client.order(order(c * 100 + i)).await;
                    assert_eq!(result.map(|r| r.status()), Ok(201));
                }
            })
        })
        .collect();
    let all = async {
        for caller in callers {
            caller.await.expect("caller task");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all).await.expect("every caller answered");
}
