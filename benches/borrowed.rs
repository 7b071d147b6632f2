//! Borrowed reads (`ResTable::pin`) against the peers' borrowed reads and the mutex map's
//! get + clone: one group per workload, every implementation side by side in one run.
//! One criterion iteration is one lookup; the `held` rows open one guard per batch of
//! `BATCH` lookups (an interrupt's events, a CQ poll), the `lone` rows one per lookup.
//!
//! `cargo bench --bench borrowed`; the drain latency of borrowed objects is measured by
//! `cargo run --release --example drain_latency`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use parking_lot::Mutex;
use restable::ResTable;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

type Hasher = foldhash::fast::RandomState;

/// Lookups per guard in the `held` rows.
const BATCH: u64 = 64;

/// One way to look a key up and read its value, in batches.
trait Reader: Sync {
    const NAME: &'static str;
    fn build(keys: &[u64]) -> Self;
    /// Looks up every key of `keys`, in order, and sums what it read.
    fn batch(&self, keys: &[u64]) -> u64;
}

struct RestableHeld(ResTable<u64, u64>);
struct RestableLone(ResTable<u64, u64>);
struct RestableCounted(ResTable<u64, u64>);
struct PapayaHeld(papaya::HashMap<u64, u64, Hasher>);
struct PapayaLone(papaya::HashMap<u64, u64, Hasher>);
struct SccPeekHeld(scc::HashIndex<u64, u64, Hasher>);
struct MutexMap(Mutex<HashMap<u64, Arc<u64>, Hasher>>);

fn restable(keys: &[u64]) -> ResTable<u64, u64> {
    let table = ResTable::new();
    for &k in keys {
        table.insert_detached(&[k], k).unwrap();
    }
    table
}

fn papaya(keys: &[u64]) -> papaya::HashMap<u64, u64, Hasher> {
    let map = papaya::HashMap::with_hasher(Hasher::default());
    let pinned = map.pin();
    for &k in keys {
        pinned.insert(k, k);
    }
    drop(pinned);
    map
}

impl Reader for RestableHeld {
    const NAME: &'static str = "restable-borrowed-held";
    fn build(keys: &[u64]) -> Self {
        RestableHeld(restable(keys))
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        let guard = self.0.pin();
        keys.iter().map(|k| *guard.get(k).unwrap()).sum()
    }
}

impl Reader for RestableLone {
    const NAME: &'static str = "restable-borrowed-lone";
    fn build(keys: &[u64]) -> Self {
        RestableLone(restable(keys))
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        keys.iter().map(|k| *self.0.pin().get(k).unwrap()).sum()
    }
}

impl Reader for RestableCounted {
    const NAME: &'static str = "restable-counted";
    fn build(keys: &[u64]) -> Self {
        RestableCounted(restable(keys))
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        keys.iter().map(|k| *self.0.get(k).unwrap()).sum()
    }
}

impl Reader for PapayaHeld {
    const NAME: &'static str = "papaya-borrowed-held";
    fn build(keys: &[u64]) -> Self {
        PapayaHeld(papaya(keys))
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        let map = self.0.pin();
        keys.iter().map(|k| *map.get(k).unwrap()).sum()
    }
}

impl Reader for PapayaLone {
    const NAME: &'static str = "papaya-borrowed-lone";
    fn build(keys: &[u64]) -> Self {
        PapayaLone(papaya(keys))
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        keys.iter().map(|k| *self.0.pin().get(k).unwrap()).sum()
    }
}

impl Reader for SccPeekHeld {
    const NAME: &'static str = "scc-peek-held";
    fn build(keys: &[u64]) -> Self {
        let index = scc::HashIndex::with_hasher(Hasher::default());
        for &k in keys {
            index.insert_sync(k, k).unwrap();
        }
        SccPeekHeld(index)
    }
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        let guard = scc::Guard::new();
        keys.iter().map(|k| *self.0.peek(k, &guard).unwrap()).sum()
    }
}

impl Reader for MutexMap {
    const NAME: &'static str = "mutex-hashmap";
    fn build(keys: &[u64]) -> Self {
        let map = keys.iter().map(|&k| (k, Arc::new(k))).collect();
        MutexMap(Mutex::new(map))
    }
    /// What a `Mutex<HashMap<K, Arc<T>>>` user writes: clone the `Arc` out under the lock,
    /// read it after, drop it.
    #[inline]
    fn batch(&self, keys: &[u64]) -> u64 {
        keys.iter()
            .map(|k| {
                let arc = Arc::clone(&self.0.lock()[k]);
                *arc
            })
            .sum()
    }
}

/// `n` keys, spread (not dense), and the lookup order: random, the same for everyone.
fn keys(n: u64) -> (Vec<u64>, Vec<u64>) {
    let keys: Vec<u64> = (0..n)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8)
        .collect();
    let mut order = keys.clone();
    fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D).shuffle(&mut order);
    (keys, order)
}

/// Times `iters` lookups, batch by batch, walking `order` cyclically.
fn lookups<R: Reader>(reader: &R, order: &[u64], start: &mut usize, iters: u64) -> Duration {
    let begin = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH).min((order.len() - *start) as u64) as usize;
        black_box(reader.batch(&order[*start..*start + n]));
        *start = (*start + n) % order.len();
        left -= n as u64;
    }
    begin.elapsed()
}

fn one_thread<R: Reader>(group: &mut BenchmarkGroup<'_, WallTime>, n: u64) {
    let (keys, order) = keys(n);
    let reader = R::build(&keys);
    let mut start = 0;
    group.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| lookups(&reader, &order, &mut start, iters))
    });
}

/// Two threads reading the same objects at once (each its own order); the slower
/// thread's time per lookup.
fn two_threads<R: Reader>(group: &mut BenchmarkGroup<'_, WallTime>, n: u64) {
    let (keys, order) = keys(n);
    let mut other = order.clone();
    other.reverse();
    let reader = R::build(&keys);
    group.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| {
            let line = Barrier::new(2);
            thread::scope(|s| {
                let them = s.spawn(|| {
                    line.wait();
                    lookups(&reader, &other, &mut 0, iters)
                });
                line.wait();
                let us = lookups(&reader, &order, &mut 0, iters);
                us.max(them.join().unwrap())
            })
        })
    });
}

macro_rules! each {
    ($bench:ident($group:expr, $n:expr); $($reader:ty),*) => {
        $($bench::<$reader>($group, $n);)*
    };
}

fn benches(c: &mut Criterion) {
    for (n, label) in [(1 << 10, "1k"), (1 << 20, "1M")] {
        let mut group = c.benchmark_group(format!("8_borrowed_get_{label}"));
        each!(one_thread(&mut group, n); RestableHeld, PapayaHeld, SccPeekHeld, RestableLone,
              PapayaLone, RestableCounted, MutexMap);
        group.finish();
    }
    let mut group = c.benchmark_group("8b_borrowed_get_two_threads_1k");
    each!(two_threads(&mut group, 1 << 10); RestableHeld, PapayaHeld, SccPeekHeld,
          RestableCounted, MutexMap);
    group.finish();
}

criterion_group! {
    name = borrowed;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(borrowed);
