//! Heap bytes per object beyond the value itself, for restable and the naive
//! `Mutex<HashMap<K, Arc<T>>>`, with 1 and 6 keys per object. Counted with a counting
//! global allocator (requested sizes, not the allocator's rounding).
//!
//! `cargo run --release --example memory`

use parking_lot::Mutex;
use restable::ResTable;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const OBJECTS: u64 = 100_000;
type Value = u64;

/// Heap bytes per object that `fill` leaves allocated, minus the value's own size.
fn per_object<R>(fill: impl FnOnce() -> R) -> f64 {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let kept = fill();
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    drop(kept);
    (after - before) as f64 / OBJECTS as f64 - std::mem::size_of::<Value>() as f64
}

fn keys(i: u64, n: u64) -> Vec<u64> {
    (0..n).map(|k| i * 8 + k).collect()
}

fn main() {
    println!(
        "| keys per object | restable (bytes/object) | Mutex<HashMap<K, Arc<T>>> (bytes/object) |"
    );
    println!("|---:|---:|---:|");
    for n in [1, 6] {
        let restable = per_object(|| {
            let table = ResTable::<u64, Value>::new();
            let owners: Vec<_> = (0..OBJECTS)
                .map(|i| table.insert(&keys(i, n), i).unwrap())
                .collect();
            (table, owners)
        });
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
        println!("| {n} | {restable:.0} | {naive:.0} |");
    }
    println!(
        "\n{OBJECTS} objects of {} bytes each; grown tables included, as a user would hold them.",
        std::mem::size_of::<Value>()
    );
}
