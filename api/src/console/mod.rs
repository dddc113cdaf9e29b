//! The operators' console at `/admin`: sign-in with the admin token into a session cookie,
//! and pages (overview, merchants, look-up, dead letters, load runs) that a small script
//! keeps live by polling JSON under `/admin/api/`.
//!
//! The console is a client of the engine, never a second path around its rules: every
//! change it makes is a command through `Engine::execute` (create a merchant, rotate an API
//! key, retry a dead letter), decided, logged and answered once durable like any request;
//! every read goes through `Engine::read_each` (in cluster mode `read_owned`: see
//! `read_across`) or the figures `/metrics` shows; the log and `load-results/` are only
//! read, within stated bounds.
//!
//! - `session`: the bounded session table, cookies, CSRF tokens.
//! - `pages`: the HTML (sign-in, the console's shell) and the static assets.
//! - `handlers`: the routes, security headers, sign-in/out, the JSON endpoints.
//! - `overview`: what the operator sees at a glance, as JSON (for other clients too).
//! - `sampler`: the ring of per-second samples behind the overview's charts.
//! - `history`: an order or payment by id across merchants, with its events from the log.
//! - `load_runs`: `surge load` results and reports.

mod handlers;
pub mod history;
pub mod load_runs;
pub mod overview;
mod pages;
pub mod sampler;
pub mod session;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use handlers::{admin_root, routes, security_headers};

/// The console's reads across merchants: every shard; in cluster mode only the partitions
/// this node serves, with a note that says so. A console session is this node's (the
/// others do not know it), so the console does not ask them; the HTTP API's listings do.
pub(crate) async fn read_across<R, F>(
    state: &crate::AppState,
    engine: &crate::engine::Engine,
    f: F,
) -> Result<(Vec<R>, Option<String>), crate::error::ApiError>
where
    R: Send + 'static,
    F: Fn(&surge_core::Shard) -> R + Clone + Send + 'static,
{
    let Some(cluster) = state.cluster() else {
        return Ok((engine.read_each(f).await.map_err(crate::routes::exec_error)?, None));
    };
    let owned = engine.read_owned(f).await.map_err(crate::routes::exec_error)?;
    let note = format!(
        "cluster mode: this node ({}) serves {} of {} partitions, and this page shows those only; another \
         node's console shows its own, and GET /v1/admin/dead-letters lists every node's",
        cluster.view.node_id(),
        owned.len(),
        engine.shard_count()
    );
    Ok((owned.into_iter().map(|(_, r)| r).collect(), Some(note)))
}

/// Where the console reads from; set once by `surge serve` (tests set their own).
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// The log directory whose records the look-up's histories come from (`None`: no
    /// histories).
    pub wal_dir: Option<PathBuf>,
    /// `surge load`'s output directory (`--load-results-dir`).
    pub load_results_dir: PathBuf,
}

/// The default of `--load-results-dir`: where `surge load` writes by default.
pub const LOAD_RESULTS_DIR_DEFAULT: &str = "load-results";

/// The console's state, one per `AppState`.
pub struct Console {
    pub sessions: session::Sessions,
    pub samples: sampler::Samples,
    settings: OnceLock<ConsoleSettings>,
    /// History scans running at once (each reads up to `history::HISTORY_RECORDS_MAX`).
    scans: tokio::sync::Semaphore,
}

impl Default for Console {
    fn default() -> Console {
        Console {
            sessions: session::Sessions::default(),
            samples: sampler::Samples::default(),
            settings: OnceLock::new(),
            scans: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Console {
    /// Once, before serving; later calls are ignored.
    pub fn configure(&self, settings: ConsoleSettings) {
        let _ = self.settings.set(settings);
    }

    pub fn wal_dir(&self) -> Option<PathBuf> {
        self.settings.get().and_then(|s| s.wal_dir.clone())
    }

    pub fn load_results_dir(&self) -> PathBuf {
        self.settings.get().map_or_else(|| PathBuf::from(LOAD_RESULTS_DIR_DEFAULT), |s| s.load_results_dir.clone())
    }
}
