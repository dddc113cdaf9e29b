//! The gateway's transactions, their state rules and its idempotency records: plain data
//! behind one lock, no I/O, no clocks, no randomness (callers pass what they drew).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Partial refunds one transaction takes: enough for any real refund flow, and a bound on
/// what one transaction can make the gateway keep.
pub const MAX_REFUNDS_PER_TRANSACTION: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Success,
    Failed,
    Cancelled,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    #[default]
    Automatic,
    Manual,
}

/// What a payment becomes when it settles, drawn when it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Decline(&'static str),
}

pub const LIMIT_EXCEEDED: &str = "limit exceeded";
pub const INVALID_CARD: &str = "invalid card";

/// An accepted payment request, with its outcome already drawn.
pub struct NewPayment {
    pub order_id: String,
    pub card_type: String,
    pub card_last4: String,
    pub amount: u64,
    pub capture: CaptureMode,
    pub callback_url: String,
    pub decision: Decision,
    pub drop_callback: bool,
}

struct Txn {
    key: String,
    order_id: String,
    card_type: String,
    card_last4: String,
    amount: u64,
    capture: CaptureMode,
    status: Status,
    reason: Option<&'static str>,
    /// Separate from the amount: a capture of 0 is still the one capture.
    captured: bool,
    captured_amount: u64,
    refunded_amount: u64,
    refunds: u32,
    callback_url: String,
    decision: Decision,
    drop_callback: bool,
}

/// A transaction as `GET` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TxnView {
    pub transaction_key: String,
    pub order_id: String,
    pub status: Status,
    pub reason: Option<&'static str>,
    pub amount: u64,
    pub capture: CaptureMode,
    pub captured_amount: u64,
    pub refunded_amount: u64,
    pub card_type: String,
    pub card_last4: String,
}

/// The callback a settled transaction sends (its body, and where).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackBody {
    pub transaction_key: String,
    pub order_id: String,
    pub status: Status,
    pub reason: Option<&'static str>,
}

pub struct Settled {
    pub approved: bool,
    pub callback_url: String,
    pub callback: CallbackBody,
    pub drop_callback: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpError {
    NotFound,
    /// The transaction's state does not allow the call (409).
    Conflict(String),
    /// The amount does not fit the transaction (400).
    InvalidAmount(String),
    /// The store is at its bound (503).
    Full(&'static str),
}

/// What an earlier request with the same Idempotency-Key decided.
pub enum Prior<'a> {
    New,
    Replay(&'a [u8]),
    Conflict,
}

struct IdemRecord {
    fingerprint: [u8; 32],
    answer: Vec<u8>,
}

#[derive(Default)]
struct Order {
    txns: Vec<usize>,
    /// Transactions of this order that are SUCCESS now.
    successes: u32,
}

pub struct Store {
    txns: Vec<Txn>,
    by_key: HashMap<String, usize>,
    orders: HashMap<String, Order>,
    idempotency: HashMap<String, IdemRecord>,
    max_transactions: usize,
    max_idempotency_keys: usize,
    key_start: u64,
    /// Orders with more than one SUCCESS transaction, kept as transactions change.
    charged_twice: u64,
}

impl Store {
    pub fn new(max_transactions: usize, max_idempotency_keys: usize, key_start: u64) -> Store {
        Store {
            txns: Vec::new(),
            by_key: HashMap::new(),
            orders: HashMap::new(),
            idempotency: HashMap::new(),
            max_transactions,
            max_idempotency_keys,
            key_start,
            charged_twice: 0,
        }
    }

    pub fn charged_twice(&self) -> u64 {
        self.charged_twice
    }

    pub fn is_full(&self) -> bool {
        self.txns.len() >= self.max_transactions
    }

    /// Whether another Idempotency-Key can be remembered.
    pub fn has_room_for_key(&self) -> bool {
        self.idempotency.len() < self.max_idempotency_keys
    }

    pub fn prior(&self, key: &str, fingerprint: &[u8; 32]) -> Prior<'_> {
        match self.idempotency.get(key) {
            None => Prior::New,
            Some(record) if record.fingerprint == *fingerprint => Prior::Replay(&record.answer),
            Some(_) => Prior::Conflict,
        }
    }

    /// Keeps the answer to `key` (callers check `has_room_for_key` before doing the work).
    pub fn remember(&mut self, key: String, fingerprint: [u8; 32], answer: Vec<u8>) {
        self.idempotency.insert(key, IdemRecord { fingerprint, answer });
    }

    /// Creates a PENDING transaction; returns its key and index (for `settle`).
    pub fn create(&mut self, payment: NewPayment, now_unix_secs: u64) -> Result<(usize, TxnView), OpError> {
        if self.is_full() {
            return Err(OpError::Full("the gateway keeps no more transactions"));
        }
        let index = self.txns.len();
        // A counter, not a random suffix: keys never collide within a run.
        let key = transaction_key(now_unix_secs, self.key_start + index as u64);
        let txn = Txn {
            key: key.clone(),
            order_id: payment.order_id,
            card_type: payment.card_type,
            card_last4: payment.card_last4,
            amount: payment.amount,
            capture: payment.capture,
            status: Status::Pending,
            reason: None,
            captured: false,
            captured_amount: 0,
            refunded_amount: 0,
            refunds: 0,
            callback_url: payment.callback_url,
            decision: payment.decision,
            drop_callback: payment.drop_callback,
        };
        self.orders.entry(txn.order_id.clone()).or_default().txns.push(index);
        self.by_key.insert(key, index);
        self.txns.push(txn);
        Ok((index, self.txns[index].view()))
    }

    /// Applies the decision drawn at creation, unless the transaction left PENDING (it was
    /// cancelled): then nothing happens and no callback is sent.
    pub fn settle(&mut self, index: usize) -> Option<Settled> {
        let txn = self.txns.get_mut(index)?;
        if txn.status != Status::Pending {
            return None;
        }
        let approved = match txn.decision {
            Decision::Approve => {
                txn.status = Status::Success;
                if txn.capture == CaptureMode::Automatic {
                    txn.captured = true;
                    txn.captured_amount = txn.amount;
                }
                true
            }
            Decision::Decline(reason) => {
                txn.status = Status::Failed;
                txn.reason = Some(reason);
                false
            }
        };
        let settled = Settled {
            approved,
            callback_url: txn.callback_url.clone(),
            callback: CallbackBody {
                transaction_key: txn.key.clone(),
                order_id: txn.order_id.clone(),
                status: txn.status,
                reason: txn.reason,
            },
            drop_callback: txn.drop_callback,
        };
        if approved {
            self.count_success(index, 1);
        }
        Some(settled)
    }

    pub fn get(&self, key: &str) -> Option<TxnView> {
        self.by_key.get(key).map(|&index| self.txns[index].view())
    }

    pub fn by_order(&self, order_id: &str) -> Vec<TxnView> {
        self.orders.get(order_id).map(|o| o.txns.iter().map(|&i| self.txns[i].view()).collect()).unwrap_or_default()
    }

    /// Captures an approved, not yet captured transaction (all of it by default).
    pub fn capture(&mut self, key: &str, amount: Option<u64>) -> Result<TxnView, OpError> {
        let txn = self.find_mut(key)?;
        if txn.status != Status::Success {
            return Err(OpError::Conflict(format!("a {} transaction cannot be captured", txn.status.as_str())));
        }
        if txn.captured {
            return Err(OpError::Conflict("the transaction is already captured".into()));
        }
        let amount = amount.unwrap_or(txn.amount);
        if amount > txn.amount {
            return Err(OpError::InvalidAmount(format!("amount {amount} is above the authorization {}", txn.amount)));
        }
        txn.captured = true;
        txn.captured_amount = amount;
        Ok(txn.view())
    }

    /// Voids a transaction; `Ok((view, true))` when it became CANCELLED now.
    pub fn cancel(&mut self, key: &str) -> Result<(TxnView, bool), OpError> {
        let index = *self.by_key.get(key).ok_or(OpError::NotFound)?;
        let txn = &mut self.txns[index];
        let was_success = match txn.status {
            Status::Cancelled | Status::Failed => return Ok((txn.view(), false)),
            Status::Success if txn.captured => {
                return Err(OpError::Conflict("the transaction is captured: refund it instead".into()));
            }
            Status::Success => true,
            Status::Pending => false,
        };
        txn.status = Status::Cancelled;
        let view = txn.view();
        if was_success {
            self.count_success(index, -1);
        }
        Ok((view, true))
    }

    /// Refunds part or all (by default) of what is captured and not yet refunded.
    pub fn refund(&mut self, key: &str, amount: Option<u64>) -> Result<TxnView, OpError> {
        let txn = self.find_mut(key)?;
        let rest = txn.captured_amount - txn.refunded_amount;
        if !txn.captured || txn.captured_amount == 0 {
            return Err(OpError::Conflict("nothing is captured".into()));
        }
        if rest == 0 {
            return Err(OpError::Conflict("everything captured is refunded already".into()));
        }
        if txn.refunds >= MAX_REFUNDS_PER_TRANSACTION {
            return Err(OpError::Conflict(format!(
                "a transaction takes at most {MAX_REFUNDS_PER_TRANSACTION} refunds"
            )));
        }
        let amount = amount.unwrap_or(rest);
        if amount == 0 || amount > rest {
            return Err(OpError::InvalidAmount(format!(
                "amount {amount} is not within 1..={rest} (captured, not refunded)"
            )));
        }
        txn.refunded_amount += amount;
        txn.refunds += 1;
        Ok(txn.view())
    }

    fn find_mut(&mut self, key: &str) -> Result<&mut Txn, OpError> {
        let index = *self.by_key.get(key).ok_or(OpError::NotFound)?;
        Ok(&mut self.txns[index])
    }

    /// One more (`+1`) or one fewer (`-1`) SUCCESS transaction for the order of `index`.
    fn count_success(&mut self, index: usize, change: i32) {
        let Some(order) = self.orders.get_mut(&self.txns[index].order_id) else { return };
        let before = order.successes;
        order.successes = order.successes.saturating_add_signed(change);
        match (before, order.successes) {
            (1, 2) => self.charged_twice += 1,
            (2, 1) => self.charged_twice -= 1,
            _ => {}
        }
    }
}

impl Txn {
    fn view(&self) -> TxnView {
        TxnView {
            transaction_key: self.key.clone(),
            order_id: self.order_id.clone(),
            status: self.status,
            reason: self.reason,
            amount: self.amount,
            capture: self.capture,
            captured_amount: self.captured_amount,
            refunded_amount: self.refunded_amount,
            card_type: self.card_type.clone(),
            card_last4: self.card_last4.clone(),
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Success => "SUCCESS",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }
}

/// `{yyyymmdd}:TR:{hex}`: the UTC date of creation and the sequence number, at least six
/// lowercase hex digits.
pub fn transaction_key(now_unix_secs: u64, sequence: u64) -> String {
    let (year, month, day) = civil_from_days((now_unix_secs / 86_400) as i64);
    format!("{year:04}{month:02}{day:02}:TR:{sequence:06x}")
}

/// Gregorian (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's
/// `civil_from_days`): a date without pulling in a calendar crate.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(order_id: &str, decision: Decision, capture: CaptureMode) -> NewPayment {
        NewPayment {
            order_id: order_id.into(),
            card_type: "SAMSUNG".into(),
            card_last4: "1451".into(),
            amount: 5000,
            capture,
            callback_url: "http://127.0.0.1:1/cb".into(),
            decision,
            drop_callback: false,
        }
    }

    #[test]
    fn dates_of_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_792), (2026, 12, 5));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(transaction_key(20_792 * 86_400 + 86_399, 0x9577c5), "20261205:TR:9577c5");
        assert_eq!(transaction_key(0, 1), "19700101:TR:000001");
    }

    #[test]
    fn keys_are_unique_per_store() {
        let mut store = Store::new(1000, 1000, (1 << 24) - 3);
        let mut keys = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (_, view) = store.create(payment("o", Decision::Approve, CaptureMode::Automatic), 0).unwrap();
            assert!(keys.insert(view.transaction_key));
        }
        assert!(store.is_full());
        assert_eq!(
            store.create(payment("o", Decision::Approve, CaptureMode::Automatic), 0),
            Err(OpError::Full("the gateway keeps no more transactions"))
        );
    }

    #[test]
    fn charged_twice_follows_successes_per_order() {
        let mut store = Store::new(10, 10, 0);
        let (a, _) = store.create(payment("o", Decision::Approve, CaptureMode::Manual), 0).unwrap();
        let (b, _) = store.create(payment("o", Decision::Approve, CaptureMode::Manual), 0).unwrap();
        let (c, _) = store.create(payment("o", Decision::Decline(INVALID_CARD), CaptureMode::Manual), 0).unwrap();
        store.settle(a).unwrap();
        assert_eq!(store.charged_twice(), 0);
        store.settle(c).unwrap();
        assert_eq!(store.charged_twice(), 0, "a decline is no charge");
        store.settle(b).unwrap();
        assert_eq!(store.charged_twice(), 1);
        assert!(store.settle(b).is_none(), "a transaction settles once");
        let key_b = store.txns[b].key.clone();
        assert!(store.cancel(&key_b).unwrap().1);
        assert_eq!(store.charged_twice(), 0, "a voided authorization is no charge");
    }
}
