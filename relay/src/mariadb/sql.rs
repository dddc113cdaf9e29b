//! SQL text: literals and chunked multi-row statements.
//!
//! Rows are sent as literals in multi-row statements (one round trip per chunk, no
//! prepared-statement bookkeeping). Strings are escaped the way `mysql_real_escape_string`
//! does, which is sound because the session runs without `NO_BACKSLASH_ESCAPES`
//! (`mod.rs` sets `sql_mode` on every connection).

use surge_core::UnixMs;

/// Appends `'s'` with every character the server treats specially escaped.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('\'');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'\'' => "\\'",
            b'\\' => "\\\\",
            b'\0' => "\\0",
            b'\n' => "\\n",
            b'\r' => "\\r",
            0x1a => "\\Z",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('\'');
}

/// Appends `s` as one field of a `LOAD DATA` file in the default format (fields end at a
/// tab, lines at a newline, `\\` escapes): the bytes that would end a field or a line, and
/// the escape itself, are escaped, so every string comes back as it was (`\N`, a NULL,
/// cannot appear: a backslash is always doubled).
pub fn push_field(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\0' => "\\0",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

pub fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("NULL"),
    }
}

pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa_u64(n).as_str());
}

/// A `DATETIME(3)` literal in UTC: `'2026-11-21 06:01:33.123'`. Times beyond the
/// column's range (year 9999) are clamped to its end; they cannot come from a real clock.
pub fn push_datetime(out: &mut String, ms: UnixMs) {
    out.push('\'');
    push_bare_datetime(out, ms);
    out.push('\'');
}

/// [`push_datetime`] without the quotes (a field of a `LOAD DATA` file).
pub fn push_bare_datetime(out: &mut String, ms: UnixMs) {
    surge_core::envelope::push_utc_ms(out, ms, ' ');
}

pub fn push_opt_datetime(out: &mut String, ms: Option<UnixMs>) {
    match ms {
        Some(ms) => push_datetime(out, ms),
        None => out.push_str("NULL"),
    }
}

struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    // Bounded: u64 has at most 20 decimal digits.
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

/// Builds `head (row),(row),... tail` statements of at most `rows_max` rows and about
/// `bytes_max` bytes each; full statements wait in `ready` for the caller to execute.
pub struct Chunked {
    head: &'static str,
    tail: &'static str,
    rows_max: usize,
    bytes_max: usize,
    current: String,
    rows: usize,
    ready: Vec<String>,
    pub total_rows: u64,
}

impl Chunked {
    pub fn new(head: &'static str, tail: &'static str, limits: Limits) -> Chunked {
        assert!(limits.rows_max > 0 && limits.bytes_max > 0);
        Chunked {
            head,
            tail,
            rows_max: limits.rows_max,
            bytes_max: limits.bytes_max,
            current: String::new(),
            rows: 0,
            ready: Vec::new(),
            total_rows: 0,
        }
    }

    /// Adds one row: `fill` appends its comma-separated values.
    pub fn row(&mut self, fill: impl FnOnce(&mut String)) {
        if self.rows == 0 {
            self.current.reserve(self.bytes_max.min(1 << 20));
            self.current.push_str(self.head);
            self.current.push_str(" VALUES (");
        } else {
            self.current.push_str(",(");
        }
        fill(&mut self.current);
        self.current.push(')');
        self.rows += 1;
        self.total_rows += 1;
        if self.rows >= self.rows_max || self.current.len() >= self.bytes_max {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.rows == 0 {
            return;
        }
        self.current.push_str(self.tail);
        self.ready.push(std::mem::take(&mut self.current));
        self.rows = 0;
    }

    /// Statements that are full.
    pub fn take_ready(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ready)
    }

    /// Every statement, the last one possibly short.
    pub fn finish(mut self) -> Vec<String> {
        self.seal();
        self.ready
    }
}

/// How big one statement may get. A statement ends after the row that reaches
/// `bytes_max`, so keep `bytes_max` well below the server's `max_allowed_packet`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub rows_max: usize,
    pub bytes_max: usize,
}

impl Limits {
    /// 1,000 rows per statement, and at most a quarter of `max_allowed_packet` (so one
    /// more row past the soft limit still fits), capped at 4 MiB.
    pub fn for_packet(max_allowed_packet: u64) -> Limits {
        let quarter = usize::try_from(max_allowed_packet / 4).unwrap_or(usize::MAX);
        Limits { rows_max: 1_000, bytes_max: quarter.clamp(16 * 1024, 4 << 20) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_str(&mut out, "a'b\\c\0d\ne\rf\u{1a}g한");
        assert_eq!(out, "'a\\'b\\\\c\\0d\\ne\\rf\\Zg한'");
    }

    #[test]
    fn datetimes_match_the_envelope_clock() {
        for ms in [0u64, 1, 999, 86_399_999, 951_782_400_000, 1_763_700_000_123, 4_102_444_800_000, 1_709_164_800_500] {
            let rfc = surge_core::envelope::rfc3339_ms(ms);
            let mut out = String::new();
            push_datetime(&mut out, ms);
            let expected = format!("'{}'", rfc.trim_end_matches('Z').replace('T', " "));
            assert_eq!(out, expected, "{ms}");
        }
        let mut out = String::new();
        push_datetime(&mut out, u64::MAX);
        assert_eq!(out, "'9999-12-31 23:59:59.999'");
    }

    #[test]
    fn load_data_fields_are_escaped() {
        let mut out = String::new();
        push_field(&mut out, "a\tb\nc\rd\\e\0f'g\"h한\\N");
        assert_eq!(out, "a\\tb\\nc\\rd\\\\e\\0f'g\"h한\\\\N");
        let mut out = String::new();
        push_bare_datetime(&mut out, 1_763_700_000_123);
        assert_eq!(out, "2025-11-21 04:40:00.123");
    }

    #[test]
    fn numbers() {
        let mut out = String::new();
        push_u64(&mut out, 0);
        out.push(',');
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, format!("0,{}", u64::MAX));
    }

    #[test]
    fn statements_are_chunked_by_rows_and_bytes() {
        let mut c =
            Chunked::new("INSERT INTO t (a)", " ON DUPLICATE KEY UPDATE a=a", Limits { rows_max: 3, bytes_max: 1000 });
        for i in 0..7 {
            c.row(|out| push_u64(out, i));
        }
        assert_eq!(c.take_ready().len(), 2);
        let rest = c.finish();
        assert_eq!(rest, vec!["INSERT INTO t (a) VALUES (6) ON DUPLICATE KEY UPDATE a=a".to_string()]);
        let mut c = Chunked::new("INSERT INTO t (a)", "", Limits { rows_max: 1000, bytes_max: 40 });
        for _ in 0..4 {
            c.row(|out| push_str(out, "0123456789"));
        }
        let all = c.finish();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|s| s.len() < 80));
    }
}
