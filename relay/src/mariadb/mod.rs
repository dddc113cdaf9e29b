//! The MariaDB cold store sink: the business state as tables a reporting user can query
//! (`merchants`, `items`, `orders` + `order_lines`, `payments`), the append-only
//! `ledger_entries` and `events`, and `relay_offset`, written exactly once.
//!
//! How: the sink keeps a [`projection::Projection`] of the state, to which it applies every
//! event with core's own `apply`, so the current-state rows are rendered from core's views.
//! A batch is written as two parts, each in ONE transaction with an offset row of its own,
//! on two connections whose transactions run side by side (the server works on both at
//! once): the current-state part (offset row `mariadb`) upserts the rows of every
//! aggregate the batch touched (forward-only on `last_lsn`) and inserts `ledger_entries`;
//! the append-only part (offset row `mariadb.append`) inserts `events`, the larger half of
//! the work. Each transaction locks its
//! offset row, checks it is where this sink left it, writes, sets it to the batch's last
//! LSN and commits; `write` returns once both committed. A position moves only with its
//! rows, so every event is applied once, across crashes of the relay or of the database
//! (also between the two commits: see `resume`), and even with two relays on one database
//! (the offset check refuses the second writer, which then rebuilds and goes on from the
//! stored positions).
//!
//! `resume` (re)connects, migrates the schema (`schema`), reads the two offsets (state C,
//! append A), rebuilds the projection at C from the log directory and returns min(C, A):
//! the driver goes on from the part behind, and each part skips the events it already has
//! (the projection applies only events after C; the append part writes only events after
//! A). If the log's newest snapshot S is newer than C, the state at C is gone: the sink
//! writes the `ledger_entries` rows of C+1..=S and the `events` rows of A+1..=S that the
//! log still has, every
//! current-state row as of S and both offsets, in one transaction, and goes on from S.
//!
//! Time: `resume` rebuilds the projection (snapshot decode plus replay of the records
//! after it) and, behind a snapshot, rewrites every row in one transaction; on a large
//! state that takes longer than a batch, so the driver's `call_timeout_ms` must allow it
//! (a timed-out resume is retried from the start and would never finish).
//!
//! Module map: `schema` (migrations), `projection` (state and what a batch touched), `rows`
//! (table rows from views and events), `sql` (literals and chunked statements), `read`
//! (archived orders and payments read back as views, for the server's GETs).
//!
//! How rows go in: a batch's `events` rows by `LOAD DATA LOCAL INFILE` from a file in a
//! private temporary directory (`MariaDbConfig::load_data`), which costs the server less
//! per row than `INSERT`s; with LOCAL the server skips a duplicate instead of failing, so
//! the sink counts the rows loaded and any warning is an error (the rare snapshot rewrite
//! uses `INSERT`s). The session skips CHECK evaluation (the `JSON` envelope's only
//! constraint; serde_json's output is valid JSON by construction), and the two parts of a
//! batch run on two connections at once.
//!
//! Reading `events`: `event_id` is `{lsn:016x}-{idx:04x}` (single-node mode, whose log is
//! `log_partition` 0), so an event is found by its id through the primary key: `WHERE
//! log_partition = 0 AND lsn = CONV(LEFT(id, 16), 16, 10) AND idx = CONV(RIGHT(id, 4), 16,
//! 10)`; in cluster mode it is `{partition:04x}-{lsn:016x}-{idx:04x}` and the partition is
//! `CONV(LEFT(id, 4), 16, 10)`. `events_by_aggregate` serves an aggregate's history.
//!
//! Cluster mode: one sink per partition, all on one database. Each has its own offset rows
//! (`mariadb.p{p}`, `mariadb.append.p{p}`) and its projection holds only its partition's
//! merchants, whose rows no other partition writes (a merchant is in one partition).
//!
//! Figures (throughput, server CPU per row) and server tuning: docs/performance.md.

mod projection;
pub mod read;
mod rows;
pub mod schema;
mod sql;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, TxOpts, WhiteListFsHandler};
use surge_wal::Lsn;

use self::projection::{Projection, Rebuilt};
use self::rows::{LoadFile, Tables};
use self::sql::Limits;
use crate::batch::{Batch, BatchLimits, LoggedEvent, ReadError};
use crate::sink::{Sink, SinkError};
use crate::source::{LogSource, WalSource};

/// The sink's name: its reader checkpoint in the log directory, its metrics label and its
/// row in `relay_offset`.
pub const SINK_NAME: &str = "mariadb";

/// The `relay_offset` row of the append-only part (`events`), which is
/// written on a connection of its own (`SINK_NAME`'s row is the current-state part's).
pub const APPEND_OFFSET: &str = "mariadb.append";

/// Events rendered between two chances for the other part's connection to move on.
const RENDER_SLICE: usize = 500;

#[derive(Clone)]
pub struct MariaDbConfig {
    /// `mysql://user:password@host:3306/database`; the database must exist.
    pub url: String,
    /// The log the relay reads: the projection is rebuilt from it.
    pub source: Arc<dyn LogSource>,
    /// Cluster mode: the partition whose log this is. Its offset rows are named for it
    /// (`mariadb.p{p}`, `mariadb.append.p{p}`) and its `events` rows carry it, so the sinks
    /// of every partition share one database.
    pub partition: Option<u32>,
    /// Rows per multi-row statement (statements also stay under a quarter of the server's
    /// `max_allowed_packet`).
    pub rows_per_statement: usize,
    /// `events` rows go in by `LOAD DATA LOCAL INFILE` (a file in a private temporary
    /// directory) instead of multi-row `INSERT`s: the server does less per row. If the
    /// server refuses local files (`local_infile=OFF`), the sink falls back to `INSERT`s.
    pub load_data: bool,
}

impl MariaDbConfig {
    /// The cold store of the local log in `wal_dir` (`<data-dir>/wal`).
    pub fn new(url: impl Into<String>, wal_dir: impl Into<PathBuf>) -> MariaDbConfig {
        MariaDbConfig::for_source(url, Arc::new(WalSource::new(wal_dir.into())), None)
    }

    /// The cold store of `source`, the log of `partition` in cluster mode.
    pub fn for_source(url: impl Into<String>, source: Arc<dyn LogSource>, partition: Option<u32>) -> MariaDbConfig {
        MariaDbConfig { url: url.into(), source, partition, rows_per_statement: 1_000, load_data: true }
    }

    /// The offset rows of the two parts: `SINK_NAME`'s and `APPEND_OFFSET`'s, with the
    /// partition in cluster mode.
    fn offset_rows(&self) -> OffsetRows {
        let suffix = self.partition.map(|p| format!(".p{p}")).unwrap_or_default();
        OffsetRows { state: format!("{SINK_NAME}{suffix}"), append: format!("{APPEND_OFFSET}{suffix}") }
    }
}

impl std::fmt::Debug for MariaDbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbConfig")
            .field("url", &redact_password(&self.url))
            .field("source", &self.source)
            .field("partition", &self.partition)
            .field("rows_per_statement", &self.rows_per_statement)
            .field("load_data", &self.load_data)
            .finish()
    }
}

/// `mysql://user:secret@host/db` as `mysql://user:***@host/db`, for logs.
pub fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) else { return url.to_string() };
    match url[scheme_end..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..scheme_end + colon + 1], &url[at..]),
        None => url.to_string(),
    }
}

/// The `relay_offset` rows of the current-state part and of the append-only part.
#[derive(Clone, Debug)]
struct OffsetRows {
    state: String,
    append: String,
}

/// Rows and events this sink committed since it was built.
#[derive(Debug, Default)]
pub struct MariaDbCounters {
    pub rows: AtomicU64,
    pub events: AtomicU64,
    pub transactions: AtomicU64,
    pub rebuilds: AtomicU64,
}

pub struct MariaDbSink {
    config: MariaDbConfig,
    offsets: OffsetRows,
    opts: Opts,
    conn: Option<Conn>,
    /// The append-only part's connection (`events`), whose transaction
    /// runs beside the current-state part's on `conn`.
    append_conn: Option<Conn>,
    /// The server's ids of connections given up while a transaction may have been open; the
    /// next connection kills them so their locks go before the offsets are read.
    abandoned: Vec<u32>,
    /// Where the database's two parts are (`SINK_NAME`'s offset, `APPEND_OFFSET`'s), as
    /// last read or committed. They differ only after a crash between the two commits.
    at: Option<(Lsn, Lsn)>,
    /// A write started and did not return: the connection is in an unknown state.
    in_flight: bool,
    /// `None` until built, and after anything that may have left it half-applied.
    projection: Option<Projection>,
    limits: Limits,
    /// Backfill migrations whose DDL ran and whose rows are still to be written.
    backfills: Vec<&'static schema::Migration>,
    /// Where `events` rows are staged for `LOAD DATA` (`None`: `INSERT`s).
    load_file: Option<LoadPath>,
    counters: Arc<MariaDbCounters>,
}

/// The one file the connection's `LOCAL INFILE` handler may read, in a directory of its
/// own (mode 0700) that goes with the sink.
struct LoadPath {
    dir: PathBuf,
    file: PathBuf,
}

impl LoadPath {
    fn create() -> std::io::Result<LoadPath> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "surge-relay-mariadb-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let file = dir.join("events.tsv");
        Ok(LoadPath { dir, file })
    }
}

impl Drop for LoadPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl MariaDbSink {
    /// Checks the URL; connects only in `resume` (on the driver's thread and runtime).
    pub fn new(config: MariaDbConfig) -> Result<MariaDbSink, SinkError> {
        let opts = Opts::from_url(&config.url)
            .map_err(|e| SinkError::Fatal(format!("the MariaDB URL does not parse: {e}")))?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(SinkError::Fatal("the MariaDB URL names no database (mysql://user@host:3306/db)".into()));
        }
        if config.rows_per_statement == 0 {
            return Err(SinkError::Fatal("rows_per_statement must be at least 1".into()));
        }
        let limits = Limits { rows_max: config.rows_per_statement, ..Limits::for_packet(16 << 20) };
        let load_file = if config.load_data {
            match LoadPath::create() {
                Ok(path) => Some(path),
                Err(e) => {
                    tracing::warn!(
                        sink = SINK_NAME,
                        "no directory for LOAD DATA files ({e}); `events` go in by INSERT"
                    );
                    None
                }
            }
        } else {
            None
        };
        let opts = match &load_file {
            Some(path) => OptsBuilder::from_opts(opts)
                .local_infile_handler(Some(WhiteListFsHandler::new([path.file.clone()])))
                .into(),
            None => opts,
        };
        Ok(MariaDbSink {
            offsets: config.offset_rows(),
            config,
            opts,
            conn: None,
            append_conn: None,
            abandoned: Vec::new(),
            at: None,
            in_flight: false,
            projection: None,
            limits,
            backfills: Vec::new(),
            load_file,
            counters: Arc::default(),
        })
    }

    pub fn counters(&self) -> Arc<MariaDbCounters> {
        self.counters.clone()
    }

    fn drop_connection(&mut self) {
        for conn in [self.conn.take(), self.append_conn.take()].into_iter().flatten() {
            self.abandoned.push(conn.id());
        }
        self.at = None;
    }

    /// The connection, opened, set up and migrated if there is none.
    async fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let mut conn = open(&self.opts).await?;
            for id in std::mem::take(&mut self.abandoned) {
                kill_abandoned(&mut conn, id).await?;
            }
            self.backfills = schema::migrate(&mut conn).await?;
            let packet: Option<u64> =
                conn.query_first("SELECT @@max_allowed_packet").await.map_err(|e| db_error("reading settings", e))?;
            self.limits =
                Limits { rows_max: self.config.rows_per_statement, ..Limits::for_packet(packet.unwrap_or(1 << 20)) };
            let mut register = String::from("INSERT IGNORE INTO relay_offset (sink, lsn, updated_at) VALUES (");
            sql::push_str(&mut register, &self.offsets.state);
            register.push_str(", 0, UTC_TIMESTAMP(3))");
            conn.query_drop(register).await.map_err(|e| db_error("registering the relay offset", e))?;
            // A database written before the parts had offsets of their own (schema version
            // 3 and older) wrote both in one transaction: the append part is where it is.
            let mut register = String::from("INSERT IGNORE INTO relay_offset (sink, lsn, updated_at) SELECT ");
            sql::push_str(&mut register, &self.offsets.append);
            register.push_str(", lsn, UTC_TIMESTAMP(3) FROM relay_offset WHERE sink = ");
            sql::push_str(&mut register, &self.offsets.state);
            conn.query_drop(register).await.map_err(|e| db_error("registering the relay offset", e))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| SinkError::Transient("not connected".into()))
    }

    /// Both connections, opened if there are none.
    async fn connections(&mut self) -> Result<(&mut Conn, &mut Conn), SinkError> {
        self.connection().await?;
        if self.append_conn.is_none() {
            self.append_conn = Some(open(&self.opts).await?);
        }
        match (self.conn.as_mut(), self.append_conn.as_mut()) {
            (Some(conn), Some(append)) => Ok((conn, append)),
            _ => Err(SinkError::Transient("not connected".into())),
        }
    }
    async fn resume_connected(&mut self, checkpoint: Lsn) -> Result<Lsn, SinkError> {
        let offsets = self.offsets.clone();
        let (conn, _) = self.connections().await?;
        // Locking reads: wait for any transaction still holding the rows.
        let state = read_offset(conn, &offsets.state, " LOCK IN SHARE MODE").await?;
        let append = read_offset(conn, &offsets.append, " LOCK IN SHARE MODE").await?;
        // The driver goes on from the part that is behind; the other skips what it has.
        let resumed = state.min(append);
        if state != append {
            tracing::info!(
                sink = SINK_NAME,
                state,
                append,
                "the cold store's parts stopped apart; each goes on from its own offset"
            );
        }
        if checkpoint > resumed {
            tracing::info!(
                sink = SINK_NAME,
                checkpoint,
                stored = resumed,
                "the reader checkpoint is ahead of the database; going on from the database's offset"
            );
        }
        // The projection follows the current-state part.
        if self.projection.as_ref().is_some_and(|p| p.lsn() == state) {
            self.backfill(state).await?;
            self.at = Some((state, append));
            return Ok(resumed);
        }
        self.projection = None;
        self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // Reads the log on the driver's own thread (its runtime serves this sink only).
        match Projection::rebuild(self.config.source.as_ref(), state)? {
            Rebuilt::At(projection) => {
                tracing::info!(sink = SINK_NAME, lsn = state, took = ?started.elapsed(), "cold store projection rebuilt");
                self.projection = Some(projection);
                self.backfill(state).await?;
                self.at = Some((state, append));
                Ok(resumed)
            }
            Rebuilt::Snapshot(projection) => {
                let snapshot = projection.lsn();
                tracing::warn!(
                    sink = SINK_NAME,
                    state,
                    snapshot,
                    "the cold store is behind the log's snapshot; writing the snapshot's state"
                );
                self.write_snapshot_state(state, append, &projection).await?;
                self.projection = Some(projection);
                let append = append.max(snapshot);
                self.at = Some((snapshot, append));
                Ok(snapshot)
            }
        }
    }

    /// The database is at `stored`, older than the snapshot the projection holds: in one
    /// transaction, the append-only rows of `stored+1..=snapshot` the log still has, every
    /// current-state row as of the snapshot, and the offset.
    async fn write_snapshot_state(
        &mut self,
        stored: Lsn,
        append: Lsn,
        projection: &Projection,
    ) -> Result<(), SinkError> {
        let snapshot = projection.lsn();
        let (source, partition) = (self.config.source.clone(), self.config.partition);
        let offsets = self.offsets.clone();
        let limits = self.limits;
        let counters = self.counters.clone();
        let backfills = self.backfills.clone();
        self.in_flight = true;
        let conn = self.connection().await?;
        let mut tx = begin(conn, &offsets.state, stored).await?;
        lock_offset(&mut tx, &offsets.append, append).await?;
        let mut tables = Tables::new(limits);
        let log = (source.as_ref(), partition);
        let events = write_log_rows(&mut tx, &mut tables, log, (stored, append), snapshot).await?;
        for merchant in projection.merchants() {
            tables.everything_of(merchant, snapshot);
            run_all(&mut tx, tables.take_ready(), "writing the snapshot's rows").await?;
        }
        let rows = tables.row_count();
        run_all(&mut tx, tables.finish(), "writing the snapshot's rows").await?;
        // Every row was written: the backfills are done too.
        record_migrations(&mut tx, &backfills).await?;
        move_offset(&mut tx, &offsets.append, snapshot.max(append)).await?;
        commit(tx, &offsets.state, snapshot).await?;
        self.backfills.clear();
        self.in_flight = false;
        counters.rows.fetch_add(rows, Ordering::Relaxed);
        counters.events.fetch_add(events, Ordering::Relaxed);
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sink = SINK_NAME, snapshot, rows, events, "cold store rewritten from the snapshot");
        Ok(())
    }

    /// Writes the rows of pending backfill migrations from the projection (at `stored`, the
    /// database's offset) and records the migrations, in one transaction.
    async fn backfill(&mut self, stored: Lsn) -> Result<(), SinkError> {
        if self.backfills.is_empty() {
            return Ok(());
        }
        let limits = self.limits;
        let backfills = self.backfills.clone();
        self.in_flight = true;
        let (Some(conn), Some(projection)) = (self.conn.as_mut(), self.projection.as_ref()) else {
            return Err(SinkError::Transient("backfill before the projection is built".into()));
        };
        let mut tx = begin(conn, &self.offsets.state, stored).await?;
        let mut tables = Tables::new(limits);
        for migration in &backfills {
            let Some(backfill) = migration.backfill else { continue };
            for merchant in projection.merchants() {
                tables.backfill(merchant, backfill, stored);
                run_all(&mut tx, tables.take_ready(), "backfilling").await?;
            }
        }
        let rows = tables.row_count();
        run_all(&mut tx, tables.finish(), "backfilling").await?;
        record_migrations(&mut tx, &backfills).await?;
        commit(tx, &self.offsets.state, stored).await?;
        self.in_flight = false;
        self.backfills.clear();
        for migration in &backfills {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                rows,
                "cold store schema migrated and backfilled"
            );
        }
        Ok(())
    }

    /// One batch in two transactions that run side by side: the current-state rows with
    /// `SINK_NAME`'s offset on one connection, the append-only rows with `APPEND_OFFSET`'s on
    /// the other. Each part skips what it already has (after a crash between the commits the
    /// driver resumes from the part behind). Returns once both committed.
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let (Some(projection), Some((state_at, append_at))) = (self.projection.as_mut(), self.at) else {
            return Err(SinkError::Transient("write before a successful resume".into()));
        };
        self.in_flight = true;
        let last = batch.last_lsn;
        let state_tables = match state_rows(projection, batch, state_at, self.limits) {
            Ok(tables) => tables,
            Err(e) => {
                // Partly applied: rebuilt by the next resume.
                self.projection = None;
                return Err(e);
            }
        };
        let state_rows = state_tables.row_count();
        let appended = &batch.events[batch.events.partition_point(|e| e.lsn <= append_at)..];
        let (Some(conn), Some(append_conn)) = (self.conn.as_mut(), self.append_conn.as_mut()) else {
            return Err(SinkError::Transient("write before a successful resume".into()));
        };
        let state = async {
            if last <= state_at {
                return Ok(false);
            }
            write_part(conn, &self.offsets.state, state_at, last, state_tables.finish(), "writing rows").await?;
            Ok(true)
        };
        let append = async {
            if last <= append_at {
                return Ok(None);
            }
            let load_file = self.load_file.as_ref();
            append_part(append_conn, &self.offsets.append, appended, self.limits, load_file, append_at, last)
                .await
                .map(Some)
        };
        let (state, append) = tokio::join!(state, append);
        // What committed counts, whatever the other part did.
        let mut at = (state_at, append_at);
        if let Ok(true) = state {
            at.0 = last;
            self.counters.rows.fetch_add(state_rows, Ordering::Relaxed);
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(Some(committed)) = &append {
            if !committed.loaded {
                self.load_file = None;
            }
            at.1 = last;
            self.counters.rows.fetch_add(committed.rows, Ordering::Relaxed);
            self.counters.events.fetch_add(appended.len() as u64, Ordering::Relaxed);
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        }
        self.at = Some(at);
        state?;
        append?;
        self.in_flight = false;
        Ok(())
    }
}

/// The current-state part of a batch: its events after `state_at` applied to the projection,
/// the rows of every aggregate they touched and their `ledger_entries` (the ledger goes with
/// this part to balance the two transactions: `events` alone is the larger). Empty when this
/// part already has the batch. On `Err` the projection is partly applied.
fn state_rows(projection: &mut Projection, batch: &Batch, state_at: Lsn, limits: Limits) -> Result<Tables, SinkError> {
    let mut tables = Tables::new(limits);
    if batch.last_lsn <= state_at {
        return Ok(tables);
    }
    let from = batch.events.partition_point(|e| e.lsn <= state_at);
    let first = batch.first_lsn.max(state_at + 1);
    let touched = projection.apply(first, batch.last_lsn, &batch.events[from..])?;
    for ((merchant, aggregate), last_lsn) in &touched.aggregates {
        let m = projection.merchant(merchant);
        assert!(m.is_some(), "merchant {merchant} was touched by an applied event");
        if let Some(m) = m {
            tables.aggregate(m, aggregate, *last_lsn);
        }
    }
    for ((merchant, _), archived) in &touched.archived {
        tables.archived(merchant, archived);
    }
    for (merchant, order) in &touched.new_orders {
        let live = projection.merchant(merchant).and_then(|m| m.order_view(&projection::order_id(*order)));
        let archived = touched.archived.get(&(merchant.clone(), projection::Aggregate::Order(*order)));
        match (live, archived) {
            (Some(v), _) => tables.order_lines(merchant, &v),
            // Created and archived in the same batch (a relay catching up).
            (None, Some(projection::Archived { view: projection::ArchivedView::Order(v), .. })) => {
                tables.order_lines(merchant, v)
            }
            (None, _) => {}
        }
    }
    for e in &batch.events[from..] {
        tables.ledger_row(e);
    }
    Ok(tables)
}

/// One part's transaction: offset row `row` locked and checked to be at `at`, `statements`
/// run, the offset moved to `last`, committed.
async fn write_part(
    conn: &mut Conn,
    row: &str,
    at: Lsn,
    last: Lsn,
    statements: Vec<String>,
    what: &str,
) -> Result<(), SinkError> {
    let mut tx = begin(conn, row, at).await?;
    run_all(&mut tx, statements, what).await?;
    commit(tx, row, last).await
}

/// Runs `statements` in order in `tx`; `what` names them in an error.
async fn run_all(tx: &mut mysql_async::Transaction<'_>, statements: Vec<String>, what: &str) -> Result<(), SinkError> {
    for statement in statements {
        tx.query_drop(statement).await.map_err(|e| db_error(what, e))?;
    }
    Ok(())
}

/// Records backfill migrations as done (their rows are written in the same transaction).
async fn record_migrations(
    tx: &mut mysql_async::Transaction<'_>,
    migrations: &[&'static schema::Migration],
) -> Result<(), SinkError> {
    let statements = migrations.iter().map(|m| schema::record_statement(m)).collect();
    run_all(tx, statements, "recording a schema migration").await
}

/// The append-only rows of the log's records after `stored` (the state part's offset:
/// `ledger_entries`) and after `append` (`events`), up to `snapshot`, that the log still
/// has; records retention already removed are skipped with a warning. Returns how many
/// events were read.
async fn write_log_rows(
    tx: &mut mysql_async::Transaction<'_>,
    tables: &mut Tables,
    (source, partition): (&dyn LogSource, Option<u32>),
    (stored, append): (Lsn, Lsn),
    snapshot: Lsn,
) -> Result<u64, SinkError> {
    let mut events = 0u64;
    // The parts may be apart (a crash between their commits).
    let mut next = stored.min(append) + 1;
    let open = |from: Lsn| source.open(from).map_err(|e| SinkError::Transient(format!("opening the log: {e}")));
    let mut cursor = open(next)?;
    let limits = BatchLimits { events_max: 10_000, wait_ms: 0 };
    // Bounded by `snapshot`: every round reads records or moves `next` forward.
    while next <= snapshot {
        let batch = match cursor.read_batch(limits) {
            Ok(batch) if batch.is_empty() => {
                return Err(SinkError::Transient(format!("log record {next} is not readable yet")));
            }
            Ok(batch) => batch,
            Err(ReadError::Removed { oldest_lsn, .. }) => {
                let missing_to = oldest_lsn.min(snapshot + 1) - 1;
                tracing::warn!(
                    sink = SINK_NAME,
                    ?partition,
                    "log records {next}..={missing_to} were removed before the cold store had them: \
                     their events are missing from `events` and `ledger_entries` (the state tables are complete)"
                );
                next = missing_to + 1;
                if next <= snapshot {
                    cursor = open(next)?;
                }
                continue;
            }
            Err(e @ ReadError::Record { .. }) => return Err(SinkError::Fatal(e.to_string())),
            Err(e) => return Err(SinkError::Transient(e.to_string())),
        };
        assert_eq!(batch.first_lsn, next, "a cursor yields consecutive records");
        for e in batch.events.iter().take_while(|e| e.lsn <= snapshot) {
            if e.lsn > append {
                tables.event_row(e)?;
            }
            if e.lsn > stored {
                tables.ledger_row(e);
            }
            events += 1;
        }
        run_all(tx, tables.take_ready(), "writing the log's events").await?;
        next = batch.last_lsn + 1;
    }
    Ok(events)
}

/// What the append-only part committed.
struct AppendCommitted {
    rows: u64,
    /// False: the server refused `LOAD DATA LOCAL`, so `INSERT`s were used (and will be).
    loaded: bool,
}

/// The append-only part of a batch (`events` rows after `append_at`) in one transaction
/// with `APPEND_OFFSET`'s offset: by `LOAD DATA` when `load_path` is given, falling back
/// to `INSERT`s if the server refuses local files.
async fn append_part(
    conn: &mut Conn,
    offset: &str,
    events: &[LoggedEvent],
    limits: Limits,
    load_path: Option<&LoadPath>,
    append_at: Lsn,
    last: Lsn,
) -> Result<AppendCommitted, SinkError> {
    let mut tables = event_rows(events, limits, load_path.is_some()).await?;
    let rows = tables.row_count();
    let events_file = tables.take_events_file();
    let mut tx = begin(conn, offset, append_at).await?;
    run_all(&mut tx, tables.finish(), "writing rows").await?;
    let mut loaded = true;
    if let (Some(file), Some(path)) = (events_file, load_path) {
        if !load_events(&mut tx, path, file).await? {
            loaded = false;
            run_all(&mut tx, event_rows(events, limits, false).await?.finish(), "writing events").await?;
        }
    }
    commit(tx, offset, last).await?;
    Ok(AppendCommitted { rows, loaded })
}

/// The `events` rows of `events`, for a `LOAD DATA` file (`to_file`) or as `INSERT`s.
/// Rendered a slice at a time, yielding in between, so the other part's statements go out
/// and run on the server meanwhile.
async fn event_rows(events: &[LoggedEvent], limits: Limits, to_file: bool) -> Result<Tables, SinkError> {
    let mut tables = if to_file { Tables::with_events_file(limits) } else { Tables::new(limits) };
    for slice in events.chunks(RENDER_SLICE) {
        for e in slice {
            tables.event_row(e)?;
        }
        tokio::task::yield_now().await;
    }
    Ok(tables)
}

impl Sink for MariaDbSink {
    fn name(&self) -> &'static str {
        SINK_NAME
    }

    async fn resume(&mut self, checkpoint: Lsn) -> Result<Lsn, SinkError> {
        if self.in_flight {
            // The last call was cut short (error or timeout): its transaction may be open.
            self.in_flight = false;
            self.drop_connection();
        }
        let result = self.resume_connected(checkpoint).await;
        if result.is_err() {
            self.in_flight = false;
            self.drop_connection();
        }
        result
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.write_batch(batch).await
    }
}

/// A new connection with the sink's session settings.
async fn open(opts: &Opts) -> Result<Conn, SinkError> {
    let mut conn = Conn::new(opts.clone()).await.map_err(|e| db_error("connecting", e))?;
    for statement in [
        "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
        // Literal escaping in `sql` relies on backslash escapes being on.
        "SET SESSION time_zone = '+00:00', \
         sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
        // `events.envelope` is `JSON`, i.e. LONGTEXT with CHECK (JSON_VALID(envelope)):
        // every envelope is serde_json's output, valid by construction, and
        // re-parsing it cost the server ~15% of an `events` insert. The column and
        // its constraint stay (other writers are still checked); this session skips
        // CHECK evaluation. No other table has a CHECK constraint.
        "SET SESSION check_constraint_checks = 0",
    ] {
        conn.query_drop(statement).await.map_err(|e| db_error("setting up the session", e))?;
    }
    Ok(conn)
}

/// Kills connection `id`, given up while its transaction may still hold the offset row's
/// lock, so the offset read that follows does not wait for the server to notice. Only if
/// it is still there as this user on this database: after a server restart the id may
/// belong to someone else. (Without the kill the read waits for the lock instead.)
async fn kill_abandoned(conn: &mut Conn, id: u32) -> Result<(), SinkError> {
    let check = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {id} AND DB = DATABASE() \
         AND USER = SUBSTRING_INDEX(USER(), '@', 1)"
    );
    let found: Option<u64> = conn.query_first(check).await.map_err(|e| db_error("looking for a connection", e))?;
    if found.is_none() {
        return Ok(());
    }
    match conn.query_drop(format!("KILL CONNECTION {id}")).await {
        Ok(()) => {
            tracing::info!(sink = SINK_NAME, "killed the abandoned connection {id}");
            Ok(())
        }
        Err(mysql_async::Error::Server(e)) if e.code == 1094 => Ok(()), // gone meanwhile
        Err(e) => Err(db_error("killing the abandoned connection", e)),
    }
}

/// Loads `file` into `events` by `LOAD DATA LOCAL INFILE`, checking that every row went in:
/// with LOCAL the server skips a duplicate key (and turns a bad value into a warning)
/// instead of failing, so a row count short of the file's, or any warning, is an error
/// here, as the duplicate key (1062) of an `INSERT` is. `Ok(false)`: the server does not
/// allow local files (nothing was loaded; the transaction goes on).
async fn load_events(
    tx: &mut mysql_async::Transaction<'_>,
    path: &LoadPath,
    file: LoadFile,
) -> Result<bool, SinkError> {
    if file.rows == 0 {
        return Ok(true);
    }
    std::fs::write(&path.file, file.text.as_bytes())
        .map_err(|e| SinkError::Transient(format!("writing {}: {e}", path.file.display())))?;
    let Some(file_name) = path.file.to_str() else {
        return Err(SinkError::Fatal(format!("{} is not UTF-8", path.file.display())));
    };
    let mut load = String::from("LOAD DATA LOCAL INFILE ");
    sql::push_str(&mut load, file_name);
    // The format `rows::LoadFile` writes (MariaDB's defaults, spelled out).
    load.push_str(
        " INTO TABLE events CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ",
    );
    load.push_str(rows::EVENTS_LOAD_COLUMNS);
    match tx.query_drop(load).await {
        Ok(()) => {}
        // 1148: the used command is not allowed; 3948/4166: local infile disabled.
        Err(mysql_async::Error::Server(e)) if [1148, 3948, 4166].contains(&e.code) => {
            tracing::warn!(sink = SINK_NAME, "the server refuses LOAD DATA LOCAL ({e}); `events` go in by INSERT");
            return Ok(false);
        }
        Err(e) => return Err(db_error("loading events", e)),
    }
    let (loaded, warnings) = (tx.affected_rows(), tx.get_warnings());
    if loaded != file.rows || warnings != 0 {
        return Err(SinkError::Fatal(format!(
            "loading events: {loaded} of {} rows went in with {warnings} warnings \
             (an event already stored? another writer on this database?)",
            file.rows
        )));
    }
    Ok(true)
}

async fn read_offset(conn: &mut Conn, row: &str, lock: &str) -> Result<Lsn, SinkError> {
    let mut query = String::from("SELECT lsn FROM relay_offset WHERE sink = ");
    sql::push_str(&mut query, row);
    query.push_str(lock);
    let lsn: Option<u64> = conn.query_first(query).await.map_err(|e| db_error("reading the relay offset", e))?;
    lsn.ok_or_else(|| SinkError::Transient(format!("the relay offset row {row} is missing")))
}

/// Starts a transaction with offset row `row` locked, and checks that the database is at
/// `expected` (else someone else wrote: retrying resumes from the stored offsets).
async fn begin<'a>(conn: &'a mut Conn, row: &str, expected: Lsn) -> Result<mysql_async::Transaction<'a>, SinkError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await.map_err(|e| db_error("starting a transaction", e))?;
    lock_offset(&mut tx, row, expected).await?;
    Ok(tx)
}

async fn lock_offset(tx: &mut mysql_async::Transaction<'_>, row: &str, expected: Lsn) -> Result<(), SinkError> {
    let mut query = String::from("SELECT lsn FROM relay_offset WHERE sink = ");
    sql::push_str(&mut query, row);
    query.push_str(" FOR UPDATE");
    let stored: Option<u64> = tx.query_first(query).await.map_err(|e| db_error("locking the relay offset", e))?;
    if stored != Some(expected) {
        return Err(SinkError::Transient(format!(
            "the relay offset {row} is {stored:?}, not {expected}: another relay writes to this database"
        )));
    }
    Ok(())
}

async fn move_offset(tx: &mut mysql_async::Transaction<'_>, row: &str, lsn: Lsn) -> Result<(), SinkError> {
    let mut update = String::from("UPDATE relay_offset SET lsn = ");
    sql::push_u64(&mut update, lsn);
    update.push_str(", updated_at = UTC_TIMESTAMP(3) WHERE sink = ");
    sql::push_str(&mut update, row);
    tx.query_drop(update).await.map_err(|e| db_error("moving the relay offset", e))
}

async fn commit(mut tx: mysql_async::Transaction<'_>, row: &str, lsn: Lsn) -> Result<(), SinkError> {
    move_offset(&mut tx, row, lsn).await?;
    tx.commit().await.map_err(|e| db_error("committing", e))
}

/// Server errors that retrying cannot fix (the data or the statement is wrong) are fatal;
/// everything else (connection lost, deadlock, lock wait, server restarting) is transient.
pub(crate) fn db_error(what: &str, e: mysql_async::Error) -> SinkError {
    const PERMANENT: [u16; 9] = [
        1062, // duplicate entry: an append-only row already there, written by someone else
        1064, // syntax
        1054, // unknown column
        1136, // column count
        1264, // out of range
        1292, // bad datetime
        1366, // incorrect value
        1406, // data too long
        4025, // CHECK constraint (JSON_VALID)
    ];
    match &e {
        mysql_async::Error::Server(s) if PERMANENT.contains(&s.code) => SinkError::Fatal(format!("{what}: {e}")),
        mysql_async::Error::Url(_) => SinkError::Fatal(format!("{what}: {e}")),
        _ => SinkError::Transient(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact_password("mysql://u:p@ss@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact_password("mysql://root@127.0.0.1:3306"), "mysql://root@127.0.0.1:3306");
        assert_eq!(redact_password("mysql://h/db"), "mysql://h/db");
        let config = MariaDbConfig::new("mysql://u:secret@h/db", "/tmp/wal");
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn urls_without_a_database_are_refused_before_any_connection() {
        assert!(matches!(
            MariaDbSink::new(MariaDbConfig::new("mysql://root@127.0.0.1:3306", "/tmp/wal")),
            Err(SinkError::Fatal(_))
        ));
        assert!(MariaDbSink::new(MariaDbConfig::new("mysql://root@127.0.0.1:3306/db", "/tmp/wal")).is_ok());
        assert!(matches!(MariaDbSink::new(MariaDbConfig::new("nonsense", "/tmp/wal")), Err(SinkError::Fatal(_))));
    }
}
