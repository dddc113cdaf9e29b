//! Gathers concurrent callers' orders into binary batches. Callers put orders on one
//! bounded queue and wait for their own result; each of a few connections takes everything
//! queued (up to one full batch), posts it and, while that batch is in flight, the queue
//! fills with the next. So batches grow with the load by themselves: one order alone goes
//! out at once, many callers share a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::http::Conn;
use crate::wire::{self, BatchBuilder, PushError, ResultRecord};

/// One order as a caller gives it.
#[derive(Clone, Debug)]
pub struct Order {
    pub customer: String,
    /// (sku, qty)
    pub lines: Vec<(String, u32)>,
    /// `wire::PAYMENT_NONE` or `wire::PAYMENT_POINTS`.
    pub payment: u8,
    pub key: Option<[u8; 16]>,
}

/// Why an order has no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The order can never be sent (no lines, too many, strings too long).
    Invalid,
    /// The connection failed or timed out: the server may or may not have executed it.
    Transport(String),
    /// The server refused the whole batch (status and the start of its body).
    Refused(u16, String),
    /// The server's answer does not decode, or has fewer results than orders.
    Answer(String),
    /// The client is gone.
    Closed,
}

pub struct Config {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// `Bearer sk_...`
    pub auth: String,
    /// The batch route's path (with any prefix).
    pub path: String,
    /// Connections, each with one batch in flight.
    pub connections: usize,
    /// Orders waiting at most; a caller beyond it waits for room.
    pub queue_max: usize,
    pub timeout: Duration,
}

/// Turns of the runtime a connection gives queueing callers before it sends a batch that
/// is not full (each costs microseconds; it stops early once a turn adds nothing).
const LINGER_YIELDS: usize = 64;

struct Pending {
    order: Order,
    answer: oneshot::Sender<Result<ResultRecord, ClientError>>,
}

/// The handle callers share (cheap to clone).
#[derive(Clone)]
pub struct Client {
    queue: mpsc::Sender<Pending>,
}

impl Client {
    /// Starts the connections' tasks on the current tokio runtime.
    pub fn start(config: Config) -> Client {
        let (queue, rx) = mpsc::channel(config.queue_max.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let config = Arc::new(config);
        for _ in 0..config.connections.max(1) {
            tokio::spawn(connection(config.clone(), rx.clone()));
        }
        Client { queue }
    }

    /// Queues `order` (waiting for room when the queue is full) and waits for its result.
    pub async fn order(&self, order: Order) -> Result<ResultRecord, ClientError> {
        let (answer, result) = oneshot::channel();
        self.queue.send(Pending { order, answer }).await.map_err(|_| ClientError::Closed)?;
        result.await.unwrap_or(Err(ClientError::Closed))
    }
}

/// Adds `p` to the batch; gives it back when the batch is full.
fn push(builder: &mut BatchBuilder, waiting: &mut Vec<Pending>, p: Pending) -> Option<Pending> {
    let o = &p.order;
    let lines: Vec<(&str, u32)> = o.lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    match builder.push_order(&o.customer, &lines, o.payment, o.key) {
        Ok(()) => waiting.push(p),
        Err(PushError::Full) => return Some(p),
        Err(PushError::Invalid) => {
            let _ = p.answer.send(Err(ClientError::Invalid));
        }
    }
    None
}

/// Fills the batch from `first` and what is queued, lingering a few turns of the runtime
/// while that adds orders. Returns the order that did not fit, if one did not.
async fn gather(
    queue: &mut mpsc::Receiver<Pending>,
    first: Pending,
    builder: &mut BatchBuilder,
    waiting: &mut Vec<Pending>,
) -> Option<Pending> {
    let mut next = Some(first);
    // Bounded by the batch (`push_order` says Full at BATCH_OPS_MAX ops or the body limit)
    // and by LINGER_YIELDS.
    for _ in 0..LINGER_YIELDS {
        while let Some(p) = next.take() {
            if let Some(full) = push(builder, waiting, p) {
                return Some(full);
            }
            next = queue.try_recv().ok();
        }
        // Callers woken by the previous batch's results are queueing their next orders
        // right now: give them a turn of the runtime while that adds to the batch, instead
        // of sending a batch of the few that were quicker.
        tokio::task::yield_now().await;
        next = queue.try_recv().ok();
        if next.is_none() {
            tokio::task::yield_now().await;
            // Nothing came in two turns: send what there is.
            next = Some(queue.try_recv().ok()?);
        }
    }
    // The last turn's order, if any, is still to place.
    next.and_then(|p| push(builder, waiting, p))
}

/// One connection: take what is queued (at least one order), post it, hand out the results.
async fn connection(config: Arc<Config>, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut conn = Conn::new(config.addr);
    let mut builder = BatchBuilder::new();
    let mut body = Vec::with_capacity(wire::MEDIA_TYPE.len() + 64 * 1024);
    let mut waiting: Vec<Pending> = Vec::with_capacity(crate::wire::BATCH_OPS_MAX);
    // An order that did not fit the previous batch starts the next.
    let mut carried: Option<Pending> = None;
    loop {
        builder.clear();
        waiting.clear();
        match carried.take() {
            // Do not wait for the queue's lock with an order in hand: its holder may be
            // waiting for an order that never comes (every caller waiting for an answer, or
            // the run over), and the carried order would wait with it. Without the lock,
            // the carried order goes out alone.
            Some(first) => match rx.try_lock() {
                Ok(mut queue) => carried = gather(&mut queue, first, &mut builder, &mut waiting).await,
                Err(_) => carried = push(&mut builder, &mut waiting, first),
            },
            None => {
                let mut queue = rx.lock().await;
                let Some(first) = queue.recv().await else {
                    return; // every handle dropped
                };
                carried = gather(&mut queue, first, &mut builder, &mut waiting).await;
            }
        }
        if waiting.is_empty() {
            continue;
        }
        builder.encode(&mut body);
        let sent = tokio::time::timeout(config.timeout, conn.post(&config.host, &config.path, &config.auth, &body));
        let outcome = match sent.await {
            Err(_) => {
                // A late answer must not be read as the next batch's.
                conn = Conn::new(config.addr);
                Err(ClientError::Transport("timed out".into()))
            }
            Ok(Err(e)) => Err(ClientError::Transport(e.to_string())),
            Ok(Ok(a)) if a.status != 200 || !a.binary => {
                let start = String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).into_owned();
                Err(ClientError::Refused(a.status, start))
            }
            Ok(Ok(a)) => match wire::decode_results(&a.body) {
                Ok(results) if results.len() == waiting.len() => {
                    for (p, r) in waiting.drain(..).zip(results.iter()) {
                        let _ = p.answer.send(Ok(*r));
                    }
                    Ok(())
                }
                Ok(results) => {
                    Err(ClientError::Answer(format!("{} results for {} orders", results.len(), waiting.len())))
                }
                Err(e) => Err(ClientError::Answer(e.to_string())),
            },
        };
        if let Err(e) = outcome {
            for p in waiting.drain(..) {
                let _ = p.answer.send(Err(e.clone()));
            }
        }
    }
}
