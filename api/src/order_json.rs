//! The order reply, the hottest answer (`POST /v1/orders` and its replays, `GET
//! /v1/orders/{id}`, orders in batch results), written straight as JSON bytes. serde_json spent ~10k instructions on one (escaping every field
//! name, walking its serializer state), a seventh of what the whole request costs. The output
//! is byte for byte what serde_json writes for [`crate::dto::Order`], which stays the
//! contract's source (OpenAPI schema, every other reply): tested against it over random
//! orders, hostile strings included.

use surge_core::ids::Numbered;
use surge_core::view::{LineView, OrderView, PaymentView};

use crate::dto::with_rfc3339;

/// `o` as JSON, appended to `out`.
pub fn write_order(out: &mut Vec<u8>, o: &OrderView) {
    let start = out.len();
    out.extend_from_slice(b"{\"id\":");
    id(out, Numbered::Order, o.id.0);
    key(out, "customer_id");
    string(out, &o.customer_id);
    key(out, "status");
    string(out, o.status.as_str());
    key(out, "lines");
    out.push(b'[');
    for (i, line) in o.lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_line(out, line);
    }
    out.push(b']');
    key(out, "total");
    uint(out, o.total);
    key(out, "hold_id");
    match o.hold_id {
        Some(h) => id(out, Numbered::Hold, h.0),
        None => null(out),
    }
    key(out, "payment");
    match &o.payment {
        Some(p) => write_payment(out, p),
        None => null(out),
    }
    key(out, "expires_at");
    match o.expires_at_ms {
        Some(ms) => time(out, ms),
        None => null(out),
    }
    key(out, "created_at");
    time(out, o.created_at_ms);
    key(out, "updated_at");
    time(out, o.updated_at_ms);
    out.push(b'}');
    debug_assert!(out.len() > start && out[start] == b'{');
}

fn write_line(out: &mut Vec<u8>, l: &LineView) {
    out.extend_from_slice(b"{\"sku\":");
    string(out, &l.sku);
    key(out, "qty");
    uint(out, l.qty);
    if let Some(price) = l.unit_price {
        key(out, "unit_price");
        uint(out, price);
        key(out, "amount");
        uint(out, price.saturating_mul(l.qty));
    }
    out.push(b'}');
}

fn write_payment(out: &mut Vec<u8>, p: &PaymentView) {
    out.extend_from_slice(b"{\"id\":");
    id(out, Numbered::Payment, p.id.0);
    key(out, "order_id");
    id(out, Numbered::Order, p.order_id.0);
    key(out, "method");
    string(out, p.method.as_str());
    key(out, "status");
    string(out, p.status.as_str());
    key(out, "capture");
    string(out, p.capture.as_str());
    key(out, "amount");
    uint(out, p.amount);
    key(out, "captured");
    uint(out, p.captured);
    key(out, "refunded");
    uint(out, p.refunded);
    key(out, "card");
    match &p.card {
        Some(c) => {
            out.extend_from_slice(b"{\"last4\":");
            string(out, &c.last4);
            key(out, "type");
            string(out, &c.kind);
            out.push(b'}');
        }
        None => null(out),
    }
    key(out, "transaction_key");
    optional_string(out, p.transaction_key.as_deref());
    key(out, "failure_reason");
    optional_string(out, p.failure_reason.as_deref());
    key(out, "created_at");
    time(out, p.created_at_ms);
    key(out, "updated_at");
    time(out, p.updated_at_ms);
    out.push(b'}');
}

/// `,"name":` — names are ours: plain ASCII that needs no escaping.
fn key(out: &mut Vec<u8>, name: &'static str) {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string. Text that needs no escaping (ids, skus, statuses: nearly all of it) is
/// copied; anything else goes through serde_json, so the escaping is exactly serde_json's.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing into a Vec cannot fail; keep the document well-formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => null(out),
    }
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn id(out: &mut Vec<u8>, kind: Numbered, n: u64) {
    out.push(b'"');
    out.extend_from_slice(kind.prefix().as_bytes());
    uint(out, n);
    out.push(b'"');
}

fn time(out: &mut Vec<u8>, ms: u64) {
    with_rfc3339(ms, |text| {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    });
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use surge_core::command::{CaptureMode, PaymentMethod};
    use surge_core::ids::{HoldId, OrderId, PaymentId};
    use surge_core::state::{OrderStatus, PaymentStatus};
    use surge_core::view::CardView;
    use surge_core::UnixMs;

    use super::*;
    use crate::dto;

    /// xorshift64: reproducible, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }
        fn number(&mut self) -> u64 {
            self.pick(&[0, 1, 9, 10, 99, 12_345, u64::from(u32::MAX), u64::MAX / 3, u64::MAX])
        }
        fn time(&mut self) -> UnixMs {
            self.pick(&[0, 999, 1_763_700_000_000, 1_763_700_000_001, 951_782_400_120, u64::MAX])
        }
        /// Mostly plain ids, sometimes whatever a client could send: quotes, backslashes,
        /// control characters, DEL, non-ASCII, empty.
        fn text(&mut self) -> String {
            const PARTS: &[&str] = &[
                "cust-42", "sku_7", "", "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}", "é", "日本", "😀", "a b",
                "</",
            ];
            (0..self.below(4)).map(|_| self.pick(PARTS)).collect()
        }
        fn maybe<T>(&mut self, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
            if self.below(2) == 0 {
                None
            } else {
                Some(f(self))
            }
        }
    }

    fn random_order(rng: &mut Rng) -> OrderView {
        let payment = rng.maybe(|rng| {
            Box::new(PaymentView {
                id: PaymentId(rng.number().max(1)),
                order_id: OrderId(rng.number().max(1)),
                method: rng.pick(&[PaymentMethod::Points, PaymentMethod::Card, PaymentMethod::None]),
                status: rng.pick(&[
                    PaymentStatus::Pending,
                    PaymentStatus::Authorized,
                    PaymentStatus::Captured,
                    PaymentStatus::PartiallyRefunded,
                    PaymentStatus::Refunded,
                    PaymentStatus::Failed,
                    PaymentStatus::Voided,
                ]),
                capture: rng.pick(&[CaptureMode::Automatic, CaptureMode::Manual]),
                amount: rng.number(),
                captured: rng.number(),
                refunded: rng.number(),
                card: rng.maybe(|rng| CardView { last4: rng.text(), kind: rng.text() }),
                transaction_key: rng.maybe(Rng::text),
                failure_reason: rng.maybe(Rng::text),
                created_at_ms: rng.time(),
                updated_at_ms: rng.time(),
            })
        });
        OrderView {
            id: OrderId(rng.number().max(1)),
            customer_id: Arc::from(rng.text()),
            status: rng.pick(&[
                OrderStatus::AwaitingPayment,
                OrderStatus::PendingPayment,
                OrderStatus::Paid,
                OrderStatus::Cancelled,
                OrderStatus::Expired,
                OrderStatus::Refunded,
            ]),
            lines: (0..rng.below(4))
                .map(|_| LineView { sku: Arc::from(rng.text()), qty: rng.number(), unit_price: rng.maybe(Rng::number) })
                .collect(),
            total: rng.number(),
            hold_id: rng.maybe(|rng| HoldId(rng.number().max(1))),
            payment,
            created_at_ms: rng.time(),
            updated_at_ms: rng.time(),
            expires_at_ms: rng.maybe(Rng::time),
        }
    }

    #[test]
    fn orders_are_written_byte_for_byte_as_serde_json_writes_the_dto() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let order = random_order(&mut rng);
            let expected = dto::to_vec(&dto::order(&order));
            assert!(!expected.is_empty());
            let written = dto::order_to_vec(&order);
            assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected), "order {order:?}");
            assert_eq!(dto::reply_to_vec(&surge_core::Reply::Order(order)), expected);
        }
    }
}
