//! The log and snapshot encodings: pinned bytes (an accidental layout change fails here,
//! before it can make old logs unreadable), the JSON envelope's shape, and decoders that
//! never panic on arbitrary or damaged bytes.

use proptest::prelude::*;
use surge_core::encoding::{decode_events, encode_events, HEADER_SIZE};
use surge_core::event::{self as ev, Bucket, EventBody};
use surge_core::sim::World;
use surge_core::{CaptureMode, Event, PaymentMethod, Shard};

fn sample() -> Vec<Event> {
    let at_ms = 1_763_700_000_000;
    let event = |body: EventBody| Event { merchant: "m-1".into(), at_ms, body };
    vec![
        event(
            ev::OrderCreated {
                order: 7,
                customer: "c-1".into(),
                lines: vec![ev::PricedLine { sku: "sku-1".into(), qty: 2, unit_price: 1_000 }],
                total: 2_000,
                hold: None,
                expires_at_ms: None,
            }
            .into(),
        ),
        event(ev::InventoryMoved { sku: "sku-1".into(), qty: 2, from: Bucket::Available, to: Bucket::Sold }.into()),
        event(ev::OrderPaid { order: 7 }.into()),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Version 1 of the batch encoding, byte for byte. If this fails, you changed the format:
/// bump `EVENTS_VERSION`, keep a decoder for version 1, and note it in `encoding.rs`.
#[test]
fn batch_encoding_is_pinned() {
    let bytes = encode_events(&sample());
    assert_eq!(&bytes[..HEADER_SIZE], b"SRGE\x01\x00\x00\x00\x03\x00\x00\x00");
    assert_eq!(
        hex(&bytes[HEADER_SIZE..]),
        concat!(
            "03", // three events
            "036d2d31",
            "808ad9a5aa33",
            "08",
            "07",
            "03632d31",
            "01",
            "05736b752d31",
            "02",
            "e807",
            "d00f",
            "00",
            "00",
            "036d2d31",
            "808ad9a5aa33",
            "03",
            "05736b752d31",
            "02",
            "00",
            "02",
            "036d2d31",
            "808ad9a5aa33",
            "09",
            "07",
        )
    );
    assert_eq!(decode_events(&bytes), Ok(sample()));
}

#[test]
fn envelope_json_has_the_designed_shape() {
    let events = sample();
    let json = serde_json::to_value(events[0].envelope(42, 0)).expect("json");
    assert_eq!(json["event_id"], "000000000000002a-0000");
    assert_eq!(json["type"], "order.created");
    assert_eq!(json["merchant_id"], "m-1");
    assert_eq!(json["aggregate_id"], "ord_7");
    assert_eq!(json["occurred_at"], "2025-11-21T04:40:00.000Z");
    assert_eq!(json["data"]["total"], 2_000);
    assert_eq!(json["data"]["lines"][0]["sku"], "sku-1");
    assert_eq!(events[1].type_name(), "inventory.sold");
    assert_eq!(events[1].aggregate().map(|(t, k)| (t.suffix(), k)), Some(("inventory", "sku-1".to_string())));
}

#[test]
fn published_payment_requests_show_the_card_last4_only() {
    let card = ev::CardDetails { number: "1234-5678-9814-1451".into(), kind: "SAMSUNG".into() };
    let body = ev::PaymentRequested {
        payment: 3,
        order: 7,
        method: PaymentMethod::Card,
        amount: 2_000,
        capture: CaptureMode::Automatic,
        card: Some(card),
    };
    let e = Event { merchant: "m".into(), at_ms: 0, body: body.into() };
    let json = serde_json::to_string(&e.envelope(1, 0)).expect("json");
    assert!(json.contains(r#""card":{"last4":"1451","kind":"SAMSUNG"}"#), "{json}");
    assert!(!json.contains("9814") && !json.contains("1234-5678"), "{json}");
    assert!(json.contains(r#""amount":2000"#));
}

#[test]
fn merchant_key_hash_is_in_the_log_and_never_published() {
    let e = Event {
        merchant: "m".into(),
        at_ms: 0,
        body: ev::MerchantCreated { name: "n".into(), currency: "KRW".into(), api_key_hash: [0xab; 32] }.into(),
    };
    let json = serde_json::to_value(e.envelope(1, 0)).expect("json");
    assert_eq!(json["data"], serde_json::json!({"name": "n", "currency": "KRW"}));
    let bytes = encode_events(std::slice::from_ref(&e));
    assert!(bytes.windows(32).any(|w| w == [0xab; 32]));
    assert_eq!(decode_events(&bytes), Ok(vec![e]));
}

fn world_bytes() -> Vec<u8> {
    (0..6_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"SRGE\x01\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&body);
        let _ = decode_events(&bytes);
        let _ = decode_events(&body);
        let _ = Shard::restore(&body);
    }

    #[test]
    fn damaged_batches_fail_or_decode_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = encode_events(&sample());
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value | 1;
        }
        let _ = decode_events(&bytes);
    }
}

/// A damaged snapshot is refused with an error or, if it still parses, restores only when
/// every invariant holds; it never panics.
#[test]
fn damaged_snapshots_never_panic() {
    let world = World::run(&world_bytes());
    let snapshot = world.engine.shards[0].snapshot();
    let mut refused = 0;
    for at in (HEADER_SIZE..snapshot.len()).step_by(7) {
        let mut bytes = snapshot.clone();
        bytes[at] ^= 0x5a;
        match Shard::restore(&bytes) {
            Ok(shard) => assert!(shard.check_invariants().is_ok()),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0);
}
