//! Allocation behaviour, measured with a counting global allocator: the lookup path
//! never allocates, and the memory of killed objects and their index entries is given
//! back once no reader can reach it.
//!
//! One test function, so that no other test thread allocates meanwhile.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, thread_allocs, Counting};
use restable::ResTable;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Lets the epoch advance until deferred frees have run.
fn collect_garbage() {
    for _ in 0..256 {
        crossbeam_epoch::pin().flush();
    }
}

#[test]
fn lookups_do_not_allocate_and_killed_objects_are_reclaimed() {
    let table: ResTable<u32, [u64; 4]> = ResTable::new();
    let keep = table.insert(&[1, 2, 3], [1; 4]).unwrap();
    drop(table.get(&1)); // first pin registers this thread with the epoch collector

    // Lookup path: hits, misses, clones, puts.
    let before = thread_allocs();
    for i in 0..10_000u32 {
        let r = table.get(&(i % 3 + 1)).expect("hit");
        let r2 = r.clone();
        assert!(table.get(&(100 + i)).is_none());
        assert!(table.contains_key(&2));
        drop((r, r2));
    }
    assert_eq!(thread_allocs() - before, 0, "the lookup path allocated");

    // Reclamation: churn objects with six keys each, then let the epoch advance.
    collect_garbage();
    let baseline = live_bytes();
    for round in 0..20_000u32 {
        let keys: Vec<u32> = (0..6).map(|k| 1_000 + (round % 50) * 6 + k).collect();
        let owner = table.insert(&keys, [round as u64; 4]).unwrap();
        let r = table.get(&keys[5]).unwrap();
        let dying = owner.kill();
        drop(r);
        if round % 2 == 0 {
            dying.drain();
        } else {
            drop(dying);
        }
    }
    collect_garbage();
    let grown = live_bytes() - baseline;
    eprintln!("live bytes after 20000 insert/kill cycles: {grown:+}");
    // A leaked node, entry or key list per cycle would be well over 100 bytes each.
    assert!(
        grown < 16 * 1024,
        "{grown} bytes not reclaimed after 20000 cycles"
    );
    assert_eq!(keep.kill_and_drain(), [1; 4]);
}
