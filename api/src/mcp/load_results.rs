//! `surge load` JSON results (`load/src/report.rs` `RunReport`) read from one directory:
//! listed, read by bare file name only (no path, no `..`, no symlink out of the directory),
//! bounded in size, and summed up for an assistant: throughput, percentiles, errors,
//! invariants, and where the time went.

use std::path::Path;

use serde_json::{json, Value};
use surge_load::RunReport;

use crate::results_dir::{self, RESULT_BYTES_MAX};

/// Files one listing names at most (the newest).
pub const LISTED_MAX: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum LoadResultError {
    #[error("{0:?} is not a result file name: give a bare name like flash-sale-1764990000.json (see the listing)")]
    BadName(String),
    #[error("no result file {0:?} in the results directory")]
    NotFound(String),
    #[error("{0:?} is over {RESULT_BYTES_MAX} bytes")]
    TooLarge(String),
    #[error("{name:?} is not a surge load result: {detail}")]
    NotAResult { name: String, detail: String },
    #[error("the results directory {dir}: {detail}")]
    Directory { dir: String, detail: String },
}

/// The newest result files in `dir`: `[{"name", "modified_unix_s", "bytes"}]`.
pub fn list(dir: &Path) -> Result<Vec<Value>, LoadResultError> {
    let files = results_dir::newest(dir, ".json", LISTED_MAX)
        .map_err(|e| LoadResultError::Directory { dir: dir.display().to_string(), detail: e.to_string() })?;
    Ok(files
        .into_iter()
        .map(|f| json!({"name": f.name, "modified_unix_s": f.modified_unix_s, "bytes": f.bytes}))
        .collect())
}

/// Reads result `name` from `dir`, refusing anything that is not a file directly in it.
pub fn read(dir: &Path, name: &str) -> Result<RunReport, LoadResultError> {
    if !results_dir::safe_name(name) || !name.ends_with(".json") {
        return Err(LoadResultError::BadName(name.to_string()));
    }
    let path = results_dir::resolve(dir, name).ok_or_else(|| LoadResultError::NotFound(name.to_string()))?;
    let bytes = results_dir::read_bounded(&path).map_err(|e| match e {
        results_dir::ReadError::TooLarge => LoadResultError::TooLarge(name.to_string()),
        results_dir::ReadError::Io(_) => LoadResultError::NotFound(name.to_string()),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LoadResultError::NotAResult { name: name.to_string(), detail: e.to_string() })
}

/// What an assistant asks of a run, computed from its result.
pub fn summarize(name: &str, r: &RunReport) -> Value {
    let error_outcomes: Vec<Value> =
        r.outcomes.iter().filter(|o| o.error).map(|o| json!({"answer": o.label, "count": o.count})).collect();
    let answers: Vec<Value> =
        r.outcomes.iter().map(|o| json!({"answer": o.label, "count": o.count, "error": o.error})).collect();
    let checks: Vec<Value> =
        r.checks.iter().map(|c| json!({"name": c.name, "pass": c.pass, "detail": c.detail})).collect();
    json!({
        "file": name,
        "scenario": r.scenario,
        "mode": r.mode,
        "target": r.target,
        "started_unix_s": r.started_unix_s,
        "verdict": r.verdict,
        "passed": r.passed,
        "throughput": {
            "ops": r.ops,
            "ops_per_s": r.ops_per_s,
            "requests": r.requests,
            "requests_per_s": r.requests_per_s,
            "rate_asked_per_s": r.rate,
            "duration_s": r.duration_s,
            "elapsed_s": r.elapsed_s,
            "connections": r.connections,
            "batch_inner_ops": r.inner_ops,
            "batch_inner_ok": r.inner_ok,
        },
        "latency_ms": r.latency,
        "errors": {
            "failed_ops": r.failed_ops,
            "error_pct": r.error_pct(),
            "by_answer": error_outcomes,
        },
        "answers": answers,
        "invariants": {
            "all_passed": !r.checks.is_empty() && r.checks.iter().all(|c| c.pass),
            "checked": checks.len(),
            "checks": checks,
        },
        "where_time_went": where_time_went(r),
    })
}

/// The run's time, read from its per-second timeline and the generator's own figures: was
/// the generator the limit, did the server fall behind the schedule, which seconds were
/// slow, did latency grow over the run.
fn where_time_went(r: &RunReport) -> Value {
    let mut notes: Vec<String> = Vec::new();
    if r.generator_saturated() {
        notes.push(format!(
            "the load generator was CPU-bound ({:.0}% of {} thread(s)): throughput is a lower bound and latency an upper bound",
            r.generator_cpu_pct.unwrap_or(0.0),
            r.threads
        ));
    }
    if let Some(planned) = r.planned_ops.filter(|p| *p > 0) {
        if r.not_sent > 0 {
            let pct = 100.0 * r.not_sent as f64 / planned as f64;
            notes.push(format!(
                "{} of {planned} scheduled operations ({pct:.1}%) were never sent: the server (or the generator) fell behind the arrival rate",
                r.not_sent
            ));
        }
    }
    let t = &r.timeline;
    let mut slowest: Vec<&surge_load::stats::SecondRow> = t.iter().filter(|s| s.ops > 0).collect();
    slowest.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms));
    slowest.truncate(3);
    let slowest: Vec<Value> = slowest
        .iter()
        .map(|s| json!({"second": s.second, "p99_ms": s.p99_ms, "max_ms": s.max_ms, "ops": s.ops, "errors": s.errors}))
        .collect();
    let error_seconds: Vec<u32> = t.iter().filter(|s| s.errors > 0).map(|s| s.second).take(60).collect();
    let busy: Vec<&surge_load::stats::SecondRow> = t.iter().filter(|s| s.ops > 0).collect();
    let third = busy.len() / 3;
    let (first_p99, last_p99) = if third > 0 {
        let median = |rows: &[&surge_load::stats::SecondRow]| {
            let mut v: Vec<f64> = rows.iter().map(|s| s.p99_ms).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        (Some(median(&busy[..third])), Some(median(&busy[busy.len() - third..])))
    } else {
        (None, None)
    };
    if let (Some(a), Some(b)) = (first_p99, last_p99) {
        if b > 2.0 * a && b > 1.0 {
            notes.push(format!(
                "latency grew over the run: per-second p99 {a:.2} ms in the first third, {b:.2} ms in the last"
            ));
        }
    }
    let l = &r.latency;
    if l.p50_ms > 0.0 && l.p99_ms > 10.0 * l.p50_ms {
        notes.push(format!(
            "a long tail: p99 {:.2} ms is over 10x p50 {:.2} ms (stalls such as fsync, snapshots or queueing)",
            l.p99_ms, l.p50_ms
        ));
    }
    let ops_per_s: Vec<u64> = busy.iter().map(|s| s.ops).collect();
    json!({
        "notes": notes,
        "generator_cpu_pct": r.generator_cpu_pct,
        "generator_threads": r.threads,
        "not_sent": r.not_sent,
        "planned_ops": r.planned_ops,
        "slowest_seconds": slowest,
        "seconds_with_errors": error_seconds,
        "per_second_ops_min": ops_per_s.iter().min(),
        "per_second_ops_max": ops_per_s.iter().max(),
        "p99_ms_first_third_median": first_p99,
        "p99_ms_last_third_median": last_p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bare_json_files() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x.json", "a/b.json", ".hidden.json", "x.html", "x.json/..", "", "%2e%2e.json", "x\u{0}.json"] {
            assert!(matches!(read(dir.path(), bad), Err(LoadResultError::BadName(_))), "{bad}");
        }
        let good = read(dir.path(), "flash-sale-1764990000.json");
        assert!(matches!(good, Err(LoadResultError::NotFound(_))), "a good name, not there");
    }

    #[test]
    fn reads_only_files_inside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("results");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("outside.json"), "{}").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.json"), dir.join("link.json")).unwrap();
        assert!(matches!(read(&dir, "link.json"), Err(LoadResultError::NotFound(_))));
        assert!(matches!(read(&dir, "../outside.json"), Err(LoadResultError::BadName(_))));
        std::fs::write(dir.join("bad.json"), "{\"scenario\": 1}").unwrap();
        assert!(matches!(read(&dir, "bad.json"), Err(LoadResultError::NotAResult { .. })));
        assert!(matches!(read(&dir, "missing.json"), Err(LoadResultError::NotFound(_))));
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 1, "the symlink is not a file of the directory: {listed:?}");
    }
}
