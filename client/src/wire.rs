//! The binary body of `POST /v1/batch` (`application/vnd.surge.batch`), byte for byte in
//! `docs/batch-format.md`: a header, fixed-size op records, line records, a string table;
//! results come back as a header and fixed-size result records. Every record is
//! `#[repr(C)]`, little-endian, with explicit padding, and is cast with `bytemuck`: decoding
//! a batch allocates nothing per op (one copy of a section only when the body is not
//! aligned for it). Decoding checks every length and never panics.

use std::borrow::Cow;
use std::fmt;

use bytemuck::{Pod, Zeroable};
/// The bounds of a batch, re-exported: a client needs them, not the engine.
pub use surge_core::limits::{BATCH_OPS_MAX, BODY_BYTES_MAX, LINES_MAX};

/// The media type of both the request and its results.
pub const MEDIA_TYPE: &str = "application/vnd.surge.batch";
/// First bytes of a request body.
pub const REQUEST_MAGIC: [u8; 4] = *b"SRGB";
/// First bytes of a results body.
pub const RESULTS_MAGIC: [u8; 4] = *b"SRGR";
/// The only version there is.
pub const VERSION: u16 = 1;

/// `OpRecord::kind`.
pub const KIND_CREATE_ORDER: u8 = 1;
/// `OpRecord::payment`: the order waits for a payment (`"method": "none"`).
pub const PAYMENT_NONE: u8 = 0;
/// `OpRecord::payment`: paid with the customer's points.
pub const PAYMENT_POINTS: u8 = 1;
/// `OpRecord::flags`: `key` holds an idempotency key.
pub const OP_FLAG_KEY: u8 = 1;
/// `ResultRecord::flags`: an idempotent replay.
pub const RESULT_FLAG_REPLAYED: u8 = 1;

/// The request's first 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestHeader {
    pub magic: [u8; 4],
    pub version: u16,
    /// Reserved, 0.
    pub flags: u16,
    pub op_count: u32,
    pub line_count: u32,
    pub string_count: u32,
    pub string_bytes: u32,
}

/// One operation, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OpRecord {
    pub kind: u8,
    pub payment: u8,
    pub flags: u8,
    /// Explicit padding, 0.
    pub reserved: u8,
    /// Index into the string table.
    pub customer: u32,
    /// Index of the op's first line record.
    pub first_line: u32,
    pub line_count: u32,
    /// The idempotency key when `flags` has `OP_FLAG_KEY`, else zero.
    pub key: [u8; 16],
}

/// One order line, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct LineRecord {
    /// Index into the string table.
    pub sku: u32,
    pub qty: u32,
}

/// The results' first 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ResultsHeader {
    pub magic: [u8; 4],
    pub version: u16,
    /// Reserved, 0.
    pub flags: u16,
    pub result_count: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// One op's result, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ResultRecord {
    /// The HTTP status the op's route would have answered.
    pub status: u16,
    pub flags: u8,
    /// [`ErrorCode`] as a byte; 0 for a success.
    pub error: u8,
    /// [`order_status_code`] of the order; 0 when there is none.
    pub order_status: u8,
    /// Explicit padding, 0.
    pub reserved: [u8; 3],
    /// `n` of the order's id `ord_{n}`; 0 when there is none.
    pub order_number: u64,
    /// The order's total in minor units.
    pub total: u64,
    /// `n` of the payment's id `pay_{n}`; 0 when there is none.
    pub payment_number: u64,
}

impl ResultRecord {
    pub fn status(&self) -> u16 {
        u16::from_le(self.status)
    }
    pub fn replayed(&self) -> bool {
        self.flags & RESULT_FLAG_REPLAYED != 0
    }
    pub fn error_code(&self) -> Option<&'static str> {
        error_name(self.error)
    }
    pub fn order_number(&self) -> u64 {
        u64::from_le(self.order_number)
    }
    pub fn total(&self) -> u64 {
        u64::from_le(self.total)
    }
    pub fn payment_number(&self) -> u64 {
        u64::from_le(self.payment_number)
    }
}

/// The contract's error codes by number (`ResultRecord::error`); the index is the number.
/// Appended only: numbers never change.
pub const ERROR_CODES: [&str; 12] = [
    "",
    "invalid_request",
    "not_found",
    "insufficient_stock",
    "invalid_state",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "insufficient_points",
    "queue_token_required",
    "archived",
    "storage_unavailable",
    "payment_gateway_unavailable",
];

/// Any code not in [`ERROR_CODES`].
pub const ERROR_OTHER: u8 = 255;

/// The number of an error code.
pub fn error_number(code: &str) -> u8 {
    ERROR_CODES.iter().skip(1).position(|c| *c == code).map_or(ERROR_OTHER, |i| i as u8 + 1)
}

/// The code of an error number; `None` for 0 (no error) and unknown numbers.
pub fn error_name(n: u8) -> Option<&'static str> {
    match n {
        0 => None,
        ERROR_OTHER => Some("other"),
        n => ERROR_CODES.get(usize::from(n)).copied(),
    }
}

/// Order statuses by number (`ResultRecord::order_status`), as the JSON names them.
pub const ORDER_STATUSES: [&str; 7] =
    ["", "awaiting_payment", "pending_payment", "paid", "cancelled", "expired", "refunded"];

/// The number of an order status's JSON name (0 when unknown).
pub fn order_status_code(name: &str) -> u8 {
    ORDER_STATUSES.iter().skip(1).position(|c| *c == name).map_or(0, |i| i as u8 + 1)
}

const REQUEST_HEADER_BYTES: usize = size_of::<RequestHeader>();
const RESULTS_HEADER_BYTES: usize = size_of::<ResultsHeader>();
const _: () = assert!(REQUEST_HEADER_BYTES == 24);
const _: () = assert!(size_of::<OpRecord>() == 32);
const _: () = assert!(size_of::<LineRecord>() == 8);
const _: () = assert!(RESULTS_HEADER_BYTES == 16);
const _: () = assert!(size_of::<ResultRecord>() == 32);

/// Why a whole body is refused (400 for a request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    TooShort {
        len: usize,
    },
    BadMagic,
    Version(u16),
    Flags(u16),
    OpCount(u32),
    /// The sections do not add up to the body's length.
    Length {
        expected: u64,
        actual: usize,
    },
    /// A string table offset goes backwards or past its bytes.
    StringOffset {
        index: u32,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooShort { len } => write!(f, "binary batch: {len} bytes is shorter than its header"),
            WireError::BadMagic => write!(f, "binary batch: bad magic"),
            WireError::Version(v) => write!(f, "binary batch: version {v} is not supported (only {VERSION})"),
            WireError::Flags(v) => write!(f, "binary batch: header flags {v:#x}: must be 0"),
            WireError::OpCount(n) => write!(f, "ops: must hold 1..={BATCH_OPS_MAX} operations, not {n}"),
            WireError::Length { expected, actual } => {
                write!(f, "binary batch: the header announces {expected} bytes, the body has {actual}")
            }
            WireError::StringOffset { index } => write!(f, "binary batch: string table offset {index} out of order"),
        }
    }
}

impl std::error::Error for WireError {}

/// Why one op is refused (a 400 result for that op; the others still run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    Kind(u8),
    Payment(u8),
    Flags(u8),
    Reserved,
    String { field: &'static str, index: u32 },
    NotUtf8 { field: &'static str, index: u32 },
    Lines { first: u32, count: u32 },
}

impl OpError {
    /// The message of the op at `op`'s 400 result, naming the field as a JSON op's would.
    pub fn detail(&self, op: usize) -> String {
        match self {
            OpError::Kind(k) => format!("ops[{op}].kind: unknown op kind {k}"),
            OpError::Payment(p) => format!("ops[{op}].payment: unknown payment {p} (0 none, 1 points)"),
            OpError::Flags(v) => format!("ops[{op}].flags: unknown bits in {v:#x}"),
            OpError::Reserved => format!("ops[{op}].reserved: must be 0"),
            OpError::String { field, index } => format!("ops[{op}].{field}: no string {index} in the table"),
            OpError::NotUtf8 { field, index } => format!("ops[{op}].{field}: string {index} is not UTF-8"),
            OpError::Lines { first, count } => format!(
                "ops[{op}].lines: lines {first}+{count} are not 1..={LINES_MAX} lines of the batch's line records"
            ),
        }
    }
}

/// A decoded request body: its sections, borrowed from the body when aligned.
#[derive(Debug)]
pub struct Batch<'a> {
    ops: Cow<'a, [OpRecord]>,
    lines: Cow<'a, [LineRecord]>,
    /// End offset of each string in `strings` (little-endian).
    ends: Cow<'a, [u32]>,
    strings: &'a [u8],
}

/// One `create_order` op, resolved against the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderOp<'b> {
    pub customer: &'b str,
    pub lines: &'b [LineRecord],
    /// `PAYMENT_NONE` or `PAYMENT_POINTS`.
    pub payment: u8,
    pub key: Option<[u8; 16]>,
}

/// The header's bytes, once their length, magic and version (both headers start with them)
/// are checked.
fn head(body: &[u8], magic: [u8; 4], bytes: usize) -> Result<&[u8], WireError> {
    let head = body.get(..bytes).ok_or(WireError::TooShort { len: body.len() })?;
    if head[..4] != magic {
        return Err(WireError::BadMagic);
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    Ok(head)
}

/// `bytes` as `T`s: borrowed when aligned, else copied once into an aligned buffer.
/// `bytes.len()` is a multiple of `size_of::<T>()` (the caller sliced it so).
fn cast<T: Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(slice) => Cow::Borrowed(slice),
        Err(_) => Cow::Owned(bytes.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()),
    }
}

impl<'a> Batch<'a> {
    /// Checks the header and that the sections add up to exactly `body.len()`, and that the
    /// string table's offsets are in order and within its bytes.
    pub fn decode(body: &'a [u8]) -> Result<Batch<'a>, WireError> {
        let h: RequestHeader = bytemuck::pod_read_unaligned(head(body, REQUEST_MAGIC, REQUEST_HEADER_BYTES)?);
        if h.flags != 0 {
            return Err(WireError::Flags(u16::from_le(h.flags)));
        }
        let op_count = u32::from_le(h.op_count);
        if op_count == 0 || op_count as usize > BATCH_OPS_MAX {
            return Err(WireError::OpCount(op_count));
        }
        let (lines, strings, string_bytes) =
            (u32::from_le(h.line_count), u32::from_le(h.string_count), u32::from_le(h.string_bytes));
        // u64: four u32 counts times at most 32 cannot overflow it.
        let ops_bytes = u64::from(op_count) * size_of::<OpRecord>() as u64;
        let lines_bytes = u64::from(lines) * size_of::<LineRecord>() as u64;
        let ends_bytes = u64::from(strings) * 4;
        let expected = REQUEST_HEADER_BYTES as u64 + ops_bytes + lines_bytes + ends_bytes + u64::from(string_bytes);
        if expected != body.len() as u64 {
            return Err(WireError::Length { expected, actual: body.len() });
        }
        // Every section fits in the body now, so these are in range and cannot overflow usize.
        let (ops, rest) = body[REQUEST_HEADER_BYTES..].split_at(ops_bytes as usize);
        let (line_bytes, rest) = rest.split_at(lines_bytes as usize);
        let (end_bytes, string_table) = rest.split_at(ends_bytes as usize);
        let ends: Cow<'a, [u32]> = cast(end_bytes);
        let mut previous = 0u32;
        for (index, end) in ends.iter().enumerate() {
            let end = u32::from_le(*end);
            if end < previous || end > string_bytes {
                return Err(WireError::StringOffset { index: index as u32 });
            }
            previous = end;
        }
        Ok(Batch { ops: cast(ops), lines: cast(line_bytes), ends, strings: string_table })
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// String `index` of the table (checked: in range, UTF-8).
    pub fn string(&self, field: &'static str, index: u32) -> Result<&str, OpError> {
        let i = index as usize;
        let end = *self.ends.get(i).ok_or(OpError::String { field, index })?;
        let start = if i == 0 { 0 } else { self.ends.get(i - 1).map_or(0, |e| u32::from_le(*e)) };
        // decode checked the offsets are in order and within the bytes.
        let bytes =
            self.strings.get(start as usize..u32::from_le(end) as usize).ok_or(OpError::String { field, index })?;
        std::str::from_utf8(bytes).map_err(|_| OpError::NotUtf8 { field, index })
    }

    /// Op `i` (`i < len()`), resolved: its strings, lines and key.
    pub fn op(&self, i: usize) -> Option<Result<OrderOp<'_>, OpError>> {
        self.ops.get(i).map(|op| self.resolve(op))
    }

    fn resolve(&self, op: &OpRecord) -> Result<OrderOp<'_>, OpError> {
        if op.kind != KIND_CREATE_ORDER {
            return Err(OpError::Kind(op.kind));
        }
        if op.payment != PAYMENT_NONE && op.payment != PAYMENT_POINTS {
            return Err(OpError::Payment(op.payment));
        }
        if op.flags & !OP_FLAG_KEY != 0 {
            return Err(OpError::Flags(op.flags));
        }
        if op.reserved != 0 || (op.flags & OP_FLAG_KEY == 0 && op.key != [0; 16]) {
            return Err(OpError::Reserved);
        }
        let customer = self.string("customer_id", u32::from_le(op.customer))?;
        let (first, count) = (u32::from_le(op.first_line), u32::from_le(op.line_count));
        let bad_lines = OpError::Lines { first, count };
        if count == 0 || count as usize > LINES_MAX {
            return Err(bad_lines);
        }
        let end = first.checked_add(count).ok_or_else(|| bad_lines.clone())?;
        let lines = self.lines.get(first as usize..end as usize).ok_or(bad_lines)?;
        // Quantities are the engine's to judge, as for a JSON op (0 is its 400).
        for line in lines {
            self.string("lines.sku", u32::from_le(line.sku))?;
        }
        let key = (op.flags & OP_FLAG_KEY != 0).then_some(op.key);
        Ok(OrderOp { customer, lines, payment: op.payment, key })
    }
}

impl LineRecord {
    pub fn sku_index(&self) -> u32 {
        u32::from_le(self.sku)
    }
    pub fn qty(&self) -> u32 {
        u32::from_le(self.qty)
    }
}

/// Why [`BatchBuilder::push_order`] did not take an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The batch is full (ops or body bytes): send it and start another.
    Full,
    /// The order itself can never fit a batch (no lines, too many, a string too long).
    Invalid,
}

/// Builds request bodies, reusing its buffers from batch to batch.
#[derive(Default)]
pub struct BatchBuilder {
    ops: Vec<OpRecord>,
    lines: Vec<LineRecord>,
    ends: Vec<u32>,
    strings: Vec<u8>,
    /// Each string once: a hot sku is one entry for the whole batch. Linear search over the
    /// recent strings would do for few; a map keeps it constant for many customers.
    index: std::collections::HashMap<Box<str>, u32>,
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
        self.lines.clear();
        self.ends.clear();
        self.strings.clear();
        self.index.clear();
    }

    /// Bytes the body would have now.
    pub fn encoded_len(&self) -> usize {
        REQUEST_HEADER_BYTES
            + self.ops.len() * size_of::<OpRecord>()
            + self.lines.len() * size_of::<LineRecord>()
            + self.ends.len() * 4
            + self.strings.len()
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.strings.extend_from_slice(s.as_bytes());
        let i = self.ends.len() as u32;
        self.ends.push((self.strings.len() as u32).to_le());
        self.index.insert(s.into(), i);
        i
    }

    /// Appends a `create_order` op; `Full` when it would take the batch past
    /// `BATCH_OPS_MAX` ops or `BODY_BYTES_MAX` bytes (the batch is then unchanged).
    pub fn push_order(
        &mut self,
        customer: &str,
        lines: &[(&str, u32)],
        payment: u8,
        key: Option<[u8; 16]>,
    ) -> Result<(), PushError> {
        if lines.is_empty() || lines.len() > LINES_MAX || payment > PAYMENT_POINTS {
            return Err(PushError::Invalid);
        }
        // The most this op can add (every string new); a string beyond the body limit could
        // never be sent.
        let strings: usize = customer.len() + lines.iter().map(|(s, _)| s.len()).sum::<usize>();
        let most = size_of::<OpRecord>() + lines.len() * (size_of::<LineRecord>() + 4) + 4 + strings;
        if REQUEST_HEADER_BYTES + most > BODY_BYTES_MAX {
            return Err(PushError::Invalid);
        }
        if self.ops.len() >= BATCH_OPS_MAX || self.encoded_len() + most > BODY_BYTES_MAX {
            return Err(PushError::Full);
        }
        let customer = self.intern(customer);
        let first_line = self.lines.len() as u32;
        for (sku, qty) in lines {
            let sku = self.intern(sku);
            self.lines.push(LineRecord { sku: sku.to_le(), qty: qty.to_le() });
        }
        self.ops.push(OpRecord {
            kind: KIND_CREATE_ORDER,
            payment,
            flags: if key.is_some() { OP_FLAG_KEY } else { 0 },
            reserved: 0,
            customer: customer.to_le(),
            first_line: first_line.to_le(),
            line_count: (lines.len() as u32).to_le(),
            key: key.unwrap_or_default(),
        });
        Ok(())
    }

    /// Writes the body into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.encoded_len());
        let header = RequestHeader {
            magic: REQUEST_MAGIC,
            version: VERSION.to_le(),
            flags: 0,
            op_count: (self.ops.len() as u32).to_le(),
            line_count: (self.lines.len() as u32).to_le(),
            string_count: (self.ends.len() as u32).to_le(),
            string_bytes: (self.strings.len() as u32).to_le(),
        };
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(bytemuck::cast_slice(&self.ops));
        out.extend_from_slice(bytemuck::cast_slice(&self.lines));
        out.extend_from_slice(bytemuck::cast_slice(&self.ends));
        out.extend_from_slice(&self.strings);
    }
}

/// A results body: header then `records`.
pub fn encode_results(records: &[ResultRecord]) -> Vec<u8> {
    let header = ResultsHeader {
        magic: RESULTS_MAGIC,
        version: VERSION.to_le(),
        flags: 0,
        result_count: (records.len() as u32).to_le(),
        reserved: 0,
    };
    let mut out = Vec::with_capacity(RESULTS_HEADER_BYTES + size_of_val(records));
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(bytemuck::cast_slice(records));
    out
}

/// The result records of a results body (checked: magic, version, exact length).
pub fn decode_results(body: &[u8]) -> Result<Cow<'_, [ResultRecord]>, WireError> {
    let h: ResultsHeader = bytemuck::pod_read_unaligned(head(body, RESULTS_MAGIC, RESULTS_HEADER_BYTES)?);
    let count = u32::from_le(h.result_count);
    if count as usize > BATCH_OPS_MAX {
        return Err(WireError::OpCount(count));
    }
    let expected = RESULTS_HEADER_BYTES as u64 + u64::from(count) * size_of::<ResultRecord>() as u64;
    if expected != body.len() as u64 {
        return Err(WireError::Length { expected, actual: body.len() });
    }
    Ok(cast(&body[RESULTS_HEADER_BYTES..]))
}

/// 32 lowercase hex digits: the idempotency key a 16-byte key is in the merchant's key
/// space (a JSON op or an `Idempotency-Key` header with this string is the same key).
pub fn key_text(key: &[u8; 16], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    for b in key {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// What a fuzzer or a property test asserts of any input: decoding never panics, every op
/// resolves or is refused, and a batch whose ops all resolve encodes back to a body that
/// decodes to the same ops.
pub fn check_decoder(body: &[u8]) {
    let _ = decode_results(body);
    let Ok(batch) = Batch::decode(body) else { return };
    let mut builder = BatchBuilder::new();
    let mut resolved = Vec::new();
    for i in 0..batch.len() {
        match batch.op(i) {
            Some(Ok(op)) => resolved.push(op),
            Some(Err(e)) => {
                let _ = e.detail(i);
                return;
            }
            None => unreachable!("i < len"),
        }
    }
    for op in &resolved {
        let lines: Vec<(&str, u32)> =
            op.lines.iter().map(|l| (batch.string("lines.sku", l.sku_index()).unwrap_or_default(), l.qty())).collect();
        if builder.push_order(op.customer, &lines, op.payment, op.key).is_err() {
            return; // a body may use more bytes than the builder's limit through a bigger string table
        }
    }
    let mut again = Vec::new();
    builder.encode(&mut again);
    let Ok(decoded) = Batch::decode(&again) else { panic!("a built batch decodes") };
    for (i, op) in resolved.iter().enumerate() {
        let Some(Ok(other)) = decoded.op(i) else { panic!("a built op resolves") };
        assert_eq!(op.customer, other.customer);
        assert_eq!((op.payment, op.key), (other.payment, other.key));
        assert_eq!(op.lines.len(), other.lines.len());
        for (a, b) in op.lines.iter().zip(other.lines) {
            assert_eq!(a.qty(), b.qty());
            assert_eq!(batch.string("lines.sku", a.sku_index()), decoded.string("lines.sku", b.sku_index()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_order() -> Vec<u8> {
        let mut b = BatchBuilder::new();
        assert_eq!(b.push_order("c-1", &[("sku-1", 2), ("sku-2", 1)], PAYMENT_POINTS, Some([7; 16])), Ok(()));
        assert_eq!(b.push_order("c-2", &[("sku-1", 1)], PAYMENT_NONE, None), Ok(()));
        let mut out = Vec::new();
        b.encode(&mut out);
        out
    }

    #[test]
    fn a_built_batch_decodes_to_its_orders() {
        let body = one_order();
        assert_eq!(body.len(), 24 + 2 * 32 + 3 * 8 + 4 * 4 + (3 + 5 + 5 + 3));
        let batch = Batch::decode(&body).expect("decodes");
        let first = batch.op(0).expect("op 0").expect("resolves");
        assert_eq!(first.customer, "c-1");
        assert_eq!(first.key, Some([7; 16]));
        assert_eq!(batch.string("sku", first.lines[1].sku_index()), Ok("sku-2"));
        let second = batch.op(1).expect("op 1").expect("resolves");
        assert_eq!((second.customer, second.payment, second.key), ("c-2", PAYMENT_NONE, None));
        assert_eq!(batch.op(2), None);
    }

    #[test]
    fn pinned_bytes_of_the_header() {
        let body = one_order();
        assert_eq!(
            &body[..24],
            &[
                b'S', b'R', b'G', b'B', 1, 0, 0, 0, // magic, version, flags
                2, 0, 0, 0, 3, 0, 0, 0, // ops, lines
                4, 0, 0, 0, 16, 0, 0, 0, // strings, string bytes
            ]
        );
        // The first op: kind, payment, flags, reserved, customer 0, first line 0, 2 lines, key.
        assert_eq!(&body[24..40], &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn unknown_kinds_and_bad_references_are_refused_per_op() {
        let mut body = one_order();
        body[24] = 9; // op 0: kind 9
        body[24 + 32 + 4] = 200; // op 1: customer string 200
        let batch = Batch::decode(&body).expect("the envelope is fine");
        assert_eq!(batch.op(0), Some(Err(OpError::Kind(9))));
        assert_eq!(batch.op(1), Some(Err(OpError::String { field: "customer_id", index: 200 })));
    }

    #[test]
    fn every_truncation_and_a_misaligned_body_are_handled() {
        let body = one_order();
        for n in 0..body.len() {
            assert!(Batch::decode(&body[..n]).is_err(), "{n} bytes");
        }
        // One byte in front moves every section off its alignment: copied, same ops.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&body);
        let batch = Batch::decode(&shifted[1..]).expect("decodes");
        assert_eq!(batch.op(1).and_then(Result::ok).map(|o| o.customer), Some("c-2"));
    }

    #[test]
    fn results_round_trip() {
        let r = ResultRecord { status: 201u16.to_le(), order_number: 5u64.to_le(), ..Default::default() };
        let body = encode_results(&[r, r]);
        let back = decode_results(&body).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].status(), back[1].order_number()), (201, 5));
        assert!(decode_results(&body[..body.len() - 1]).is_err());
        assert_eq!(error_name(error_number("insufficient_stock")), Some("insufficient_stock"));
        assert_eq!(error_number("something_new"), ERROR_OTHER);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            check_decoder(&body);
        }

        #[test]
        fn damaged_batches_never_panic(at in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let mut body = one_order();
            let n = body.len();
            body[at % n] = byte;
            check_decoder(&body);
        }
    }
}
