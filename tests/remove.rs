//! Ownership left with the table: detach, remove by key, retain, and the table's drop.

mod common;

use common::{count, counter, Counted};
use restable::ResTable;
use std::sync::{Arc, Barrier};
use std::thread;

/// Rounds of each race: fewer under Miri, which runs every round a thousand times slower.
const ROUNDS: u32 = if cfg!(miri) { 4 } else { 300 };

#[test]
fn racing_removes_have_one_winner() {
    for round in 0..ROUNDS {
        let table = ResTable::new();
        let drops = counter();
        table
            .insert(&[round, round + 1_000_000], Counted::new(1, &drops))
            .unwrap()
            .detach();
        let start = Barrier::new(2);
        let won = thread::scope(|s| {
            let other = s.spawn(|| {
                start.wait();
                table.remove(&(round + 1_000_000)).map(|d| d.drain())
            });
            start.wait();
            let mine = table.remove(&round).map(|d| d.drain());
            [mine, other.join().unwrap()]
        });
        assert_eq!(
            won.iter().filter(|w| w.is_some()).count(),
            1,
            "round {round}"
        );
        assert!(table.is_empty() && !table.contains_key(&round));
        drop(won);
        assert_eq!(count(&drops), 1);
    }
}

#[test]
fn remove_waits_for_holders_and_frees_the_keys_at_once() {
    let table = ResTable::new();
    table.insert(&["conn:7", "alice"], 7u32).unwrap().detach();
    let r = table.get(&"alice").unwrap();
    let dying = table.remove(&"conn:7").expect("detached, so removable");
    table.insert(&["alice"], 8).unwrap().detach(); // the name is free at once
    assert_eq!(dying.refs(), 1);
    drop(r);
    assert_eq!(dying.drain(), 7);
    assert_eq!(*table.get(&"alice").unwrap(), 8);
}

#[test]
fn an_object_with_an_owner_is_not_removed_by_key() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 'a').unwrap();
    assert!(table.remove(&1).is_none());
    table.retain(|_, _| false);
    assert!(table.contains_key(&1), "retain removed an owned object");
    assert_eq!(owner.kill_and_drain(), 'a');
}

#[test]
fn retain_sees_keys_and_values_and_drops_the_rest() {
    let table = ResTable::new();
    let drops = counter();
    for id in 0..100u64 {
        table
            .insert(&[id, 1_000 + id], Counted::new(id, &drops))
            .unwrap()
            .detach();
    }
    let held = table.get(&4).unwrap(); // removed while held: dropped by this `Ref`
    table.retain(|keys, value| {
        assert_eq!(keys, [value.id, 1_000 + value.id]);
        value.id % 4 != 0
    });
    assert_eq!(table.len(), 75);
    assert_eq!(count(&drops), 24);
    drop(held);
    assert_eq!(count(&drops), 25);
    assert!(table.get(&8).is_none() && table.get(&1_009).is_some());
}

#[test]
fn dropping_the_table_destroys_what_it_owns_and_only_that() {
    let drops = counter();
    let table = ResTable::new();
    table
        .insert(&[1u32], Counted::new(1, &drops))
        .unwrap()
        .detach();
    table
        .insert(&[2u32], Counted::new(2, &drops))
        .unwrap()
        .detach();
    let held = table.get_owned(&2).unwrap();
    let owned = table.insert(&[3u32], Counted::new(3, &drops)).unwrap();
    drop(table);
    assert_eq!(
        count(&drops),
        1,
        "object 1 dropped with the table; 2 is held"
    );
    drop(held);
    assert_eq!(count(&drops), 2);
    assert_eq!(
        owned.kill_and_drain().id,
        3,
        "an owned object outlives the table"
    );
}

#[test]
fn detaching_after_the_table_is_gone_destroys_the_object() {
    let drops = counter();
    let table = ResTable::new();
    let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
    drop(table);
    owner.detach(); // nobody could remove it any more
    assert_eq!(count(&drops), 1);
}

#[test]
fn detach_racing_the_table_drop_never_strands_an_object() {
    for _ in 0..ROUNDS {
        let drops = counter();
        let table = ResTable::new();
        let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
        let start = Arc::new(Barrier::new(2));
        let detacher = {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                owner.detach();
            })
        };
        start.wait();
        drop(table);
        detacher.join().unwrap();
        assert_eq!(count(&drops), 1, "a detached object outlived its table");
    }
}

/// The map-style insert: the object is the table's from the start — found under every
/// key, removable by any, dropped with the table if nobody removes it, and refused
/// (value handed back, nothing visible) on a key in use, as `insert` is.
#[test]
fn insert_detached_leaves_the_object_with_the_table() {
    let drops = counter();
    let table = ResTable::new();
    table
        .insert_detached(&[1u32, 2], Counted::new(1, &drops))
        .unwrap();
    assert_eq!(table.get(&2).unwrap().id, 1);
    assert_eq!(table.len(), 1);
    let err = table
        .insert_detached(&[3, 2], Counted::new(2, &drops))
        .unwrap_err();
    assert_eq!(err.key(), Some(&2));
    assert!(!table.contains_key(&3), "a failed insert was visible");
    assert_eq!(err.into_value().id, 2);
    assert_eq!(
        count(&drops),
        1,
        "the refused value, handed back and dropped"
    );
    let r = table.get(&1).unwrap();
    let dying = table.remove(&2).expect("the table owns it");
    assert!(table.get(&1).is_none() && table.remove(&1).is_none());
    drop(r);
    assert_eq!(dying.drain().id, 1);
    assert_eq!(count(&drops), 2);
    // Left with the table, dropped with it; an owned one beside it stays with its owner.
    table
        .insert_detached(&[1], Counted::new(3, &drops))
        .unwrap();
    let owned = table.insert(&[2], Counted::new(4, &drops)).unwrap();
    drop(table);
    assert_eq!(count(&drops), 3);
    assert_eq!(owned.kill_and_drain().id, 4);
}

/// Many threads inserting map-style and removing each other's objects: every value is
/// dropped exactly once, and the table (its shared part counted per shard, not by one
/// shared count) goes with the last handle whichever thread lets go last.
#[test]
fn detached_objects_churned_by_several_threads_drop_once() {
    let drops = counter();
    let per_thread: u32 = if cfg!(miri) { 20 } else { 20_000 };
    let table = ResTable::new();
    thread::scope(|s| {
        for t in 0..3u32 {
            let (table, drops) = (&table, &drops);
            s.spawn(move || {
                for i in 0..per_thread {
                    let key = t << 24 | i;
                    table
                        .insert_detached(&[key], Counted::new(u64::from(key), drops))
                        .unwrap();
                    if i % 2 == 1 {
                        // The previous key: removed here, drained or just dropped.
                        let dying = table.remove(&(key - 1)).expect("inserted just before");
                        if i % 4 == 1 {
                            assert_eq!(dying.drain().id, u64::from(key - 1));
                        }
                    }
                }
            });
        }
    });
    assert_eq!(table.len(), 3 * per_thread as usize / 2);
    drop(table);
    assert_eq!(count(&drops), 3 * per_thread as usize);
}

/// `extract_if` hands back the removed objects' `Dying`s (drainable, even while a
/// reference is out); `clear` removes every detached object and leaves owned ones.
#[test]
fn extract_if_hands_back_what_it_removes_and_clear_removes_the_rest() {
    let drops = counter();
    let table = ResTable::new();
    for id in 0..10u32 {
        table
            .insert_detached(&[id, 100 + id], Counted::new(u64::from(id), &drops))
            .unwrap();
    }
    let owned = table.insert(&[50], Counted::new(50, &drops)).unwrap();
    let held = table.get_owned(&104).unwrap();
    let removed = table.extract_if(|keys, value| keys[0] % 2 == 0 && value.id < 50);
    assert_eq!(removed.len(), 5);
    assert!(table.get(&4).is_none() && table.get(&104).is_none());
    assert_eq!(count(&drops), 0, "extract_if dropped a value");
    let mut ids: Vec<u64> = Vec::new();
    let mut waiting = Vec::new();
    for dying in removed {
        match dying.try_drain() {
            Ok(value) => ids.push(value.id),
            Err(dying) => waiting.push(dying),
        }
    }
    assert_eq!(waiting.len(), 1, "the held one waits for its reference");
    drop(held);
    ids.extend(waiting.into_iter().map(|dying| dying.drain().id));
    ids.sort();
    assert_eq!(ids, [0, 2, 4, 6, 8]);
    assert_eq!(count(&drops), 5);
    table.clear();
    assert_eq!(count(&drops), 10);
    assert_eq!(table.len(), 1, "clear left the owned object");
    assert_eq!(owned.kill_and_drain().id, 50);
}

/// `try_remove` tells a key nobody answers to from an object that still has its owner,
/// which `remove`'s `None` does not; both leave the table as it was.
#[test]
fn try_remove_says_why_nothing_was_removed() {
    use restable::RemoveError;
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2], "owned").unwrap();
    table.insert_detached(&[3], "detached").unwrap();
    assert_eq!(table.try_remove(&2).unwrap_err(), RemoveError::Owned);
    assert!(table.remove(&2).is_none());
    assert!(
        table.contains_key(&1),
        "a refused remove killed the owned object"
    );
    assert_eq!(table.try_remove(&4).unwrap_err(), RemoveError::NotFound);
    assert_eq!(table.try_remove(&3).unwrap().drain(), "detached");
    assert_eq!(table.try_remove(&3).unwrap_err(), RemoveError::NotFound);
    let dying = owner.kill();
    assert_eq!(table.try_remove(&1).unwrap_err(), RemoveError::NotFound);
    assert_eq!(dying.drain(), "owned");
    let err: Box<dyn std::error::Error> = Box::new(RemoveError::Owned);
    assert!(err.to_string().contains("owner"));
}
