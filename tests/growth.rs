//! A table grown from `new()` keeps short chains: growth keeps up with inserts, with and
//! without a reader running. Checked through the index's shape, not through timing.
//! (A read section held for the whole of a growth spurt still holds growth back: see
//! the `index` module's "Growth".)

use restable::ResTable;

/// Longest chain allowed. With at most one entry per bucket on average, chains of up to
/// about ten are the norm; a growth that a briefly descheduled reader delayed past the
/// last inserts can double that. A stalled growth made it 63 at 30,000 objects, 101
/// beside a reader at 100,000, and linear in the size beyond.
const LONGEST_CHAIN: usize = 32;

fn grow_to(n: u64) -> (ResTable<u64, u64>, Vec<restable::Owner<u64, u64>>) {
    let table = ResTable::new();
    let owners = (0..n).map(|k| table.insert(&[k], k).unwrap()).collect();
    (table, owners)
}

#[test]
fn inserts_alone_grow_the_index() {
    for n in [1_000u64, 30_000, 200_000] {
        let (table, owners) = grow_to(n);
        let stats = table.index_stats();
        assert_eq!(stats.entries, n as usize);
        assert!(
            stats.longest_chain <= LONGEST_CHAIN && stats.buckets as u64 >= n / 2,
            "after {n} inserts from new(): {stats:?}"
        );
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
        let stats = table.index_stats();
        assert!(
            stats.longest_chain <= LONGEST_CHAIN,
            "100,000 inserts beside a reader: {stats:?}"
        );
        drop(owners);
    });
}
