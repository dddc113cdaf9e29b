//! Request bodies of the mutating merchant routes: what each deserializes from, its OpenAPI
//! schema (derived here, with `surge_core::limits` in it), the command it asks for and the
//! status of a success. A `POST /v1/batch` op is the same body with its route's path
//! parameter as a field of its own (`sku`, `hold_id`, `order_id`, `payment_id`,
//! `customer_id`, `queue_id`), so a route and its op cannot answer differently.

use axum::http::StatusCode;
use serde::de::IgnoredAny;
use serde::Deserialize;
use surge_core::state::OrderStatus;
use surge_core::{CaptureMode, CardSpec, Command, ItemSpec, LineSpec, OrderSource, PaymentMethod, PaymentSpec, Reply};
use utoipa::ToSchema;

use crate::auth;
use crate::error::ApiError;
use crate::extract::Call;
use crate::openapi::schema;

/// A mutating route's body: its command and its success status, for its route and its
/// batch op alike.
pub trait Op: Sized {
    /// The batch op's field that holds the route's path parameter ("": the route has none).
    const TARGET: &'static str;

    /// That field's value (batch ops only: a route takes the parameter from its path, and
    /// ignores the field as it ignores any unknown one).
    fn target_field(&mut self) -> Option<String> {
        None
    }

    /// The command; `target` is the path parameter ("" when `TARGET` is).
    fn command(self, target: String, call: &Call) -> Result<Command, ApiError>;

    /// The status of a success, a function of the reply only, so a replay answers as the
    /// first time did.
    fn status(reply: &Reply) -> StatusCode;

    /// Whether the body holds a card number (its idempotency fingerprint is keyed).
    fn pays_by_card(&self) -> bool {
        false
    }
}

fn ok(_: &Reply) -> StatusCode {
    StatusCode::OK
}

fn created(_: &Reply) -> StatusCode {
    StatusCode::CREATED
}

/// A card payment is accepted, not done: 202 while its order waits for the gateway.
fn accepted_or(done: StatusCode, reply: &Reply) -> StatusCode {
    match reply {
        Reply::Order(o) if o.status == OrderStatus::PendingPayment => StatusCode::ACCEPTED,
        _ => done,
    }
}

/// Integers, also when written with a zero fraction (`3637.0`, `1e3`): JSON Schema's
/// `integer` admits them, and so does every route.
pub mod whole {
    use serde::de::{Deserializer, Error, Unexpected, Visitor};

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative integer")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is the first float above u64::MAX; every float below it with no fraction is exact.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole)
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<u64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative integer or null")
            }
            fn visit_none<E: Error>(self) -> Result<Option<u64>, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Option<u64>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
                u64(d).map(Some)
            }
        }
        d.deserialize_option(Maybe)
    }
}

/// The status function of a route.
pub type StatusOf = fn(&Reply) -> StatusCode;

/// The target of a batch op, or the error serde would have given for the missing field.
fn batch_target<B: Op>(body: &mut B, index: usize) -> Result<String, ApiError> {
    if B::TARGET.is_empty() {
        return Ok(String::new());
    }
    body.target_field().ok_or_else(|| ApiError::invalid(format!("ops[{index}]: missing field `{}`", B::TARGET)))
}

/// The command of the batch op at `index` and the status function of its route.
pub fn batch_command<B: Op>(mut body: B, index: usize, call: &Call) -> Result<(Command, StatusOf), ApiError> {
    let target = batch_target(&mut body, index)?;
    Ok((body.command(target, call)?, B::status))
}

// ---- items ----

/// An item: `PUT /v1/items/{sku}`, an entry of `POST /v1/items/bulk` (with `sku`) and the
/// batch op `put_item` (with `sku`).
#[derive(Deserialize, ToSchema)]
pub struct ItemBody {
    /// Bulk entries and batch ops only; `PUT /v1/items/{sku}` takes it from the path.
    #[serde(default)]
    #[schema(schema_with = schema::optional_id)]
    sku: Option<String>,
    #[schema(schema_with = schema::name)]
    name: String,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::amount)]
    price: u64,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::amount)]
    stock: u64,
    /// The waiting room whose tokens gate holds and orders of this item; null: none.
    #[serde(default)]
    #[schema(schema_with = schema::optional_id)]
    queue_id: Option<String>,
}

impl ItemBody {
    fn into_spec(self, sku: String) -> ItemSpec {
        ItemSpec { sku, name: self.name, price: self.price, stock: self.stock, queue: self.queue_id }
    }
}

impl Op for ItemBody {
    const TARGET: &'static str = "sku";

    fn target_field(&mut self) -> Option<String> {
        self.sku.take()
    }

    fn command(self, sku: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::PutItem(self.into_spec(sku)))
    }

    fn status(reply: &Reply) -> StatusCode {
        match reply {
            Reply::Item { created: true, .. } => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct BulkBody {
    /// Each with its `sku`.
    #[schema(schema_with = schema::bulk_items)]
    items: Vec<ItemBody>,
}

impl Op for BulkBody {
    const TARGET: &'static str = "";

    fn command(self, _: String, _: &Call) -> Result<Command, ApiError> {
        let mut items = Vec::with_capacity(self.items.len());
        for (i, mut item) in self.items.into_iter().enumerate() {
            let sku = item.sku.take().ok_or_else(|| {
                ApiError::invalid(format!("items[{i}]: missing field `sku`")).with("field", format!("items[{i}]"))
            })?;
            items.push(item.into_spec(sku));
        }
        Ok(Command::PutItems { items })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RestockBody {
    /// Batch ops only.
    #[serde(default)]
    #[schema(ignore)]
    sku: Option<String>,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::qty)]
    qty: u64,
}

impl Op for RestockBody {
    const TARGET: &'static str = "sku";

    fn target_field(&mut self) -> Option<String> {
        self.sku.take()
    }

    fn command(self, sku: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::Restock { sku, qty: self.qty })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

// ---- holds ----

#[derive(Deserialize, ToSchema)]
pub struct LineBody {
    #[schema(schema_with = schema::id)]
    sku: String,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::qty)]
    qty: u64,
}

fn line_specs(lines: Vec<LineBody>) -> Vec<LineSpec> {
    lines.into_iter().map(|l| LineSpec { sku: l.sku, qty: l.qty }).collect()
}

/// Stock to reserve, all lines or none.
#[derive(Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct HoldBody<Token = IgnoredAny> {
    #[schema(schema_with = schema::id)]
    customer_id: String,
    #[schema(schema_with = schema::lines)]
    lines: Vec<LineBody>,
    /// Seconds the stock stays reserved (default 300).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(schema_with = schema::optional_ttl)]
    ttl_seconds: Option<u64>,
    /// A batch op's token (`Token` = `String`); a single request sends its token in the
    /// `Queue-Token` header, and anything under this name in its body is ignored (`Token` =
    /// `IgnoredAny`), as any unknown field is.
    #[serde(default)]
    #[schema(ignore)]
    queue_token: Option<Token>,
}

impl<Token> HoldBody<Token> {
    pub fn command_with(self, queue_token: Option<String>) -> Command {
        Command::CreateHold {
            customer: self.customer_id,
            lines: line_specs(self.lines),
            ttl_s: self.ttl_seconds,
            queue_token,
        }
    }
}

impl Op for HoldBody<String> {
    const TARGET: &'static str = "";

    fn command(mut self, _: String, _: &Call) -> Result<Command, ApiError> {
        let token = self.queue_token.take();
        Ok(self.command_with(token))
    }

    fn status(reply: &Reply) -> StatusCode {
        created(reply)
    }
}

/// The hold a batch `release` op names (`POST /v1/holds/{id}/release` takes no body).
#[derive(Deserialize, Default)]
pub struct ReleaseBody {
    #[serde(default)]
    hold_id: Option<String>,
}

impl Op for ReleaseBody {
    const TARGET: &'static str = "hold_id";

    fn target_field(&mut self) -> Option<String> {
        self.hold_id.take()
    }

    fn command(self, hold: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::ReleaseHold { hold })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

// ---- orders and payments ----

#[derive(Deserialize, ToSchema)]
pub struct CardBody {
    /// 12..=19 digits, spaces and dashes allowed between them.
    #[schema(schema_with = schema::card_number)]
    number: String,
    /// The card's issuer or kind, as the gateway takes it.
    #[serde(rename = "type")]
    #[schema(schema_with = schema::card_type)]
    kind: String,
}

#[derive(Deserialize, ToSchema)]
pub struct PaymentBody {
    /// Batch `pay_order` ops only.
    #[serde(default)]
    #[schema(ignore)]
    order_id: Option<String>,
    #[schema(schema_with = schema::payment_method)]
    method: PaymentMethod,
    /// Required with method `card`, ignored otherwise.
    #[serde(default)]
    card: Option<CardBody>,
    /// manual: authorize now, capture later with /v1/payments/{id}/capture (default automatic).
    #[serde(default)]
    #[schema(schema_with = schema::capture_mode)]
    capture: Option<CaptureMode>,
}

impl PaymentBody {
    pub fn method(&self) -> PaymentMethod {
        self.method
    }

    /// The payment as core takes it, with a card's number sealed for the gateway worker.
    /// Without a configured gateway a card payment changes nothing: 503.
    fn spec(self, call: &Call) -> Result<PaymentSpec, ApiError> {
        let card = match (self.method, self.card) {
            (PaymentMethod::Card, card) => {
                let host = call.gateway.as_deref().ok_or_else(ApiError::gateway_unavailable)?;
                match card {
                    Some(c) => Some(seal(host, &call.merchant, c)?),
                    None => None, // core names the missing field
                }
            }
            (_, card) => card.map(|c| CardSpec { number: c.number, kind: c.kind, sealed: Box::new([]) }),
        };
        Ok(PaymentSpec { method: self.method, card, capture: self.capture.unwrap_or_default() })
    }
}

fn seal(host: &crate::gateway::GatewayHost, merchant: &str, card: CardBody) -> Result<CardSpec, ApiError> {
    let sealed = host.card_key.seal(merchant, &card.number).map_err(|_| {
        ApiError::invalid("payment.card.number: at most 32 characters").with("field", "payment.card.number")
    })?;
    Ok(CardSpec { number: card.number, kind: card.kind, sealed: sealed.into_boxed_slice() })
}

impl Op for PaymentBody {
    const TARGET: &'static str = "order_id";

    fn target_field(&mut self) -> Option<String> {
        self.order_id.take()
    }

    fn command(self, order: String, call: &Call) -> Result<Command, ApiError> {
        Ok(Command::PayOrder { order, payment: self.spec(call)? })
    }

    fn status(reply: &Reply) -> StatusCode {
        accepted_or(StatusCode::OK, reply)
    }

    fn pays_by_card(&self) -> bool {
        self.method == PaymentMethod::Card
    }
}

/// An order from `lines` or from a hold (`hold_id`): exactly one of them. (`POST /v1/orders`
/// with `Token` = `IgnoredAny` and a batch `create_order` op with `Token` = `String`, as
/// [`HoldBody`].)
#[derive(Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct OrderBody<Token = IgnoredAny> {
    #[schema(schema_with = schema::id)]
    customer_id: String,
    /// The order's lines (or give `hold_id`).
    #[serde(default)]
    #[schema(schema_with = schema::optional_lines)]
    lines: Option<Vec<LineBody>>,
    /// The hold to convert (or give `lines`).
    #[serde(default)]
    #[schema(schema_with = schema::optional_id)]
    hold_id: Option<String>,
    payment: PaymentBody,
    #[serde(default)]
    #[schema(ignore)]
    queue_token: Option<Token>,
}

impl<Token> OrderBody<Token> {
    pub fn method(&self) -> PaymentMethod {
        self.payment.method
    }

    pub fn command_with(self, queue_token: Option<String>, call: &Call) -> Result<Command, ApiError> {
        let source = match (self.lines, self.hold_id) {
            (Some(lines), None) => OrderSource::Lines(line_specs(lines)),
            (None, Some(hold)) => OrderSource::Hold(hold),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("lines, hold_id: give exactly one of them").with("field", "hold_id"))
            }
            (None, None) => {
                return Err(ApiError::invalid("lines: required unless hold_id is given").with("field", "lines"))
            }
        };
        let payment = self.payment.spec(call)?;
        Ok(Command::CreateOrder { customer: self.customer_id, source, payment, queue_token })
    }
}

impl<Token> OrderBody<Token> {
    pub fn status(reply: &Reply) -> StatusCode {
        accepted_or(StatusCode::CREATED, reply)
    }
}

impl Op for OrderBody<String> {
    const TARGET: &'static str = "";

    fn command(mut self, _: String, call: &Call) -> Result<Command, ApiError> {
        let token = self.queue_token.take();
        self.command_with(token, call)
    }

    fn status(reply: &Reply) -> StatusCode {
        OrderBody::<String>::status(reply)
    }

    fn pays_by_card(&self) -> bool {
        self.payment.pays_by_card()
    }
}

/// The order a batch `cancel_order` op names (`POST /v1/orders/{id}/cancel` takes no body).
#[derive(Deserialize, Default)]
pub struct CancelBody {
    #[serde(default)]
    order_id: Option<String>,
}

impl Op for CancelBody {
    const TARGET: &'static str = "order_id";

    fn target_field(&mut self) -> Option<String> {
        self.order_id.take()
    }

    fn command(self, order: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::CancelOrder { order })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

/// A capture or refund: the amount (default: all that is left), and which.
#[derive(Deserialize, Default, ToSchema)]
pub struct AmountBody<const REFUND: bool> {
    /// Batch ops only.
    #[serde(default)]
    #[schema(ignore)]
    payment_id: Option<String>,
    /// Default: all of it.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(schema_with = schema::optional_positive_amount)]
    amount: Option<u64>,
}

pub type CaptureBody = AmountBody<false>;
pub type RefundBody = AmountBody<true>;

impl<const REFUND: bool> Op for AmountBody<REFUND> {
    const TARGET: &'static str = "payment_id";

    fn target_field(&mut self) -> Option<String> {
        self.payment_id.take()
    }

    fn command(self, payment: String, _: &Call) -> Result<Command, ApiError> {
        Ok(if REFUND {
            Command::RefundPayment { payment, amount: self.amount }
        } else {
            Command::CapturePayment { payment, amount: self.amount }
        })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

// ---- points ----

#[derive(Deserialize, ToSchema)]
pub struct CreditBody {
    /// Batch ops only.
    #[serde(default)]
    #[schema(ignore)]
    customer_id: Option<String>,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::amount)]
    amount: u64,
    #[serde(default)]
    #[schema(schema_with = schema::reason)]
    reason: Option<String>,
}

impl Op for CreditBody {
    const TARGET: &'static str = "customer_id";

    fn target_field(&mut self) -> Option<String> {
        self.customer_id.take()
    }

    fn command(self, customer: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::CreditPoints { customer, amount: self.amount, reason: self.reason.unwrap_or_default() })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

// ---- waiting rooms ----

#[derive(Deserialize, ToSchema)]
pub struct QueueBody {
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::max_active)]
    max_active: u64,
    #[serde(deserialize_with = "whole::u64")]
    #[schema(schema_with = schema::ttl)]
    active_ttl_seconds: u64,
}

impl Op for QueueBody {
    const TARGET: &'static str = "queue_id";

    fn command(self, queue: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::PutQueue { queue, max_active: self.max_active, active_ttl_s: self.active_ttl_seconds })
    }

    fn status(reply: &Reply) -> StatusCode {
        ok(reply)
    }
}

#[derive(Deserialize, ToSchema)]
pub struct TokenBody {
    /// Batch ops only.
    #[serde(default)]
    #[schema(ignore)]
    queue_id: Option<String>,
    #[schema(schema_with = schema::id)]
    customer_id: String,
}

impl Op for TokenBody {
    const TARGET: &'static str = "queue_id";

    fn target_field(&mut self) -> Option<String> {
        self.queue_id.take()
    }

    fn command(self, queue: String, _: &Call) -> Result<Command, ApiError> {
        Ok(Command::IssueToken { queue, customer: self.customer_id, nonce: auth::new_nonce() })
    }

    fn status(reply: &Reply) -> StatusCode {
        created(reply)
    }
}
