//! surge-load: the load generator behind `surge load`.
//!
//! - `sched`: open loop (constant arrival rate, latency from each operation's due time: no
//!   coordinated omission) and closed loop (N connections back to back).
//! - `stats`: hdrhistogram latencies per worker, merged exactly; per-second timeline.
//! - `scenario`: flash-sale, concert, full-flow, retries, mixed, batch, batch-binary, orders,
//!   card-flow;
//!   each sets up its own merchant through the API and notes what the server acknowledged.
//! - `checks`: the invariants checked through the API afterwards, one function each.
//! - `report`: the verdict, the summary, the JSON result and the HTML report (inline SVG).
//! - `http`: a minimal HTTP/1.1 keep-alive client.
//!
//! Entry points: `LoadArgs` (clap) and `run` (blocking, its own runtime) or `run_async`.

pub mod checks;
pub mod http;
pub mod report;
pub mod scenario;
pub mod sched;
pub mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use report::{RunReport, Verdict};
pub use scenario::ScenarioKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoopMode {
    /// Constant arrival rate (--rate); latency counts from each operation's due time.
    Open,
    /// --connections connections, each sending its next operation when answered.
    Closed,
}

/// What `surge load --help` says about its exit codes.
const EXIT_CODES: &str = "Exit codes: 0 every invariant holds and at most --max-error-pct of operations failed; \
1 an invariant is broken, too many operations failed or none ran; 2 the run could not happen (bad arguments, \
set-up failed); 3 the run happened but checked no invariant (--skip-setup), which is not a pass.";

/// `surge load`: drive a surge server with one scenario and check its invariants.
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long, env = "SURGE_LOAD_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Admin token of the server (creates the scenario's merchant).
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What to run.
    #[arg(long, value_enum, default_value = "flash-sale")]
    pub scenario: ScenarioKind,
    /// open: constant arrival rate; closed: back to back on each connection.
    #[arg(long, value_enum, default_value = "open")]
    pub mode: LoopMode,
    /// Operations per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send: 30s, 500ms, 2m (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Connections (each carries one request at a time).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, env = "SURGE_LOAD_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Open loop: how long after --duration late operations may still start.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Customers (each credited with points at set-up).
    #[arg(long, default_value_t = 1000)]
    pub customers: u32,
    /// flash-sale: hot SKUs.
    #[arg(long, default_value_t = 5)]
    pub hot_skus: u32,
    /// flash-sale: stock of each hot SKU.
    #[arg(long, default_value_t = 1000)]
    pub stock: u64,
    /// concert: seats in the seat map (stock 1 each, 50 per row).
    #[arg(long, default_value_t = 50_000)]
    pub seats: u32,
    /// concert: hold TTL in seconds.
    #[arg(long, default_value_t = 2)]
    pub hold_ttl: u64,
    /// concert: share of holds turned into orders (the rest expire).
    #[arg(long, default_value_t = 0.7)]
    pub convert_share: f64,
    /// retries: share of orders sent a second time with the same Idempotency-Key.
    #[arg(long, default_value_t = 0.3)]
    pub retry_share: f64,
    /// batch: operations per POST /v1/batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: u32,
    /// batch-binary: connections of the batching client, each with one batch in flight
    /// (--connections is then the number of concurrent callers).
    #[arg(long, default_value_t = 2)]
    pub client_connections: usize,
    /// card-flow: base URL of the gateway-sim the server pays through (only its /sim/config
    /// and /sim/stats are read).
    #[arg(long, env = "SURGE_LOAD_GATEWAY_SIM_URL", default_value = "http://127.0.0.1:9300")]
    pub gateway_sim_url: String,
    /// card-flow: share of card orders with manual capture (left authorized; the rest are
    /// captured on approval).
    #[arg(long, default_value_t = 0.1)]
    pub manual_share: f64,
    /// card-flow: how long after the load to wait for every card payment to settle
    /// (default 30s, 140s when the sim drops callbacks).
    #[arg(long, value_parser = parse_duration)]
    pub settle_wait: Option<Duration>,
    /// card-flow: approval rate the paid share is judged against (default: the sim's, from
    /// /sim/config).
    #[arg(long)]
    pub approval_rate: Option<f64>,
    /// card-flow: share of card payments that may fail with no gateway decision (no gateway
    /// accepted them in time) before the paid share counts as too low.
    #[arg(long, default_value_t = 0.05)]
    pub max_gave_up_share: f64,
    /// No set-up and no checks (for a target that only answers the requests, such as
    /// surge-baseline). Such a run checks no invariant and exits 3, not 0.
    #[arg(long)]
    pub skip_setup: bool,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Id of the merchant the run creates [default: load-SCENARIO-RUNID]: to know ahead which
    /// partition of a cluster the run's traffic goes to.
    #[arg(long)]
    pub merchant_id: Option<String>,
    /// Directory for the result files (when --json/--html are not given).
    #[arg(long, default_value = "load-results")]
    pub out_dir: PathBuf,
    /// JSON result file (default: OUT_DIR/SCENARIO-UNIXTIME.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// HTML report (default: OUT_DIR/SCENARIO-UNIXTIME.html).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Fail (exit 1) when more than this percentage of operations failed.
    #[arg(long, default_value_t = 1.0)]
    pub max_error_pct: f64,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// The defaults, for `target` (as the command line would give them).
    pub fn for_target(target: &str) -> LoadArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: LoadArgs,
        }
        let mut a = P::parse_from(["surge-load"]).a;
        a.target = target.to_string();
        a
    }
}

/// `30s`, `500ms`, `2m`, `1.5` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s}: not a duration (30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s}: unknown unit {unit} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{s}: not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `surge load` on a runtime of its own; prints the summary; writes the result files.
/// The exit code is the verdict's (see [`EXIT_CODES`]), or 2 when the run could not happen.
pub fn run(args: LoadArgs) -> ExitCode {
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("surge load: starting the runtime: {e}");
                return ExitCode::from(2);
            }
        };
    match runtime.block_on(run_async(&args)) {
        Ok(r) => ExitCode::from(r.verdict.exit_code()),
        Err(e) => {
            eprintln!("surge load: {e}");
            ExitCode::from(2)
        }
    }
}

/// The whole run on the current runtime: set-up, load, checks, summary on stdout, files.
pub async fn run_async(args: &LoadArgs) -> Result<RunReport, String> {
    let report = execute(args).await?;
    print!("{}", report::summary(&report));
    let stem = format!("{}-{}", report.scenario, report.started_unix_s);
    let json = args.json.clone().unwrap_or_else(|| args.out_dir.join(format!("{stem}.json")));
    let html = args.html.clone().unwrap_or_else(|| args.out_dir.join(format!("{stem}.html")));
    for path in [&json, &html] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text + "\n").map_err(|e| format!("writing {}: {e}", json.display()))?;
    std::fs::write(&html, report::html(&report)).map_err(|e| format!("writing {}: {e}", html.display()))?;
    println!("  files        {} {}", json.display(), html.display());
    Ok(report)
}

/// Set-up, load and checks; returns the report without printing or writing anything
/// (besides the progress line unless --quiet).
pub async fn execute(args: &LoadArgs) -> Result<RunReport, String> {
    validate(args)?;
    let target = http::Target::parse(&args.target)?;
    let params = scenario_params(args);
    let params_json = serde_json::to_value(&params).unwrap_or_default();
    let started_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let state = scenario::setup(params, target, args.timeout, args.admin_token.as_deref())
        .await
        .map_err(|e| format!("set-up of {}: {e}", args.scenario.name()))?;
    let workers: Vec<scenario::ScenarioWorker> =
        (0..args.connections as u64).map(|i| scenario::ScenarioWorker::new(Arc::clone(&state), i)).collect();
    let mode = match args.mode {
        LoopMode::Open => sched::Mode::Open { rate: args.rate },
        LoopMode::Closed => sched::Mode::Closed,
    };
    let plan = sched::Plan { mode, duration: args.duration, grace: args.grace, progress: !args.quiet };
    let cpu_before = process_cpu_seconds();
    let driven = sched::drive(&plan, workers).await;
    let cpu_used = process_cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    let checks = checks::run(&state, driven.stats.requests).await;
    let batch = (args.scenario == ScenarioKind::Batch)
        .then(|| (state.inner_total.load(Ordering::Relaxed), state.inner_ok.load(Ordering::Relaxed)));
    let run = Run { started_unix_s, driven, cpu_used, batch, checks, params: params_json };
    Ok(report(args, run))
}

/// Refuses arguments no run can be made of.
fn validate(args: &LoadArgs) -> Result<(), String> {
    if args.mode == LoopMode::Open && !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be above 0".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    let shares = [
        ("--convert-share", args.convert_share),
        ("--retry-share", args.retry_share),
        ("--manual-share", args.manual_share),
        ("--max-gave-up-share", args.max_gave_up_share),
        ("--approval-rate", args.approval_rate.unwrap_or(0.0)),
    ];
    for (name, v) in shares {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be within 0..=1"));
        }
    }
    if args.scenario == ScenarioKind::Concert && args.seats == 0 {
        return Err("--seats must be at least 1".into());
    }
    if args.scenario == ScenarioKind::FlashSale && args.hot_skus == 0 {
        return Err("--hot-skus must be at least 1".into());
    }
    Ok(())
}

fn scenario_params(args: &LoadArgs) -> scenario::Params {
    scenario::Params {
        kind: args.scenario,
        customers: args.customers,
        hot_skus: args.hot_skus,
        stock: args.stock,
        seats: args.seats,
        hold_ttl_s: args.hold_ttl.clamp(1, 3600),
        convert_share: args.convert_share,
        retry_share: args.retry_share,
        batch_size: args.batch_size,
        client_connections: args.client_connections,
        manual_share: args.manual_share,
        gateway_sim_url: args.gateway_sim_url.clone(),
        settle_wait_s: args.settle_wait.map(|d| d.as_secs_f64()),
        approval_rate: args.approval_rate,
        max_gave_up_share: args.max_gave_up_share,
        skip_setup: args.skip_setup,
        seed: args.seed,
        merchant_id: args.merchant_id.clone(),
    }
}

/// What a run produced, before it is judged.
struct Run {
    started_unix_s: u64,
    driven: sched::DriveResult,
    /// CPU seconds the generator used during the load.
    cpu_used: Option<f64>,
    /// batch: operations inside the batches, and those that succeeded.
    batch: Option<(u64, u64)>,
    checks: Vec<checks::Check>,
    params: serde_json::Value,
}

/// The run's figures, checks and verdict.
fn report(args: &LoadArgs, run: Run) -> RunReport {
    let s = &run.driven.stats;
    let elapsed = run.driven.elapsed.as_secs_f64().max(1e-9);
    let mut report = RunReport {
        scenario: args.scenario.name().to_string(),
        mode: match args.mode {
            LoopMode::Open => "open".into(),
            LoopMode::Closed => "closed".into(),
        },
        target: args.target.clone(),
        started_unix_s: run.started_unix_s,
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: run.driven.elapsed.as_secs_f64(),
        rate: (args.mode == LoopMode::Open).then_some(args.rate),
        connections: args.connections,
        planned_ops: run.driven.planned,
        not_sent: run.driven.not_sent,
        ops: s.ops,
        failed_ops: s.failed_ops,
        requests: s.requests,
        errors: s.errors(),
        ops_per_s: s.ops as f64 / elapsed,
        requests_per_s: s.requests as f64 / elapsed,
        inner_ops: run.batch.map(|(total, _)| total),
        inner_ok: run.batch.map(|(_, ok)| ok),
        latency: s.latency(),
        outcomes: s
            .by_label
            .iter()
            .map(|(label, (count, error))| report::OutcomeCount { label: label.clone(), count: *count, error: *error })
            .collect(),
        timeline: s.timeline(),
        generator_cpu_pct: run.cpu_used.map(|c| 100.0 * c / elapsed),
        threads: args.threads.max(1),
        checks: run.checks,
        params: run.params,
        verdict: Verdict::Fail,
        passed: false,
    };
    report.verdict = Verdict::of(report.ops, report.error_pct(), args.max_error_pct, &report.checks);
    report.passed = report.verdict == Verdict::Pass;
    report
}

/// CPU time (user + system) of this process so far, from /proc (Linux); `None` elsewhere.
/// Assumes the usual 100 clock ticks per second.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        if cfg!(target_os = "linux") {
            let a = process_cpu_seconds().expect("/proc/self/stat");
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i));
            }
            std::hint::black_box(x);
            assert!(process_cpu_seconds().unwrap() >= a);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn args_have_usable_defaults() {
        let a = LoadArgs::for_target("http://127.0.0.1:9");
        assert_eq!(a.scenario, ScenarioKind::FlashSale);
        assert_eq!(a.mode, LoopMode::Open);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.target, "http://127.0.0.1:9");
    }
}
