//! Heap bytes per object beyond the value itself, for restable and the naive
//! `Mutex<HashMap<K, Arc<T>>>`, with 1 and 6 keys per object. Counted with a counting
//! global allocator (requested sizes, not the allocator's rounding).
//!
//! `cargo run --release --example memory`

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, Counting};
use parking_lot::Mutex;
use restable::{Builder, ResTable};
use std::collections::HashMap;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const OBJECTS: u64 = 100_000;
type Value = u64;

/// Heap bytes per object that `fill` leaves allocated, minus the value's own size.
fn per_object<R>(fill: impl FnOnce() -> R) -> f64 {
    // What the previous measurement retired (its table's nodes, freed through the epoch)
    // must be gone first: freed while `fill` runs, it would count against this one.
    collect_garbage();
    let before = live_bytes();
    let kept = fill();
    // Index arrays replaced while the table grew wait for the epoch too; they are not
    // part of what the table holds.
    collect_garbage();
    let after = live_bytes();
    drop(kept);
    (after - before) as f64 / OBJECTS as f64 - std::mem::size_of::<Value>() as f64
}

/// Lets the epoch advance until everything retired so far is freed.
fn collect_garbage() {
    for _ in 0..256 {
        crossbeam_epoch::pin().flush();
    }
}

fn keys(i: u64, n: u64) -> Vec<u64> {
    (0..n).map(|k| i * 8 + k).collect()
}

fn main() {
    println!(
        "| keys per object | restable | restable, cache-aligned | Mutex<HashMap<K, Arc<T>>> |"
    );
    println!("|---:|---:|---:|---:|");
    for n in [1, 6] {
        let fill = |table: ResTable<u64, Value>| {
            let owners: Vec<_> = (0..OBJECTS)
                .map(|i| table.insert(&keys(i, n), i).unwrap())
                .collect();
            (table, owners)
        };
        let restable = per_object(|| fill(ResTable::new()));
        let aligned = per_object(|| fill(Builder::new().cache_aligned().build()));
        let naive = per_object(|| {
            let map =
                Mutex::new(HashMap::<u64, Arc<Value>, foldhash::fast::RandomState>::default());
            // What the owner keeps to destroy the object (its keys and its Arc) counts too.
            let owners: Vec<_> = (0..OBJECTS)
                .map(|i| {
                    let value = Arc::new(i);
                    let keys = keys(i, n);
                    let mut map = map.lock();
                    for key in &keys {
                        map.insert(*key, Arc::clone(&value));
                    }
                    (keys, value)
                })
                .collect();
            (map, owners)
        });
        println!("| {n} | {restable:.0} | {aligned:.0} | {naive:.0} |");
    }
    println!(
        "\n{OBJECTS} objects of {} bytes each; grown tables included, as a user would hold them.",
        std::mem::size_of::<Value>()
    );
}
