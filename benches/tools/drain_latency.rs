//! How long a destroy waits for borrowed readers: the latency of `kill_and_drain` of an
//! object that was read borrowed (so its drain waits a grace period), with 0, 1 and 2
//! reader threads reading other objects in batches of 64 borrowed lookups, one guard a
//! batch (an EQ handler's interrupts, a poller's polls); and, for comparison, of an
//! object only ever read counted, which waits no grace period.
//!
//! `cargo run --release --example drain_latency [-- DRAINS]` (DRAINS per row, default
//! 2,000). Each row prints p50, p99 and the maximum, in microseconds. On a machine with
//! fewer cores than threads the readers and the drainer share them, and the drain's
//! latency includes waiting for a core.

use restable::ResTable;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The objects the readers read (never destroyed).
const READ_OBJECTS: u64 = 1024;
/// Lookups per guard.
const BATCH: u64 = 64;
/// The key of the object destroyed, again and again (above the readers' keys).
const VICTIM: u64 = 1 << 40;

fn main() {
    let drains: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("DRAINS: a number of drains per row"))
        .unwrap_or(2_000);
    println!("| victim | readers | p50 µs | p99 µs | max µs |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for borrowed in [true, false] {
        for readers in 0..=2 {
            let mut latencies = run(readers, borrowed, drains);
            latencies.sort_unstable();
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "| {} | {readers} | {:.1} | {:.1} | {:.1} |",
                if borrowed {
                    "read borrowed"
                } else {
                    "read counted"
                },
                us(at(0.5)),
                us(at(0.99)),
                us(*latencies.last().unwrap()),
            );
        }
    }
}

/// `drains` timed `kill_and_drain`s of a freshly inserted object read once (borrowed or
/// counted), beside `readers` threads reading the other objects borrowed.
fn run(readers: usize, borrowed: bool, drains: usize) -> Vec<Duration> {
    let table: ResTable<u64, u64> = ResTable::new();
    for key in 0..READ_OBJECTS {
        table.insert_detached(&[key], key).unwrap();
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for seed in 0..readers as u64 {
            let (table, stop) = (&table, &stop);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                while !stop.load(Ordering::Relaxed) {
                    let guard = table.pin();
                    for _ in 0..BATCH {
                        black_box(guard.get(&rng.u64(..READ_OBJECTS)));
                    }
                }
            });
        }
        let latencies = (0..drains)
            .map(|_| {
                let owner = table.insert(&[VICTIM], 0).unwrap();
                if borrowed {
                    assert!(table.pin().get(&VICTIM).is_some());
                } else {
                    assert!(table.get(&VICTIM).is_some());
                }
                let start = Instant::now();
                black_box(owner.kill_and_drain());
                start.elapsed()
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        latencies
    })
}
