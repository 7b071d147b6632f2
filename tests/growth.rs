//! A table grown from `new()` keeps short probe sequences and a bounded load: growth
//! keeps up with inserts, with and without a reader running (before the index held
//! values instead of links, a growth waited for the array before the last to be freed,
//! and a table grown to 200,000 objects degenerated into chains of hundreds). Checked
//! through the index's shape, not through timing.

use restable::ResTable;

/// Most buckets a lookup of a present key may read. Buckets are at most three quarters
/// full and a full one sends keys on in triangular steps, so few keys land far from
/// home: over 20 tables grown to 300,000 objects the worst was 9. (With growth stalled,
/// the longest chain of the old linked index was 63 at 30,000 objects and linear in the
/// size beyond; with steps of one, dense stretches of hashes made runs of 27 buckets.)
const LONGEST_PROBE: usize = 16;

/// Slots per bucket.
const SLOTS: usize = 7;

/// Checks the index's shape after `n` objects: every key linked, probe sequences short,
/// buckets neither overfull (growth kept up) nor mostly empty (growth did not overshoot).
fn assert_shape(table: &ResTable<u64, u64>, n: usize, what: &str) {
    let stats = table.index_stats();
    assert_eq!(stats.entries, n, "{what}: {stats:?}");
    let slots = stats.buckets * SLOTS;
    assert!(
        stats.longest_probe <= LONGEST_PROBE && n * 4 <= slots * 3 && n * 8 >= slots,
        "{what}: {stats:?}"
    );
}

fn grow_to(n: u64) -> (ResTable<u64, u64>, Vec<restable::Owner<u64, u64>>) {
    let table = ResTable::new();
    let owners = (0..n).map(|k| table.insert(&[k], k).unwrap()).collect();
    (table, owners)
}

#[test]
fn inserts_alone_grow_the_index() {
    for n in [1_000u64, 30_000, 200_000] {
        let (table, owners) = grow_to(n);
        assert_shape(&table, n as usize, &format!("after {n} inserts from new()"));
        drop(owners);
    }
}

#[test]
fn growth_keeps_up_while_a_reader_looks_up() {
    let table = ResTable::new();
    let _first = table.insert(&[u64::MAX], 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(table.get(&u64::MAX).is_some());
            }
        });
        let owners: Vec<_> = (0..100_000u64)
            .map(|k| table.insert(&[k], k).unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_shape(&table, 100_001, "100,000 inserts beside a reader");
        drop(owners);
    });
}
