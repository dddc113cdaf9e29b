//! Schema migrations, run at every (re)connect. `schema_migrations` lists the versions
//! applied; each migration is a list of DDL statements that are each idempotent
//! (`IF NOT EXISTS`), because MariaDB commits DDL one statement at a time: a migration cut
//! short by a crash simply runs again. Append migrations; never edit an applied one.
//!
//! A migration that adds rows derived from the state (a new table of current state) is a
//! `backfill`: its DDL runs here, but its version is recorded only in the transaction that
//! writes every row of the state (`mod.rs`), so a crash in between backfills again.
//!
//! Conventions: every business table is keyed by merchant (ids such as `ord_7` are per
//! merchant); money is `BIGINT UNSIGNED` in minor units; times are `DATETIME(3)` in UTC;
//! rows of current state carry `last_lsn`, the log position of the newest event they show.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::db_error;
use crate::sink::SinkError;

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: &'static [&'static str],
    /// Its tables hold rows derived from the state: fill them from the projection.
    pub backfill: Option<Backfill>,
}

/// What a backfill writes, for every merchant of the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backfill {
    Customers,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "cold store tables",
        backfill: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS merchants (
            id VARCHAR(64) NOT NULL,
            name VARCHAR(256) NOT NULL,
            currency CHAR(3) NOT NULL,
            created_at DATETIME(3) NOT NULL,
            last_lsn BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS items (
            merchant_id VARCHAR(64) NOT NULL,
            sku VARCHAR(64) NOT NULL,
            name VARCHAR(256) NOT NULL,
            price BIGINT UNSIGNED NOT NULL,
            stock BIGINT UNSIGNED NOT NULL,
            available BIGINT UNSIGNED NOT NULL,
            held BIGINT UNSIGNED NOT NULL,
            sold BIGINT UNSIGNED NOT NULL,
            queue_id VARCHAR(64) NULL,
            last_lsn BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (merchant_id, sku)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS orders (
            merchant_id VARCHAR(64) NOT NULL,
            id VARCHAR(32) NOT NULL,
            customer_id VARCHAR(64) NOT NULL,
            status VARCHAR(32) NOT NULL,
            total BIGINT UNSIGNED NOT NULL,
            line_count INT UNSIGNED NOT NULL,
            hold_id VARCHAR(32) NULL,
            payment_id VARCHAR(32) NULL,
            payment_method VARCHAR(16) NULL,
            payment_status VARCHAR(32) NULL,
            created_at DATETIME(3) NOT NULL,
            updated_at DATETIME(3) NOT NULL,
            expires_at DATETIME(3) NULL,
            last_lsn BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (merchant_id, id),
            KEY orders_by_customer (merchant_id, customer_id),
            KEY orders_by_created (merchant_id, created_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS order_lines (
            merchant_id VARCHAR(64) NOT NULL,
            order_id VARCHAR(32) NOT NULL,
            line_no INT UNSIGNED NOT NULL,
            sku VARCHAR(64) NOT NULL,
            qty BIGINT UNSIGNED NOT NULL,
            unit_price BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (merchant_id, order_id, line_no),
            KEY order_lines_by_sku (merchant_id, sku)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS payments (
            merchant_id VARCHAR(64) NOT NULL,
            id VARCHAR(32) NOT NULL,
            order_id VARCHAR(32) NOT NULL,
            method VARCHAR(16) NOT NULL,
            status VARCHAR(32) NOT NULL,
            capture_mode VARCHAR(16) NOT NULL,
            amount BIGINT UNSIGNED NOT NULL,
            captured BIGINT UNSIGNED NOT NULL,
            refunded BIGINT UNSIGNED NOT NULL,
            card_kind VARCHAR(256) NULL,
            card_last4 CHAR(4) NULL,
            transaction_key VARCHAR(256) NULL,
            failure_reason TEXT NULL,
            created_at DATETIME(3) NOT NULL,
            updated_at DATETIME(3) NOT NULL,
            last_lsn BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (merchant_id, id),
            KEY payments_by_order (merchant_id, order_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS ledger_entries (
            merchant_id VARCHAR(64) NOT NULL,
            posting BIGINT UNSIGNED NOT NULL,
            event_id CHAR(21) NOT NULL,
            lsn BIGINT UNSIGNED NOT NULL,
            debit_account VARCHAR(96) NOT NULL,
            credit_account VARCHAR(96) NOT NULL,
            amount BIGINT UNSIGNED NOT NULL,
            kind VARCHAR(32) NOT NULL,
            payment_id VARCHAR(32) NULL,
            occurred_at DATETIME(3) NOT NULL,
            PRIMARY KEY (merchant_id, posting),
            UNIQUE KEY ledger_entries_event (event_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS events (
            lsn BIGINT UNSIGNED NOT NULL,
            idx INT UNSIGNED NOT NULL,
            event_id CHAR(21) NOT NULL,
            type VARCHAR(64) NOT NULL,
            merchant_id VARCHAR(64) NOT NULL,
            aggregate_id VARCHAR(64) NOT NULL,
            occurred_at DATETIME(3) NOT NULL,
            envelope JSON NOT NULL,
            PRIMARY KEY (lsn, idx),
            UNIQUE KEY events_event_id (event_id),
            KEY events_by_aggregate (merchant_id, aggregate_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS relay_offset (
            sink VARCHAR(64) NOT NULL,
            lsn BIGINT UNSIGNED NOT NULL,
            updated_at DATETIME(3) NOT NULL,
            PRIMARY KEY (sink)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 2,
        name: "customers and their points balances",
        backfill: Some(Backfill::Customers),
        statements: &["CREATE TABLE IF NOT EXISTS customers (
            merchant_id VARCHAR(64) NOT NULL,
            id VARCHAR(64) NOT NULL,
            points BIGINT UNSIGNED NOT NULL,
            last_lsn BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (merchant_id, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    },
    Migration {
        version: 3,
        name: "events without the redundant unique index on event_id",
        backfill: None,
        // `event_id` is `{lsn:016x}-{idx:04x}` (`surge_core::envelope::event_id`), a function
        // of the primary key (lsn, idx): the primary key already keeps every event once, and
        // a second unique B-tree cost every insert a lookup and a write. An event is found by
        // its id through the primary key (see `mod.rs`, "Reading `events`"). Dropping an
        // index is an in-place change (no table copy); `IF EXISTS` makes it rerunnable.
        statements: &["ALTER TABLE events DROP INDEX IF EXISTS events_event_id"],
    },
    Migration {
        version: 4,
        name: "the append-only tables have an offset of their own",
        backfill: None,
        // No DDL: `relay_offset` gains the row `mariadb.append` (`mod.rs` copies it from
        // `mariadb` at connect). The version is what keeps an older relay, which knows one
        // offset only, from writing here (it refuses a newer schema).
        statements: &[],
    },
    Migration {
        version: 5,
        name: "orders and payments marked archived",
        backfill: None,
        // The engine archives settled orders and payments (`*.archived` events); their rows
        // stay here, as they were when they left memory, with the time they were archived.
        statements: &[
            "ALTER TABLE orders ADD COLUMN IF NOT EXISTS archived_at DATETIME(3) NULL",
            "ALTER TABLE payments ADD COLUMN IF NOT EXISTS archived_at DATETIME(3) NULL",
        ],
    },
    Migration {
        version: 6,
        name: "events of a cluster's partitions",
        backfill: None,
        // In cluster mode every partition has its own log and LSNs, and the sinks of all
        // partitions write one database: an event is `(log_partition, lsn, idx)` (0 for
        // single-node mode's log) and its id names the partition
        // (`{partition:04x}-{lsn:016x}-{idx:04x}`, 26 characters), as does a ledger entry's
        // (its key stays the posting). Each statement leaves its table done or not;
        // rerunning one rebuilds the same key.
        statements: &[
            "ALTER TABLE events \
             ADD COLUMN IF NOT EXISTS log_partition INT UNSIGNED NOT NULL DEFAULT 0 FIRST, \
             MODIFY event_id VARCHAR(32) NOT NULL, \
             DROP PRIMARY KEY, ADD PRIMARY KEY (log_partition, lsn, idx)",
            "ALTER TABLE ledger_entries MODIFY event_id VARCHAR(32) NOT NULL",
        ],
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the schema up to date and returns the backfill migrations whose rows are still to
/// be written (see [`record_statement`]). Concurrent relays serialize on a named lock. A
/// database migrated by a newer build is refused (`Fatal`): this build would misread it.
pub async fn migrate(conn: &mut Conn) -> Result<Vec<&'static Migration>, SinkError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT UNSIGNED NOT NULL,
            name VARCHAR(255) NOT NULL,
            applied_at DATETIME(3) NOT NULL,
            PRIMARY KEY (version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    .await
    .map_err(|e| db_error("creating schema_migrations", e))?;
    let locked: Option<Option<i64>> = conn
        .query_first("SELECT GET_LOCK(CONCAT(DATABASE(), '.surge_relay_schema'), 30)")
        .await
        .map_err(|e| db_error("taking the migration lock", e))?;
    if locked.flatten() != Some(1) {
        return Err(SinkError::Transient("another relay holds the schema migration lock".into()));
    }
    let result = apply_missing(conn).await;
    let released: Result<Option<Option<i64>>, _> =
        conn.query_first("SELECT RELEASE_LOCK(CONCAT(DATABASE(), '.surge_relay_schema'))").await;
    let released = released.map_err(|e| db_error("releasing the migration lock", e));
    let pending = result?;
    released?;
    Ok(pending)
}

/// `INSERT IGNORE INTO schema_migrations ...` for `migration`.
pub fn record_statement(migration: &Migration) -> String {
    let mut record = String::from("INSERT IGNORE INTO schema_migrations (version, name, applied_at) VALUES (");
    super::sql::push_u64(&mut record, u64::from(migration.version));
    record.push(',');
    super::sql::push_str(&mut record, migration.name);
    record.push_str(", UTC_TIMESTAMP(3))");
    record
}

async fn apply_missing(conn: &mut Conn) -> Result<Vec<&'static Migration>, SinkError> {
    let applied: Vec<u32> = conn
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .await
        .map_err(|e| db_error("reading schema_migrations", e))?;
    let latest = latest_version();
    if let Some(newer) = applied.iter().copied().find(|&v| v > latest) {
        return Err(SinkError::Fatal(format!(
            "the database schema is at version {newer}, newer than this relay knows ({latest}); upgrade the relay"
        )));
    }
    let mut pending = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in migration.statements {
            conn.query_drop(*statement)
                .await
                .map_err(|e| db_error(&format!("schema migration {} ({})", migration.version, migration.name), e))?;
        }
        if migration.backfill.is_some() {
            pending.push(migration);
            continue;
        }
        conn.query_drop(record_statement(migration)).await.map_err(|e| db_error("recording a schema migration", e))?;
        tracing::info!(version = migration.version, name = migration.name, "cold store schema migrated");
    }
    Ok(pending)
}
