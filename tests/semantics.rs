//! One test (or a few) per semantic promised by `ResTable`, numbered as in the crate's
//! contract.

mod common;

use common::{count, counter, Counted};
use restable::{Dying, InsertErrorKind, Owner, Ref, ResTable, MAX_KEYS};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::Duration;

// ---- 1. Atomic multi-key insert -------------------------------------------------------

#[test]
fn insert_ok_resolves_every_key() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2, 3], "qp").unwrap();
    for key in [1, 2, 3] {
        let r = table.get(&key).expect("every key resolves after Ok");
        assert_eq!(*r, "qp");
        assert_eq!(r.keys(), &[1, 2, 3]);
    }
    assert_eq!(owner.keys(), &[1, 2, 3]);
    assert_eq!(table.len(), 1);
}

#[test]
fn insert_conflict_resolves_no_key_and_returns_the_value() {
    let table = ResTable::new();
    let _first = table.insert(&[3u32], String::from("first")).unwrap();
    let err = table
        .insert(&[1, 2, 3], String::from("second"))
        .unwrap_err();
    assert_eq!(err.kind(), InsertErrorKind::KeyInUse);
    assert_eq!(err.key(), Some(&3));
    assert!(
        err.to_string().contains('3'),
        "message names the key: {err}"
    );
    for key in [1, 2] {
        assert!(
            table.get(&key).is_none(),
            "key {key} of a failed insert resolves"
        );
        assert!(!table.contains_key(&key));
    }
    assert_eq!(*table.get(&3).unwrap(), "first");
    assert_eq!(err.into_value(), "second");
    // The failed keys are free.
    let _second = table.insert(&[1, 2], String::from("again")).unwrap();
}

#[test]
fn insert_rejects_bad_key_lists_with_the_value_back() {
    let table = ResTable::new();
    let err = table.insert(&[1u32, 2, 1], 10).unwrap_err();
    assert_eq!(
        (err.kind(), err.key()),
        (InsertErrorKind::DuplicateKey, Some(&1))
    );
    assert_eq!(err.into_value(), 10);

    let err = table.insert(&[], 11).unwrap_err();
    assert_eq!((err.kind(), err.key()), (InsertErrorKind::NoKeys, None));
    assert_eq!(err.into_value(), 11);

    let keys: Vec<u32> = (0..=MAX_KEYS as u32).collect();
    let err = table.insert(&keys, 12).unwrap_err();
    assert_eq!(err.kind(), InsertErrorKind::TooManyKeys);
    assert_eq!(err.into_value(), 12);
    assert!(table.is_empty());

    let keys: Vec<u32> = (0..MAX_KEYS as u32).collect();
    let owner = table.insert(&keys, 13).unwrap();
    assert!(keys.iter().all(|k| table.contains_key(k)));
    assert_eq!(owner.kill_and_drain(), 13);
}

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn failed_insert_is_never_visible_even_transiently() {
    // Readers hammer the first key of an insert that always fails on its last key.
    let table = ResTable::new();
    let _blocker = table.insert(&[99u32], 0u64).unwrap();
    let stop = AtomicBool::new(false);
    let seen = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for key in [1u32, 2, 3] {
                        if table.get(&key).is_some() {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        for i in 0..20_000u64 {
            let err = table.insert(&[1, 2, 3, 99], i).unwrap_err();
            assert_eq!(err.into_value(), i);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        seen.load(Ordering::Relaxed),
        0,
        "a failed insert was visible"
    );
}

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn concurrent_inserts_for_one_key_have_one_winner() {
    for _ in 0..200 {
        let table = ResTable::new();
        let barrier = Barrier::new(2);
        let results: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = (0..2u32)
                .map(|i| {
                    let (table, barrier) = (&table, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        table.insert(&[10 + i, 7], i)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1);
        for result in results {
            if let Err(err) = result {
                assert_eq!(err.key(), Some(&7));
                let value = err.into_value();
                assert!(table.get(&(10 + value)).is_none());
            }
        }
    }
}

// ---- 2. Kill ------------------------------------------------------------------------

#[test]
fn kill_makes_every_key_unreachable_and_reusable_before_the_drain() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2, 3], "old").unwrap();
    let held = table.get(&2).unwrap();
    let dying = owner.kill();
    for key in [1, 2, 3] {
        assert!(
            table.get(&key).is_none(),
            "key {key} still finds a killed object"
        );
    }
    assert_eq!(table.len(), 0);
    // Reuse every key at once, while the old object still has a reference out.
    let new = table.insert(&[3, 2, 1], "new").unwrap();
    assert_eq!(*table.get(&1).unwrap(), "new");
    assert_eq!(*held, "old", "the old reference still sees the old object");
    assert_eq!(dying.keys(), &[1, 2, 3]);
    drop(held);
    assert_eq!(dying.drain(), "old");
    assert_eq!(*table.get(&2).unwrap(), "new");
    drop(new);
}

#[test]
fn insert_reuses_keys_of_an_object_killed_meanwhile() {
    // Partial reuse: only some of the killed object's keys, plus fresh ones.
    let table = ResTable::new();
    let a = table.insert(&[1u32, 2], 'a').unwrap().kill();
    let b = table.insert(&[2, 5], 'b').unwrap();
    assert!(table.get(&1).is_none());
    assert_eq!(*table.get(&2).unwrap(), 'b');
    assert_eq!(a.drain(), 'a');
    assert_eq!(b.kill_and_drain(), 'b');
    assert!(table.is_empty());
}

// ---- 3. Drain -----------------------------------------------------------------------

#[test]
fn drain_waits_for_every_ref_including_clones_and_does_not_drop_the_value() {
    let drops = counter();
    let table = ResTable::new();
    let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
    let r = table.get(&1).unwrap();
    let r2 = r.clone();
    let dying = owner.kill();
    assert_eq!(dying.refs(), 2);
    let dying = dying.try_drain().unwrap_err();
    drop(r);
    let dying = dying.drain_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(dying.refs(), 1);
    let released = AtomicBool::new(false);
    let value = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(20));
            released.store(true, Ordering::SeqCst);
            drop(r2);
        });
        dying.drain()
    });
    assert!(
        released.load(Ordering::SeqCst),
        "drain returned before the last put"
    );
    assert_eq!(value.id, 1);
    assert_eq!(
        count(&drops),
        0,
        "drain dropped the value it should hand back"
    );
    drop(value);
    assert_eq!(count(&drops), 1);
}

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn last_put_always_wakes_a_parked_drainer() {
    // Many races of the last put against the drainer going to sleep; a lost wake-up hangs.
    let table = ResTable::new();
    for i in 0..5_000u32 {
        let owner = table.insert(&[i % 8], i).unwrap();
        let r = table.get(&(i % 8)).unwrap();
        let dying = owner.kill();
        let value = thread::scope(|s| {
            s.spawn(move || drop(r));
            dying.drain()
        });
        assert_eq!(value, i);
    }
}

#[test]
fn drain_timeout_gives_the_dying_back_while_a_holder_stays() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 5).unwrap();
    let held = table.get(&1).unwrap();
    let mut dying = owner.kill();
    for _ in 0..3 {
        dying = dying.drain_timeout(Duration::from_millis(1)).unwrap_err();
    }
    assert_eq!(dying.refs(), 1);
    drop(held);
    assert_eq!(dying.drain_timeout(Duration::MAX).unwrap(), 5);
}

// ---- 4. Drop never blocks; T is dropped exactly once --------------------------------

#[test]
fn dropping_the_owner_with_a_ref_out_leaves_the_drop_to_the_last_put() {
    let drops = counter();
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2], Counted::new(1, &drops)).unwrap();
    let r = table.get(&1).unwrap();
    let r2 = r.clone();
    drop(owner); // would deadlock if it waited for `r` on this thread
    assert!(
        table.get(&2).is_none(),
        "dropping the owner kills the object"
    );
    assert_eq!(r.id, 1);
    drop(r);
    assert_eq!(count(&drops), 0);
    drop(r2);
    assert_eq!(count(&drops), 1);
}

#[test]
fn dropping_the_owner_or_dying_with_no_ref_drops_the_value_now() {
    let drops = counter();
    let table = ResTable::new();
    drop(table.insert(&[1u32], Counted::new(1, &drops)).unwrap());
    assert_eq!(count(&drops), 1);
    drop(
        table
            .insert(&[1u32], Counted::new(2, &drops))
            .unwrap()
            .kill(),
    );
    assert_eq!(count(&drops), 2);
}

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn dropping_a_dying_with_a_ref_out_on_another_thread() {
    let drops = counter();
    let table = ResTable::new();
    for i in 0..2_000 {
        let owner = table.insert(&[7u32], Counted::new(i, &drops)).unwrap();
        let r = table.get(&7).unwrap();
        let dying = owner.kill();
        thread::scope(|s| {
            s.spawn(move || drop(r));
            drop(dying);
        });
    }
    assert_eq!(count(&drops), 2_000);
}

#[test]
fn table_outlived_by_owners() {
    let drops = counter();
    let owner = {
        let table = ResTable::new();
        table.insert(&[1u32], Counted::new(1, &drops)).unwrap()
    };
    assert_eq!(owner.id, 1);
    assert_eq!(owner.kill_and_drain().id, 1);
    assert_eq!(count(&drops), 1);
}

/// A cache-aligned table keeps every promise with nodes carved from its pages: nodes of
/// several sizes share pages, each starting a line; one too large to carve (`MAX_KEYS`
/// keys and this value: over 512 bytes) is allocated on its own beside them; killed
/// nodes go back to their pages or to the next inserts; and owners that outlive the
/// table still drain, each page going with its last node.
#[test]
fn cache_aligned_nodes_start_a_line_and_outlive_their_table() {
    type Value = (Counted, [u64; 48]);
    let drops = counter();
    let keys = |id: u64, n: usize| -> Vec<u64> { (0..n as u64).map(|k| id * 100 + k).collect() };
    let sizes = [1, 2, 3, 6, MAX_KEYS];
    let owners: Vec<Owner<u64, Value>> = {
        let table = restable::Builder::new().cache_aligned().build();
        let mut owners = Vec::new();
        for round in 0..3u64 {
            for (i, &n) in sizes.iter().enumerate() {
                let id = round * 10 + i as u64;
                let value = (Counted::new(id, &drops), [id; 48]);
                let owner = table.insert(&keys(id, n), value).unwrap();
                // Kill every other object of the first two rounds: once the epoch lets
                // go of them, their blocks are recycled for later inserts.
                if round < 2 && i % 2 == 0 {
                    assert_eq!(owner.kill_and_drain().0.id, id);
                } else {
                    owners.push(owner);
                }
            }
        }
        for owner in &owners {
            let r = table.get(&owner.keys()[0]).unwrap();
            assert_eq!((r.0.id, r.1[47]), (owner.0.id, owner.0.id));
            if r.keys().len() < MAX_KEYS {
                // The header is two words, then the keys: the node starts a line.
                assert_eq!(r.keys().as_ptr() as usize % 64, 16, "object {}", r.0.id);
            }
        }
        owners
    };
    let (killed, left) = (2 * 3, owners.len());
    for owner in owners {
        let id = owner.0.id;
        assert_eq!(owner.kill_and_drain().0.id, id);
    }
    assert_eq!(count(&drops), killed + left);
}

// ---- 5. The lookup path takes no lock ----------------------------------------------

/// A key whose comparison can be made to block, once, on the thread that armed it: an
/// insert compares its keys with the entries already in their bucket while it holds the
/// shard lock, so this parks a writer inside its critical section. All instances hash
/// alike, so every key lands in the writer's shard and bucket.
#[derive(Debug, Clone)]
struct StallingKey(u32);

static STALL: (Barrier, Barrier) = (Barrier::new(2), Barrier::new(2));

thread_local! {
    static STALL_IN_EQ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl PartialEq for StallingKey {
    fn eq(&self, other: &Self) -> bool {
        if STALL_IN_EQ.with(|armed| armed.replace(false)) {
            STALL.0.wait(); // entered the critical section
            STALL.1.wait(); // released by the test
        }
        self.0 == other.0
    }
}

impl Eq for StallingKey {}

impl Hash for StallingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0u8.hash(state);
    }
}

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn get_does_not_wait_for_a_writer_holding_the_shard_lock() {
    let table = ResTable::new();
    let _present = table.insert(&[StallingKey(1)], "present").unwrap();
    let table = &table;
    thread::scope(|s| {
        let writer = s.spawn(move || {
            STALL_IN_EQ.with(|armed| armed.set(true));
            table
                .insert(&[StallingKey(2)], "stalled")
                .map(|_| ())
                .map_err(|_| ())
        });
        STALL.0.wait(); // the writer now holds the lock of the shard all keys live in
        let (done, finished) = mpsc::channel();
        s.spawn(move || {
            let found = table.get(&StallingKey(1)).map(|r| *r);
            let missing = table.get(&StallingKey(3)).is_none();
            done.send((found, missing)).unwrap();
        });
        let result = finished.recv_timeout(Duration::from_secs(30));
        STALL.1.wait(); // let the writer finish either way
        assert_eq!(
            result.expect("get blocked behind a writer's lock"),
            (Some("present"), true)
        );
        writer.join().unwrap().unwrap();
    });
}

// ---- 6. Unwinding puts the reference --------------------------------------------------

#[test]
fn a_panicking_holder_puts_its_reference() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 42).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let r = table.get(&1).unwrap();
        let _r2 = r.clone();
        panic!("event handler failed while holding {}", *r);
    }));
    assert!(result.is_err());
    assert_eq!(owner.kill().try_drain().ok(), Some(42));
}

/// A key whose `Clone` panics when armed (insert clones keys into the node's block while
/// it holds the shard locks).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PanickyKey(u32);

thread_local! {
    static PANIC_IN_CLONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Clone for PanickyKey {
    fn clone(&self) -> Self {
        if self.0 == 3 && PANIC_IN_CLONE.with(|armed| armed.get()) {
            panic!("clone of key {} failed", self.0);
        }
        PanickyKey(self.0)
    }
}

#[test]
fn a_panicking_key_clone_leaves_nothing_behind() {
    let table = ResTable::new();
    let drops = counter();
    let keys = [PanickyKey(1), PanickyKey(2), PanickyKey(3)];
    PANIC_IN_CLONE.with(|armed| armed.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        table.insert(&keys, Counted::new(1, &drops)).map(|_| ())
    }));
    PANIC_IN_CLONE.with(|armed| armed.set(false));
    assert!(result.is_err(), "the clone did not panic");
    assert_eq!(count(&drops), 1, "the value was not dropped exactly once");
    assert!(table.is_empty());
    for key in &keys {
        assert!(
            table.get(key).is_none(),
            "a key of the failed insert resolves"
        );
    }
    // The shard locks were released on the way out and nothing was linked.
    let owner = table.insert(&keys, Counted::new(2, &drops)).unwrap();
    assert_eq!(table.get(&PanickyKey(3)).map(|r| r.id), Some(2));
    drop(owner.kill_and_drain());
    assert_eq!(count(&drops), 2);
}

#[test]
fn a_panicking_holder_thread_wakes_the_drainer() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 42).unwrap();
    let barrier = Barrier::new(2);
    let value = thread::scope(|s| {
        let holder = s.spawn(|| {
            let _r = table.get(&1).unwrap();
            barrier.wait();
            panic!("holder dies with the reference");
        });
        barrier.wait();
        let value = owner.kill_and_drain();
        assert!(holder.join().is_err());
        value
    });
    assert_eq!(value, 42);
}

// ---- 7. Growth under load without stopping readers ---------------------------------

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn readers_keep_finding_objects_while_the_index_grows() {
    let table = ResTable::new();
    let _fixed: Vec<_> = (0..64u64).map(|k| table.insert(&[k], k).unwrap()).collect();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut lookups = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for k in 0..64u64 {
                    let r = table.get(&k).expect("a live object vanished during growth");
                    assert_eq!(*r, k);
                    lookups += 1;
                }
            }
            lookups
        });
        let owners: Vec<Owner<u64, u64>> = (1_000..60_000u64)
            .map(|k| table.insert(&[k, k + 1_000_000], k).unwrap())
            .collect();
        assert_eq!(table.len(), 64 + owners.len());
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}

// ---- 8. A reader that reaches a killed node does not touch it -----------------------

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn readers_of_a_killed_object_never_delay_its_drain() {
    // Readers spin on the keys of killed objects; with no reference out, the drain must
    // succeed at the first try every time: a failed get leaves the count alone.
    let table = ResTable::new();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    drop(table.get(&1u32));
                    drop(table.get(&2u32));
                }
            });
        }
        for i in 0..20_000u32 {
            let owner = table.insert(&[1, 2], i).unwrap();
            let mut dying = owner.kill();
            // A reader may hold a reference taken before the kill; wait for that one...
            while dying.refs() != 0 {
                std::hint::spin_loop();
            }
            // ...but once zero, no late reader can raise the count again.
            dying = match dying.try_drain() {
                Ok(value) => {
                    assert_eq!(value, i);
                    continue;
                }
                Err(dying) => dying,
            };
            panic!("refs went back up after reaching zero: {dying:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

// ---- Iteration, Debug, auto traits --------------------------------------------------

#[test]
#[cfg_attr(miri, ignore = "thousands of rounds: too slow under Miri")]
fn iter_yields_each_live_object_once() {
    let table = ResTable::with_capacity(8);
    let mut live = std::collections::HashMap::new();
    let mut killed = Vec::new();
    for i in 0..500u32 {
        let owner = table.insert(&[i, 10_000 + i, 20_000 + i], i).unwrap();
        if i % 3 == 0 {
            killed.push(owner.kill());
        } else {
            live.insert(i, owner);
        }
    }
    let mut seen: Vec<u32> = table.iter().map(|r| *r).collect();
    seen.sort_unstable();
    let mut expected: Vec<u32> = live.keys().copied().collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    // Destroying from inside the loop works: the iterator holds no reference except the
    // one it yielded (a hidden one would make this drain hang).
    for r in table.iter() {
        let value = *r;
        assert_eq!(r.keys().len(), 3);
        drop(r);
        assert_eq!(live.remove(&value).unwrap().kill_and_drain(), value);
    }
    assert!(live.is_empty() && table.is_empty());
    for dying in killed {
        dying.drain();
    }
}

#[test]
fn debug_output_names_keys_and_state() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], "qp").unwrap();
    let r = table.get(&1).unwrap();
    assert_eq!(format!("{owner:?}"), r#"Owner { keys: [1], value: "qp" }"#);
    assert_eq!(format!("{r:?}"), r#"Ref { keys: [1], value: "qp" }"#);
    assert_eq!(format!("{table:?}"), "ResTable { len: 1, .. }");
    let dying = owner.kill();
    assert_eq!(format!("{dying:?}"), "Dying { keys: [1], refs: 1 }");
    let err = table.insert(&[1, 1], "x").unwrap_err();
    assert_eq!(
        format!("{err:?}"),
        "InsertError { kind: DuplicateKey, key: Some(1), .. }"
    );
    drop(r);
}

#[test]
fn handles_have_the_promised_auto_traits() {
    fn send_sync<X: Send + Sync>() {}
    fn is_static<X: 'static>() {}
    send_sync::<ResTable<u32, String>>();
    send_sync::<Owner<u32, String>>();
    send_sync::<Dying<u32, String>>();
    send_sync::<Ref<'static, u32, String>>();
    is_static::<Owner<u32, String>>();
    fn error<E: std::error::Error>() {}
    error::<restable::InsertError<u32, String>>();
}

#[test]
fn lookup_by_borrowed_form() {
    let table = ResTable::new();
    let _o = table.insert(&[String::from("qpn:7")], 7).unwrap();
    assert_eq!(*table.get("qpn:7").unwrap(), 7);
    assert!(table.contains_key("qpn:7"));
}

#[test]
fn a_table_of_values_that_are_not_sync_works_on_one_thread() {
    // Nothing at construction asks for `Send`/`Sync`: such a table is simply not `Sync`
    // itself (see `handles_have_the_promised_auto_traits`), and works on its thread.
    let table = ResTable::<u32, std::cell::Cell<u32>>::new();
    let owner = table.insert(&[1], std::cell::Cell::new(1)).unwrap();
    table.get(&1).unwrap().set(2);
    assert_eq!(owner.kill_and_drain().get(), 2);
    let borrowed = String::from("local");
    let by_local_str = ResTable::<u32, &str>::new(); // values may borrow locals
    let owner = by_local_str.insert(&[1], borrowed.as_str()).unwrap();
    assert_eq!(*by_local_str.get(&1).unwrap(), "local");
    drop(owner);
}

/// A detached owner's reads of its value happen before another thread's `remove` drops
/// it: `detach` must release what the owner did, for the remover's claim to acquire.
/// (With a `Relaxed` detach, ThreadSanitizer and Miri report the owner's read of the
/// `Box` racing the remover's free.)
#[test]
fn detach_orders_the_owners_reads_before_a_remover_drops_the_value() {
    let rounds = if cfg!(miri) { 8 } else { 200 };
    for round in 0..rounds {
        let table = ResTable::new();
        let owner = table.insert(&[1u32], Box::new(round)).unwrap();
        thread::scope(|s| {
            s.spawn(|| loop {
                if let Some(dying) = table.remove(&1) {
                    drop(dying.drain());
                    break;
                }
                thread::yield_now();
            });
            assert_eq!(**owner, round);
            owner.detach();
        });
    }
}

/// The same for the table's own drop, which claims and drops every detached object.
#[test]
fn detach_orders_the_owners_reads_before_the_table_drop() {
    let rounds = if cfg!(miri) { 8 } else { 200 };
    for round in 0..rounds {
        let table = ResTable::new();
        let owner = table.insert(&[1u32], Box::new(round)).unwrap();
        thread::scope(|s| {
            s.spawn(move || {
                assert_eq!(**owner, round);
                owner.detach();
            });
            drop(table);
        });
    }
}

/// Nodes smaller than a recycling link — keys and values of no size, or a byte — are
/// recycled like any other, on both layouts: killed, collected, and their blocks reused.
#[test]
fn tiny_nodes_recycle_on_both_layouts() {
    fn churn<K: Clone + Eq + std::hash::Hash + Send + std::fmt::Debug + 'static, T>(
        table: ResTable<K, T>,
        key: impl Fn(u32) -> K,
        value: impl Fn() -> T,
    ) {
        let rounds = if cfg!(miri) { 40 } else { 2_000 };
        for round in 0..rounds {
            let owner = table.insert(&[key(round)], value()).unwrap();
            drop(owner.kill_and_drain());
            if round % 8 == 0 {
                // Lets the epoch run the retired nodes' disposal, which recycles them.
                crossbeam_epoch::pin().flush();
            }
        }
    }
    for cache_aligned in [false, true] {
        let build = || {
            let builder = restable::Builder::new();
            if cache_aligned {
                builder.cache_aligned()
            } else {
                builder
            }
        };
        churn::<(), ()>(build().build(), |_| (), || ());
        churn::<(), u8>(build().build(), |_| (), || 7);
        churn::<u8, ()>(build().build(), |r| r as u8, || ());
        churn::<u8, u8>(build().build(), |r| r as u8, || 7);
    }
}

/// A capacity no index can hold panics, catchably, before anything is allocated (it
/// used to abort the process on the failed allocation).
#[test]
fn impossible_capacities_panic_with_a_message() {
    for capacity in [usize::MAX, usize::MAX / 2, isize::MAX as usize / 8] {
        let made = catch_unwind(|| ResTable::<u64, ()>::with_capacity(capacity));
        let payload = made.expect_err("an impossible table was made");
        let message = payload
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("capacity overflow"), "{message}");
        let built = catch_unwind(|| {
            restable::Builder::new()
                .capacity(capacity)
                .build::<u64, ()>()
        });
        assert!(built.is_err());
    }
}
