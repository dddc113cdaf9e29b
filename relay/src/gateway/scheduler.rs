//! The gateway worker's decisions, without I/O: which call or report is due for which card
//! payment, and what each answer changes. The worker (`worker.rs`) feeds it the log's events
//! and the answers of the calls it made, and makes the calls it asks for; tests feed it
//! made-up answers and a made-up clock.
//!
//! A payment's operations (authorize, capture, void, refund) run one at a time, in log
//! order, so that a void waits for the authorization call it must undo. Per operation:
//!
//! - authorize: `POST /api/v1/payments` until a gateway accepts (retries with backoff and full
//!   jitter on 5xx, timeouts and refused connections; a 4xx declines the payment). A payment
//!   whose call went unanswered may exist at that gateway, so it stays with that gateway for
//!   every retry (another gateway could charge it a second time); others go to the first
//!   gateway whose breaker lets them. Accepted: reported (`GatewayAccepted`), then the
//!   callback is awaited; without one after `reconcile_after_ms` the payment is looked up
//!   (`GET`) until the gateway settles it. Not accepted by `submit_deadline_ms`, or not settled
//!   by `settle_deadline_ms`: the worker gives up (`GatewayGaveUp`; core then asks for a void).
//!   The operation ends when the log shows the payment authorized, failed or voided.
//! - capture, refund: the call, retried on 5xx and timeouts, at most `op_attempts_max` times
//!   and `op_deadline_ms` long; then a dead letter (`GatewayOpFailed`). A 4xx is a dead letter
//!   at once (retrying cannot help).
//! - void: `cancel`; without a known transaction, the payment is first looked up by its
//!   `orderId` at every gateway it may have reached (nothing there: nothing to void). A
//!   captured transaction cannot be cancelled, so it is refunded instead.
//!
//! Every call carries the idempotency key `{merchant}:{payment}:{operation key}`, the same on
//! every retry and after a restart: a retry can never charge, capture or refund twice.
//!
//! The checkpoint is the LSN before the oldest operation still open, so a restart reads every
//! open operation again (and the events that closed the others after it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_core::command::CaptureMode;
use surge_core::event::{EventBody, GatewayOp, GatewayRequested};
use surge_core::ids::Numbered;
use surge_core::{Command, Event};
use surge_wal::Lsn;

use super::config::GatewayConfig;
use super::port::PortError;
use super::status::{CallOp, CallResult, GatewayStatus, Lookup};
use crate::breaker::{Breaker, BreakerState, Permit};

pub type Ticket = u64;

/// A card payment, across merchants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentRef {
    pub merchant: Arc<str>,
    pub payment: u64,
}

/// A call to a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `POST /api/v1/payments`; the worker opens `sealed` (the card number) for it.
    Pay {
        order_id: String,
        card_type: Box<str>,
        sealed: Box<[u8]>,
        amount: u64,
        capture: CaptureMode,
        key: String,
    },
    /// `GET /api/v1/payments/{transaction_key}`.
    Lookup {
        transaction_key: Box<str>,
    },
    /// `GET /api/v1/payments?orderId=`.
    LookupOrder {
        order_id: String,
    },
    Capture {
        transaction_key: Box<str>,
        amount: u64,
        key: String,
    },
    Cancel {
        transaction_key: Box<str>,
        key: String,
    },
    /// `amount: None` refunds what is captured and not refunded yet.
    Refund {
        transaction_key: Box<str>,
        amount: Option<u64>,
        key: String,
    },
}

impl Call {
    fn op(&self) -> CallOp {
        match self {
            Call::Pay { .. } => CallOp::Authorize,
            Call::Lookup { .. } | Call::LookupOrder { .. } => CallOp::Lookup,
            Call::Capture { .. } => CallOp::Capture,
            Call::Cancel { .. } => CallOp::Void,
            Call::Refund { .. } => CallOp::Refund,
        }
    }
}

/// What the worker must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Call { ticket: Ticket, gateway: usize, merchant: Arc<str>, call: Call },
    Report { ticket: Ticket, merchant: Arc<str>, command: Command },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Pending,
    Success,
    Failed,
    Cancelled,
}

/// A gateway transaction as the gateway shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    pub transaction_key: String,
    pub status: TxStatus,
    pub reason: Option<String>,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// `POST /api/v1/payments` answered 200.
    Accepted { transaction_key: String },
    /// 200 with one transaction.
    Transaction(Tx),
    /// 200 with the transactions of an `orderId`.
    Transactions(Vec<Tx>),
    /// 4xx: the gateway refused; retrying the same call cannot help.
    Refused { status: u16, code: String, message: String },
    /// 5xx (or a 2xx the worker could not read): the gateway did nothing.
    Failed { status: u16 },
    /// Sent, no answer in time (or the connection broke): it may or may not have been done.
    Timeout,
    /// No connection: nothing was sent.
    Unreachable(String),
    /// The sealed card did not open: nothing was sent.
    CardUnreadable(String),
}

impl CallOutcome {
    fn result(&self) -> CallResult {
        match self {
            CallOutcome::Accepted { .. } | CallOutcome::Transaction(_) | CallOutcome::Transactions(_) => CallResult::Ok,
            CallOutcome::Refused { .. } => CallResult::Refused,
            CallOutcome::Failed { .. } => CallResult::Error,
            CallOutcome::Timeout => CallResult::Timeout,
            CallOutcome::Unreachable(_) | CallOutcome::CardUnreadable(_) => CallResult::Unreachable,
        }
    }

    /// Counts against the gateway's breaker.
    fn is_gateway_failure(&self) -> bool {
        matches!(self, CallOutcome::Failed { .. } | CallOutcome::Timeout | CallOutcome::Unreachable(_))
    }

    fn describe(&self) -> String {
        match self {
            CallOutcome::Accepted { .. } | CallOutcome::Transaction(_) | CallOutcome::Transactions(_) => "ok".into(),
            CallOutcome::Refused { status, code, message } => format!("{status} {code}: {message}"),
            CallOutcome::Failed { status } => format!("the gateway answered {status}"),
            CallOutcome::Timeout => "no answer in time".into(),
            CallOutcome::Unreachable(why) => format!("unreachable: {why}"),
            CallOutcome::CardUnreadable(why) => format!("the card could not be read: {why}"),
        }
    }
}

#[derive(Clone, Debug)]
enum OpKind {
    Authorize { card_type: Box<str>, sealed: Box<[u8]>, capture: CaptureMode },
    Capture,
    Void,
    Refund,
}

#[derive(Clone, Debug)]
enum Stage {
    /// authorize: ask a gateway to take the payment.
    Submit,
    /// authorize: tell the engine which gateway took it.
    ReportAccepted,
    /// authorize: wait for the callback; look it up if it does not come.
    AwaitSettlement { accepted_at_ms: u64, lookups: u32 },
    /// capture, void, refund: find the transaction by `orderId` at these gateways (a bit each).
    Resolve { candidates: u32 },
    /// capture, void, refund: the call itself.
    Call,
    /// void: the transaction was captured, so refund what is left instead.
    RefundRest,
    /// Tell the engine how it ended; the operation is over once it is told.
    Report(Command),
}

#[derive(Debug)]
struct Op {
    lsn: Lsn,
    kind: OpKind,
    /// The operation's key suffix (`authorize`, `capture`, `void`, `refund:{n}`).
    key: Box<str>,
    amount: u64,
    requested_at_ms: u64,
    attempts: u32,
    retry_of: Option<u64>,
    stage: Stage,
    last_error: String,
    /// The log showed the payment settled while a call of this operation was in flight: it
    /// ends when the call returns.
    closed: bool,
}

impl Op {
    fn is_authorize(&self) -> bool {
        matches!(self.kind, OpKind::Authorize { .. })
    }

    fn gateway_op(&self) -> GatewayOp {
        match self.kind {
            OpKind::Authorize { .. } => GatewayOp::Authorize,
            OpKind::Capture => GatewayOp::Capture,
            OpKind::Void => GatewayOp::Void,
            OpKind::Refund => GatewayOp::Refund,
        }
    }
}

#[derive(Debug)]
struct PaymentState {
    /// `{merchant}:pay_{n}`: the gateway's `orderId`, unique per payment.
    order_ref: String,
    ops: VecDeque<Op>,
    busy: Option<Ticket>,
    wake_at: Option<Instant>,
    transaction_key: Option<Box<str>>,
    gateway: Option<usize>,
    /// Gateways an unanswered `POST /payments` of this payment may have reached (a bit each).
    may_be_at: u32,
    /// False when the worker cannot know `may_be_at` (it restarted since the payment was
    /// requested): every gateway is then a candidate.
    may_be_known: bool,
}

struct InFlight {
    payment: PaymentRef,
    /// The gateway called, for calls; `None` for reports.
    gateway: Option<usize>,
    op: CallOp,
    started: Instant,
    probe: bool,
}

struct GatewayBreaker {
    breaker: Breaker,
    probes_in_flight: usize,
}

pub struct Scheduler {
    config: GatewayConfig,
    status: Arc<GatewayStatus>,
    payments: HashMap<PaymentRef, PaymentState>,
    /// Wake-ups; an entry whose time is no longer its payment's `wake_at` is stale.
    timers: BinaryHeap<Reverse<(Instant, u64, PaymentRef)>>,
    timer_seq: u64,
    in_flight: HashMap<Ticket, InFlight>,
    next_ticket: Ticket,
    /// LSNs of open operations (with counts): the oldest bounds the checkpoint.
    open_lsns: BTreeMap<Lsn, u32>,
    /// When each unsettled payment was requested (with counts): the oldest's age is a metric.
    pending_since: BTreeMap<u64, u32>,
    /// The sum of `pending_since`'s counts.
    pending_count: u64,
    ops_open: usize,
    read_lsn: Lsn,
    /// Records up to this LSN were in the log when the worker started: a previous run may
    /// have sent their calls, so where their payments went is not known.
    fresh_after: Lsn,
    breakers: Vec<GatewayBreaker>,
    /// The gateways' names, by index.
    names: Arc<[String]>,
    rng: StdRng,
}

fn bit(gateway: usize) -> u32 {
    1u32 << gateway
}

impl Scheduler {
    /// `read_lsn`: where reading starts (the stored checkpoint); `fresh_after`: the log's
    /// durable LSN when the worker started. `seed` makes the jitter repeatable in tests.
    pub fn new(
        config: GatewayConfig,
        status: Arc<GatewayStatus>,
        read_lsn: Lsn,
        fresh_after: Lsn,
        seed: u64,
    ) -> Scheduler {
        assert!(!config.gateways.is_empty() && config.gateways.len() <= GatewayConfig::GATEWAYS_MAX);
        let breakers = config
            .gateways
            .iter()
            .map(|_| GatewayBreaker { breaker: Breaker::new(config.breaker), probes_in_flight: 0 })
            .collect();
        let names = config.gateways.iter().map(|g| g.name.clone()).collect();
        Scheduler {
            config,
            status,
            payments: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            in_flight: HashMap::new(),
            next_ticket: 1,
            open_lsns: BTreeMap::new(),
            pending_since: BTreeMap::new(),
            pending_count: 0,
            ops_open: 0,
            read_lsn,
            fresh_after,
            breakers,
            names,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The LSN every record up to which needs nothing more from the worker.
    pub fn checkpoint(&self) -> Lsn {
        match self.open_lsns.first_key_value() {
            Some((lsn, _)) => lsn - 1,
            None => self.read_lsn,
        }
    }

    pub fn ops_open(&self) -> usize {
        self.ops_open
    }

    /// Room to read more of the log.
    pub fn can_read(&self) -> bool {
        self.ops_open < self.config.ops_open_max
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the next wake-up is due, if any.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn gateway_index(&self, name: &str) -> Option<usize> {
        self.config.gateways.iter().position(|g| g.name == name)
    }

    fn wake(&mut self, r: &PaymentRef, at: Instant) {
        let Some(st) = self.payments.get_mut(r) else { return };
        if st.busy.is_some() || st.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        st.wake_at = Some(at);
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, r.clone())));
    }

    /// Moves a payment's wake-up to `at`, earlier or later.
    fn reschedule(&mut self, r: &PaymentRef, at: Instant) {
        if let Some(st) = self.payments.get_mut(r) {
            st.wake_at = None;
        }
        self.wake(r, at);
    }

    // ---- the log ------------------------------------------------------------------------

    /// Takes the events of the record at `lsn` (all of them; the worker needs only a few).
    pub fn on_record(&mut self, lsn: Lsn, events: &[Event], now: Instant) {
        debug_assert!(lsn > self.read_lsn, "records come in log order");
        for event in events {
            match &event.body {
                EventBody::GatewayRequested(e) => self.requested(lsn, &event.merchant, event.at_ms, e, now),
                EventBody::PaymentSubmittedVia(e) => {
                    let gateway = self.gateway_index(&e.gateway);
                    if let Some(st) = self.payments.get_mut(&payment_ref(&event.merchant, e.payment)) {
                        st.transaction_key = Some(e.transaction_key.clone());
                        st.gateway = gateway.or(st.gateway);
                    }
                }
                EventBody::PaymentSubmitted(e) => {
                    if let Some(st) = self.payments.get_mut(&payment_ref(&event.merchant, e.payment)) {
                        st.transaction_key = Some(e.transaction_key.clone());
                    }
                }
                EventBody::PaymentAuthorized(e) => self.settled(&payment_ref(&event.merchant, e.payment), now),
                EventBody::PaymentFailed(e) => self.settled(&payment_ref(&event.merchant, e.payment), now),
                EventBody::PaymentVoided(e) => self.settled(&payment_ref(&event.merchant, e.payment), now),
                _ => {}
            }
        }
        self.read_lsn = lsn;
        self.publish_gauges();
    }

    /// The log has nothing beyond `lsn` yet: every record up to it needs nothing more.
    pub fn read_up_to(&mut self, lsn: Lsn) {
        self.read_lsn = self.read_lsn.max(lsn);
    }

    fn requested(&mut self, lsn: Lsn, merchant: &Arc<str>, at_ms: u64, e: &GatewayRequested, now: Instant) {
        let r = payment_ref(merchant, e.payment);
        let gateway = e.gateway.as_deref().and_then(|g| self.gateway_index(g));
        let kind = match (e.op, &e.card) {
            (GatewayOp::Authorize, Some(card)) => {
                OpKind::Authorize { card_type: card.kind.clone(), sealed: card.sealed.clone(), capture: e.capture }
            }
            // Core never logs one without the other; a record that did would be refused by apply.
            (GatewayOp::Authorize, None) => return,
            (GatewayOp::Capture, _) => OpKind::Capture,
            (GatewayOp::Void, _) => OpKind::Void,
            (GatewayOp::Refund, _) => OpKind::Refund,
        };
        let authorize = matches!(kind, OpKind::Authorize { .. });
        let fresh = lsn > self.fresh_after;
        let st = self.payments.entry(r.clone()).or_insert_with(|| PaymentState {
            order_ref: format!("{merchant}:{}", Numbered::Payment.id(e.payment)),
            ops: VecDeque::new(),
            busy: None,
            wake_at: None,
            transaction_key: None,
            gateway: None,
            may_be_at: 0,
            // Only an authorization this worker saw requested can tell where it went.
            may_be_known: authorize && fresh,
        });
        if st.transaction_key.is_none() {
            st.transaction_key.clone_from(&e.transaction_key);
        }
        if st.gateway.is_none() {
            st.gateway = gateway;
        }
        st.ops.push_back(Op {
            lsn,
            kind,
            key: e.key.clone(),
            amount: e.amount,
            requested_at_ms: at_ms,
            attempts: 0,
            retry_of: e.retry_of,
            stage: if authorize { Stage::Submit } else { Stage::Call },
            last_error: String::new(),
            closed: false,
        });
        *self.open_lsns.entry(lsn).or_default() += 1;
        self.ops_open += 1;
        if authorize {
            *self.pending_since.entry(at_ms).or_default() += 1;
            self.pending_count += 1;
        }
        self.wake(&r, now);
    }

    /// The log shows the payment authorized, failed or voided: its authorization is over.
    fn settled(&mut self, r: &PaymentRef, now: Instant) {
        let Some(st) = self.payments.get_mut(r) else { return };
        let busy_front = st.busy.is_some();
        let Some(i) = st.ops.iter().position(Op::is_authorize) else { return };
        if i == 0 && busy_front {
            st.ops[0].closed = true;
            return;
        }
        if let Some(op) = st.ops.remove(i) {
            self.finished(&op);
        }
        if !self.forget_if_idle(r) {
            self.reschedule(r, now);
        }
    }

    fn finished(&mut self, op: &Op) {
        if let Some(n) = self.open_lsns.get_mut(&op.lsn) {
            *n -= 1;
            if *n == 0 {
                self.open_lsns.remove(&op.lsn);
            }
        }
        self.ops_open -= 1;
        if op.is_authorize() {
            self.pending_count -= 1;
            if let Some(n) = self.pending_since.get_mut(&op.requested_at_ms) {
                *n -= 1;
                if *n == 0 {
                    self.pending_since.remove(&op.requested_at_ms);
                }
            }
        }
    }

    /// Forgets payment `r` if it has nothing left to do (memory holds open work only); true
    /// if it is gone. Called where a payment's work ends, so no pass over all of them is needed.
    fn forget_if_idle(&mut self, r: &PaymentRef) -> bool {
        let idle = self.payments.get(r).is_none_or(|st| st.ops.is_empty() && st.busy.is_none());
        if idle {
            self.payments.remove(r);
        }
        idle
    }

    fn publish_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.status.payments_pending.store(self.pending_count, Relaxed);
        self.status.oldest_pending_at_ms.store(self.pending_since.keys().next().copied().unwrap_or(0), Relaxed);
        self.status.ops_open.store(self.ops_open as u64, Relaxed);
        self.status.in_flight.store(self.in_flight.len() as u64, Relaxed);
        self.status.read_lsn.store(self.read_lsn, Relaxed);
    }

    // ---- deciding -------------------------------------------------------------------------

    /// The calls and reports due at `now` (wall clock `now_ms`), as many as there is room for.
    pub fn poll(&mut self, now: Instant, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        // Bounded: every round pops a timer, and the heap only grows by a payment's wake-up.
        while self.in_flight.len() < self.config.in_flight_max {
            let Some(Reverse((at, _, _))) = self.timers.peek() else { break };
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, r))) = self.timers.pop() else { break };
            let Some(st) = self.payments.get_mut(&r) else { continue };
            if st.wake_at != Some(at) || st.busy.is_some() {
                continue; // stale
            }
            st.wake_at = None;
            if let Some(action) = self.step(&r, now, now_ms) {
                actions.push(action);
            }
            self.forget_if_idle(&r);
        }
        self.publish_gauges();
        actions
    }

    fn deadline(&self, now: Instant, now_ms: u64, at_ms: u64) -> Instant {
        now + Duration::from_millis(at_ms.saturating_sub(now_ms))
    }

    fn backoff(&mut self, attempts: u32) -> Duration {
        let ceiling =
            self.config.backoff_min_ms.saturating_mul(1u64 << attempts.min(20)).min(self.config.backoff_max_ms);
        Duration::from_millis(self.rng.random_range(self.config.backoff_min_ms.min(ceiling)..=ceiling))
    }

    /// May a call go to `gateway` now? `Err(when to ask again)` otherwise.
    fn permit(&mut self, gateway: usize, now: Instant) -> Result<bool, Instant> {
        let probes_max = self.config.probes_in_flight_max;
        let b = &mut self.breakers[gateway];
        let (permit, changed) = b.breaker.permit(now);
        if let Some(state) = changed {
            self.status.set_breaker(gateway, state);
            tracing::warn!(gateway = %self.config.gateways[gateway].name, "gateway circuit breaker {}", state.as_str());
        }
        match permit {
            Permit::Refused(wait) => Err(now + wait),
            Permit::Allowed if b.breaker.state() == BreakerState::HalfOpen => {
                if b.probes_in_flight >= probes_max {
                    Err(now + Duration::from_millis(100))
                } else {
                    Ok(true)
                }
            }
            Permit::Allowed => Ok(false),
        }
    }

    /// The first of `candidates` (a bit mask) whose breaker lets a call out.
    fn pick(&mut self, candidates: u32, now: Instant) -> Result<(usize, bool), Option<Instant>> {
        let mut retry_at: Option<Instant> = None;
        for g in 0..self.config.gateways.len() {
            if candidates & bit(g) == 0 {
                continue;
            }
            match self.permit(g, now) {
                Ok(probe) => return Ok((g, probe)),
                Err(at) => retry_at = Some(retry_at.map_or(at, |r| r.min(at))),
            }
        }
        Err(retry_at)
    }

    fn all_gateways(&self) -> u32 {
        (0..self.config.gateways.len()).fold(0, |m, g| m | bit(g))
    }

    /// Decides the front operation of payment `r`: an action, a later wake-up, or nothing.
    fn step(&mut self, r: &PaymentRef, now: Instant, now_ms: u64) -> Option<Action> {
        // Bounded: every round either returns or finishes the front operation.
        for _ in 0..=self.payments.get(r).map_or(0, |st| st.ops.len()) {
            let next = self.decide(r, now, now_ms)?;
            match next {
                Next::Act(gateway, probe, what) => return Some(self.act(r, gateway, probe, what, now)),
                Next::Wait(at) => {
                    self.reschedule(r, at);
                    return None;
                }
                Next::Finish => self.finish_front(r),
            }
        }
        None
    }

    fn finish_front(&mut self, r: &PaymentRef) {
        let op = self.payments.get_mut(r).and_then(|st| st.ops.pop_front());
        if let Some(op) = op {
            self.finished(&op);
        }
    }

    fn decide(&mut self, r: &PaymentRef, now: Instant, now_ms: u64) -> Option<Next> {
        let all = self.all_gateways();
        let limits = self.config.clone_limits();
        let names = self.names.clone();
        // Bounded: a plan that moves the operation to another stage does so at most a few
        // times (submit -> report, call -> resolve -> report, ...).
        for _ in 0..8 {
            let plan = {
                let st = self.payments.get_mut(r)?;
                plan(r, st, all, &limits, &names, now_ms)
            };
            let wait = |this: &Self, at_ms: u64| this.deadline(now, now_ms, at_ms);
            return Some(match plan {
                Plan::Again => continue,
                Plan::Finish => Next::Finish,
                Plan::Report(command) => Next::Act(None, false, What::Report(command)),
                Plan::Wait { at_ms } => Next::Wait(wait(self, at_ms)),
                Plan::Call { candidates, call, wait_at_ms } => match self.pick(candidates, now) {
                    Ok((g, probe)) => Next::Act(Some(g), probe, What::Call(call)),
                    Err(retry_at) => {
                        let fallback = wait(self, wait_at_ms);
                        Next::Wait(retry_at.map_or(fallback, |at| at.min(fallback)))
                    }
                },
            });
        }
        None
    }

    fn act(&mut self, r: &PaymentRef, gateway: Option<usize>, probe: bool, what: What, now: Instant) -> Action {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if let Some(st) = self.payments.get_mut(r) {
            st.busy = Some(ticket);
            st.wake_at = None;
        }
        let op = match &what {
            What::Call(call) => call.op(),
            What::Report(_) => CallOp::Lookup,
        };
        if let (Some(g), true) = (gateway, probe) {
            self.breakers[g].probes_in_flight += 1;
        }
        self.in_flight.insert(ticket, InFlight { payment: r.clone(), gateway, op, started: now, probe });
        match what {
            What::Call(call) => {
                Action::Call { ticket, gateway: gateway.unwrap_or(0), merchant: r.merchant.clone(), call }
            }
            What::Report(command) => Action::Report { ticket, merchant: r.merchant.clone(), command },
        }
    }

    // ---- answers --------------------------------------------------------------------------

    /// A call's answer, at `now`.
    pub fn on_call(&mut self, ticket: Ticket, outcome: CallOutcome, now: Instant) {
        let Some(flight) = self.in_flight.remove(&ticket) else { return };
        let took = now.saturating_duration_since(flight.started);
        if let Some(g) = flight.gateway {
            let b = &mut self.breakers[g];
            if flight.probe {
                b.probes_in_flight = b.probes_in_flight.saturating_sub(1);
            }
            if !matches!(outcome, CallOutcome::CardUnreadable(_)) {
                let changed = b.breaker.record(now, !outcome.is_gateway_failure(), took);
                if let Some(state) = changed {
                    self.status.set_breaker(g, state);
                    tracing::warn!(gateway = %self.config.gateways[g].name, "gateway circuit breaker {}", state.as_str());
                }
                self.status.record_call(g, flight.op, outcome.result(), took.as_secs_f64());
            }
        }
        let r = flight.payment;
        let attempts = self.payments.get(&r).and_then(|st| st.ops.front()).map_or(0, |op| op.attempts);
        let backoff = self.backoff(attempts);
        let reconcile_interval = Duration::from_millis(self.config.reconcile_interval_ms);
        let status = self.status.clone();
        let after = match self.payments.get_mut(&r) {
            Some(st) => answered(&r, st, flight.gateway.unwrap_or(0), flight.op, outcome, &status),
            None => After::Wake,
        };
        match after {
            After::Wake => self.wake(&r, now),
            After::Retry => self.reschedule(&r, now + backoff),
            After::Poll => self.reschedule(&r, now + reconcile_interval),
            After::Finish => {
                self.finish_front(&r);
                self.wake(&r, now);
            }
        }
        self.forget_if_idle(&r);
        self.publish_gauges();
    }

    /// A report's result.
    pub fn on_report(&mut self, ticket: Ticket, result: Result<(), PortError>, now: Instant, now_ms: u64) {
        let Some(flight) = self.in_flight.remove(&ticket) else { return };
        let r = flight.payment;
        self.status.record_report(match &result {
            Ok(()) => 0,
            Err(PortError::Refused(_)) => 1,
            Err(PortError::Unavailable(_)) => 2,
        });
        let backoff = self.backoff(2);
        let Some(st) = self.payments.get_mut(&r) else { return };
        st.busy = None;
        let Some(op) = st.ops.front_mut() else { return };
        if let Err(PortError::Unavailable(why)) = &result {
            op.last_error = why.clone();
            self.reschedule(&r, now + backoff);
            return;
        }
        if let Err(PortError::Refused(why)) = &result {
            tracing::info!(merchant = %r.merchant, payment = r.payment, "the engine refused a gateway report: {why}");
        }
        match &op.stage {
            Stage::ReportAccepted => {
                op.stage = Stage::AwaitSettlement { accepted_at_ms: now_ms, lookups: 0 };
                if op.closed {
                    self.finish_front(&r);
                }
            }
            Stage::Report(command) => {
                match command {
                    Command::GatewayGaveUp { .. } if result.is_ok() => {
                        self.status.gave_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Command::GatewayOpFailed { .. } if result.is_ok() => {
                        self.status.dead_lettered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {}
                }
                self.finish_front(&r);
            }
            _ => {}
        }
        self.wake(&r, now);
        self.forget_if_idle(&r);
        self.publish_gauges();
    }
}

/// What is next for the front operation of a payment (which it may move to another stage).
enum Plan {
    /// The stage changed: plan again.
    Again,
    Finish,
    Report(Command),
    Wait {
        at_ms: u64,
    },
    /// A call to the first of `candidates` that may be called; none may: wait, at most
    /// until `wait_at_ms`.
    Call {
        candidates: u32,
        call: Call,
        wait_at_ms: u64,
    },
}

fn plan(r: &PaymentRef, st: &mut PaymentState, all: u32, limits: &Limits, names: &[String], now_ms: u64) -> Plan {
    let Some(op) = st.ops.front_mut() else { return Plan::Finish };
    let payment_id = Numbered::Payment.id(r.payment);
    let idem = |suffix: &str| format!("{}:{payment_id}:{suffix}", r.merchant);
    match op.stage.clone() {
        Stage::Submit => {
            let deadline_ms = op.requested_at_ms.saturating_add(limits.submit_deadline_ms);
            if now_ms >= deadline_ms {
                let why = if op.last_error.is_empty() { "no gateway was available" } else { op.last_error.as_str() };
                op.stage = Stage::Report(Command::GatewayGaveUp {
                    payment: payment_id,
                    reason: truncate(&format!("no gateway accepted the payment in time ({why})")),
                });
                return Plan::Again;
            }
            if st.transaction_key.is_some() && st.gateway.is_some() {
                // A previous run had it accepted (the log says where): look it up at once.
                op.stage = Stage::AwaitSettlement { accepted_at_ms: now_ms, lookups: 1 };
                return Plan::Again;
            }
            if !st.may_be_known && st.may_be_at == 0 && all.count_ones() > 1 {
                // A previous run may have sent it to any gateway: ask them all first, so it
                // is never charged at two.
                op.stage = Stage::Resolve { candidates: all };
                return Plan::Again;
            }
            let OpKind::Authorize { card_type, sealed, capture } = &op.kind else { return Plan::Finish };
            let call = Call::Pay {
                order_id: st.order_ref.clone(),
                card_type: card_type.clone(),
                sealed: sealed.clone(),
                amount: op.amount,
                capture: *capture,
                key: idem(&op.key),
            };
            // Where an unanswered request may have gone, and only there: another gateway
            // could charge the card a second time.
            let candidates = if st.may_be_at != 0 { st.may_be_at } else { all };
            Plan::Call { candidates, call, wait_at_ms: deadline_ms }
        }
        Stage::ReportAccepted => match (st.transaction_key.clone(), st.gateway) {
            (Some(key), Some(g)) => Plan::Report(Command::GatewayAccepted {
                payment: payment_id,
                transaction_key: key.to_string(),
                gateway: names[g].clone(),
            }),
            _ => {
                op.stage = Stage::Submit;
                Plan::Again
            }
        },
        Stage::AwaitSettlement { accepted_at_ms, lookups } => {
            let deadline_ms = accepted_at_ms.saturating_add(limits.settle_deadline_ms);
            if now_ms >= deadline_ms {
                op.stage = Stage::Report(Command::GatewayGaveUp {
                    payment: payment_id,
                    reason: "the gateway did not settle the payment in time".into(),
                });
                return Plan::Again;
            }
            let first_lookup_ms = accepted_at_ms.saturating_add(limits.reconcile_after_ms);
            if lookups == 0 && now_ms < first_lookup_ms {
                return Plan::Wait { at_ms: first_lookup_ms };
            }
            match (st.transaction_key.clone(), st.gateway) {
                (Some(transaction_key), Some(g)) => Plan::Call {
                    candidates: bit(g),
                    call: Call::Lookup { transaction_key },
                    wait_at_ms: (now_ms + limits.reconcile_interval_ms).min(deadline_ms),
                },
                _ => {
                    op.stage = Stage::Submit;
                    Plan::Again
                }
            }
        }
        Stage::Report(command) => Plan::Report(command),
        Stage::Resolve { candidates } => {
            if op.is_authorize() {
                if now_ms >= op.requested_at_ms.saturating_add(limits.submit_deadline_ms) {
                    op.stage = Stage::Report(Command::GatewayGaveUp {
                        payment: payment_id,
                        reason: "the gateways could not be asked whether they hold the payment in time".into(),
                    });
                    return Plan::Again;
                }
                if candidates == 0 {
                    // No gateway holds it: it may go to any.
                    st.may_be_known = true;
                    op.stage = Stage::Submit;
                    return Plan::Again;
                }
                let call = Call::LookupOrder { order_id: st.order_ref.clone() };
                return Plan::Call { candidates, call, wait_at_ms: now_ms + limits.backoff_max_ms };
            }
            if candidates == 0 {
                if matches!(op.kind, OpKind::Void) {
                    return Plan::Finish; // it never reached a gateway: nothing to void
                }
                op.stage = dead_letter(r, op, "no gateway holds a transaction for this payment");
                return Plan::Again;
            }
            if let Some(stage) = give_up_op(r, op, limits, now_ms) {
                op.stage = stage;
                return Plan::Again;
            }
            let call = Call::LookupOrder { order_id: st.order_ref.clone() };
            Plan::Call { candidates, call, wait_at_ms: now_ms + limits.backoff_max_ms }
        }
        Stage::Call | Stage::RefundRest => {
            if let Some(stage) = give_up_op(r, op, limits, now_ms) {
                op.stage = stage;
                return Plan::Again;
            }
            let (Some(key), Some(g)) = (st.transaction_key.clone(), st.gateway) else {
                // Which gateway holds it? Ask every one the payment may have reached.
                let candidates = if st.may_be_known && st.transaction_key.is_none() { st.may_be_at } else { all };
                op.stage = Stage::Resolve { candidates };
                return Plan::Again;
            };
            let call = match (&op.kind, matches!(op.stage, Stage::RefundRest)) {
                (_, true) => {
                    Call::Refund { transaction_key: key, amount: None, key: idem(&format!("{}:refund", op.key)) }
                }
                (OpKind::Capture, _) => Call::Capture { transaction_key: key, amount: op.amount, key: idem(&op.key) },
                (OpKind::Refund, _) => {
                    Call::Refund { transaction_key: key, amount: Some(op.amount), key: idem(&op.key) }
                }
                (OpKind::Void, _) => Call::Cancel { transaction_key: key, key: idem(&op.key) },
                (OpKind::Authorize { .. }, _) => return Plan::Finish,
            };
            Plan::Call { candidates: bit(g), call, wait_at_ms: now_ms + limits.backoff_max_ms }
        }
    }
}

/// What happens to a payment after a call's answer.
enum After {
    /// Go on now.
    Wake,
    /// Try again after a backoff.
    Retry,
    /// Look again after the reconcile interval.
    Poll,
    /// The front operation is over.
    Finish,
}

/// Applies a call's answer to the payment's state and front operation.
fn answered(
    r: &PaymentRef,
    st: &mut PaymentState,
    gateway: usize,
    call: CallOp,
    outcome: CallOutcome,
    status: &GatewayStatus,
) -> After {
    st.busy = None;
    // What the answer says about where the payment is, whatever its operation became.
    match &outcome {
        CallOutcome::Accepted { transaction_key } => {
            st.transaction_key = Some(transaction_key.as_str().into());
            st.gateway = Some(gateway);
        }
        CallOutcome::Timeout if call == CallOp::Authorize => st.may_be_at |= bit(gateway),
        _ => {}
    }
    let Some(op) = st.ops.front_mut() else { return After::Wake };
    if op.closed {
        return After::Finish;
    }
    let payment = Numbered::Payment.id(r.payment);
    match (op.stage.clone(), outcome) {
        (Stage::Submit, CallOutcome::Accepted { .. }) => op.stage = Stage::ReportAccepted,
        // The key was used before with another body (e.g. another callback URL since a
        // restart): the transaction of the earlier call exists there. Find it and adopt it.
        (Stage::Submit, CallOutcome::Refused { status: 422, .. }) => {
            st.may_be_at |= bit(gateway);
            op.stage = Stage::Resolve { candidates: bit(gateway) };
        }
        (Stage::Submit, CallOutcome::Refused { status, code, message }) => {
            let reason = truncate(&format!("the gateway refused the payment ({status} {code}: {message})"));
            op.stage = Stage::Report(if st.may_be_at == 0 {
                Command::GatewayDeclined { payment, reason }
            } else {
                // An earlier attempt went unanswered: its transaction may stand. Giving up
                // voids whatever the gateway holds for the payment.
                Command::GatewayGaveUp { payment, reason }
            });
        }
        (Stage::Submit, CallOutcome::CardUnreadable(why)) => {
            op.stage = Stage::Report(Command::GatewayDeclined {
                payment,
                reason: truncate(&format!("the card could not be read ({why})")),
            });
        }
        (Stage::AwaitSettlement { accepted_at_ms, lookups }, CallOutcome::Transaction(tx)) => {
            let transaction_key = tx.transaction_key.clone();
            op.stage = match tx.status {
                TxStatus::Pending => {
                    status.record_lookup(Lookup::Pending);
                    op.stage = Stage::AwaitSettlement { accepted_at_ms, lookups: lookups + 1 };
                    return After::Poll;
                }
                TxStatus::Success => Stage::Report(Command::GatewayApproved { payment, transaction_key }),
                TxStatus::Failed => Stage::Report(Command::GatewayDeclined {
                    payment,
                    reason: truncate(tx.reason.as_deref().unwrap_or("declined by the gateway")),
                }),
                TxStatus::Cancelled => {
                    Stage::Report(Command::GatewayDeclined { payment, reason: "cancelled at the gateway".into() })
                }
            };
            status.record_lookup(Lookup::Settled);
        }
        (Stage::AwaitSettlement { .. }, CallOutcome::Refused { status: 404, .. }) => {
            status.record_lookup(Lookup::Failed);
            op.stage = Stage::Report(Command::GatewayGaveUp {
                payment,
                reason: "the gateway does not know the payment's transaction".into(),
            });
        }
        (Stage::AwaitSettlement { .. }, other) => {
            status.record_lookup(Lookup::Failed);
            op.last_error = other.describe();
            return After::Retry;
        }
        (Stage::Resolve { candidates }, CallOutcome::Transactions(txs)) => {
            let live = |t: &&Tx| matches!(t.status, TxStatus::Pending | TxStatus::Success);
            let known = st.transaction_key.clone();
            let found = txs
                .iter()
                .filter(live)
                .find(|t| known.as_deref().is_none_or(|k| k == t.transaction_key))
                .or_else(|| txs.iter().find(live));
            match found {
                Some(tx) => {
                    st.transaction_key = Some(tx.transaction_key.as_str().into());
                    st.gateway = Some(gateway);
                    op.stage = if op.is_authorize() { Stage::ReportAccepted } else { Stage::Call };
                }
                // An authorization the gateway already declined: that is its answer.
                None if op.is_authorize() && txs.iter().any(|t| t.status == TxStatus::Failed) => {
                    let reason = txs.iter().find_map(|t| t.reason.clone());
                    op.stage = Stage::Report(Command::GatewayDeclined {
                        payment,
                        reason: truncate(reason.as_deref().unwrap_or("declined by the gateway")),
                    });
                }
                None => op.stage = Stage::Resolve { candidates: candidates & !bit(gateway) },
            }
        }
        (Stage::Call | Stage::RefundRest, CallOutcome::Transaction(_) | CallOutcome::Accepted { .. }) => {
            match op.retry_of {
                Some(dead_letter) => op.stage = Stage::Report(Command::ResolveDeadLetter { dead_letter }),
                None => return After::Finish,
            }
        }
        // A captured transaction cannot be cancelled: refund what is left of it instead.
        (Stage::Call, CallOutcome::Refused { status: 409, .. }) if matches!(op.kind, OpKind::Void) => {
            op.stage = Stage::RefundRest;
        }
        // Nothing (left) to refund: the void is done.
        (Stage::RefundRest, CallOutcome::Refused { status: 409, .. }) => return After::Finish,
        (Stage::Call | Stage::RefundRest, CallOutcome::Refused { status, code, message }) => {
            op.stage = dead_letter(r, op, &format!("the gateway refused ({status} {code}: {message})"));
        }
        (_, other) => {
            // 5xx, timeouts, unreachable, or an answer of the wrong kind: try again later.
            op.last_error = other.describe();
            op.attempts += 1;
            return After::Retry;
        }
    }
    After::Wake
}

enum What {
    Call(Call),
    Report(Command),
}

enum Next {
    Act(Option<usize>, bool, What),
    Wait(Instant),
    Finish,
}

/// The limits `decide` reads while it holds a payment mutably.
struct Limits {
    submit_deadline_ms: u64,
    reconcile_after_ms: u64,
    reconcile_interval_ms: u64,
    settle_deadline_ms: u64,
    op_attempts_max: u32,
    op_deadline_ms: u64,
    backoff_max_ms: u64,
}

impl GatewayConfig {
    fn clone_limits(&self) -> Limits {
        Limits {
            submit_deadline_ms: self.submit_deadline_ms,
            reconcile_after_ms: self.reconcile_after_ms,
            reconcile_interval_ms: self.reconcile_interval_ms,
            settle_deadline_ms: self.settle_deadline_ms,
            op_attempts_max: self.op_attempts_max,
            op_deadline_ms: self.op_deadline_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}

fn payment_ref(merchant: &Arc<str>, payment: u64) -> PaymentRef {
    PaymentRef { merchant: merchant.clone(), payment }
}

/// A capture, void or refund out of attempts or time becomes a dead letter.
fn give_up_op(r: &PaymentRef, op: &Op, limits: &Limits, now_ms: u64) -> Option<Stage> {
    let out_of_time = now_ms >= op.requested_at_ms.saturating_add(limits.op_deadline_ms);
    if op.attempts < limits.op_attempts_max && !out_of_time {
        return None;
    }
    let why = if op.last_error.is_empty() { "no gateway was available".to_string() } else { op.last_error.clone() };
    Some(dead_letter(r, op, &format!("gave up after {} attempts: {why}", op.attempts)))
}

fn dead_letter(r: &PaymentRef, op: &Op, reason: &str) -> Stage {
    Stage::Report(Command::GatewayOpFailed {
        payment: Numbered::Payment.id(r.payment),
        op: op.gateway_op(),
        key: op.key.to_string(),
        amount: op.amount,
        reason: truncate(reason),
    })
}

/// Reasons go into the log: core takes at most 256 bytes of text.
fn truncate(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut end = clean.len().min(surge_core::limits::TEXT_BYTES_MAX);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_string()
}

#[cfg(test)]
mod tests {
    //! The scheduler against a made-up clock and made-up answers.
    use surge_core::event::{PaymentAuthorized, PaymentSubmittedVia, SealedCard};

    use super::super::config::GatewayEndpoint;
    use super::*;

    const T0_MS: u64 = 1_800_000_000_000;

    struct Bench {
        s: Scheduler,
        t0: Instant,
        ms: u64,
        lsn: Lsn,
    }

    fn config(gateways: usize) -> GatewayConfig {
        let endpoints =
            (0..gateways).map(|i| GatewayEndpoint::parse(&format!("http://127.0.0.1:{}", 9300 + i)).unwrap()).collect();
        GatewayConfig::new(endpoints, "http://127.0.0.1:8080/v1/gateway/callback".into())
    }

    impl Bench {
        fn new(gateways: usize) -> Bench {
            Bench::restarted(gateways, 0, 0)
        }

        /// A worker that starts reading after `read_lsn` in a log durable up to `durable`.
        fn restarted(gateways: usize, read_lsn: Lsn, durable: Lsn) -> Bench {
            let config = config(gateways);
            let status = Arc::new(GatewayStatus::new(config.gateways.iter().map(|g| g.name.clone())));
            let s = Scheduler::new(config, status, read_lsn, durable, 7);
            Bench { s, t0: Instant::now(), ms: 0, lsn: read_lsn }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        fn record(&mut self, body: EventBody) {
            self.lsn += 1;
            let event = Event { merchant: "m".into(), at_ms: T0_MS + self.ms, body };
            let now = self.now();
            self.s.on_record(self.lsn, &[event], now);
        }

        fn request(&mut self, op: GatewayOp, key: &str, transaction_key: Option<&str>) {
            let card = (op == GatewayOp::Authorize).then(|| SealedCard { kind: "KB".into(), sealed: Box::new([1, 2]) });
            self.record(EventBody::GatewayRequested(GatewayRequested {
                payment: 1,
                order: 1,
                op,
                amount: 500,
                key: key.into(),
                capture: CaptureMode::Automatic,
                transaction_key: transaction_key.map(Into::into),
                gateway: transaction_key.map(|_| "127.0.0.1:9300".into()),
                card,
                retry_of: None,
            }));
        }

        fn poll(&mut self) -> Vec<Action> {
            let (now, now_ms) = (self.now(), T0_MS + self.ms);
            self.s.poll(now, now_ms)
        }

        /// Advances the clock by `ms` and polls.
        fn after(&mut self, ms: u64) -> Vec<Action> {
            self.ms += ms;
            self.poll()
        }

        fn call(&mut self, ticket: Ticket, outcome: CallOutcome) {
            let now = self.now();
            self.s.on_call(ticket, outcome, now);
        }

        fn report_ok(&mut self, ticket: Ticket) {
            let (now, now_ms) = (self.now(), T0_MS + self.ms);
            self.s.on_report(ticket, Ok(()), now, now_ms);
        }
    }

    fn one(actions: Vec<Action>) -> Action {
        assert_eq!(actions.len(), 1, "{actions:?}");
        actions.into_iter().next().unwrap()
    }

    fn call_of(action: Action) -> (Ticket, usize, Call) {
        match action {
            Action::Call { ticket, gateway, call, .. } => (ticket, gateway, call),
            other => panic!("a call, not {other:?}"),
        }
    }

    fn report_of(action: Action) -> (Ticket, Command) {
        match action {
            Action::Report { ticket, command, .. } => (ticket, command),
            other => panic!("a report, not {other:?}"),
        }
    }

    fn accepted(key: &str) -> CallOutcome {
        CallOutcome::Accepted { transaction_key: key.into() }
    }

    #[test]
    fn an_authorization_is_submitted_reported_and_ends_when_the_log_settles_it() {
        let mut b = Bench::new(1);
        b.record(EventBody::OrderExpired(surge_core::event::OrderExpired { order: 9 }));
        b.request(GatewayOp::Authorize, "authorize", None);
        assert_eq!(b.s.checkpoint(), 1, "the open operation holds the checkpoint before it");
        let (ticket, gateway, call) = call_of(one(b.poll()));
        assert_eq!(gateway, 0);
        let Call::Pay { order_id, key, amount, .. } = call else { panic!("{call:?}") };
        assert_eq!((order_id.as_str(), key.as_str(), amount), ("m:pay_1", "m:pay_1:authorize", 500));
        b.call(ticket, accepted("tx1"));
        let (ticket, command) = report_of(one(b.poll()));
        assert_eq!(
            command,
            Command::GatewayAccepted {
                payment: "pay_1".into(),
                transaction_key: "tx1".into(),
                gateway: "127.0.0.1:9300".into()
            }
        );
        b.report_ok(ticket);
        assert!(b.after(1_000).is_empty(), "the callback is awaited");
        b.record(EventBody::PaymentSubmittedVia(PaymentSubmittedVia {
            payment: 1,
            transaction_key: "tx1".into(),
            gateway: "127.0.0.1:9300".into(),
        }));
        b.record(EventBody::PaymentAuthorized(PaymentAuthorized { payment: 1, transaction_key: Some("tx1".into()) }));
        assert_eq!(b.s.ops_open(), 0);
        assert_eq!(b.s.checkpoint(), b.lsn, "nothing open: the checkpoint is what was read");
        assert!(b.after(60_000).is_empty());
    }

    #[test]
    fn server_errors_are_retried_with_the_same_key_after_a_backoff() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, _, first) = call_of(one(b.poll()));
        b.call(ticket, CallOutcome::Failed { status: 500 });
        assert!(b.poll().is_empty(), "not before the backoff");
        let (_, _, again) = call_of(one(b.after(b.s.config.backoff_max_ms)));
        assert_eq!(first, again, "the same call, the same idempotency key");
    }

    #[test]
    fn a_payment_that_may_have_reached_a_gateway_is_never_sent_to_another() {
        let mut b = Bench::new(2);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, gateway, _) = call_of(one(b.poll()));
        assert_eq!(gateway, 0);
        b.call(ticket, CallOutcome::Timeout);
        // Gateway 0's breaker opens under other payments' failures; this one still waits for it.
        for i in 0..20 {
            let now = b.now();
            b.s.breakers[0].breaker.record(now + Duration::from_millis(i), false, Duration::from_millis(1));
        }
        let mut calls = 0;
        // Bounded: the submit deadline ends it with a report.
        'deadline: for _ in 0..100 {
            for action in b.after(500) {
                match action {
                    Action::Call { ticket, gateway, .. } => {
                        assert_eq!(gateway, 0, "only where it may be");
                        calls += 1;
                        b.call(ticket, CallOutcome::Timeout);
                    }
                    Action::Report { command, .. } => {
                        assert!(matches!(command, Command::GatewayGaveUp { .. }), "{command:?}");
                        break 'deadline;
                    }
                }
            }
        }
        assert!(calls >= 1, "its breaker lets a probe through now and then");
    }

    #[test]
    fn an_unreachable_gateway_sends_new_payments_to_the_next_once_its_breaker_opens() {
        let mut b = Bench::new(2);
        b.request(GatewayOp::Authorize, "authorize", None);
        let mut seen = [0usize; 2];
        // Bounded: the submit deadline ends it.
        for _ in 0..50 {
            let Some(action) = b.after(b.s.config.backoff_max_ms / 4).into_iter().next() else { continue };
            let (ticket, gateway, _) = call_of(action);
            seen[gateway] += 1;
            if gateway == 1 {
                b.call(ticket, accepted("tx-b"));
                break;
            }
            let now = b.now();
            for i in 0..10 {
                b.s.breakers[0].breaker.record(now + Duration::from_millis(i), false, Duration::from_millis(1));
            }
            b.call(ticket, CallOutcome::Unreachable("refused".into()));
        }
        assert!(seen[0] >= 1 && seen[1] == 1, "{seen:?}");
        let (_, command) = report_of(one(b.poll()));
        assert!(matches!(command, Command::GatewayAccepted { ref gateway, .. } if gateway == "127.0.0.1:9301"));
    }

    #[test]
    fn a_lost_callback_is_reconciled_by_looking_the_payment_up() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, _, _) = call_of(one(b.poll()));
        b.call(ticket, accepted("tx1"));
        let (ticket, _) = report_of(one(b.poll()));
        b.report_ok(ticket);
        let reconcile_after_ms = b.s.config.reconcile_after_ms;
        assert!(b.after(reconcile_after_ms - 1).is_empty());
        let (ticket, _, call) = call_of(one(b.after(1)));
        assert_eq!(call, Call::Lookup { transaction_key: "tx1".into() });
        let pending = Tx { transaction_key: "tx1".into(), status: TxStatus::Pending, reason: None };
        b.call(ticket, CallOutcome::Transaction(pending));
        let interval_ms = b.s.config.reconcile_interval_ms;
        let (ticket, _, _) = call_of(one(b.after(interval_ms)));
        let approved = Tx { transaction_key: "tx1".into(), status: TxStatus::Success, reason: None };
        b.call(ticket, CallOutcome::Transaction(approved));
        let (_, command) = report_of(one(b.poll()));
        assert_eq!(command, Command::GatewayApproved { payment: "pay_1".into(), transaction_key: "tx1".into() });
    }

    #[test]
    fn no_gateway_in_time_gives_the_payment_up() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let deadline_ms = b.s.config.submit_deadline_ms;
        let mut gave_up = None;
        // Bounded: each round moves the clock by a second.
        for _ in 0..(deadline_ms / 1_000 + 10) {
            for action in b.after(1_000) {
                match action {
                    Action::Call { ticket, .. } => b.call(ticket, CallOutcome::Failed { status: 503 }),
                    Action::Report { command, .. } => gave_up = Some(command),
                }
            }
            if gave_up.is_some() {
                break;
            }
        }
        assert!(matches!(gave_up, Some(Command::GatewayGaveUp { .. })), "{gave_up:?}");
        assert!(b.ms >= deadline_ms);
    }

    #[test]
    fn a_refused_capture_becomes_a_dead_letter() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Capture, "capture", Some("tx1"));
        let (ticket, _, call) = call_of(one(b.poll()));
        assert_eq!(call, Call::Capture { transaction_key: "tx1".into(), amount: 500, key: "m:pay_1:capture".into() });
        b.call(ticket, CallOutcome::Refused { status: 409, code: "invalid_state".into(), message: "no".into() });
        let (ticket, command) = report_of(one(b.poll()));
        assert!(
            matches!(command, Command::GatewayOpFailed { op: GatewayOp::Capture, ref key, amount: 500, .. } if key == "capture"),
            "{command:?}"
        );
        b.report_ok(ticket);
        assert_eq!(b.s.ops_open(), 0);
    }

    #[test]
    fn a_void_of_a_captured_transaction_refunds_it_instead() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Void, "void", Some("tx1"));
        let (ticket, _, call) = call_of(one(b.poll()));
        assert_eq!(call, Call::Cancel { transaction_key: "tx1".into(), key: "m:pay_1:void".into() });
        b.call(ticket, CallOutcome::Refused { status: 409, code: "invalid_state".into(), message: "captured".into() });
        let (ticket, _, call) = call_of(one(b.poll()));
        assert_eq!(
            call,
            Call::Refund { transaction_key: "tx1".into(), amount: None, key: "m:pay_1:void:refund".into() }
        );
        let done = Tx { transaction_key: "tx1".into(), status: TxStatus::Cancelled, reason: None };
        b.call(ticket, CallOutcome::Transaction(done));
        assert_eq!(b.s.ops_open(), 0);
    }

    #[test]
    fn after_a_restart_an_authorization_is_looked_up_at_every_gateway_before_it_is_sent() {
        let mut b = Bench::restarted(2, 0, 1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let mut asked = Vec::new();
        for _ in 0..2 {
            let (ticket, gateway, call) = call_of(one(b.poll()));
            assert_eq!(call, Call::LookupOrder { order_id: "m:pay_1".into() });
            asked.push(gateway);
            b.call(ticket, CallOutcome::Transactions(Vec::new()));
        }
        assert_eq!(asked, [0, 1]);
        let (_, _, call) = call_of(one(b.poll()));
        assert!(matches!(call, Call::Pay { .. }), "held nowhere: sent now");

        let mut b = Bench::restarted(2, 0, 1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, _, _) = call_of(one(b.poll()));
        b.call(ticket, CallOutcome::Transactions(Vec::new()));
        let (ticket, gateway, _) = call_of(one(b.poll()));
        let held = Tx { transaction_key: "tx-b".into(), status: TxStatus::Pending, reason: None };
        b.call(ticket, CallOutcome::Transactions(vec![held]));
        let (_, command) = report_of(one(b.poll()));
        assert_eq!(
            command,
            Command::GatewayAccepted {
                payment: "pay_1".into(),
                transaction_key: "tx-b".into(),
                gateway: format!("127.0.0.1:{}", 9300 + gateway)
            },
            "found at a gateway: adopted, never sent again"
        );
    }

    #[test]
    fn a_key_used_before_with_another_body_adopts_the_transaction_that_call_made() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, _, _) = call_of(one(b.poll()));
        let conflict = "idempotency_key_reused".to_string();
        b.call(ticket, CallOutcome::Refused { status: 422, code: conflict, message: String::new() });
        let (ticket, _, call) = call_of(one(b.poll()));
        assert_eq!(call, Call::LookupOrder { order_id: "m:pay_1".into() });
        let held = Tx { transaction_key: "tx1".into(), status: TxStatus::Success, reason: None };
        b.call(ticket, CallOutcome::Transactions(vec![held]));
        let (_, command) = report_of(one(b.poll()));
        assert!(matches!(command, Command::GatewayAccepted { ref transaction_key, .. } if transaction_key == "tx1"));
    }

    #[test]
    fn a_refusal_after_an_unanswered_attempt_gives_up_so_the_gateway_is_voided() {
        let mut b = Bench::new(1);
        b.request(GatewayOp::Authorize, "authorize", None);
        let (ticket, _, _) = call_of(one(b.poll()));
        b.call(ticket, CallOutcome::Timeout);
        let (ticket, _, _) = call_of(one(b.after(b.s.config.backoff_max_ms)));
        b.call(ticket, CallOutcome::Refused { status: 400, code: "invalid_request".into(), message: String::new() });
        let (_, command) = report_of(one(b.poll()));
        assert!(matches!(command, Command::GatewayGaveUp { .. }), "{command:?}");
    }
}
