//! Reading the cold store back: an archived order or payment as core's view, from the rows
//! the sink wrote. `rows.rs` renders those rows from the same views, so this is its inverse,
//! and the server answers a GET of an id that has left memory with what it showed before.
//!
//! Bounded, so that a slow or unreachable database costs only the requests that asked for
//! an archived id: at most `connections_max` connections (a pool that keeps none while
//! idle), at most `reads_in_flight_max` reads waiting or running (one more is refused at
//! once, `Busy`), and each read, taking a connection included, within `timeout_ms`.
//!
//! Only rows marked `archived_at` are read: a row the sink has not marked yet (the relay
//! lags) may still show a state older than the one the engine archived.

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};
use serde::de::{DeserializeOwned, IntoDeserializer};
use surge_core::ids::{HoldId, Numbered, OrderId, PaymentId};
use surge_core::view::{CardView, LineView, OrderView, PaymentView};
use surge_core::UnixMs;
use tokio::sync::Semaphore;

use super::redact_password;

/// How the server reads the cold store.
#[derive(Clone)]
pub struct ColdReadConfig {
    /// `mysql://user:password@host:3306/database`: the sink's database.
    pub url: String,
    /// Connections open at once, at most.
    pub connections_max: usize,
    /// Reads waiting for a connection or running, at most; more are refused at once.
    pub reads_in_flight_max: usize,
    /// One read (a connection, then two or three queries) takes at most this long.
    pub timeout_ms: u64,
}

impl ColdReadConfig {
    /// Archived reads are rare (a client looking up history): a few connections are
    /// plenty, and a read that takes a second is one the client is better off without.
    pub fn new(url: impl Into<String>) -> ColdReadConfig {
        ColdReadConfig { url: url.into(), connections_max: 4, reads_in_flight_max: 64, timeout_ms: 1_000 }
    }
}

impl std::fmt::Debug for ColdReadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdReadConfig")
            .field("url", &redact_password(&self.url))
            .field("connections_max", &self.connections_max)
            .field("reads_in_flight_max", &self.reads_in_flight_max)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ColdReadError {
    #[error("cold store configuration: {0}")]
    Config(String),
    #[error("{0} cold store reads are in flight already")]
    Busy(usize),
    #[error("the cold store did not answer within {0} ms")]
    TimedOut(u64),
    #[error("the cold store: {0}")]
    Database(String),
    #[error("a cold store row does not read back: {0}")]
    BadRow(String),
}

/// An aggregate read back from the cold store, and when the engine archived it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived<V> {
    pub view: V,
    pub archived_at_ms: UnixMs,
}

/// Reads archived orders and payments. Build it anywhere; its pool starts its background
/// tasks on the first read, inside the caller's tokio runtime.
pub struct ColdReader {
    pool: Pool,
    permits: Semaphore,
    reads_in_flight_max: usize,
    timeout_ms: u64,
}

/// A DATETIME(3) column (UTC, as the sink writes it) as Unix milliseconds, whatever the
/// session's time zone.
macro_rules! ms {
    ($column:literal) => {
        concat!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01', ", $column, ") DIV 1000")
    };
}

const ORDER: &str = concat!(
    "SELECT customer_id, status, total, line_count, hold_id, payment_id, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", ",
    ms!("expires_at"),
    ", ",
    ms!("archived_at"),
    " FROM orders WHERE merchant_id = ? AND id = ? AND archived_at IS NOT NULL"
);
const ORDER_LINES: &str =
    "SELECT sku, qty, unit_price FROM order_lines WHERE merchant_id = ? AND order_id = ? ORDER BY line_no";
const PAYMENT: &str = concat!(
    "SELECT order_id, method, status, capture_mode, amount, captured, refunded, card_kind, card_last4, \
     transaction_key, failure_reason, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", ",
    ms!("archived_at"),
    " FROM payments WHERE merchant_id = ? AND id = ? AND archived_at IS NOT NULL"
);

impl ColdReader {
    pub fn new(config: &ColdReadConfig) -> Result<ColdReader, ColdReadError> {
        let opts =
            Opts::from_url(&config.url).map_err(|e| ColdReadError::Config(format!("the URL does not parse: {e}")))?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(ColdReadError::Config("the URL names no database (mysql://user@host:3306/db)".into()));
        }
        let constraints = PoolConstraints::new(0, config.connections_max)
            .ok_or_else(|| ColdReadError::Config("connections_max must be at least 1".into()))?;
        if config.reads_in_flight_max == 0 {
            return Err(ColdReadError::Config("reads_in_flight_max must be at least 1".into()));
        }
        // Idle connections close after a minute: between rare reads the pool holds nothing
        // open on the database, whose connections the sink needs too.
        let pool_opts =
            PoolOpts::new().with_constraints(constraints).with_inactive_connection_ttl(Duration::from_secs(60));
        let opts: Opts = OptsBuilder::from_opts(opts).pool_opts(pool_opts).into();
        Ok(ColdReader {
            pool: Pool::new(opts),
            permits: Semaphore::new(config.reads_in_flight_max),
            reads_in_flight_max: config.reads_in_flight_max,
            timeout_ms: config.timeout_ms,
        })
    }

    /// Archived order `ord_{n}` of `merchant`, with its lines and payment; `None` while the
    /// sink has not written it as archived.
    pub async fn order(&self, merchant: &str, n: u64) -> Result<Option<Archived<OrderView>>, ColdReadError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(db)?;
            read_order(&mut conn, merchant, n).await
        })
        .await
    }

    /// Archived payment `pay_{n}` of `merchant`; `None` while the sink has not written it
    /// as archived.
    pub async fn payment(&self, merchant: &str, n: u64) -> Result<Option<Archived<PaymentView>>, ColdReadError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(db)?;
            read_payment(&mut conn, merchant, n).await
        })
        .await
    }

    /// Closes the pool's connections.
    pub async fn close(self) {
        let _ = self.pool.disconnect().await;
    }

    async fn bounded<T>(&self, read: impl Future<Output = Result<T, ColdReadError>>) -> Result<T, ColdReadError> {
        let _permit = self.permits.try_acquire().map_err(|_| ColdReadError::Busy(self.reads_in_flight_max))?;
        tokio::time::timeout(Duration::from_millis(self.timeout_ms), read)
            .await
            .map_err(|_| ColdReadError::TimedOut(self.timeout_ms))?
    }
}

fn db(e: mysql_async::Error) -> ColdReadError {
    ColdReadError::Database(e.to_string())
}

async fn read_order(conn: &mut Conn, merchant: &str, n: u64) -> Result<Option<Archived<OrderView>>, ColdReadError> {
    let id = OrderId(n);
    let Some(mut row) = conn.exec_first::<Row, _, _>(ORDER, (merchant, id.to_string())).await.map_err(db)? else {
        return Ok(None);
    };
    let customer_id: String = column(&mut row, 0, "orders.customer_id")?;
    let status: String = column(&mut row, 1, "orders.status")?;
    let line_count: u64 = column(&mut row, 3, "orders.line_count")?;
    let hold_id: Option<String> = column(&mut row, 4, "orders.hold_id")?;
    let payment_id: Option<String> = column(&mut row, 5, "orders.payment_id")?;
    let archived_at_ms = column(&mut row, 9, "orders.archived_at")?;
    let mut view = OrderView {
        id,
        customer_id: customer_id.into(),
        status: named(&status, "orders.status")?,
        lines: Vec::new(),
        total: column(&mut row, 2, "orders.total")?,
        hold_id: hold_id.map(|h| number(Numbered::Hold, &h, "orders.hold_id").map(HoldId)).transpose()?,
        payment: None,
        created_at_ms: column(&mut row, 6, "orders.created_at")?,
        updated_at_ms: column(&mut row, 7, "orders.updated_at")?,
        expires_at_ms: column(&mut row, 8, "orders.expires_at")?,
    };
    let lines: Vec<(String, u64, u64)> = conn.exec(ORDER_LINES, (merchant, id.to_string())).await.map_err(db)?;
    if lines.len() as u64 != line_count {
        return Err(ColdReadError::BadRow(format!("{merchant}/{id}: {} lines of {line_count}", lines.len())));
    }
    view.lines = lines
        .into_iter()
        .map(|(sku, qty, unit_price)| LineView { sku: sku.into(), qty, unit_price: Some(unit_price) })
        .collect();
    if let Some(payment_id) = payment_id {
        let n = number(Numbered::Payment, &payment_id, "orders.payment_id")?;
        // Archived in the same log record as its order and written in the same transaction:
        // an order whose payment is not there is not there yet either.
        let Some(payment) = read_payment(conn, merchant, n).await? else { return Ok(None) };
        view.payment = Some(Box::new(payment.view));
    }
    Ok(Some(Archived { view, archived_at_ms }))
}

async fn read_payment(conn: &mut Conn, merchant: &str, n: u64) -> Result<Option<Archived<PaymentView>>, ColdReadError> {
    let id = PaymentId(n);
    let Some(mut row) = conn.exec_first::<Row, _, _>(PAYMENT, (merchant, id.to_string())).await.map_err(db)? else {
        return Ok(None);
    };
    let text = |row: &mut Row, i, name| column::<String>(row, i, name);
    let (order_id, method, status, capture) = (
        text(&mut row, 0, "payments.order_id")?,
        text(&mut row, 1, "payments.method")?,
        text(&mut row, 2, "payments.status")?,
        text(&mut row, 3, "payments.capture_mode")?,
    );
    let card_kind: Option<String> = column(&mut row, 7, "payments.card_kind")?;
    let card_last4: Option<String> = column(&mut row, 8, "payments.card_last4")?;
    let card = match (card_kind, card_last4) {
        (Some(kind), Some(last4)) => Some(CardView { last4, kind }),
        (None, None) => None,
        _ => return Err(ColdReadError::BadRow(format!("{merchant}/{id}: a card scheme without last4, or back"))),
    };
    let view = PaymentView {
        id,
        order_id: OrderId(number(Numbered::Order, &order_id, "payments.order_id")?),
        method: named(&method, "payments.method")?,
        status: named(&status, "payments.status")?,
        capture: named(&capture, "payments.capture_mode")?,
        amount: column(&mut row, 4, "payments.amount")?,
        captured: column(&mut row, 5, "payments.captured")?,
        refunded: column(&mut row, 6, "payments.refunded")?,
        card,
        transaction_key: column(&mut row, 9, "payments.transaction_key")?,
        failure_reason: column(&mut row, 10, "payments.failure_reason")?,
        created_at_ms: column(&mut row, 11, "payments.created_at")?,
        updated_at_ms: column(&mut row, 12, "payments.updated_at")?,
    };
    Ok(Some(Archived { view, archived_at_ms: column(&mut row, 13, "payments.archived_at")? }))
}

/// Column `i` of `row`, typed.
fn column<T: FromValue>(row: &mut Row, i: usize, name: &str) -> Result<T, ColdReadError> {
    match row.take_opt::<T, usize>(i) {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(ColdReadError::BadRow(format!("{name}: {e}"))),
        None => Err(ColdReadError::BadRow(format!("{name}: no such column"))),
    }
}

/// A status, method or capture mode by the name core gives it (`as_str`, which is also its
/// serde name).
fn named<T: DeserializeOwned>(text: &str, name: &str) -> Result<T, ColdReadError> {
    let text: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = text.into_deserializer();
    T::deserialize(text).map_err(|e| ColdReadError::BadRow(format!("{name}: {e}")))
}

/// The number inside an id of `kind` (`ord_7` -> 7).
fn number(kind: Numbered, id: &str, name: &str) -> Result<u64, ColdReadError> {
    kind.parse(id).ok_or_else(|| ColdReadError::BadRow(format!("{name}: {id:?} is no {}{{n}}", kind.prefix())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_core::command::{CaptureMode, PaymentMethod};
    use surge_core::state::{OrderStatus, PaymentStatus};

    /// The rows hold `as_str`; reading them back goes through serde's names.
    #[test]
    fn every_name_the_rows_hold_reads_back() {
        use OrderStatus as O;
        for s in [O::AwaitingPayment, O::PendingPayment, O::Paid, O::Cancelled, O::Expired, O::Refunded] {
            assert_eq!(named::<OrderStatus>(s.as_str(), "status").ok(), Some(s));
        }
        use PaymentStatus as P;
        for s in [P::Pending, P::Authorized, P::Captured, P::PartiallyRefunded, P::Refunded, P::Failed, P::Voided] {
            assert_eq!(named::<PaymentStatus>(s.as_str(), "status").ok(), Some(s));
        }
        for m in [PaymentMethod::Points, PaymentMethod::Card, PaymentMethod::None] {
            assert_eq!(named::<PaymentMethod>(m.as_str(), "method").ok(), Some(m));
        }
        for c in [CaptureMode::Automatic, CaptureMode::Manual] {
            assert_eq!(named::<CaptureMode>(c.as_str(), "capture").ok(), Some(c));
        }
        assert!(named::<OrderStatus>("shipped", "status").is_err());
    }

    #[test]
    fn bad_configurations_are_refused_before_any_connection() {
        let config = |url: &str, connections_max| ColdReadConfig { connections_max, ..ColdReadConfig::new(url) };
        assert!(ColdReader::new(&config("mysql://root@127.0.0.1:1/db", 2)).is_ok());
        for bad in [config("mysql://root@127.0.0.1:1", 2), config("nonsense", 2), config("mysql://root@h/db", 0)] {
            assert!(matches!(ColdReader::new(&bad), Err(ColdReadError::Config(_))), "{bad:?}");
        }
    }

    /// A database that takes connections and never answers: a read gives up after its
    /// timeout, and a read beyond `reads_in_flight_max` is refused at once, not queued.
    #[tokio::test]
    async fn a_silent_database_costs_one_timeout_and_reads_beyond_the_bound_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = ColdReadConfig {
            reads_in_flight_max: 1,
            timeout_ms: 300,
            ..ColdReadConfig::new(format!("mysql://root@{addr}/db"))
        };
        let reader = ColdReader::new(&config).unwrap();
        let started = std::time::Instant::now();
        let (first, second) = tokio::join!(reader.order("m-1", 1), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let asked = std::time::Instant::now();
            (reader.payment("m-1", 1).await, asked.elapsed())
        });
        assert!(matches!(first, Err(ColdReadError::TimedOut(300))), "{first:?}");
        assert!(matches!(second.0, Err(ColdReadError::Busy(1))), "{:?}", second.0);
        assert!(second.1 < Duration::from_millis(100), "refused at once, not after {:?}", second.1);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        // The permit is back: the next read waits its own timeout again.
        assert!(matches!(reader.payment("m-1", 1).await, Err(ColdReadError::TimedOut(300))));
    }
}
