//! Reads criterion's results (`target/criterion`, or the directory given as the first
//! argument) and prints one markdown table: ns/op per implementation per workload, and
//! each one's time relative to restable's (above 1.00×: slower than restable).
//!
//! `cargo bench --bench tables && cargo run --release --example bench_report`

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The column order; implementations not listed here follow in name order.
const COLUMNS: [&str; 8] = [
    "restable",
    "restable-section",
    "floor",
    "mutex-hashmap",
    "rwlock-hashmap",
    "kernel-spinlock-refcount",
    "dashmap",
    "sharded-slab",
];

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    // workload → implementation → mean ns per iteration
    let mut results: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    if let Err(err) = collect(&root, &mut results) {
        eprintln!("bench_report: reading {}: {err}", root.display());
        return ExitCode::FAILURE;
    }
    if results.is_empty() {
        eprintln!(
            "bench_report: no criterion results under {}; run `cargo bench --bench tables` first",
            root.display()
        );
        return ExitCode::FAILURE;
    }
    print!("{}", table(&results));
    ExitCode::SUCCESS
}

/// Finds every `new/benchmark.json` + `new/estimates.json` pair below `dir`.
fn collect(
    dir: &Path,
    results: &mut BTreeMap<String, BTreeMap<String, f64>>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            if let Some((workload, implementation, ns)) = read_result(&path) {
                results
                    .entry(workload)
                    .or_default()
                    .insert(implementation, ns);
            }
        } else {
            collect(&path, results)?;
        }
    }
    Ok(())
}

/// (workload, implementation, mean ns) from one result directory. Benchmark ids are
/// `group/implementation[/parameter]`; the parameter belongs to the workload.
fn read_result(dir: &Path) -> Option<(String, String, f64)> {
    let json = |name: &str| -> Option<Value> {
        serde_json::from_str(&fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let benchmark = json("benchmark.json")?;
    let estimates = json("estimates.json")?;
    let full_id = benchmark.get("full_id")?.as_str()?;
    let mean = estimates.get("mean")?.get("point_estimate")?.as_f64()?;
    let mut parts = full_id.split('/');
    let group = parts.next()?;
    let implementation = parts.next()?.to_string();
    let workload = match parts.next() {
        Some(parameter) => format!("{group} ({parameter})"),
        None => group.to_string(),
    };
    Some((workload, implementation, mean))
}

fn table(results: &BTreeMap<String, BTreeMap<String, f64>>) -> String {
    let mut columns: Vec<&str> = COLUMNS.to_vec();
    for implementation in results.values().flat_map(|row| row.keys()) {
        if !columns.contains(&implementation.as_str()) {
            columns.push(implementation);
        }
    }
    columns.retain(|c| results.values().any(|row| row.contains_key(*c)));
    let mut out = format!(
        "| workload (ns/op; × restable) | {} |\n",
        columns.join(" | ")
    );
    out += &format!("|---|{}\n", "---:|".repeat(columns.len()));
    for (workload, row) in results {
        let base = row.get("restable").copied();
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match (row.get(*c), base) {
                (None, _) => "—".to_string(),
                (Some(ns), Some(base)) if *c != "restable" => {
                    format!("{} ({:.2}×)", ns_str(*ns), ns / base)
                }
                (Some(ns), _) => ns_str(*ns),
            })
            .collect();
        out += &format!("| {workload} | {} |\n", cells.join(" | "));
    }
    out
}

fn ns_str(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}
