//! `surge load` results (`load-results/*.json`, with their HTML reports beside them) as
//! the console lists them: scenario, throughput, latency, errors and the invariant verdicts.
//! Read as plain JSON so a result written by an older or newer `surge load` still lists.
//! Bounded: the newest `RUNS_MAX` files, each at most `RESULT_BYTES_MAX`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::results_dir;
pub use crate::results_dir::RESULT_BYTES_MAX;

pub const RUNS_MAX: usize = 100;

#[derive(Serialize)]
pub struct LoadRuns {
    pub dir: String,
    pub runs: Vec<LoadRun>,
    /// Files that could not be read as a result, with why.
    pub unreadable: Vec<(String, String)>,
}

#[derive(Serialize)]
pub struct LoadRun {
    pub file: String,
    /// The HTML report's file name, when it is there.
    pub report: Option<String>,
    pub scenario: Option<String>,
    pub mode: Option<String>,
    pub started_unix_s: Option<u64>,
    pub elapsed_s: Option<f64>,
    pub ops: Option<u64>,
    pub failed_ops: Option<u64>,
    pub ops_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// `pass`, `fail` or `unchecked`.
    pub verdict: Option<String>,
    pub checks: Vec<CheckResult>,
}

#[derive(Serialize)]
pub struct CheckResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// The runs in `dir`, newest first. A missing directory is an empty list.
pub fn list(dir: &Path) -> LoadRuns {
    let mut out = LoadRuns { dir: dir.display().to_string(), runs: Vec::new(), unreadable: Vec::new() };
    let Ok(files) = results_dir::newest(dir, ".json", RUNS_MAX) else { return out };
    for file in files {
        let Some(path) = results_dir::resolve(dir, &file.name) else { continue };
        let json = results_dir::read_bounded(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()));
        match json {
            Ok(json) => out.runs.push(run(file.name, &path, &json)),
            Err(why) => out.unreadable.push((file.name, why)),
        }
    }
    out
}

fn run(file: String, path: &Path, json: &Value) -> LoadRun {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let report = path.with_extension("html");
    let report = report.is_file().then(|| report.file_name().and_then(|n| n.to_str()).map(str::to_string)).flatten();
    let checks = json["checks"].as_array().map_or(&[][..], Vec::as_slice);
    LoadRun {
        file,
        report,
        scenario: text(&json["scenario"]),
        mode: text(&json["mode"]),
        started_unix_s: json["started_unix_s"].as_u64(),
        elapsed_s: json["elapsed_s"].as_f64(),
        ops: json["ops"].as_u64(),
        failed_ops: json["failed_ops"].as_u64(),
        ops_per_s: json["ops_per_s"].as_f64(),
        p50_ms: json["latency"]["p50_ms"].as_f64(),
        p99_ms: json["latency"]["p99_ms"].as_f64(),
        p999_ms: json["latency"]["p999_ms"].as_f64(),
        verdict: text(&json["verdict"]),
        checks: checks
            .iter()
            .map(|c| CheckResult {
                name: text(&c["name"]).unwrap_or_default(),
                pass: c["pass"].as_bool().unwrap_or(false),
                detail: text(&c["detail"]).unwrap_or_default(),
            })
            .collect(),
    }
}

/// The HTML report `name` in `dir`, if it is one (never a path outside `dir`).
pub fn report_path(dir: &Path, name: &str) -> Option<PathBuf> {
    name.ends_with(".html").then(|| results_dir::resolve(dir, name)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_results_and_refuses_paths_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"scenario":"flash-sale","mode":"open","ops":10,"failed_ops":0,"ops_per_s":5.0,
            "latency":{"p50_ms":1.5,"p99_ms":3.0,"p999_ms":4.0},"verdict":"pass",
            "checks":[{"name":"no oversell","pass":true,"detail":"sold 10 of 10"}]}"#;
        std::fs::write(dir.path().join("flash-sale-1.json"), json).unwrap();
        std::fs::write(dir.path().join("flash-sale-1.html"), "<html></html>").unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let runs = list(dir.path());
        assert_eq!(runs.runs.len(), 1);
        let run = &runs.runs[0];
        assert_eq!(run.scenario.as_deref(), Some("flash-sale"));
        assert_eq!(run.report.as_deref(), Some("flash-sale-1.html"));
        assert_eq!((run.p99_ms, run.verdict.as_deref()), (Some(3.0), Some("pass")));
        assert!(run.checks[0].pass);
        assert_eq!(runs.unreadable.len(), 1);
        assert!(report_path(dir.path(), "flash-sale-1.html").is_some());
        for bad in ["../x.html", "a/b.html", ".hidden.html", "flash-sale-1.json", "%2e%2e.html"] {
            assert!(report_path(dir.path(), bad).is_none(), "{bad}");
        }
        assert!(list(&dir.path().join("missing")).runs.is_empty());
    }
}
