//! restable against naive locking, the kernel pattern and the maps users would pick.
//! Every workload is one criterion group, so all implementations run side by side in one
//! run. `cargo bench --bench tables`, then `cargo run --release --example bench_report`
//! for the markdown table.

mod support;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use restable::mana::sim::{Device, HwQp};
use restable::mana::{GdmaEvent, Qp, QpEvent, QpTable, QpType};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::{
    key, DashMapArc, Floor, Impl, KernelPattern, Key, MutexMap, PapayaArc, Restable,
    RestableAligned, RestableSection, RwLockMap, SccArc, Session, Slab,
};

/// Runs `$bench::<I>($args)` for every implementation.
macro_rules! for_each_impl {
    ($bench:ident($($arg:expr),*)) => {
        $bench::<Restable>($($arg),*);
        $bench::<RestableSection>($($arg),*);
        $bench::<RestableAligned>($($arg),*);
        $bench::<MutexMap>($($arg),*);
        $bench::<RwLockMap>($($arg),*);
        $bench::<KernelPattern>($($arg),*);
        $bench::<DashMapArc>($($arg),*);
        $bench::<Slab>($($arg),*);
        $bench::<PapayaArc>($($arg),*);
        $bench::<SccArc>($($arg),*);
    };
}

/// Steps a cyclic index without a division (which would cost as much as a lookup).
#[inline]
fn advance(i: &mut usize, len: usize) -> usize {
    *i += 1;
    if *i == len {
        *i = 0;
    }
    *i
}

/// How a benchmark's table starts: sized for everything it will hold, or empty and grown
/// by the inserts (what most users write).
#[derive(Clone, Copy)]
enum Start {
    Presized,
    Grown,
}

/// `n` objects under `keys_each` keys; returns the table, the owners and the lookup key
/// of every object's first key, in a shuffled order.
fn populate<I: Impl>(n: u64, keys_each: u64, start: Start) -> (I, Vec<I::Owner>, Vec<Key>) {
    let table = I::with_capacity(match start {
        Start::Presized => (n * keys_each) as usize,
        Start::Grown => 0,
    });
    let mut owners = Vec::with_capacity(n as usize);
    let mut lookups = Vec::with_capacity(n as usize);
    for i in 0..n {
        let keys: Vec<Key> = (0..keys_each).map(|k| key(i, k)).collect();
        let owner = table.insert(&keys, i);
        lookups.push(I::lookup_key(&owner, keys[0]));
        owners.push(owner);
    }
    shuffle(&mut lookups);
    (table, owners, lookups)
}

/// The same order on every run, so every implementation sees the same access pattern.
fn shuffle(keys: &mut [Key]) {
    fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D).shuffle(keys);
}

fn teardown<I: Impl>(table: &I, owners: Vec<I::Owner>) {
    for owner in owners {
        black_box(table.kill_and_drain(owner));
    }
}

// (1) get+put hit, one thread.
fn hit<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, n: u64, label: &str, start: Start) {
    let (table, owners, lookups) = populate::<I>(n, 1, start);
    let mut i = 0;
    let mut session = Session::new::<I>();
    group.bench_function(format!("{}/{label}", I::NAME), |b| {
        b.iter(|| {
            session.tick();
            black_box(table.get_put(lookups[advance(&mut i, lookups.len())]))
        })
    });
    teardown(&table, owners);
}

fn hit_floor(group: &mut BenchmarkGroup<'_, WallTime>, n: u64, label: &str) {
    let floor = Floor::new(n as usize);
    let mut lookups: Vec<Key> = (0..n).collect();
    shuffle(&mut lookups);
    let mut i = 0;
    group.bench_function(format!("floor/{label}"), |b| {
        b.iter(|| black_box(floor.get_put(lookups[advance(&mut i, lookups.len())])))
    });
}

// (2) get miss.
fn miss<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (table, owners, _) = populate::<I>(1000, 1, Start::Presized);
    // Keys of objects that were never inserted (and slab keys never handed out).
    let misses: Vec<Key> = (0..1000).map(|i| key(1_000_000 + i, 0)).collect();
    let mut i = 0;
    let mut session = Session::new::<I>();
    group.bench_function(I::NAME, |b| {
        b.iter(|| {
            session.tick();
            black_box(table.get_put(misses[advance(&mut i, misses.len())]))
        })
    });
    teardown(&table, owners);
}

/// Times `iters` calls of `op` on each of two threads at once, each thread in its own
/// lookup session for `I`; the slower thread's time.
fn two_threads<I: Impl>(iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let start_line = Barrier::new(2);
    let run = |t: usize| {
        let mut session = Session::new::<I>();
        start_line.wait();
        let start = Instant::now();
        for i in 0..iters {
            session.tick();
            op(t, i);
        }
        start.elapsed()
    };
    thread::scope(|s| {
        let other = s.spawn(|| run(1));
        let mine = run(0);
        mine.max(other.join().unwrap())
    })
}

/// Objects per thread in the two-thread workloads (a power of two: no division).
const HALF: usize = 512;

// (3) two threads, disjoint keys; (4) two threads, one key.
fn pair<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, same_key: bool) {
    let (table, owners, lookups) = populate::<I>(2 * HALF as u64, 1, Start::Presized);
    group.bench_function(I::NAME, |b| {
        b.iter_custom(|iters| {
            two_threads::<I>(iters, |t, i| {
                let at = if same_key {
                    0
                } else {
                    t * HALF + (i as usize & (HALF - 1))
                };
                black_box(table.get_put(lookups[at]));
            })
        })
    });
    teardown(&table, owners);
}

fn pair_floor(group: &mut BenchmarkGroup<'_, WallTime>, same_key: bool) {
    let floor = Floor::new(2 * HALF);
    group.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            two_threads::<MutexMap>(iters, |t, i| {
                let at = if same_key {
                    0
                } else {
                    (t * HALF) as u64 + (i & (HALF as u64 - 1))
                };
                black_box(floor.get_put(at));
            })
        })
    });
}

/// (5) One thread looks objects up while another destroys and re-creates them, six
/// keys each. `timed_lookups`: time the lookups (else the destroy/create cycles).
fn churn<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, timed_lookups: bool) {
    const OBJECTS: u64 = 1000;
    const KEYS: u64 = 6;
    let (table, owners, _) = populate::<I>(OBJECTS, KEYS, Start::Presized);
    let mut lookups: Vec<Key> = (0..OBJECTS)
        .flat_map(|i| (0..KEYS).map(move |k| key(i, k)))
        .collect();
    shuffle(&mut lookups);
    let mut owners: Vec<(u64, I::Owner)> = (0..OBJECTS).zip(owners).collect();
    group.bench_function(I::NAME, |b| {
        b.iter_custom(|iters| {
            let stop = AtomicBool::new(false);
            let lookup = |n: u64| {
                let mut session = Session::new::<I>();
                let start = Instant::now();
                let (mut i, mut at) = (0, 0);
                while i < n && !(n == u64::MAX && stop.load(Ordering::Relaxed)) {
                    session.tick();
                    black_box(table.get_put(lookups[advance(&mut at, lookups.len())]));
                    i += 1;
                }
                start.elapsed()
            };
            let cycle = |owners: &mut Vec<(u64, I::Owner)>, n: u64| {
                let start = Instant::now();
                let (mut i, mut at) = (0, 0);
                while i < n && !(n == u64::MAX && stop.load(Ordering::Relaxed)) {
                    let (object, owner) = owners.swap_remove(advance(&mut at, owners.len()));
                    black_box(table.kill_and_drain(owner));
                    let keys: Vec<Key> = (0..KEYS).map(|k| key(object, k)).collect();
                    owners.push((object, table.insert(&keys, object)));
                    i += 1;
                }
                start.elapsed()
            };
            thread::scope(|s| {
                if timed_lookups {
                    let mut mine = std::mem::take(&mut owners);
                    let churner = s.spawn(move || {
                        cycle(&mut mine, u64::MAX);
                        mine
                    });
                    let elapsed = lookup(iters);
                    stop.store(true, Ordering::Relaxed);
                    owners = churner.join().unwrap();
                    elapsed
                } else {
                    let looker = s.spawn(|| lookup(u64::MAX));
                    let elapsed = cycle(&mut owners, iters);
                    stop.store(true, Ordering::Relaxed);
                    looker.join().unwrap();
                    elapsed
                }
            })
        })
    });
    teardown(&table, owners.into_iter().map(|(_, owner)| owner).collect());
}

// (8) Inserts into a table grown from empty (`with_capacity(0)`, what most users write),
// alone or beside a thread that looks up one object of that table all along. ns per
// insert, averaged over growing tables from empty to `n` objects, as many as the
// measurement asks for; only the inserts are timed.
fn grow<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, n: u64, label: &str, reader: bool) {
    // Never among the grown objects' keys: those are `key(i, 0)`.
    let watched = key(0, 7);
    group.bench_function(format!("{}/{label}", I::NAME), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(n);
                left -= batch;
                let table = I::with_capacity(0);
                let first = table.insert(&[watched], 0);
                let watched = I::lookup_key(&first, watched);
                let stop = AtomicBool::new(false);
                let owners = thread::scope(|s| {
                    if reader {
                        s.spawn(|| {
                            let mut session = Session::new::<I>();
                            while !stop.load(Ordering::Relaxed) {
                                session.tick();
                                black_box(table.get_put(watched));
                            }
                        });
                    }
                    let start = Instant::now();
                    let owners: Vec<I::Owner> =
                        (0..batch).map(|i| table.insert(&[key(i, 0)], i)).collect();
                    timed += start.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    owners
                });
                teardown(&table, owners);
                black_box(table.kill_and_drain(first));
            }
            timed
        })
    });
}

// (6) insert under six keys + kill_and_drain, no reference out.
/// (6b, 6c) The same cycle on two threads at once, on disjoint keys, `keys` keys an
/// object: writers that do not share keys should not wait for each other. ns per cycle
/// per thread.
fn cycle_two_writers<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, keys: u64) {
    let table = I::with_capacity(2 * 64 * keys as usize);
    let keysets: Vec<Vec<Vec<Key>>> = (0..2u64)
        .map(|t| {
            (0..64u64)
                .map(|i| (0..keys).map(|k| key(t * 1_000 + i, k)).collect())
                .collect()
        })
        .collect();
    group.bench_function(I::NAME, |b| {
        b.iter_custom(|iters| {
            two_threads::<I>(iters, |t, i| {
                let keys = &keysets[t][i as usize % 64];
                let owner = table.insert(keys, i);
                black_box(table.kill_and_drain(owner));
            })
        })
    });
}

/// (6d) Two writers as in 6b and 6c, but in a table grown from empty to a million
/// objects, each writer cycling through its own 65,536 key sets: the buckets and nodes a
/// cycle touches are cold, as for a driver or a server with many objects, where 6b and 6c
/// keep everything in cache. ns per cycle per thread.
fn cycle_two_writers_cold<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>, keys: u64) {
    const RESIDENT: u64 = 1_000_000;
    const SETS: u64 = 1 << 16;
    let table = I::with_capacity(0);
    // Resident keys start past every writer's (`key` is one-to-one below 2^29 objects).
    let owners: Vec<I::Owner> = (0..RESIDENT)
        .map(|i| table.insert(&[key(2 * SETS + i, 0)], i))
        .collect();
    let keysets: Vec<Vec<Key>> = (0..2)
        .map(|t| {
            (0..SETS)
                .flat_map(|i| (0..keys).map(move |k| key(t * SETS + i, k)))
                .collect()
        })
        .collect();
    let label = format!("{keys}key{}", if keys == 1 { "" } else { "s" });
    let keys = keys as usize;
    group.bench_function(format!("{}/{label}", I::NAME), |b| {
        b.iter_custom(|iters| {
            two_threads::<I>(iters, |t, i| {
                let at = (i % SETS) as usize * keys;
                let owner = table.insert(&keysets[t][at..at + keys], i);
                black_box(table.kill_and_drain(owner));
            })
        })
    });
    teardown(&table, owners);
}

fn cycle6<I: Impl>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let table = I::with_capacity(64 * 6);
    let keysets: Vec<Vec<Key>> = (0..64)
        .map(|i| (0..6).map(|k| key(i, k)).collect())
        .collect();
    let mut i = 0;
    group.bench_function(I::NAME, |b| {
        b.iter(|| {
            let at = advance(&mut i, keysets.len());
            let owner = table.insert(&keysets[at], at as u64);
            black_box(table.kill_and_drain(owner))
        })
    });
}

// (7) the mana event path: QP_FATAL by QPN, callback under the reference.
fn mana_dispatch(group: &mut BenchmarkGroup<'_, WallTime>) {
    const QPS: usize = 1000;
    let device = Device::new();
    let hws: Vec<HwQp> = (0..QPS)
        .map(|_| device.create_qp(QpType::Rc).unwrap())
        .collect();
    let handler = || -> restable::mana::EventHandler {
        Box::new(|qp: &restable::mana::QpBorrowed<'_>, event| {
            black_box((qp.qpn(), event));
        })
    };
    let mut events: Vec<GdmaEvent> = hws.iter().map(|hw| GdmaEvent::qp_fatal(hw.qpn)).collect();
    let mut order: Vec<Key> = (0..QPS as u64).collect();
    shuffle(&mut order);
    events = order.iter().map(|&i| events[i as usize]).collect();

    let table = QpTable::new();
    let owners: Vec<_> = hws
        .iter()
        .map(|hw| {
            table
                .store_qp(Qp::new(hw.clone(), Some(handler())))
                .unwrap()
        })
        .collect();
    let mut i = 0;
    group.bench_function("restable", |b| {
        b.iter(|| table.handle_event(black_box(&events[advance(&mut i, events.len())])))
    });
    let mut session = Session::new::<RestableSection>();
    group.bench_function("restable-section", |b| {
        b.iter(|| {
            session.tick();
            table.handle_event(black_box(&events[advance(&mut i, events.len())]))
        })
    });
    // The section pins this thread, and the adapter reads borrowed: a drain here would
    // wait for a grace period this thread holds back (restable panics rather than hang).
    drop(session);
    owners.into_iter().for_each(|o| drop(QpTable::remove_qp(o)));

    // The same dispatch over a mutex-protected map of Arcs, with the same bookkeeping
    // (a table-wide and a per-QP delivery counter, and the late-delivery check).
    let delivered = AtomicU64::new(0);
    type CountedQp = Arc<(Qp, AtomicU64)>;
    let map: parking_lot::Mutex<HashMap<u32, CountedQp, foldhash::fast::RandomState>> =
        parking_lot::Mutex::new(HashMap::default());
    for hw in &hws {
        let qp = Qp::new(hw.clone(), Some(handler()));
        map.lock().insert(hw.qpn, Arc::new((qp, AtomicU64::new(0))));
    }
    group.bench_function("mutex-hashmap", |b| {
        b.iter(|| {
            let event = black_box(&events[advance(&mut i, events.len())]);
            if event.event_type == restable::mana::GDMA_EQE_RNIC_QP_FATAL {
                let qp = map.lock().get(&event.details[0]).cloned();
                if let Some(qp) = qp {
                    black_box((qp.0.qpn(), QpEvent::Fatal));
                    delivered.fetch_add(1, Ordering::Relaxed);
                    qp.1.fetch_add(1, Ordering::Relaxed);
                    black_box(qp.0.events());
                }
            }
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("1_get_put_hit");
    for (n, label) in [(1_000, "1k"), (1_000_000, "1M")] {
        hit_floor(&mut group, n, label);
        for_each_impl!(hit(&mut group, n, label, Start::Presized));
    }
    group.finish();

    // The same lookups in tables that started empty and grew to their size.
    let mut group = c.benchmark_group("1b_get_put_hit_grown");
    for (n, label) in [(1_000, "1k"), (1_000_000, "1M")] {
        for_each_impl!(hit(&mut group, n, label, Start::Grown));
    }
    group.finish();

    let mut group = c.benchmark_group("2_get_miss");
    for_each_impl!(miss(&mut group));
    group.finish();

    for (name, same_key) in [
        ("3_two_threads_disjoint_keys", false),
        ("4_two_threads_same_key", true),
    ] {
        let mut group = c.benchmark_group(name);
        pair_floor(&mut group, same_key);
        for_each_impl!(pair(&mut group, same_key));
        group.finish();
    }

    let mut group = c.benchmark_group("5a_lookup_under_churn");
    for_each_impl!(churn(&mut group, true));
    group.finish();
    let mut group = c.benchmark_group("5b_churn_under_lookups");
    for_each_impl!(churn(&mut group, false));
    group.finish();

    let mut group = c.benchmark_group("6_insert6_kill_drain");
    for_each_impl!(cycle6(&mut group));
    group.finish();
    let mut group = c.benchmark_group("6b_insert6_kill_drain_two_writers");
    for_each_impl!(cycle_two_writers(&mut group, 6));
    group.finish();
    let mut group = c.benchmark_group("6c_insert1_kill_drain_two_writers");
    for_each_impl!(cycle_two_writers(&mut group, 1));
    group.finish();
    let mut group = c.benchmark_group("6d_two_writers_cold_1M");
    for keys in [1, 6] {
        for_each_impl!(cycle_two_writers_cold(&mut group, keys));
    }
    group.finish();

    for (name, reader) in [
        ("8_insert_grown", false),
        ("8b_insert_grown_beside_reader", true),
    ] {
        let mut group = c.benchmark_group(name);
        for (n, size) in [(10_000, "10k"), (100_000, "100k"), (1_000_000, "1M")] {
            for_each_impl!(grow(&mut group, n, size, reader));
        }
        group.finish();
    }

    let mut group = c.benchmark_group("7_mana_event_dispatch");
    mana_dispatch(&mut group);
    group.finish();
}

criterion_group! {
    name = tables;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}
criterion_main!(tables);
