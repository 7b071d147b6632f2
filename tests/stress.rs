//! Threaded stress: readers look objects up by key while control threads create and
//! destroy them, with freed keys reused last-in first-out as RDMA hardware reuses ids.
//!
//! Checked on every lookup: the object found answers to the key looked up, and its drain
//! has not returned. Checked at the end: every value was dropped exactly once.
//!
//! Short by default; `RESTABLE_STRESS_SECS=60 cargo test --release --test stress` for a
//! long run. `.ci/run` also runs this binary under valgrind.

mod common;

use common::{count, counter, stress_duration, Counted, Rng};
use restable::{Builder, Owner, ResTable};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

/// The key space: small, so lookups hit objects being killed and keys being reused.
const KEYS: u32 = 24;

struct Object {
    keys: Vec<u32>,
    /// Set by the destroyer right after its drain returned; a reader that sees it holds
    /// a reference the drain should have waited for.
    drained: Arc<AtomicBool>,
    _counted: Counted,
}

/// Free keys, reused last-in first-out.
struct KeyPool(Mutex<Vec<u32>>);

impl KeyPool {
    fn new() -> Self {
        KeyPool(Mutex::new((0..KEYS).rev().collect()))
    }

    fn take(&self, n: usize) -> Option<Vec<u32>> {
        let mut free = self.0.lock().unwrap();
        let at = free.len().checked_sub(n)?;
        Some(free.split_off(at))
    }

    fn give_back(&self, keys: &[u32]) {
        self.0.lock().unwrap().extend_from_slice(keys);
    }
}

#[test]
fn lookups_race_create_and_destroy_with_lifo_key_reuse() {
    race_create_and_destroy(ResTable::new());
}

/// The same with nodes carved from the table's pages: blocks recycled and pages freed
/// while readers still look at their neighbours.
#[test]
fn lookups_race_create_and_destroy_in_a_cache_aligned_table() {
    race_create_and_destroy(Builder::new().cache_aligned().build());
}

fn race_create_and_destroy(table: ResTable<u32, Object>) {
    let duration = stress_duration(1.5);
    let pool = KeyPool::new();
    let drops = counter();
    let created = AtomicU64::new(0);
    let (hits, misses) = (AtomicU64::new(0), AtomicU64::new(0));
    let borrowed_hits = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + duration;

    thread::scope(|s| {
        // Readers: the event / completion path.
        for seed in 0..2u64 {
            let (table, stop, hits, misses) = (&table, &stop, &hits, &misses);
            s.spawn(move || {
                let mut rng = Rng::with_seed(seed + 1);
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.u64(..KEYS as u64) as u32;
                    let Some(r) = table.get(&key) else {
                        misses.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    hits.fetch_add(1, Ordering::Relaxed);
                    assert!(r.keys.contains(&key), "found under {key}: {:?}", r.keys);
                    assert_eq!(r.keys(), &r.keys[..]);
                    let held = if rng.u64(..4) == 0 {
                        Some(r.clone())
                    } else {
                        None
                    };
                    for _ in 0..rng.u64(..64) {
                        std::hint::spin_loop();
                    }
                    assert!(
                        !r.drained.load(Ordering::SeqCst),
                        "saw an object after its drain"
                    );
                    drop(r);
                    if let Some(held) = held {
                        assert!(!held.drained.load(Ordering::SeqCst), "clone outlived drain");
                    }
                }
            });
        }
        // A borrowed reader: batches of lookups under one guard each (an EQ handler's
        // interrupts), now and then keeping a hit past its batch as a counted reference.
        {
            let (table, stop, borrowed_hits) = (&table, &stop, &borrowed_hits);
            s.spawn(move || {
                let mut rng = Rng::with_seed(7);
                let mut kept = None;
                while !stop.load(Ordering::Relaxed) {
                    let guard = table.pin();
                    for _ in 0..rng.u64(1..32) {
                        let key = rng.u64(..KEYS as u64) as u32;
                        let Some(object) = guard.find(&key) else {
                            continue;
                        };
                        borrowed_hits.fetch_add(1, Ordering::Relaxed);
                        assert!(
                            object.keys.contains(&key),
                            "found under {key}: {:?}",
                            object.keys
                        );
                        assert_eq!(object.keys(), &object.keys[..]);
                        assert!(
                            !object.drained.load(Ordering::SeqCst),
                            "a borrowed reader saw an object after its drain"
                        );
                        if rng.u64(..16) == 0 {
                            kept = Some(object.to_owned_ref());
                        }
                    }
                    drop(guard);
                    if let Some(kept) = kept.take() {
                        assert!(!kept.drained.load(Ordering::SeqCst), "kept past its drain");
                    }
                }
            });
        }
        // Control path: create and destroy, every way an owner can let go.
        for seed in 0..2u64 {
            let (table, pool, drops, created) = (&table, &pool, &drops, &created);
            s.spawn(move || {
                let mut rng = Rng::with_seed(seed + 100);
                let mut owners: Vec<(Owner<u32, Object>, Arc<AtomicBool>)> = Vec::new();
                let mut next_id = seed << 40;
                while Instant::now() < deadline {
                    let want = 1 + rng.u64(..3) as usize;
                    if owners.len() < 4 {
                        if let Some(keys) = pool.take(want) {
                            let drained = Arc::new(AtomicBool::new(false));
                            let object = Object {
                                keys: keys.clone(),
                                drained: Arc::clone(&drained),
                                _counted: Counted::new(next_id, drops),
                            };
                            next_id += 1;
                            let owner = table
                                .insert(&keys, object)
                                .unwrap_or_else(|e| panic!("free keys in use: {e}"));
                            created.fetch_add(1, Ordering::Relaxed);
                            owners.push((owner, drained));
                            continue;
                        }
                    }
                    if owners.is_empty() {
                        thread::yield_now();
                        continue;
                    }
                    let (owner, drained) =
                        owners.swap_remove(rng.u64(..owners.len() as u64) as usize);
                    let keys = owner.keys().to_vec();
                    match rng.u64(..4) {
                        0 => {
                            drop(owner); // kill; the last holder drops the value
                            pool.give_back(&keys);
                        }
                        1 => {
                            let dying = owner.kill();
                            pool.give_back(&keys); // reuse before the drain
                            drop(dying);
                        }
                        _ => {
                            let dying = owner.kill();
                            pool.give_back(&keys);
                            let value = dying.drain();
                            drained.store(true, Ordering::SeqCst);
                            assert_eq!(value.keys, keys);
                        }
                    }
                }
                for (owner, drained) in owners {
                    let keys = owner.keys().to_vec();
                    let value = owner.kill_and_drain();
                    drained.store(true, Ordering::SeqCst);
                    pool.give_back(&keys);
                    drop(value);
                }
            });
        }
        while Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        // Writers finish on their own at the deadline; readers run until told.
        thread::sleep(std::time::Duration::from_millis(5));
        while !table.is_empty() {
            thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });

    let created = created.load(Ordering::Relaxed);
    let (hits, misses) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
    let borrowed_hits = borrowed_hits.load(Ordering::Relaxed);
    eprintln!(
        "stress: {created} objects, {hits} hits, {misses} misses, {borrowed_hits} borrowed \
         hits in {duration:?}"
    );
    assert!(
        created > 0 && hits > 0 && borrowed_hits > 0,
        "the stress did not exercise anything"
    );
    assert_eq!(
        count(&drops) as u64,
        created,
        "every value dropped exactly once"
    );
    assert!(table.is_empty());
    assert_eq!(pool.0.lock().unwrap().len(), KEYS as usize, "keys lost");
}

#[test]
fn a_hot_object_is_shared_by_many_holders_while_others_churn() {
    // One long-lived object (a busy QP) taken and put by every reader at once; its drain
    // at the end must see the exact count fall to zero.
    let duration = stress_duration(0.5);
    let table: ResTable<u32, u64> = ResTable::new();
    let hot = table.insert(&[0, 1000], 7).unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for seed in 0..3u64 {
            let (table, stop) = (&table, &stop);
            s.spawn(move || {
                let mut rng = Rng::with_seed(seed + 7);
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = if rng.u64(..2) == 0 { 0 } else { 1000 };
                    let r = table.get(&key).expect("the hot object is live");
                    assert_eq!(*r, 7);
                    held.push(r);
                    if held.len() > rng.u64(..8) as usize {
                        held.clear();
                    }
                }
            });
        }
        let start = Instant::now();
        let mut id = 1u32;
        while start.elapsed() < duration {
            let owner = table.insert(&[id % 16 + 1], id as u64).unwrap();
            assert_eq!(*table.get(&(id % 16 + 1)).unwrap(), id as u64);
            owner.kill_and_drain();
            id += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(hot.kill_and_drain(), 7);
}
