//! What a [`Shard`] (its data is in `state.rs`) does as a whole: `execute` runs decide ->
//! apply -> reply -> idempotency record in one step; `apply` is the only mutation of
//! business state; snapshots, restore and the digest. The top of core's layering: this
//! module uses `decide`, `apply`, `view` and `encoding`, and none of them uses it.

use std::collections::BTreeSet;

use crate::command::Request;
use crate::decide::Decided;
use crate::encoding;
use crate::error::{ApplyError, CoreError, DecodeError};
use crate::event::{Event, EventBody};
use crate::ids::{is_valid_idempotency_key, UnixMs};
use crate::state::{Indexed, Merchant, ShardImageRef};
pub use crate::state::{Settings, Shard};
use crate::view::Reply;

/// A shard's canonical state frozen by [`Shard::freeze`].
#[derive(Clone, Debug)]
pub struct FrozenShard {
    merchants: Indexed<Merchant>,
    applied_events: u64,
}

impl FrozenShard {
    /// Appends the shard's `snapshot()` as of the freeze to `out` (a host encoding many
    /// shards fills one buffer).
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        let image = ShardImageRef { merchants: &self.merchants, applied_events: self.applied_events };
        encoding::encode_snapshot_into(&image, out);
    }

    /// [`snapshot_into`](Self::snapshot_into), reusing the bytes of the chunks that have not
    /// changed since `cache`'s previous snapshot: the same bytes, at a cost that follows what
    /// changed rather than the whole state.
    pub fn snapshot_into_cached(&self, cache: &mut encoding::SnapshotCache, out: &mut Vec<u8>) {
        let image = ShardImageRef { merchants: &self.merchants, applied_events: self.applied_events };
        encoding::encode_snapshot_cached(&image, cache, out);
    }
}

/// What `execute` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command was decided and applied; `events` must be logged (in this order, as one
    /// record) before `reply` is shown to anyone.
    Applied { events: Vec<Event>, reply: Reply },
    /// An earlier request with the same idempotency key and fingerprint; nothing changed.
    Replayed { reply: Reply },
}

impl Shard {
    pub fn new() -> Self {
        Shard::default()
    }

    /// Sets the time settings this shard decides with (not part of its state).
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        self.merchants.get(id)
    }

    pub fn merchants(&self) -> impl Iterator<Item = &Merchant> {
        self.merchants.iter()
    }

    /// Events applied since the empty state.
    pub fn applied_events(&self) -> u64 {
        self.applied_events
    }

    /// The host reports that the first `applied_events` events of this shard are durable
    /// (the log orders a shard's events as they were applied). Idempotency records applied
    /// after that point answer `idempotency_key_in_use` until they are durable too.
    pub fn mark_durable(&mut self, applied_events: u64) {
        assert!(applied_events <= self.applied_events, "durable beyond applied");
        self.durable_events = self.durable_events.max(applied_events);
    }

    pub fn durable_events(&self) -> u64 {
        self.durable_events
    }

    /// decide -> apply -> reply, plus the idempotency record when the request has a key.
    /// An `Err` changed nothing.
    pub fn execute(&mut self, request: &Request, now: UnixMs) -> Result<Outcome, CoreError> {
        // The merchant, found once: each look-up hashes its id, and a keyed order used to
        // look it up five times (key check, decide, apply, the record's merchant, its apply).
        let known = self.merchants.position(&request.merchant);
        if let Some(idempotency) = &request.idempotency {
            if !is_valid_idempotency_key(&idempotency.key) {
                return Err(CoreError::invalid("Idempotency-Key", "must be 1..=255 printable ASCII characters"));
            }
            let stored = known.and_then(|p| self.merchants.at(p)).and_then(|m| m.idempotency.get(&idempotency.key));
            if let Some(record) = stored {
                if record.applied_seq > self.durable_events {
                    return Err(CoreError::IdempotencyKeyInUse);
                }
                if record.fingerprint != idempotency.fingerprint {
                    return Err(CoreError::IdempotencyKeyReused);
                }
                // Replies are validated where bytes enter (event decoding, snapshot restore).
                let reply = encoding::decode_reply(&record.reply)
                    .unwrap_or_else(|e| panic!("stored reply failed to decode after validation: {e}"));
                return Ok(Outcome::Replayed { reply });
            }
        }
        let Decided { mut events, target } = self.decide_at(request, known, now)?;
        // Decided events all belong to the request's merchant (`known` is `None` only for a
        // merchant this command creates: its events apply by id).
        for event in &events {
            match known {
                Some(position) => self.apply_decided_at(position, event),
                None => self.apply_decided(event),
            }
        }
        let reply = self.reply(&request.merchant, known, &target);
        if let Some(idempotency) = &request.idempotency {
            let position = known.or_else(|| self.merchants.position(&request.merchant));
            let merchant = match position.and_then(|p| self.merchants.at(p)) {
                Some(m) => m.id.clone(),
                None => request.merchant.as_str().into(),
            };
            let record = Event {
                merchant,
                at_ms: now,
                body: EventBody::IdempotencyRecorded(crate::event::IdempotencyRecorded {
                    key: idempotency.key.as_str().into(),
                    fingerprint: idempotency.fingerprint,
                    reply: encoding::encode_reply(&reply),
                    expires_at_ms: now.saturating_add(self.settings.idempotency_ttl_ms),
                }),
            };
            match position {
                Some(position) => self.apply_decided_at(position, &record),
                None => self.apply_decided(&record),
            }
            events.push(record);
        }
        Ok(Outcome::Applied { events, reply })
    }

    /// Expires what is due at `now`, activates waiting tokens, forgets old idempotency
    /// records and archives settled aggregates; returns the events, which the host logs like
    /// any others.
    pub fn tick(&mut self, now: UnixMs) -> Vec<Event> {
        let (events, cursors) = self.decide_tick_with_cursors(now);
        self.archive_cursors = cursors;
        for event in &events {
            self.apply_decided(event);
        }
        events
    }

    fn apply_decided(&mut self, event: &Event) {
        if let Err(e) = self.apply(event) {
            panic!("an event decide produced does not apply: {e}");
        }
    }

    /// `apply` for an event of the merchant at `position` (not a `MerchantCreated`).
    fn apply_decided_at(&mut self, position: u32, event: &Event) {
        debug_assert_eq!(self.merchants.at(position).map(|m| &m.id), Some(&event.merchant));
        let seq_after = self.applied_events + 1;
        if let Err(reason) = crate::apply::apply_to_merchant(self, position, event, seq_after) {
            panic!("an event decide produced does not apply: {} for {}: {reason}", event.type_name(), event.merchant);
        }
        self.applied_events += 1;
    }

    /// The canonical image and its encoding.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let image = ShardImageRef { merchants: &self.merchants, applied_events: self.applied_events };
        encoding::encode_snapshot_into(&image, &mut out);
        out
    }

    /// The canonical state as of now, to encode later (on another thread) as `snapshot()`
    /// would have now. Cheap: the containers that grow with traffic share their chunks with
    /// the live shard, and a chunk is copied only when the live shard next changes it.
    pub fn freeze(&self) -> FrozenShard {
        FrozenShard { merchants: self.merchants.clone(), applied_events: self.applied_events }
    }

    /// Rebuilds a shard from `snapshot()` bytes, re-deriving indexes and deadlines and
    /// checking every invariant, so a snapshot that does not hold together is refused.
    pub fn restore(bytes: &[u8]) -> Result<Shard, DecodeError> {
        let image = encoding::decode_snapshot(bytes)?;
        let mut shard = Shard {
            merchants: image.merchants,
            deadlines: BTreeSet::new(),
            applied_events: image.applied_events,
            durable_events: image.applied_events,
            settings: Settings::default(),
            archive_cursors: Default::default(),
        };
        shard.deadlines = shard.derive_deadlines();
        shard.check_invariants().map_err(DecodeError::Inconsistent)?;
        for merchant in shard.merchants.iter() {
            for (_, record) in merchant.idempotency.oldest() {
                encoding::decode_reply(&record.reply)?;
            }
        }
        Ok(shard)
    }

    /// SHA-256 over the canonical image: equal digests, equal states.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.snapshot()).into()
    }

    /// Applies one event: the only way business state changes. Preconditions are checked
    /// before anything is touched, so an `Err` leaves the state as it was.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let fail = |reason: &'static str| ApplyError {
            event_type: event.type_name(),
            merchant: event.merchant.to_string(),
            reason,
        };
        if let EventBody::MerchantCreated(e) = &event.body {
            if self.merchants.get(&event.merchant).is_some() {
                return Err(fail("merchant exists"));
            }
            self.merchants.push(Merchant {
                id: event.merchant.clone(),
                name: e.name.clone(),
                currency: e.currency.clone(),
                api_key_hash: e.api_key_hash,
                created_at_ms: event.at_ms,
                items: Indexed::default(),
                customers: Indexed::default(),
                holds: Default::default(),
                orders: Default::default(),
                payments: Default::default(),
                queues: Indexed::default(),
                ledger: Default::default(),
                idempotency: Default::default(),
                dead_letters: Default::default(),
                archived_card_net: 0,
            });
        } else {
            let position = self.merchants.position(&event.merchant).ok_or_else(|| fail("unknown merchant"))?;
            let seq_after = self.applied_events + 1;
            crate::apply::apply_to_merchant(self, position, event, seq_after).map_err(fail)?;
        }
        self.applied_events += 1;
        Ok(())
    }
}
