//! Allocation behaviour, measured with a counting global allocator: the lookup path
//! never allocates, the memory of killed objects is reused or given back once no reader
//! can reach it, an open read section holds that back until it closes, and the index
//! arrays a growth replaces are freed without help.
//!
//! One test function, so that no other test thread allocates meanwhile.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, thread_allocs, Counting};
use restable::{Builder, ResTable};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Lets the epoch advance until deferred frees have run.
fn collect_garbage() {
    for _ in 0..256 {
        crossbeam_epoch::pin().flush();
    }
}

/// Inserts and kills `rounds` objects (a reference out during each kill), half drained,
/// half abandoned to the last reference. Every object has six keys, or with `mixed`
/// every third has only the first of them (so both shapes share home shards).
fn churn_shapes(table: &ResTable<u32, [u64; 4]>, rounds: u32, mixed: bool) {
    for round in 0..rounds {
        let all: [u32; 6] = std::array::from_fn(|k| 1_000 + (round % 50) * 6 + k as u32);
        let keys = if mixed && round % 3 == 0 {
            &all[..1]
        } else {
            &all[..]
        };
        let owner = table.insert(keys, [round as u64; 4]).unwrap();
        let r = table.get(&keys[keys.len() - 1]).unwrap();
        let dying = owner.kill();
        drop(r);
        if round % 2 == 0 {
            dying.drain();
        } else {
            drop(dying);
        }
    }
}

fn churn(table: &ResTable<u32, [u64; 4]>, rounds: u32) {
    churn_shapes(table, rounds, false);
}

#[test]
fn lookups_do_not_allocate_and_killed_objects_are_reclaimed() {
    collect_garbage(); // registers this thread with the epoch collector
    check(ResTable::new);
    // Cache-aligned tables carve nodes from pages of their own: the same checks find a
    // page that is never freed or a carver that allocates on every insert.
    check(|| Builder::new().cache_aligned().build());
}

fn check(make: fn() -> ResTable<u32, [u64; 4]>) {
    let empty = live_bytes();
    let table = make();
    let keep = table.insert(&[1, 2, 3], [1; 4]).unwrap();

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

    // Reclamation: killed nodes' blocks are reused or freed, so a steady churn holds a
    // steady amount of memory (the index and the spare blocks kept for reuse).
    churn(&table, 20_000);
    collect_garbage();
    let steady = live_bytes();
    churn(&table, 20_000);
    collect_garbage();
    let grown = live_bytes() - steady;
    eprintln!(
        "live bytes: {:+} after the first 20000 insert/kill cycles, {grown:+} after 20000 more",
        steady - empty
    );
    // A leaked node per cycle would be over 300 bytes each.
    assert!(
        grown < 4 * 1024,
        "{grown} bytes not reclaimed after 20000 cycles"
    );

    // Once warm, the churn reuses killed objects' blocks instead of allocating, also
    // when objects of two shapes (six keys, one key) take turns.
    churn_shapes(&table, 2_000, true);
    let before = thread_allocs();
    churn_shapes(&table, 2_000, true);
    let allocs = thread_allocs() - before;
    eprintln!("allocations in 2000 warm insert/kill cycles of mixed shapes: {allocs}");
    assert!(allocs < 100, "{allocs} allocations in 2000 warm cycles");

    // A read section holds reclamation back (that is its price): killed blocks cannot be
    // reused while it is open, so the same churn allocates; once it closes they are.
    let section = restable::read_section();
    let open = live_bytes();
    churn(&table, 1_000);
    collect_garbage();
    let held = live_bytes() - open;
    drop(section);
    collect_garbage();
    let after = live_bytes();
    churn(&table, 1_000);
    collect_garbage();
    let regrown = live_bytes() - after;
    eprintln!("live bytes: {held:+} during 1000 cycles in a read section, {regrown:+} after it");
    // Each cycle's node block (header, three keys and their hashes, the value) is 88
    // bytes; with the section open none of them can be reused.
    assert!(
        held > 1_000 * 88,
        "only {held} bytes held back by an open read section: is it pinned?"
    );
    assert!(
        regrown < 4 * 1024,
        "{regrown} bytes not reused once the section closed"
    );

    // A thread that works only inside a read section, refreshed between batches, takes
    // no outermost pin, which is where the epoch collects: the refreshes must collect,
    // or what it retires is never freed (these 20,000 cycles held 2.9 MB before they did).
    let mut section = restable::read_section();
    let before = live_bytes();
    for _ in 0..20_000 / 64 {
        churn(&table, 64);
        section.refresh();
    }
    let piled_up = live_bytes() - before;
    drop(section);
    eprintln!("live bytes: {piled_up:+} after 20000 cycles in a section refreshed every 64");
    assert!(
        piled_up < 64 * 1024,
        "{piled_up} bytes retired in a refreshed section and never freed"
    );

    // Growth alone: an insert-only workload hands the arrays it retires to the epoch,
    // which frees them as the inserts themselves pin and collect, without help.
    let grown = make();
    let owners: Vec<_> = (0..100_000u32)
        .map(|k| grown.insert(&[k], [0; 4]).unwrap())
        .collect();
    let waiting = live_bytes();
    collect_garbage();
    let waiting = waiting - live_bytes();
    eprintln!(
        "retired index arrays still waiting after growing to 100,000 objects: {waiting} bytes"
    );
    // What may wait: arrays under 1 KiB in this thread's bag (64 KiB at most), and the
    // few 16 KiB arrays retired since the last collections. Were the big ones left in
    // the bag too, the last array of each of the 63 shards would wait: about 1 MB.
    assert!(
        waiting < 128 * 1024,
        "{waiting} bytes of retired index arrays not yet freed"
    );
    drop(owners);
    drop(grown);

    // And everything, spare blocks included, goes with the table.
    assert_eq!(keep.kill_and_drain(), [1; 4]);
    drop(table);
    collect_garbage();
    // crossbeam-epoch itself may keep a few bags of its own (about 2 KiB each) for
    // later; the table's index and spare blocks are over 70 KiB here.
    let left = live_bytes() - empty;
    assert!(
        left <= 8 * 1024,
        "{left} bytes still allocated after the table was dropped"
    );
}
