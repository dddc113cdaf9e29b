//! `surge`: the single binary. `surge serve` runs the HTTP API on the log in `--data-dir`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use surge_api::config::{self, ServeConfig};
use surge_api::engine::{Engine, EngineConfig, WalOpener};
use surge_api::{app, AppState};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "surge", version, about = "surge: an order and payment engine for traffic that arrives all at once")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API (recovers the log in --data-dir first).
    Serve(ServeArgs),
    /// Look at a write-ahead log without changing it.
    #[command(subcommand)]
    Wal(WalCmd),
    /// Tail the log of a server's data directory to Kafka and/or MariaDB (the same relay
    /// `surge serve --kafka-brokers/--mariadb-url` runs in-process).
    Relay(RelayCmdArgs),
    /// Drive a surge server with a scenario (open or closed loop), check its invariants,
    /// write a JSON result and an HTML report.
    Load(surge_load::LoadArgs),
    /// Run a simulated card payment gateway (docs/gateway.md) for tests, load runs and demos.
    GatewaySim(surge_gateway_sim::SimArgs),
    /// Serve the Model Context Protocol on stdin/stdout: tools for an assistant over a running
    /// server's HTTP API (`--server-url`, the admin token). The same tools are at `/mcp`.
    Mcp(surge_api::mcp::stdio::McpArgs),
}

#[derive(Subcommand)]
enum WalCmd {
    /// Snapshots, records, torn tail and event counts of a log (DIR: data dir or its wal/).
    Inspect { dir: PathBuf },
    /// Like inspect, and replays everything through apply, checking every invariant.
    Verify { dir: PathBuf },
    /// Forget a reader's checkpoint (`kafka`, `mariadb`, `gateway`) that will never run
    /// again, so retention stops keeping the log for it.
    ForgetReader { dir: PathBuf, reader: String },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SURGE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the write-ahead log, snapshots and the admin token hash.
    #[arg(long, env = "SURGE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Where the console's "Load runs" page and `/mcp`'s load_run_summary read `surge load`
    /// results and reports from.
    #[arg(long, env = "SURGE_LOAD_RESULTS_DIR", default_value = surge_api::console::LOAD_RESULTS_DIR_DEFAULT)]
    load_results_dir: PathBuf,
    /// Admin token (creates merchants). Without one, a token is generated and printed once
    /// at first start; only its hash is kept in the data directory.
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Shard threads (default: available parallelism). Fixed per data directory.
    #[arg(long, env = "SURGE_SHARDS")]
    shards: Option<usize>,
    /// Requests per second per merchant (also the burst); 0 turns the limit off.
    #[arg(long, env = "SURGE_MERCHANT_RATE_LIMIT", default_value_t = 100_000)]
    merchant_rate_limit: u32,
    /// How the log writes: auto (io_uring when it works), uring, or pwrite (lower latency
    /// per small commit on the dev VM; see wal/README.md).
    #[arg(long, env = "SURGE_WAL_IO", default_value = "auto", value_parser = ["auto", "uring", "pwrite"])]
    wal_io: String,
    /// Bytes past the log's end kept written with zeros, so appends land on written blocks and
    /// their fdatasync writes no extent metadata (0: off; at most 4 MiB; see wal/FORMAT.md).
    #[arg(long, env = "SURGE_WAL_ZERO_AHEAD_BYTES", default_value_t = surge_wal::ZERO_AHEAD_BYTES_DEFAULT)]
    wal_zero_ahead_bytes: u64,
    /// Write a snapshot after this many log records (0: never).
    #[arg(long, env = "SURGE_SNAPSHOT_EVERY", default_value_t = 100_000)]
    snapshot_every: u64,
    /// How long an idempotency record is kept (the contract's 24 h; shorter only for tests
    /// and soaks): a number and a unit, ms, s, m, h or d.
    #[arg(long, env = "SURGE_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = surge_api::config::parse_duration_ms)]
    idempotency_window: u64,
    /// How long a settled order, payment, hold or token stays in memory after its last
    /// change before it is archived (also a paid order's refund window); never shorter than
    /// --idempotency-window.
    #[arg(long, env = "SURGE_RETAIN_SETTLED", default_value = "7d", value_parser = surge_api::config::parse_duration_ms)]
    retain_settled: u64,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Cluster mode (docs/cluster.md): partitions replicated in etcd, one owner each. Without
/// `--etcd` the server runs alone on its own log. Needs a build with `--features cluster`.
#[derive(clap::Args)]
struct ClusterArgs {
    /// etcd members (`host:port,...`): run as a node of the cluster they hold.
    #[arg(long = "etcd", env = "SURGE_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// This node's id, unique among live nodes (required with --etcd).
    #[arg(long, env = "SURGE_NODE_ID")]
    node_id: Option<String>,
    /// Where the other nodes reach this one's HTTP API [default: --listen].
    #[arg(long, env = "SURGE_ADVERTISE")]
    advertise: Option<String>,
    /// Partitions of the cluster, fixed by its first node; every node must say the same.
    #[arg(long, env = "SURGE_PARTITIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    partitions: u32,
    /// Seconds a dead or paused node keeps its partitions before others take them.
    #[arg(long, env = "SURGE_LEASE_TTL_S", default_value_t = 2, value_parser = clap::value_parser!(i64).range(2..=60))]
    lease_ttl_s: i64,
}

impl ClusterArgs {
    fn settings(self, listen: SocketAddr) -> Result<Option<config::ClusterSettings>, String> {
        if self.etcd_endpoints.is_empty() {
            return Ok(None);
        }
        let node_id = self.node_id.ok_or("--node-id is required with --etcd")?;
        Ok(Some(config::ClusterSettings {
            etcd_endpoints: self.etcd_endpoints,
            node_id,
            advertise: self.advertise.unwrap_or_else(|| listen.to_string()),
            partitions: self.partitions,
            lease_ttl_s: self.lease_ttl_s,
        }))
    }
}

/// Card payments through payment gateways. Without `--gateway-url` card payments answer 503.
#[derive(clap::Args)]
struct GatewayArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// The HMAC-SHA256 secret the gateway signs its callbacks with (required with --gateway-url).
    #[arg(long, env = "SURGE_GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: Option<String>,
    /// `external`: the gateway worker runs in `surge relay --gateway-url ...` and reports
    /// through `POST /v1/admin/gateway/reports`; this server only takes card payments and
    /// callbacks.
    #[arg(long, env = "SURGE_GATEWAY_WORKER", default_value = "in-process", value_parser = ["in-process", "external"])]
    gateway_worker: String,
}

/// The gateway worker's settings, the same in `surge serve` and `surge relay`.
#[derive(clap::Args)]
struct WorkerArgs {
    /// A payment gateway (`http://host:port`); repeat the flag for fallbacks, in order of
    /// preference. Turns card payments on.
    #[arg(long = "gateway-url", env = "SURGE_GATEWAY_URLS", value_delimiter = ',')]
    gateway_urls: Vec<String>,
    /// Where the gateway posts its callbacks [default: http://<listen>/v1/gateway/callback;
    /// in `surge relay`: <server-url>/v1/gateway/callback].
    #[arg(long, env = "SURGE_GATEWAY_CALLBACK_URL")]
    gateway_callback_url: Option<String>,
    /// The key that seals card numbers in the log (64 hex digits) [default:
    /// <data-dir>/card.key, generated at first start of `surge serve`].
    #[arg(long, env = "SURGE_CARD_KEY_FILE")]
    card_key_file: Option<PathBuf>,
    /// A card payment no gateway accepted this long after it was placed fails (re-payable).
    #[arg(long, env = "SURGE_GATEWAY_SUBMIT_DEADLINE_MS", default_value_t = 10_000)]
    gateway_submit_deadline_ms: u64,
    /// A payment accepted and not settled by callback this long is looked up at the gateway.
    #[arg(long, env = "SURGE_GATEWAY_RECONCILE_AFTER_MS", default_value_t = 10_000)]
    gateway_reconcile_after_ms: u64,
    /// A payment accepted and not settled this long fails (and is voided at the gateway).
    #[arg(long, env = "SURGE_GATEWAY_SETTLE_DEADLINE_MS", default_value_t = 120_000)]
    gateway_settle_deadline_ms: u64,
    /// A gateway call without an answer this long is a timeout (retried with the same key).
    #[arg(long, env = "SURGE_GATEWAY_RESPONSE_TIMEOUT_MS", default_value_t = 3_000)]
    gateway_response_timeout_ms: u64,
    /// A capture, void or refund is tried this often before it becomes a dead letter...
    #[arg(long, env = "SURGE_GATEWAY_OP_ATTEMPTS_MAX", default_value_t = 8)]
    gateway_op_attempts_max: u32,
    /// ...or for this long, whichever comes first.
    #[arg(long, env = "SURGE_GATEWAY_OP_DEADLINE_MS", default_value_t = 600_000)]
    gateway_op_deadline_ms: u64,
    /// Gateway calls and reports in flight at once (each call holds a connection).
    #[arg(long, env = "SURGE_GATEWAY_IN_FLIGHT_MAX", default_value_t = 4_096,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    gateway_in_flight_max: u64,
}

impl WorkerArgs {
    fn settings(self, secret: Option<String>, external_worker: bool) -> Option<config::GatewaySettings> {
        if self.gateway_urls.is_empty() {
            return None;
        }
        Some(config::GatewaySettings {
            urls: self.gateway_urls,
            secret: secret.unwrap_or_default(),
            callback_url: self.gateway_callback_url,
            card_key_file: self.card_key_file,
            submit_deadline_ms: self.gateway_submit_deadline_ms,
            reconcile_after_ms: self.gateway_reconcile_after_ms,
            settle_deadline_ms: self.gateway_settle_deadline_ms,
            response_timeout_ms: self.gateway_response_timeout_ms,
            op_attempts_max: self.gateway_op_attempts_max,
            op_deadline_ms: self.gateway_op_deadline_ms,
            in_flight_max: usize::try_from(self.gateway_in_flight_max).unwrap_or(4_096),
            external_worker,
        })
    }
}

impl GatewayArgs {
    fn settings(self) -> Option<config::GatewaySettings> {
        let external = self.gateway_worker == "external";
        self.worker.settings(self.gateway_secret, external)
    }
}

/// Where the relay sends the log. Each sink is optional; without any, nothing leaves.
#[derive(clap::Args)]
struct RelayArgs {
    /// Kafka bootstrap servers (`host:port,...`): publish every event to `<prefix><aggregate>`.
    #[arg(long, env = "SURGE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Prefix of the Kafka topic names.
    #[arg(long, env = "SURGE_KAFKA_TOPIC_PREFIX", default_value = "surge.")]
    kafka_topic_prefix: String,
    /// MariaDB cold store (`mysql://user[:password]@host:port/db`); migrated at start. `surge
    /// serve` also answers GETs of archived orders and payments from it.
    #[arg(long, env = "SURGE_MARIADB_URL", hide_env_values = true)]
    mariadb_url: Option<String>,
}

impl RelayArgs {
    fn options(self) -> surge_relay::setup::RelayOptions {
        surge_relay::setup::RelayOptions {
            kafka_brokers: self.kafka_brokers,
            kafka_topic_prefix: Some(self.kafka_topic_prefix),
            mariadb_url: self.mariadb_url,
        }
    }
}

#[derive(clap::Args)]
struct RelayCmdArgs {
    /// Data directory of the server whose log to relay (or its wal/ directory).
    #[arg(long, env = "SURGE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[command(flatten)]
    relay: RelayArgs,
    /// Serve /metrics (lag per sink) and /healthz on this address.
    #[arg(long, env = "SURGE_RELAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Exit once every sink has written everything that was durable at start (a backfill).
    #[arg(long)]
    until_caught_up: bool,
    /// Run the gateway worker here (with --gateway-url; the server runs with
    /// --gateway-worker external): its reports go to the server at --server-url.
    #[command(flatten)]
    worker: WorkerArgs,
    /// The server the worker reports to (`http://host:port` of `surge serve`).
    #[arg(long, env = "SURGE_SERVER_URL")]
    server_url: Option<String>,
    /// The server's admin token (the worker's reports go through an admin route).
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn main() -> std::process::ExitCode {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_target(false).with_ansi(ansi).with_writer(std::io::stderr).init();
    abort_on_engine_panic();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Load(args) => return surge_load::run(args),
        Cmd::GatewaySim(args) => return surge_gateway_sim::run(args),
        Cmd::Mcp(args) => surge_api::mcp::stdio::run(args),
        Cmd::Serve(args) => match (
            surge_core::Settings::new(args.idempotency_window, args.retain_settled),
            args.cluster.settings(args.listen),
        ) {
            (Err(e), _) => Err(format!("--retain-settled: {e}")),
            (_, Err(e)) => Err(e),
            (Ok(settings), Ok(cluster)) => serve(ServeConfig {
                load_results_dir: args.load_results_dir,
                listen: args.listen,
                data_dir: args.data_dir,
                admin_token: args.admin_token,
                shards: args.shards,
                merchant_rate_limit: args.merchant_rate_limit,
                snapshot_every_records: args.snapshot_every,
                relay: args.relay.options(),
                gateway: args.gateway.settings(),
                wal_io: match args.wal_io.as_str() {
                    "uring" => surge_wal::IoMode::Uring,
                    "pwrite" => surge_wal::IoMode::Pwrite,
                    _ => surge_wal::IoMode::Auto,
                },
                wal_zero_ahead_bytes: args.wal_zero_ahead_bytes,
                settings,
                cluster,
            }),
        },
        Cmd::Relay(args) => surge_api::relaycmd::run(
            &args.data_dir,
            surge_api::relaycmd::RelayRun {
                options: args.relay.options(),
                metrics_listen: args.metrics_listen,
                until_caught_up: args.until_caught_up,
                gateway: args.worker.settings(None, false).map(|settings| surge_api::relaycmd::RelayGateway {
                    settings,
                    server_url: args.server_url,
                    admin_token: args.admin_token,
                }),
            },
        ),
        Cmd::Wal(WalCmd::ForgetReader { dir, reader }) => surge_api::walcmd::forget_reader(&dir, &reader),
        Cmd::Wal(cmd) => {
            let (dir, verify) = match cmd {
                WalCmd::Inspect { dir } => (dir, false),
                WalCmd::Verify { dir } => (dir, true),
                WalCmd::ForgetReader { .. } => unreachable!("matched above"),
            };
            surge_api::walcmd::run(&dir, verify).map(|report| print!("{report}"))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A panic on the supervisor (which reopens the log and rebuilds the shards) leaves the
/// engine without anyone to recover it: abort, and a restart recovers from the log. A panic
/// while a shard is locked for a change aborts in the engine itself (its memory can no
/// longer be trusted). Panics elsewhere (a request task) keep the default behaviour: that
/// request fails, the server stays up.
fn abort_on_engine_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name.starts_with("surge-supervisor") {
            eprintln!("surge: panic on {name}: aborting; restart to recover from the log");
            std::process::abort();
        }
    }));
}

fn serve(cfg: ServeConfig) -> Result<(), String> {
    disable_transparent_huge_pages();
    if let Some(cluster) = cfg.cluster.clone() {
        return serve_cluster(cfg, cluster);
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| format!("creating {}: {e}", cfg.data_dir.display()))?;
    let admin = config::admin_token_hash(&cfg.data_dir, cfg.admin_token.as_deref())?;
    let shards = config::shard_count(&cfg.data_dir, cfg.shards)?;
    let state = AppState::new(admin, cfg.merchant_rate_limit);
    state.console().configure(surge_api::console::ConsoleSettings {
        wal_dir: Some(cfg.data_dir.join("wal")),
        load_results_dir: cfg.load_results_dir.clone(),
    });
    let gateway_host = match &cfg.gateway {
        Some(settings) => Some(Arc::new(surge_api::gateway::host(settings, &cfg.data_dir)?)),
        None => None,
    };
    if let Some(host) = &gateway_host {
        state.set_gateway(host.clone());
    }
    // The relay's database is also where GETs of archived orders and payments are answered
    // from (api/src/cold.rs).
    if let Some(url) = cfg.relay.mariadb_url.as_deref().filter(|u| !u.is_empty()) {
        state.set_cold_store(surge_api::cold::ColdStore::new(url)?);
    }
    runtime()?.block_on(async move {
        let (listener, local) = bind(cfg.listen).await?;
        tracing::info!(%local, data_dir = %cfg.data_dir.display(), shards, "listening (recovering the log)");

        // Serve /healthz at once; every other route answers 503 until recovery is done.
        // No Nagle delay on small responses.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server =
            axum::serve(listener, app(state.clone())).with_graceful_shutdown(surge_api::signal::shutdown_signal());
        let server = tokio::spawn(async move { server.await });

        let wal_dir = cfg.data_dir.join("wal");
        let opener = WalOpener::dir(
            wal_dir,
            surge_wal::Config {
                io_mode: cfg.wal_io,
                zero_ahead_bytes: cfg.wal_zero_ahead_bytes,
                ..surge_wal::Config::default()
            },
        );
        let engine_cfg = EngineConfig {
            shards,
            snapshot_every_records: cfg.snapshot_every_records,
            reopen_interval: Duration::from_secs(1),
            settings: cfg.settings,
        };
        let engine = tokio::task::spawn_blocking(move || Engine::start(opener, engine_cfg))
            .await
            .map_err(|e| format!("recovery task: {e}"))?
            .map_err(|e| format!("recovery failed: {e}"));
        let engine = match engine {
            Ok(engine) => Arc::new(engine),
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        state.set_engine(engine.clone());
        // The console's charts: one sample a second, the last minutes kept.
        surge_api::console::sampler::spawn(state.clone());
        // The gateway worker starts after recovery too, from its own checkpoint in the log.
        if cfg.gateway.is_none() {
            warn_if_gateway_reader_left(&cfg.data_dir.join("wal"));
        }
        let mut worker = match (&cfg.gateway, &gateway_host) {
            (Some(settings), Some(host)) if !settings.external_worker => {
                let wal_dir = cfg.data_dir.join("wal");
                Some(surge_api::gateway::start_worker(settings, local, wal_dir, host, engine)?)
            }
            _ => None,
        };
        // The relay starts after recovery, on the same log directory, reading durable
        // records only; an unreachable broker or database does not hold the server back.
        let mut relay = surge_relay::setup::start(cfg.data_dir.join("wal"), &cfg.relay)?;
        if let Some(relay) = &relay {
            state.set_relay_statuses(relay.statuses().to_vec());
        }
        tracing::info!(%local, "ready");
        let served = server.await.map_err(|e| format!("server task: {e}"))?;
        served.map_err(|e| format!("serving: {e}"))?;
        tracing::info!("drained; stopping the shards and closing the log");
        // The worker reports into the engine: it stops first.
        if let Some(mut worker) = worker.take() {
            tokio::task::spawn_blocking(move || worker.stop()).await.map_err(|e| e.to_string())?;
        }
        if let Some(engine) = state.take_engine() {
            tokio::task::spawn_blocking(move || engine.shutdown()).await.map_err(|e| e.to_string())?;
        }
        if let Some(mut relay) = relay.take() {
            tokio::task::spawn_blocking(move || relay.stop()).await.map_err(|e| e.to_string())?;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Cluster mode: the same HTTP API, on partitions this node takes in the cluster; requests
/// for the others are forwarded to their owners. Each owned partition's events go to Kafka
/// (`--kafka-brokers`) and to the MariaDB cold store (`--mariadb-url`), and its card
/// payments to the gateways (`--gateway-url`), from the node that owns it.
#[cfg(feature = "cluster")]
fn serve_cluster(cfg: ServeConfig, cluster: config::ClusterSettings) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| format!("creating {}: {e}", cfg.data_dir.display()))?;
    let admin = config::admin_token_hash(&cfg.data_dir, cfg.admin_token.as_deref())?;
    let state = AppState::new(admin, cfg.merchant_rate_limit);
    let gateway = match &cfg.gateway {
        Some(settings) => Some(cluster_gateway(settings, &cfg.data_dir, &cluster.advertise)?),
        None => None,
    };
    if let Some(gateway) = &gateway {
        state.set_gateway(gateway.host.clone());
    }
    let mariadb_url = cfg.relay.mariadb_url.clone().filter(|u| !u.is_empty());
    // Archived orders and payments answer from the cold store, as in single-node mode.
    if let Some(url) = &mariadb_url {
        state.set_cold_store(surge_api::cold::ColdStore::new(url)?);
    }
    let readers = surge_api::node::readers::ReaderConfig { kafka: cfg.relay.kafka_config(), mariadb_url, gateway };
    runtime()?.block_on(async move {
        let (listener, local) = bind(cfg.listen).await?;
        let partitions = usize::try_from(cluster.partitions).map_err(|e| e.to_string())?;
        let (engine, failures) =
            Engine::start_cluster(partitions, cfg.settings).map_err(|e| format!("starting the engine: {e}"))?;
        let engine = Arc::new(engine);
        let node = surge_api::node::Node::start(
            engine.clone(),
            failures,
            surge_api::node::NodeConfig {
                etcd_endpoints: cluster.etcd_endpoints,
                node_id: cluster.node_id.clone(),
                advertise: cluster.advertise.clone(),
                partitions: cluster.partitions,
                lease_ttl_s: cluster.lease_ttl_s,
                snapshot_every_records: cfg.snapshot_every_records,
                settings: cfg.settings,
                readers,
                admin_token_hash: admin,
            },
            state.clone(),
        )
        .await?;
        state.set_cluster(surge_api::cluster_http::ClusterHttp::new(node.view.clone())?);
        state.set_engine(engine);
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tracing::info!(%local, node_id = %cluster.node_id, advertise = %cluster.advertise, "ready (cluster mode)");
        let served = axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown(surge_api::signal::shutdown_signal())
            .await;
        tracing::info!("drained; handing the partitions back");
        node.stop().await;
        if let Some(engine) = state.take_engine() {
            tokio::task::spawn_blocking(move || engine.shutdown()).await.map_err(|e| e.to_string())?;
        }
        served.map_err(|e| format!("serving: {e}"))
    })
}

/// Card payments in cluster mode: every node opens card numbers any node sealed, so the key
/// is a file every node is given (`--card-key-file`), never one generated per data
/// directory; the worker runs in the node (one per owned partition); the gateway calls back
/// the node's advertised address by default, which forwards to the payment's owner.
#[cfg(feature = "cluster")]
fn cluster_gateway(
    settings: &config::GatewaySettings,
    data_dir: &std::path::Path,
    advertise: &str,
) -> Result<surge_api::node::readers::GatewayReader, String> {
    if settings.card_key_file.is_none() {
        return Err("cluster mode needs --card-key-file (the same key on every node) with --gateway-url".into());
    }
    if settings.external_worker {
        return Err("--gateway-worker external is not supported in cluster mode".into());
    }
    let host = Arc::new(surge_api::gateway::host(settings, data_dir)?);
    let callback = format!("http://{advertise}{}", surge_api::gateway::CALLBACK_PATH);
    let config = surge_api::gateway::worker_config(settings, callback)?;
    Ok(surge_api::node::readers::GatewayReader { config, card_key: host.card_key.clone(), host })
}

#[cfg(not(feature = "cluster"))]
fn serve_cluster(_cfg: ServeConfig, _cluster: config::ClusterSettings) -> Result<(), String> {
    Err("this surge was built without cluster mode: build it with `--features cluster` (needs protoc)".into())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("starting the runtime: {e}"))
}

/// The listening socket and the address it got.
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("binding {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

/// A data directory that ran the gateway worker keeps its checkpoint: the log is kept from
/// there on until a worker runs again. Say so when this server runs without one.
fn warn_if_gateway_reader_left(wal_dir: &std::path::Path) {
    if let Ok(Some(lsn)) = surge_wal::load_reader_checkpoint(wal_dir, surge_relay::gateway::worker::READER) {
        tracing::warn!(
            checkpoint_lsn = lsn,
            "this log has a gateway worker's checkpoint but no --gateway-url is given: the log is kept from there \
             on until a worker runs again (or `surge wal forget-reader <data-dir> gateway` drops it)"
        );
    }
}

/// Turns transparent huge pages off for this process. The state grows for as long as a sale
/// lasts, and the first touch of a fresh 2 MiB page (zeroing it) happened inside whichever
/// request touched it: 6-14 ms on the dev VM. With 4 KiB pages, 60 s at 11k orders/s, 660k
/// orders: p99 27-53 ms instead of 144-160 ms, RSS 304 MB instead of 370 MB.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
        }
        const PR_SET_THP_DISABLE: i32 = 41;
        // SAFETY: integer arguments only; this option changes a flag of the calling process.
        let rc = unsafe { prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!("could not turn transparent huge pages off: {}", std::io::Error::last_os_error());
        }
    }
}
