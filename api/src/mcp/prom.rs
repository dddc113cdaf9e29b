//! The server's `/metrics` text, read back: samples by name and labels, differences between
//! two readings, and percentiles from histogram buckets. Only what the tools need; the text
//! is what `lib.rs` `metrics_text` writes (label values may hold `{` and `}`, as route
//! templates do, never an escaped quote).

/// Samples one reading keeps at most (a server exposes a few thousand).
pub const SAMPLES_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// One reading of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub samples: Vec<Sample>,
}

impl Reading {
    pub fn parse(text: &str) -> Reading {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .take(SAMPLES_MAX)
            .collect();
        Reading { samples }
    }

    /// Every sample of `name` that has the labels `want` (and any others).
    pub fn each<'a>(&'a self, name: &'a str, want: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name && s.has(want))
    }

    /// The sum of `each(name, want)`: 0 when there is none.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.each(name, want).map(|s| s.value).sum()
    }

    /// The first sample of `name` with `want`, if any.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.each(name, want).next().map(|s| s.value)
    }

    /// Cumulative buckets `(le, count)` of histogram `name` with `want`, summed over the
    /// other labels, ascending by bound (`+Inf` last).
    pub fn buckets(&self, name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.each(&bucket, want) {
            let Some(le) = s.label("le").and_then(parse_value) else { continue };
            match out.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += s.value,
                None => out.push((le, s.value)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// `later - earlier` per bucket (counters only grow while the process lives; a restart in
/// between shows as negative and is taken as 0).
pub fn bucket_delta(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|(le, n)| {
            let before = earlier.iter().find(|(b, _)| b == le).map_or(0.0, |(_, m)| *m);
            (*le, (n - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile (0..=1) of cumulative buckets, interpolated linearly inside the bucket it
/// falls in, as Prometheus' `histogram_quantile` does; the highest finite bound when it
/// falls in `+Inf`. `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = (0.0, 0.0);
    for (le, n) in buckets {
        if *n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = n - lower.1;
            let into = if width > 0.0 { (rank - lower.1) / width } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * into);
        }
        lower = (*le, *n);
    }
    Some(lower.0)
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// `name{k="v",...} value` or `name value`.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut r = inner;
        // Bounded: each round consumes one `k="v"` pair or ends.
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = r.split_once("=\"")?;
            let (value, after_value) = after_key.split_once('"')?;
            labels.push((key.trim().to_string(), value.to_string()));
            r = after_value;
        }
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n\
        surge_ready 1\n\
        surge_http_requests_total{route=\"/v1/items/{sku}\",method=\"PUT\",status=\"201\"} 3\n\
        surge_http_request_duration_seconds_bucket{route=\"/v1/orders\",method=\"POST\",le=\"0.001\"} 50\n\
        surge_http_request_duration_seconds_bucket{route=\"/v1/orders\",method=\"POST\",le=\"0.01\"} 90\n\
        surge_http_request_duration_seconds_bucket{route=\"/v1/orders\",method=\"POST\",le=\"+Inf\"} 100\n\
        garbage{route=\"unterminated 4\n";

    #[test]
    fn parses_labels_with_braces_and_skips_garbage() {
        let r = Reading::parse(TEXT);
        assert_eq!(r.get("surge_ready", &[]), Some(1.0));
        assert_eq!(r.get("surge_http_requests_total", &[("route", "/v1/items/{sku}"), ("status", "201")]), Some(3.0));
        assert_eq!(r.samples.len(), 5);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let r = Reading::parse(TEXT);
        let b = r.buckets("surge_http_request_duration_seconds", &[("route", "/v1/orders")]);
        assert_eq!(b.len(), 3);
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p90 = quantile(&b, 0.9).unwrap();
        assert!((p90 - 0.01).abs() < 1e-12, "{p90}");
        assert_eq!(quantile(&b, 0.99), Some(0.01), "in +Inf: the highest finite bound");
        assert_eq!(quantile(&[], 0.5), None);
        let none = bucket_delta(&b, &b);
        assert_eq!(quantile(&none, 0.5), None);
    }
}
