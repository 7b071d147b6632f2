//! Reads criterion's results (`target/criterion`, or the directory given with `--dir`)
//! and prints one markdown table: ns/op per implementation per workload, and each one's
//! time relative to restable's (above 1.00×: slower than restable). With `--chart FILE`
//! it also draws every workload for every implementation into an SVG chart.
//!
//! `cargo bench --bench tables && cargo run --release --example bench_report -- --chart
//! benches/results.svg`

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The column order; implementations not listed here follow in name order.
const COLUMNS: [&str; 11] = [
    "restable",
    "restable-section",
    "restable-aligned",
    "floor",
    "mutex-hashmap",
    "rwlock-hashmap",
    "kernel-spinlock-refcount",
    "dashmap",
    "sharded-slab",
    "papaya",
    "scc",
];

fn main() -> ExitCode {
    let mut root = PathBuf::from("target/criterion");
    let mut chart = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match (arg.to_str(), args.next()) {
            (Some("--dir"), Some(dir)) => root = PathBuf::from(dir),
            (Some("--chart"), Some(file)) => chart = Some(PathBuf::from(file)),
            _ => {
                eprintln!("usage: bench_report [--dir CRITERION_DIR] [--chart FILE.svg]");
                return ExitCode::from(2);
            }
        }
    }
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
    let columns = columns(&results);
    print!("{}", table(&results, &columns));
    if let Some(file) = chart {
        if let Err(err) = draw(&file, &results, &columns) {
            eprintln!("bench_report: drawing {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    }
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

/// The implementations that have results, in `COLUMNS` order, others after by name.
fn columns(results: &BTreeMap<String, BTreeMap<String, f64>>) -> Vec<&str> {
    let mut columns: Vec<&str> = COLUMNS.to_vec();
    for implementation in results.values().flat_map(|row| row.keys()) {
        if !columns.contains(&implementation.as_str()) {
            columns.push(implementation);
        }
    }
    columns.retain(|c| results.values().any(|row| row.contains_key(*c)));
    columns
}

fn table(results: &BTreeMap<String, BTreeMap<String, f64>>, columns: &[&str]) -> String {
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

/// One panel per workload, two panels a row: a horizontal bar per implementation,
/// ns/op (shorter is faster), each implementation in the same colour everywhere.
fn draw(
    file: &Path,
    results: &BTreeMap<String, BTreeMap<String, f64>>,
    columns: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    const PANEL: (u32, u32) = (640, 300);
    let rows = results.len().div_ceil(2);
    let root = SVGBackend::new(file, (2 * PANEL.0, rows as u32 * PANEL.1)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, (workload, row)) in root.split_evenly((rows, 2)).iter().zip(results) {
        let bars: Vec<(usize, &str, f64)> = columns
            .iter()
            .enumerate()
            .filter_map(|(colour, c)| row.get(*c).map(|ns| (colour, *c, *ns)))
            .collect();
        let longest = bars.iter().map(|bar| bar.2).fold(0.0, f64::max);
        // Bar `i` is centred on y = n - 1 - i, so the first column is drawn on top and
        // each label sits on its bar.
        let n = bars.len();
        let y = |i: usize| (n - 1 - i) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{workload} (ns/op)"), ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(190)
            .build_cartesian_2d(0.0..longest * 1.15, -0.6..n as f64 - 0.4)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(n)
            .y_label_formatter(&|v| {
                let slot = v.round();
                let i = n as f64 - 1.0 - slot;
                if (v - slot).abs() > 1e-6 || i < 0.0 || i >= n as f64 {
                    return String::new();
                }
                bars[i as usize].1.to_string()
            })
            .x_labels(6)
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (colour, _, ns))| {
            let style = Palette99::pick(*colour).filled();
            Rectangle::new([(0.0, y(i) - 0.4), (*ns, y(i) + 0.4)], style)
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, _, ns))| {
            Text::new(
                format!(" {}", ns_str(*ns)),
                (*ns, y(i) + 0.25),
                ("sans-serif", 13),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

fn ns_str(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}
