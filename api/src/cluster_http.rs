//! Cluster mode's HTTP side: `GET /v1/cluster` (the partition table, as this node sees it)
//! and forwarding. A request whose partition another node owns is answered by the engine
//! with `503 partition_moving` carrying the owner's address (`error::ForwardTo`); the
//! forwarding layer then sends the request, body and headers unchanged, to that node and
//! answers with its response. One hop at most: a forwarded request carries
//! [`FORWARDED_HEADER`], and a node that does not own the partition either answers it with
//! its own `503 partition_moving` (the client retries after `Retry-After`; a retry with
//! the same idempotency key is safe).
//!
//! Nothing here knows etcd: the node's controller (the `cluster` build feature) publishes
//! the table through [`ClusterView`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ForwardTo};
use crate::extract::AdminCall;
use crate::AppState;

/// Marks a request one node forwarded to another (its value: the forwarding node's id).
pub const FORWARDED_HEADER: &str = "x-surge-forwarded-by";

/// On a node's part of a listing across partitions (`gather`): the partitions it read,
/// comma-separated.
pub const PARTITIONS_HEADER: &str = "x-surge-partitions";

/// The console's paths (`/admin`, `/admin/...`): never forwarded.
const CONSOLE_PREFIX: &str = "/admin";

/// A forwarded request without an answer this long fails with the forwarding node's 503.
const FORWARD_TIMEOUT_MS: u64 = 10_000;

/// How long a request with an unknown API key waits for this node's standbys to learn it
/// (a merchant created through another node a moment ago) before it is 401.
const KEY_LEARN_WAIT_MS: u64 = 1_000;
const KEY_LEARN_POLL_MS: u64 = 20;

/// Connections kept open to each other node.
const FORWARD_IDLE_PER_NODE_MAX: usize = 256;

/// The partition table as this node sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterTable {
    /// `cluster`, or `single` (one node with its own log; nothing else is set).
    pub mode: &'static str,
    /// This node's id.
    pub node_id: String,
    pub partitions: u32,
    /// The live nodes (each holds a key under a lease in etcd).
    pub nodes: Vec<ClusterNode>,
    /// One entry per partition, in order.
    pub owners: Vec<PartitionOwner>,
    /// With `?merchant=ID`: that merchant's partition.
    pub merchant: Option<MerchantPartition>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MerchantPartition {
    pub id: String,
    pub partition: u32,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterQuery {
    /// A merchant id: the answer says which partition it is in.
    merchant: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterNode {
    pub node_id: String,
    /// Where it serves HTTP (`host:port`).
    pub address: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionOwner {
    pub partition: u32,
    /// `serving` (this node owns it), `remote` (another node does) or `moving` (nobody
    /// does right now).
    pub state: &'static str,
    pub node_id: Option<String>,
    pub address: Option<String>,
    /// The owner's fencing token (the etcd revision at which it took the partition).
    pub token: Option<i64>,
    /// `serving` only: log records this node appended to the partition since it took it.
    pub records_logged: Option<u64>,
}

/// What the node's controller publishes.
pub trait ClusterView: Send + Sync {
    fn node_id(&self) -> &str;
    fn table(&self) -> ClusterTable;

    /// The events look-up in cluster mode: the newest `limit` events of `merchant`'s
    /// `aggregate` in its partition's replicated log, which any node reads.
    fn aggregate_events(
        &self,
        merchant: &str,
        aggregate: &str,
        limit: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::lookup::AggregateEvents, String>> + Send>>;
}

/// Cluster mode's HTTP parts, set once before serving.
pub struct ClusterHttp {
    pub view: Arc<dyn ClusterView>,
    client: reqwest::Client,
}

impl ClusterHttp {
    pub fn new(view: Arc<dyn ClusterView>) -> Result<ClusterHttp, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(FORWARD_TIMEOUT_MS))
            .pool_max_idle_per_host(FORWARD_IDLE_PER_NODE_MAX)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the forwarding client: {e}"))?;
        Ok(ClusterHttp { view, client })
    }
}

#[utoipa::path(
    get, path = "/v1/cluster", tag = "operations", security(("admin" = [])),
    params(ClusterQuery),
    responses(
        (status = 200, description = "the partition table as this node sees it (mode `single` without cluster flags)", body = ClusterTable),
    )
)]
/// `GET /v1/cluster[?merchant=ID]`.
pub async fn get_cluster(State(state): State<AppState>, Query(q): Query<ClusterQuery>, _call: AdminCall) -> Response {
    let mut table = match state.cluster() {
        Some(cluster) => cluster.view.table(),
        None => ClusterTable {
            mode: "single",
            node_id: String::new(),
            partitions: 1,
            nodes: vec![],
            owners: vec![],
            merchant: None,
        },
    };
    table.merchant = q.merchant.map(|id| {
        let partition = surge_core::shard_of(&id, table.partitions as usize) as u32;
        MerchantPartition { id, partition }
    });
    crate::routes::json(StatusCode::OK, &table)
}

/// The merchant of an API key this node did not know: its merchant may have been created on
/// another node a moment ago, and this node learns keys by following the other partitions'
/// logs. Waits at most [`KEY_LEARN_WAIT_MS`].
pub async fn key_learned(engine: &crate::engine::Engine, hash: &[u8; 32]) -> Option<Arc<str>> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(KEY_LEARN_WAIT_MS);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(KEY_LEARN_POLL_MS)).await;
        if let Some(merchant) = engine.merchant_for_key(hash) {
            return Some(merchant);
        }
    }
    None
}

/// A node's part of a listing across partitions: `res`, marked with the partitions it read.
pub fn gathered_part(mut res: Response, partitions: &[u32]) -> Response {
    let list = partitions.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    if let Ok(value) = axum::http::HeaderValue::from_str(&list) {
        res.headers_mut().insert(PARTITIONS_HEADER, value);
    }
    res
}

/// A listing across partitions (admin views across merchants): asks every other live node
/// for `path_and_query` (a GET with the caller's `Authorization`, marked forwarded, so each
/// answers with what the partitions it serves hold: `gathered_part`) and returns their
/// bodies. Every partition must be read, by this node (`own`) or by one that answered:
/// else `503 partition_moving` (a partition is changing hands, or its node did not
/// answer: retry). A node that refuses the caller's token makes it a 401 here too.
pub async fn gather(
    cluster: &ClusterHttp,
    headers: &axum::http::HeaderMap,
    path_and_query: &str,
    own: &[u32],
) -> Result<Vec<axum::body::Bytes>, ApiError> {
    let table = cluster.view.table();
    let me = cluster.view.node_id().to_owned();
    let mut asks = tokio::task::JoinSet::new();
    // Bounded by the live nodes (one ask each), each by the client's timeout.
    for node in table.nodes.iter().filter(|n| n.node_id != me) {
        let mut ask =
            cluster.client.get(format!("http://{}{path_and_query}", node.address)).header(FORWARDED_HEADER, &me);
        if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
            ask = ask.header(axum::http::header::AUTHORIZATION, auth);
        }
        let node_id = node.node_id.clone();
        asks.spawn(async move {
            let answer = ask.send().await?;
            let status = answer.status();
            let partitions = answer.headers().get(PARTITIONS_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            Ok::<_, reqwest::Error>((node_id, status, partitions, answer.bytes().await?))
        });
    }
    let mut covered = vec![false; table.partitions as usize];
    for &p in own {
        if let Some(c) = covered.get_mut(p as usize) {
            *c = true;
        }
    }
    let mut bodies = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let (node, status, partitions, body) = match joined {
            Ok(Ok(answer)) => answer,
            // Its partitions stay unread: answered below.
            Ok(Err(e)) => {
                tracing::warn!("a listing across partitions: a node did not answer: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!("a listing across partitions: an ask failed: {e}");
                continue;
            }
        };
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::from_status(
                status,
                format!("node {node} refused the admin token (every node of a cluster needs the same --admin-token)"),
            ));
        }
        if !status.is_success() {
            tracing::warn!(%node, %status, "a listing across partitions: a node could not answer");
            continue;
        }
        // Bounded by the partition count: a node lists each partition at most once.
        for p in partitions.iter().flat_map(|l| l.split(',')).filter_map(|p| p.parse::<usize>().ok()) {
            if let Some(c) = covered.get_mut(p) {
                *c = true;
            }
        }
        tracing::debug!(%node, "a listing across partitions: answered");
        bodies.push(body);
    }
    match covered.iter().position(|c| !c) {
        Some(p) => Err(ApiError::partition_moving(
            p as u32,
            None,
            format!("partition {p} is changing hands or its node did not answer; retry"),
        )),
        None => Ok(bodies),
    }
}

/// The forwarding layer (a pass-through outside cluster mode).
pub async fn forward(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(cluster) = state.cluster() else { return next.run(req).await };
    // The console's sessions are this node's: another node would answer a forwarded console
    // request 401 (and the page would sign its operator out). It answers from here.
    if req.headers().contains_key(FORWARDED_HEADER) || req.uri().path().starts_with(CONSOLE_PREFIX) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    // Kept to resend: bodies are bounded (larger ones are refused here as they would be by
    // the handler).
    let Ok(bytes) = axum::body::to_bytes(body, crate::BODY_BYTES_MAX).await else {
        return ApiError::payload_too_large().into_response();
    };
    let (method, uri, headers) = (parts.method.clone(), parts.uri.clone(), parts.headers.clone());
    let res = next.run(axum::extract::Request::from_parts(parts, Body::from(bytes.clone()))).await;
    let Some(ForwardTo(owner)) = res.extensions().get::<ForwardTo>().cloned() else { return res };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = cluster.client.request(method, format!("http://{owner}{path}")).body(bytes);
    for (name, value) in &headers {
        if !is_hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let sent = out.header(FORWARDED_HEADER, cluster.view.node_id()).send().await;
    match sent {
        Ok(answer) => match relay_response(answer).await {
            Some(answer) => answer,
            None => unknown_outcome(&owner),
        },
        // Not connected: the owner never saw the request (it is dead or gone; the table
        // catches up within its lease), so nothing was applied.
        Err(e) if e.is_connect() => res,
        Err(e) => {
            tracing::warn!(%owner, "forwarding failed: {e}");
            unknown_outcome(&owner)
        }
    }
}

/// The owner took the request and did not answer: it may have applied it.
fn unknown_outcome(owner: &str) -> Response {
    ApiError::storage_unavailable(format!(
        "the partition's owner ({owner}) did not answer; the request may have been applied: retry with the same \
         Idempotency-Key"
    ))
    .into_response()
}

/// The owner's response as this node's.
async fn relay_response(answer: reqwest::Response) -> Option<Response> {
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.ok()?;
    let mut res = (status, body).into_response();
    for (name, value) in &headers {
        if !is_hop_by_hop(name) {
            res.headers_mut().insert(name, value.clone());
        }
    }
    Some(res)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    use axum::http::header;
    [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}
