//! The run's result: a JSON document, a text summary and a self-contained HTML report with
//! inline SVG charts (no script, no network).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::checks::Check;
use crate::sched::thousands;
use crate::stats::{Latency, SecondRow};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutcomeCount {
    pub label: String,
    pub count: u64,
    pub error: bool,
}

/// Everything a run measured; written as the JSON result file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub scenario: String,
    /// "open" or "closed".
    pub mode: String,
    pub target: String,
    pub started_unix_s: u64,
    pub duration_s: f64,
    /// From the start to the last answer.
    pub elapsed_s: f64,
    /// Open loop: the arrival rate asked for (operations/s).
    pub rate: Option<f64>,
    pub connections: usize,
    pub planned_ops: Option<u64>,
    pub not_sent: u64,
    pub ops: u64,
    pub failed_ops: u64,
    pub requests: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub requests_per_s: f64,
    /// batch: operations inside the batches, and those that succeeded.
    pub inner_ops: Option<u64>,
    pub inner_ok: Option<u64>,
    /// Latency of an operation (all its requests), from its due time in open loop.
    pub latency: Latency,
    pub outcomes: Vec<OutcomeCount>,
    pub timeline: Vec<SecondRow>,
    /// CPU the load generator itself used during the load, in % of one core, and its
    /// runtime threads: near 100% per thread, the generator (not the server) was the limit.
    pub generator_cpu_pct: Option<f64>,
    pub threads: usize,
    pub checks: Vec<Check>,
    pub params: serde_json::Value,
    pub verdict: Verdict,
    /// `verdict == Pass` (for scripts that read this field).
    pub passed: bool,
}

/// What a run amounts to; the exit code of `surge load` follows it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every invariant checked holds, operations ran, and failures stay within the limit.
    Pass,
    /// An invariant is broken, no operation ran, or too many operations failed.
    Fail,
    /// Nothing failed, but no invariant was checked (`--skip-setup`): not a pass.
    Unchecked,
}

/// The exit code of a run that checked no invariant.
pub const EXIT_UNCHECKED: u8 = 3;

impl Verdict {
    /// `ops`, the share of failed operations and the checks of a run, judged.
    pub fn of(ops: u64, error_pct: f64, max_error_pct: f64, checks: &[Check]) -> Verdict {
        if ops == 0 || error_pct > max_error_pct || checks.iter().any(|c| !c.pass) {
            Verdict::Fail
        } else if checks.is_empty() {
            Verdict::Unchecked
        } else {
            Verdict::Pass
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Unchecked => EXIT_UNCHECKED,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unchecked => "NOT CHECKED",
        }
    }
}

/// What a run without checks says instead of its invariants.
const NOTHING_CHECKED: &str = "no invariant was checked (--skip-setup creates no merchant to check)";

impl RunReport {
    /// The generator used nearly all the CPU its runtime threads could have.
    pub fn generator_saturated(&self) -> bool {
        self.generator_cpu_pct.is_some_and(|c| c >= 90.0 * self.threads as f64)
    }

    pub fn error_pct(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            100.0 * self.failed_ops as f64 / self.ops as f64
        }
    }
}

/// The text summary printed after a run.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let rate = r.rate.map(|x| format!(", asked {}/s", thousands(x.round() as u64))).unwrap_or_default();
    let _ = writeln!(
        s,
        "surge load: {} ({} loop{rate}, {} connections) against {}",
        r.scenario, r.mode, r.connections, r.target
    );
    let _ = writeln!(
        s,
        "  operations   {} in {:.1} s = {:.0}/s  (requests {} = {:.0}/s)",
        thousands(r.ops),
        r.elapsed_s,
        r.ops_per_s,
        thousands(r.requests),
        r.requests_per_s
    );
    if let (Some(n), Some(ok)) = (r.inner_ops, r.inner_ok) {
        let per_s = if r.elapsed_s > 0.0 { ok as f64 / r.elapsed_s } else { 0.0 };
        let _ = writeln!(s, "  batch ops    {} sent, {} succeeded = {per_s:.0}/s", thousands(n), thousands(ok));
    }
    if let Some(p) = r.planned_ops {
        let _ = writeln!(s, "  scheduled    {}  (not sent: {})", thousands(p), thousands(r.not_sent));
    }
    let l = &r.latency;
    let _ = writeln!(
        s,
        "  latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    let _ = writeln!(s, "  failed ops   {} ({:.3}%)", thousands(r.failed_ops), r.error_pct());
    if let Some(cpu) = r.generator_cpu_pct {
        let warn = if r.generator_saturated() {
            "  WARNING: the generator was CPU-bound; throughput is a lower bound, latency an upper bound"
        } else {
            ""
        };
        let _ = writeln!(s, "  generator    {cpu:.0}% CPU ({} runtime thread(s)){warn}", r.threads);
    }
    let _ = writeln!(s, "  answers");
    for o in &r.outcomes {
        let tag = if o.error { "  error" } else { "" };
        let _ = writeln!(s, "    {:<40} {:>12}{tag}", o.label, thousands(o.count));
    }
    if r.checks.is_empty() {
        let _ = writeln!(s, "  invariants   {NOTHING_CHECKED}");
    } else {
        let _ = writeln!(s, "  invariants");
        for c in &r.checks {
            let _ = writeln!(s, "    [{}] {}: {}", if c.pass { "PASS" } else { "FAIL" }, c.name, c.detail);
        }
    }
    let _ = writeln!(s, "  result       {}", r.verdict.word());
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        thousands(v.round() as u64)
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart as an inline SVG: `series` are (name, colour, one value per second).
pub fn line_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h) = (860.0, 260.0);
    let (left, right, top, bottom) = (70.0, 20.0, 30.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let max = nice_max(series.iter().flat_map(|s| s.2.iter().copied()).fold(0.0, f64::max));
    let x = |i: usize| left + if n <= 1 { pw / 2.0 } else { pw * i as f64 / (n - 1) as f64 };
    let y = |v: f64| top + ph - ph * (v / max).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}">"##,
        t = esc(title)
    );
    let _ = write!(s, r##"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"##, esc(title));
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        s,
        r##"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(unit)
    );
    let ticks = n.clamp(1, 10);
    for k in 0..ticks {
        let i = if ticks <= 1 { 0 } else { k * (n - 1) / (ticks - 1) };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{i}s</text>"##,
            x(i),
            top + ph + 16.0
        );
    }
    for (k, (name, colour, values)) in series.iter().enumerate() {
        if !values.is_empty() {
            let pts: Vec<String> =
                values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
            let _ =
                write!(s, r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##, pts.join(" "));
        }
        let lx = left + 10.0 + 130.0 * k as f64;
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="11">{}</text>"##,
            h - 12.0,
            lx + 16.0,
            h - 7.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The self-contained HTML report.
pub fn html(r: &RunReport) -> String {
    let mut s = String::new();
    let verdict = r.verdict.word();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>surge load: {sc} {verdict}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:900px}}table{{border-collapse:collapse}}\
         td,th{{padding:3px 12px;text-align:left;border-bottom:1px solid #eee}}.pass{{color:#080}}.fail{{color:#b00}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}}</style></head><body>\
         <h1>surge load: {sc} <span class=\"{cls}\">{verdict}</span></h1>",
        sc = esc(&r.scenario),
        cls = if r.verdict == Verdict::Pass { "pass" } else { "fail" }
    );
    let rate = r.rate.map(|x| format!("{x:.0} ops/s asked")).unwrap_or_else(|| "as fast as answered".into());
    let _ = write!(
        s,
        "<p>{} loop ({rate}), {} connections, {:.0} s against <code>{}</code>, started at Unix time {}.</p>",
        esc(&r.mode),
        r.connections,
        r.duration_s,
        esc(&r.target),
        r.started_unix_s
    );
    s.push_str("<h2>Summary</h2><table>");
    for (k, v) in summary_rows(r) {
        let _ = write!(s, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", esc(&k), esc(&v));
    }
    s.push_str("</table>");
    invariants_html(&mut s, r);
    charts_html(&mut s, r);
    answers_html(&mut s, r);
    s.push_str("<h2>Parameters</h2><pre>");
    s.push_str(&esc(&serde_json::to_string_pretty(&r.params).unwrap_or_default()));
    s.push_str("</pre></body></html>\n");
    s
}

/// The figures of the HTML summary table: (what, value).
fn summary_rows(r: &RunReport) -> Vec<(String, String)> {
    let l = &r.latency;
    let mut rows: Vec<(String, String)> = vec![
        ("operations".into(), thousands(r.ops)),
        ("operations/s".into(), format!("{:.0}", r.ops_per_s)),
        ("requests".into(), thousands(r.requests)),
        ("requests/s".into(), format!("{:.0}", r.requests_per_s)),
        ("failed operations".into(), format!("{} ({:.3}%)", thousands(r.failed_ops), r.error_pct())),
    ];
    if let Some(p) = r.planned_ops {
        rows.push(("scheduled / not sent".into(), format!("{} / {}", thousands(p), thousands(r.not_sent))));
    }
    if let Some(cpu) = r.generator_cpu_pct {
        let note = if r.generator_saturated() { " (CPU-bound: figures are bounds)" } else { "" };
        rows.push(("load generator CPU".into(), format!("{cpu:.0}% of one core, {} thread(s){note}", r.threads)));
    }
    if let (Some(n), Some(ok)) = (r.inner_ops, r.inner_ok) {
        rows.push(("batch operations (ok)".into(), format!("{} ({})", thousands(n), thousands(ok))));
    }
    for (k, v) in [
        ("p50", l.p50_ms),
        ("p90", l.p90_ms),
        ("p99", l.p99_ms),
        ("p99.9", l.p999_ms),
        ("max", l.max_ms),
        ("mean", l.mean_ms),
    ] {
        rows.push((format!("latency {k}"), format!("{v:.2} ms")));
    }
    rows
}

fn invariants_html(s: &mut String, r: &RunReport) {
    if r.checks.is_empty() {
        let _ = write!(s, "<h2>Invariants</h2><p class=\"fail\">{}</p>", esc(NOTHING_CHECKED));
    } else {
        s.push_str("<h2>Invariants</h2><table>");
        for c in &r.checks {
            let (cls, t) = if c.pass { ("pass", "PASS") } else { ("fail", "FAIL") };
            let _ =
                write!(s, "<tr><td class=\"{cls}\">{t}</td><td>{}</td><td>{}</td></tr>", esc(&c.name), esc(&c.detail));
        }
        s.push_str("</table>");
    }
}

/// Throughput and latency per second, as inline SVG.
fn charts_html(s: &mut String, r: &RunReport) {
    let ops: Vec<f64> = r.timeline.iter().map(|t| t.ops as f64).collect();
    let errs: Vec<f64> = r.timeline.iter().map(|t| t.errors as f64).collect();
    s.push_str("<h2>Throughput</h2>");
    s.push_str(&line_chart(
        "Operations per second",
        "ops/s",
        &[("completed", "#1f77b4", ops), ("failed", "#d62728", errs)],
    ));
    s.push_str("<h2>Latency over time</h2>");
    let p50: Vec<f64> = r.timeline.iter().map(|t| t.p50_ms).collect();
    let p99: Vec<f64> = r.timeline.iter().map(|t| t.p99_ms).collect();
    let max: Vec<f64> = r.timeline.iter().map(|t| t.max_ms).collect();
    s.push_str(&line_chart(
        "Latency per second of completion",
        "ms",
        &[("p50", "#2ca02c", p50), ("p99", "#ff7f0e", p99), ("max", "#9467bd", max)],
    ));
}

fn answers_html(s: &mut String, r: &RunReport) {
    s.push_str("<h2>Answers</h2><table><tr><th>answer</th><th>count</th><th></th></tr>");
    for o in &r.outcomes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&o.label),
            thousands(o.count),
            if o.error { "<span class=\"fail\">error</span>" } else { "" }
        );
    }
    s.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> RunReport {
        RunReport {
            scenario: "flash-sale".into(),
            mode: "open".into(),
            target: "http://127.0.0.1:8080".into(),
            started_unix_s: 1,
            duration_s: 3.0,
            elapsed_s: 3.0,
            rate: Some(100.0),
            connections: 4,
            planned_ops: Some(300),
            not_sent: 0,
            ops: 300,
            failed_ops: 1,
            requests: 300,
            errors: 1,
            ops_per_s: 100.0,
            requests_per_s: 100.0,
            inner_ops: None,
            inner_ok: None,
            latency: Latency { p50_ms: 1.0, p99_ms: 2.5, max_ms: 7.0, ..Latency::default() },
            outcomes: vec![
                OutcomeCount { label: "201".into(), count: 250, error: false },
                OutcomeCount { label: "409 insufficient_stock".into(), count: 49, error: false },
                OutcomeCount { label: "500 <internal>".into(), count: 1, error: true },
            ],
            timeline: (0..3)
                .map(|i| SecondRow {
                    second: i,
                    ops: 100,
                    errors: u64::from(i == 1),
                    requests: 100,
                    p50_ms: 1.0,
                    p99_ms: 2.0 + i as f64,
                    max_ms: 7.0,
                })
                .collect(),
            generator_cpu_pct: Some(95.0),
            threads: 1,
            checks: vec![
                Check { name: "no oversell".into(), pass: true, detail: "ok".into() },
                Check { name: "ledger balanced".into(), pass: false, detail: "debits <> credits".into() },
            ],
            params: serde_json::json!({"hot_skus": 5}),
            verdict: Verdict::Fail,
            passed: false,
        }
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["latency"]["p99_ms"], 2.5);
        assert_eq!(v["timeline"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn html_is_self_contained_with_two_charts() {
        let h = html(&sample());
        assert!(h.starts_with("<!doctype html>"));
        assert_eq!(h.matches("<svg").count(), 2);
        assert_eq!(h.matches("</svg>").count(), 2);
        assert_eq!(h.matches("<polyline").count(), 5, "2 throughput + 3 latency series");
        assert!(!h.contains("<script"), "no script");
        assert!(!h.contains("src=") && !h.contains("href="), "nothing loaded from elsewhere");
        // Labels are escaped.
        assert!(h.contains("500 &lt;internal&gt;"));
        assert!(h.contains("FAIL") && h.contains("ledger balanced"));
    }

    #[test]
    fn chart_points_stay_inside_the_plot() {
        let svg = line_chart("t", "ms", &[("a", "#000", vec![0.0, 5.0, 10.0, 3.0])]);
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        for p in pts.split(' ') {
            let (x, y): (f64, f64) = {
                let mut it = p.split(',').map(|v| v.parse::<f64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            };
            assert!((70.0..=840.0).contains(&x) && (30.0..=220.0).contains(&y), "{p}");
        }
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(1200.0), 2000.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn summary_lists_percentiles_errors_and_checks() {
        let s = summary(&sample());
        assert!(s.contains("p99 2.50"), "{s}");
        assert!(s.contains("409 insufficient_stock"));
        assert!(s.contains("[FAIL] ledger balanced"));
        assert!(s.contains("result       FAIL"));
        assert!(s.contains("95% CPU") && s.contains("WARNING"), "{s}");
    }

    #[test]
    fn a_run_that_checked_nothing_says_so_and_is_not_a_pass() {
        let mut r = sample();
        r.checks.clear();
        r.verdict = Verdict::of(r.ops, 0.0, 1.0, &r.checks);
        assert_eq!(r.verdict, Verdict::Unchecked);
        assert_eq!(r.verdict.exit_code(), EXIT_UNCHECKED);
        assert_ne!(r.verdict.exit_code(), 0);
        let s = summary(&r);
        assert!(s.contains("no invariant was checked"), "{s}");
        assert!(s.contains("result       NOT CHECKED") && !s.contains("PASS"), "{s}");
        assert!(html(&r).contains("no invariant was checked"));
        // Failing beats checking nothing.
        assert_eq!(Verdict::of(r.ops, 5.0, 1.0, &[]), Verdict::Fail);
        assert_eq!(Verdict::of(0, 0.0, 1.0, &[]), Verdict::Fail);
    }

    #[test]
    fn the_verdict_passes_only_when_every_check_passes() {
        let pass = Check { name: "a".into(), pass: true, detail: String::new() };
        let fail = Check { name: "b".into(), pass: false, detail: String::new() };
        assert_eq!(Verdict::of(10, 0.0, 1.0, std::slice::from_ref(&pass)), Verdict::Pass);
        assert_eq!(Verdict::of(10, 0.0, 1.0, &[pass.clone(), fail]), Verdict::Fail);
        assert_eq!(Verdict::of(10, 2.0, 1.0, &[pass]), Verdict::Fail);
        assert_eq!((Verdict::Pass.exit_code(), Verdict::Fail.exit_code()), (0, 1));
    }
}
