//! Read models: what the API shows of each resource, and `Reply`, the typed response of a
//! command (stored with idempotency records so a replay shows exactly the first answer).
//! Times are Unix milliseconds; the API layer renders them as RFC 3339.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{CaptureMode, PaymentMethod};
use crate::decide::Target;
use crate::event::GatewayOp;
use crate::ids::{token_id, DeadLetterId, HoldId, Numbered, OrderId, PaymentId, UnixMs};
use crate::ledger::{Account, TrialBalance, FIXED_ACCOUNTS};
use crate::state::Shard;
use crate::state::{DeadLetterStatus, HoldStatus, Merchant, OrderStatus, PaymentStatus, StateLine, TokenStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Merchant(MerchantView),
    Item { item: ItemView, created: bool },
    Items { created: u64, updated: u64 },
    Hold(HoldView),
    Order(OrderView),
    Payment(PaymentView),
    Points(PointsView),
    Queue(QueueView),
    Token(TokenView),
    // Appended (stored replies encode variants by index).
    DeadLetter(DeadLetterView),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub created_at_ms: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemView {
    pub sku: Arc<str>,
    pub name: String,
    pub price: u64,
    pub stock: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub queue_id: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineView {
    pub sku: Arc<str>,
    pub qty: u64,
    /// Orders only.
    pub unit_price: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub id: HoldId,
    pub customer_id: Arc<str>,
    pub status: HoldStatus,
    pub lines: Vec<LineView>,
    pub order_id: Option<OrderId>,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    pub expires_at_ms: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: OrderId,
    pub customer_id: Arc<str>,
    pub status: OrderStatus,
    pub lines: Vec<LineView>,
    pub total: u64,
    pub hold_id: Option<HoldId>,
    /// Boxed: inline it made every `Reply` 272 bytes, copied at each move.
    pub payment: Option<Box<PaymentView>>,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    pub expires_at_ms: Option<UnixMs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardView {
    pub last4: String,
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    pub id: PaymentId,
    pub order_id: OrderId,
    pub method: PaymentMethod,
    pub status: PaymentStatus,
    pub capture: CaptureMode,
    pub amount: u64,
    pub captured: u64,
    pub refunded: u64,
    pub card: Option<CardView>,
    pub transaction_key: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
}

/// A gateway operation that kept failing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterView {
    pub id: DeadLetterId,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub op: GatewayOp,
    pub amount: u64,
    /// The operation's idempotency key suffix at the gateway.
    pub key: String,
    pub reason: String,
    pub status: DeadLetterStatus,
    pub attempts: u32,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsView {
    pub customer_id: Arc<str>,
    pub balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub id: String,
    pub max_active: u64,
    pub active_ttl_s: u64,
    pub active: u64,
    pub waiting: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub token: String,
    pub queue_id: String,
    pub customer_id: Arc<str>,
    pub status: TokenStatus,
    /// 1-based place in line while waiting; 0 once active or expired.
    pub position: u64,
    pub active_until_ms: Option<UnixMs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub account: String,
    pub debits: u128,
    pub credits: u128,
    pub balance: i128,
}

impl Merchant {
    pub fn view(&self) -> MerchantView {
        MerchantView {
            id: self.id.to_string(),
            name: self.name.to_string(),
            currency: self.currency.to_string(),
            created_at_ms: self.created_at_ms,
        }
    }

    pub fn item_view(&self, sku: &str) -> Option<ItemView> {
        let i = self.items.get(sku)?;
        Some(ItemView {
            sku: i.sku.clone(),
            name: i.name.to_string(),
            price: i.price,
            stock: i.stock,
            available: i.available,
            held: i.held,
            sold: i.sold,
            queue_id: i.queue.clone(),
        })
    }

    fn customer_id(&self, position: u32) -> Arc<str> {
        self.customers.at(position).map_or_else(|| "".into(), |c| c.id.clone())
    }

    fn line_views(&self, lines: &[StateLine], priced: bool) -> Vec<LineView> {
        lines
            .iter()
            .map(|l| LineView {
                sku: self.items.at(l.item).map_or_else(|| "".into(), |i| i.sku.clone()),
                qty: u64::from(l.qty),
                unit_price: priced.then_some(l.unit_price),
            })
            .collect()
    }

    pub fn hold_view(&self, id: &str) -> Option<HoldView> {
        self.hold_view_n(Numbered::Hold.parse(id)?)
    }

    fn hold_view_n(&self, n: u64) -> Option<HoldView> {
        let h = self.hold(n)?;
        Some(HoldView {
            id: HoldId(n),
            customer_id: self.customer_id(h.customer),
            status: h.status,
            lines: self.line_views(&h.lines, false),
            order_id: h.order.map(OrderId),
            created_at_ms: h.created_at_ms,
            updated_at_ms: h.updated_at_ms,
            expires_at_ms: h.expires_at_ms,
        })
    }

    pub fn order_view(&self, id: &str) -> Option<OrderView> {
        self.order_view_n(Numbered::Order.parse(id)?)
    }

    fn order_view_n(&self, n: u64) -> Option<OrderView> {
        let o = self.order(n)?;
        Some(OrderView {
            id: OrderId(n),
            customer_id: self.customer_id(o.customer),
            status: o.status,
            lines: self.line_views(&o.lines, true),
            total: o.total,
            hold_id: o.hold.map(HoldId),
            payment: o.payment.and_then(|p| self.payment_view_n(p)).map(Box::new),
            created_at_ms: o.created_at_ms,
            updated_at_ms: o.updated_at_ms,
            expires_at_ms: o.expires_at_ms,
        })
    }

    pub fn dead_letter_view(&self, id: &str) -> Option<DeadLetterView> {
        self.dead_letter_view_n(Numbered::DeadLetter.parse(id)?)
    }

    fn dead_letter_view_n(&self, n: u64) -> Option<DeadLetterView> {
        let dl = self.dead_letter(n)?;
        Some(DeadLetterView {
            id: DeadLetterId(n),
            payment_id: PaymentId(dl.payment),
            order_id: OrderId(self.payment(dl.payment).map_or(0, |p| p.order)),
            op: dl.op,
            amount: dl.amount,
            key: dl.key.to_string(),
            reason: dl.reason.to_string(),
            status: dl.status,
            attempts: dl.attempts,
            created_at_ms: dl.created_at_ms,
            updated_at_ms: dl.updated_at_ms,
        })
    }

    /// Dead letters in `status` (all when `None`), newest first, at most `limit`.
    pub fn dead_letter_views(&self, status: Option<DeadLetterStatus>, limit: usize) -> Vec<DeadLetterView> {
        let count = self.dead_letters.len() as u64;
        (1..=count)
            .rev()
            .filter(|n| status.is_none_or(|s| self.dead_letter(*n).is_some_and(|dl| dl.status == s)))
            .take(limit)
            .filter_map(|n| self.dead_letter_view_n(n))
            .collect()
    }

    pub fn payment_view(&self, id: &str) -> Option<PaymentView> {
        self.payment_view_n(Numbered::Payment.parse(id)?)
    }

    fn payment_view_n(&self, n: u64) -> Option<PaymentView> {
        let p = self.payment(n)?;
        Some(PaymentView {
            id: PaymentId(n),
            order_id: OrderId(p.order),
            method: p.method,
            status: p.status,
            capture: p.capture,
            amount: p.amount,
            captured: p.captured,
            refunded: p.refunded,
            card: p.card.as_ref().map(|c| CardView { last4: c.last4.to_string(), kind: c.kind.to_string() }),
            transaction_key: p.transaction_key.as_deref().map(str::to_string),
            failure_reason: p.failure_reason.as_deref().map(str::to_string),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        })
    }

    /// A customer nobody has seen has a balance of 0.
    pub fn points_view(&self, customer: &str) -> PointsView {
        match self.customers.get(customer) {
            Some(c) => PointsView { customer_id: c.id.clone(), balance: c.points },
            None => PointsView { customer_id: customer.into(), balance: 0 },
        }
    }

    pub fn queue_view(&self, id: &str) -> Option<QueueView> {
        let q = self.queues.get(id)?;
        Some(QueueView {
            id: q.id.to_string(),
            max_active: q.max_active,
            active_ttl_s: q.active_ttl_s,
            active: q.active,
            waiting: q.waiting(),
        })
    }

    pub fn token_view(&self, queue: &str, token: &str) -> Option<TokenView> {
        let (seq, _) = crate::ids::parse_token(token)?;
        let view = self.token_view_n(queue, seq)?;
        // The canonical string carries the nonce: equal strings, same token.
        (view.token == token).then_some(view)
    }

    fn token_view_n(&self, queue: &str, seq: u64) -> Option<TokenView> {
        let q = self.queues.get(queue)?;
        let t = q.tokens.get(usize::try_from(seq).ok()?)?;
        let position = if t.status == TokenStatus::Waiting { seq - q.next_waiting + 1 } else { 0 };
        Some(TokenView {
            token: token_id(seq, t.nonce),
            queue_id: q.id.to_string(),
            customer_id: self.customer_id(t.customer),
            status: t.status,
            position,
            active_until_ms: t.active_until_ms,
        })
    }

    /// `None` for a name that is no account, or the points account of an unknown customer.
    pub fn account_view(&self, name: &str) -> Option<AccountView> {
        let account = Account::parse(name)?;
        let totals = match &account {
            Account::CustomerPoints(c) => self.customers.get(c)?.account,
            fixed => self.ledger.fixed[fixed.fixed_index()?],
        };
        Some(AccountView {
            account: account.name(),
            debits: totals.debits,
            credits: totals.credits,
            balance: totals.balance(),
        })
    }

    /// Sums every account of the books (fixed ones and every customer's), not a running total,
    /// so it checks the postings as applied.
    pub fn trial_balance(&self) -> TrialBalance {
        let accounts = self.ledger.fixed.iter().chain(self.customers.iter().map(|c| &c.account));
        let (mut total_debits, mut total_credits) = (0u128, 0u128);
        for a in accounts {
            total_debits += a.debits;
            total_credits += a.credits;
        }
        TrialBalance {
            total_debits,
            total_credits,
            balanced: total_debits == total_credits,
            accounts: (FIXED_ACCOUNTS.len() + self.customers.len()) as u64,
        }
    }
}

impl Shard {
    /// The reply of a decided command, from the state after its events.
    /// `position`: the merchant's, when the caller already has it (saves a hash).
    pub(crate) fn reply(&self, merchant: &str, position: Option<u32>, target: &Target) -> Reply {
        let m = position.and_then(|p| self.merchants.at(p)).or_else(|| self.merchant(merchant));
        let m = m.unwrap_or_else(|| panic!("merchant {merchant} of a decided command is gone"));
        let missing = |what: &str| -> ! { panic!("{what} of a decided command is missing") };
        match target {
            Target::Merchant => Reply::Merchant(m.view()),
            Target::Item { sku, created } => {
                Reply::Item { item: m.item_view(sku).unwrap_or_else(|| missing("item")), created: *created }
            }
            Target::Items { created, updated } => Reply::Items { created: *created, updated: *updated },
            Target::Hold(n) => Reply::Hold(m.hold_view_n(*n).unwrap_or_else(|| missing("hold"))),
            Target::Order(n) => Reply::Order(m.order_view_n(*n).unwrap_or_else(|| missing("order"))),
            Target::Payment(n) => Reply::Payment(m.payment_view_n(*n).unwrap_or_else(|| missing("payment"))),
            Target::Points(customer) => Reply::Points(m.points_view(customer)),
            Target::Queue(id) => Reply::Queue(m.queue_view(id).unwrap_or_else(|| missing("queue"))),
            Target::Token { queue, seq } => {
                Reply::Token(m.token_view_n(queue, *seq).unwrap_or_else(|| missing("token")))
            }
            Target::DeadLetter(n) => {
                Reply::DeadLetter(m.dead_letter_view_n(*n).unwrap_or_else(|| missing("dead letter")))
            }
        }
    }
}
