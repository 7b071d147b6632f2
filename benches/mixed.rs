//! Mixed read/insert/remove/update workloads of the kind the community runs to compare
//! concurrent maps: conc-map-bench's three mixes (the ones its port of libcuckoo's
//! universal benchmark, `bustle`, runs), restable used as a map beside the maps a user
//! would pick, on 1 and 2 threads, in one criterion run.
//!
//! As in bustle: every thread replays an operation list drawn beforehand from a seeded
//! generator, on keys of its own (so each insert is of a fresh key and must succeed, and
//! each remove of a present key must find it — checked, as bustle checks), on a table
//! made with room for 2^18 keys and prefilled to 75 % (read-heavy, exchange) or empty
//! (rapid-grow). Reads and updates pick a random key the thread has inserted and not
//! removed. Only the operations are timed; criterion reports nanoseconds per operation
//! per thread.
//!
//! restable as a map: `insert_detached` (the table owns the object), `remove` + dropping
//! the `Dying` (the last reference drops the value), `get` (a counted reference), and
//! updates through an atomic value behind `get`.

use criterion::{criterion_group, criterion_main, Criterion};
use parking_lot::{Mutex, RwLock};
use restable::ResTable;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

type Hasher = foldhash::fast::RandomState;

/// Keys the table is made with room for (all threads together).
const CAPACITY: usize = 1 << 18;

/// Operations each thread replays per measured run.
const OPS: usize = 1 << 16;

#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    Insert,
    Remove,
    Update,
}

/// A mix: percentages of reads, inserts, removes and updates, and whether the table is
/// prefilled.
struct Mix {
    name: &'static str,
    percent: [u32; 4],
    prefill: bool,
}

const MIXES: [Mix; 3] = [
    Mix {
        name: "read_heavy",
        percent: [98, 1, 1, 0],
        prefill: true,
    },
    Mix {
        name: "exchange",
        percent: [10, 40, 40, 10],
        prefill: true,
    },
    Mix {
        name: "rapid_grow",
        percent: [5, 80, 5, 10],
        prefill: false,
    },
];

/// One thread's work: the keys it prefills, then its operations.
struct Plan {
    prefill: Vec<u64>,
    ops: Vec<(Op, u64)>,
}

/// Draws thread `thread`'s plan for `mix` out of `threads`: its keys carry the thread in
/// their top bits, so threads never share one. An operation that has nothing to act on
/// (a read with no key present) becomes an insert.
fn plan(mix: &Mix, thread: u64, threads: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ thread);
    let mut next = 0u64;
    let mut fresh = || {
        next += 1;
        thread << 48 | next
    };
    let mut present: Vec<u64> = Vec::new();
    if mix.prefill {
        let n = CAPACITY as u64 * 3 / 4 / threads;
        present.extend((0..n).map(|_| fresh()));
    }
    let prefill = present.clone();
    let [read, insert, remove, _] = mix.percent;
    let ops = (0..OPS)
        .map(|_| {
            let roll = rng.u32(0..100);
            let op = match roll {
                r if r < read => Op::Read,
                r if r < read + insert => Op::Insert,
                r if r < read + insert + remove => Op::Remove,
                _ => Op::Update,
            };
            match op {
                Op::Insert => {}
                _ if present.is_empty() => {
                    let key = fresh();
                    present.push(key);
                    return (Op::Insert, key);
                }
                _ => {}
            }
            match op {
                Op::Insert => {
                    let key = fresh();
                    present.push(key);
                    (op, key)
                }
                Op::Remove => {
                    let at = rng.usize(0..present.len());
                    (op, present.swap_remove(at))
                }
                Op::Read | Op::Update => (op, present[rng.usize(0..present.len())]),
            }
        })
        .collect();
    Plan { prefill, ops }
}

/// What the workloads need of a map. Values are counters, so an update is a
/// read-modify-write of the value in place.
trait Map: Sync {
    const NAME: &'static str;
    fn with_capacity(capacity: usize) -> Self;
    fn insert(&self, key: u64) -> bool;
    fn read(&self, key: u64) -> bool;
    fn update(&self, key: u64) -> bool;
    fn remove(&self, key: u64) -> bool;
}

/// restable as a map: the table owns each object (`insert_detached`).
struct Restable(ResTable<u64, AtomicU64, Hasher>);

impl Map for Restable {
    const NAME: &'static str = "restable";
    fn with_capacity(capacity: usize) -> Self {
        Restable(ResTable::with_capacity_and_hasher(
            capacity,
            Hasher::default(),
        ))
    }
    fn insert(&self, key: u64) -> bool {
        self.0.insert_detached(&[key], AtomicU64::new(key)).is_ok()
    }
    #[inline]
    fn read(&self, key: u64) -> bool {
        self.0
            .get(&key)
            .map(|v| black_box(v.load(Ordering::Relaxed)))
            .is_some()
    }
    fn update(&self, key: u64) -> bool {
        self.0
            .get(&key)
            .map(|v| v.fetch_add(1, Ordering::Relaxed))
            .is_some()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.remove(&key).is_some()
    }
}

/// `HashMap<u64, u64>` behind a lock, as a careful user writes it: reads under a read
/// lock where the lock has one, everything else under the write lock.
struct Locked<L>(L);

type Inner = HashMap<u64, u64, Hasher>;

/// The two locks the baselines use.
trait MapLock: Sync {
    const NAME: &'static str;
    fn new(map: Inner) -> Self;
    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R;
    fn write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R;
}

impl MapLock for Mutex<Inner> {
    const NAME: &'static str = "mutex-hashmap";
    fn new(map: Inner) -> Self {
        Mutex::new(map)
    }
    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }
    fn write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.lock())
    }
}

impl MapLock for RwLock<Inner> {
    const NAME: &'static str = "rwlock-hashmap";
    fn new(map: Inner) -> Self {
        RwLock::new(map)
    }
    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.read())
    }
    fn write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.write())
    }
}

impl<L: MapLock> Map for Locked<L> {
    const NAME: &'static str = L::NAME;
    fn with_capacity(capacity: usize) -> Self {
        Locked(L::new(HashMap::with_capacity_and_hasher(
            capacity,
            Hasher::default(),
        )))
    }
    fn insert(&self, key: u64) -> bool {
        self.0.write(|map| map.insert(key, key).is_none())
    }
    fn read(&self, key: u64) -> bool {
        self.0
            .read(|map| map.get(&key).map(|v| black_box(*v)).is_some())
    }
    fn update(&self, key: u64) -> bool {
        self.0
            .write(|map| map.get_mut(&key).map(|v| *v += 1).is_some())
    }
    fn remove(&self, key: u64) -> bool {
        self.0.write(|map| map.remove(&key).is_some())
    }
}

struct DashMap(dashmap::DashMap<u64, u64, Hasher>);

impl Map for DashMap {
    const NAME: &'static str = "dashmap";
    fn with_capacity(capacity: usize) -> Self {
        DashMap(dashmap::DashMap::with_capacity_and_hasher(
            capacity,
            Hasher::default(),
        ))
    }
    fn insert(&self, key: u64) -> bool {
        self.0.insert(key, key).is_none()
    }
    fn read(&self, key: u64) -> bool {
        self.0.get(&key).map(|v| black_box(*v)).is_some()
    }
    fn update(&self, key: u64) -> bool {
        self.0.get_mut(&key).map(|mut v| *v += 1).is_some()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.remove(&key).is_some()
    }
}

struct Papaya(papaya::HashMap<u64, u64, Hasher>);

impl Map for Papaya {
    const NAME: &'static str = "papaya";
    fn with_capacity(capacity: usize) -> Self {
        Papaya(papaya::HashMap::with_capacity_and_hasher(
            capacity,
            Hasher::default(),
        ))
    }
    fn insert(&self, key: u64) -> bool {
        self.0.pin().insert(key, key).is_none()
    }
    fn read(&self, key: u64) -> bool {
        self.0.pin().get(&key).map(|v| black_box(*v)).is_some()
    }
    fn update(&self, key: u64) -> bool {
        self.0.pin().update(key, |v| v + 1).is_some()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.pin().remove(&key).is_some()
    }
}

struct Scc(scc::HashMap<u64, u64, Hasher>);

impl Map for Scc {
    const NAME: &'static str = "scc";
    fn with_capacity(capacity: usize) -> Self {
        Scc(scc::HashMap::with_capacity_and_hasher(
            capacity,
            Hasher::default(),
        ))
    }
    fn insert(&self, key: u64) -> bool {
        self.0.insert_sync(key, key).is_ok()
    }
    fn read(&self, key: u64) -> bool {
        self.0.read_sync(&key, |_, v| black_box(*v)).is_some()
    }
    fn update(&self, key: u64) -> bool {
        self.0.update_sync(&key, |_, v| *v += 1).is_some()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.remove_sync(&key).is_some()
    }
}

/// Replays one thread's operations, checking each result as bustle does.
fn replay<M: Map>(map: &M, ops: &[(Op, u64)]) {
    for &(op, key) in ops {
        let done = match op {
            Op::Read => map.read(key),
            Op::Insert => map.insert(key),
            Op::Remove => map.remove(key),
            Op::Update => map.update(key),
        };
        assert!(done, "{}: {op:?} of {key:#x} failed", M::NAME);
    }
}

/// One measured run: a new map, prefilled by each thread (untimed), then every thread
/// replays its operations at once; returns the slowest thread's time per operation.
fn run<M: Map>(plans: &[Plan]) -> Duration {
    let map = M::with_capacity(CAPACITY);
    let start = Barrier::new(plans.len());
    let per_thread: Vec<Duration> = thread::scope(|s| {
        let workers: Vec<_> = plans
            .iter()
            .map(|plan| {
                let (map, start) = (&map, &start);
                s.spawn(move || {
                    for &key in &plan.prefill {
                        assert!(map.insert(key));
                    }
                    start.wait();
                    let began = Instant::now();
                    replay(map, &plan.ops);
                    began.elapsed()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    drop(map);
    settle();
    let slowest = per_thread.into_iter().max().unwrap();
    slowest / OPS as u32
}

/// Lets crossbeam-epoch free what a dropped map left to it (restable retires every node
/// of a dropped table through the epoch: about 3,000 bags of 64 for a prefilled table,
/// and a flush frees at most 8), so that the next run's operations do not pay for this
/// run's teardown. Untimed, and run for every map alike.
fn settle() {
    for _ in 0..8_192 {
        crossbeam_epoch::pin().flush();
    }
}

fn bench<M: Map>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    plans: &[Plan],
) {
    c.bench_function(M::NAME, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run::<M>(plans)).sum())
    });
}

fn benches(c: &mut Criterion) {
    for mix in &MIXES {
        for threads in [1u64, 2] {
            let plans: Vec<Plan> = (0..threads).map(|t| plan(mix, t, threads)).collect();
            let mut group = c.benchmark_group(format!("mixed_{}_{threads}t", mix.name));
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
            bench::<Restable>(&mut group, &plans);
            bench::<Locked<Mutex<Inner>>>(&mut group, &plans);
            bench::<Locked<RwLock<Inner>>>(&mut group, &plans);
            bench::<DashMap>(&mut group, &plans);
            bench::<Papaya>(&mut group, &plans);
            bench::<Scc>(&mut group, &plans);
            group.finish();
        }
    }
}

criterion_group!(mixed, benches);
criterion_main!(mixed);
