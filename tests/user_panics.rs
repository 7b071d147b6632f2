//! Whatever user code does — a key's `Eq`, `Clone` or `Drop` panics, a value's `Drop`
//! panics or uses the table itself — the table stays usable, no shard lock stays held,
//! the value is dropped exactly once or handed back, and nothing leaks.
//!
//! Every key counts its live copies, so "nothing leaks" is checked exactly: once the
//! epoch has caught up, only the test's own keys are left.

mod common;

use restable::ResTable;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// What a test's keys share: their live count and which of their methods panic.
#[derive(Default)]
struct Life {
    alive: AtomicIsize,
    panic_in_eq: AtomicBool,
    /// Keys with this id panic when cloned (while armed).
    panic_in_clone_of: AtomicUsize,
    panic_in_drop: AtomicBool,
}

/// A key that counts its copies and panics on command. Every key hashes alike, so all of
/// a table's keys share one index shard: any lock an insert holds is the one the next
/// insert needs.
struct Key {
    id: usize,
    life: Arc<Life>,
    /// This copy panics when dropped (if `panic_in_drop` is armed).
    fragile: bool,
}

impl Key {
    fn new(id: usize, life: &Arc<Life>) -> Self {
        life.alive.fetch_add(1, Ordering::SeqCst);
        Key {
            id,
            life: Arc::clone(life),
            fragile: false,
        }
    }
}

impl Clone for Key {
    fn clone(&self) -> Self {
        if self.life.panic_in_clone_of.load(Ordering::SeqCst) == self.id {
            panic!("clone of key {} failed", self.id);
        }
        self.life.alive.fetch_add(1, Ordering::SeqCst);
        Key {
            id: self.id,
            life: Arc::clone(&self.life),
            fragile: self.fragile,
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.life.alive.fetch_sub(1, Ordering::SeqCst);
        if self.fragile && self.life.panic_in_drop.load(Ordering::SeqCst) {
            panic!("drop of key {} failed", self.id);
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        if self.life.panic_in_eq.load(Ordering::SeqCst) {
            panic!("eq of key {} failed", self.id);
        }
        self.id == other.id
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0u8.hash(state);
    }
}

/// A value that counts its drops, and may panic in its drop or insert into its own table
/// from it.
struct Val {
    drops: Arc<AtomicUsize>,
    panic_in_drop: bool,
    reenter: Option<Reenter>,
}

/// The table a value's drop inserts into, and its keys' counters.
type Reenter = (Arc<ResTable<Key, Val>>, Arc<Life>);

impl Val {
    fn new(drops: &Arc<AtomicUsize>) -> Self {
        Val {
            drops: Arc::clone(drops),
            panic_in_drop: false,
            reenter: None,
        }
    }
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Val")
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if let Some((table, life)) = self.reenter.take() {
            // Needs the shard lock of every key of this test.
            let owner = table.insert(&[Key::new(999, &life)], Val::new(&self.drops));
            drop(owner.expect("key 999 is free"));
        }
        if self.panic_in_drop {
            panic!("drop of the value failed");
        }
    }
}

/// Lets the epoch advance until `done` holds (other tests of this binary may be pinned
/// for a moment), and says whether it did.
fn collect_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        crossbeam_epoch::pin().flush();
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

fn alive(life: &Life) -> isize {
    life.alive.load(Ordering::SeqCst)
}

/// The table still works: a new object under a key of the test's shard goes in, is
/// found, and comes back out.
fn assert_usable(table: &ResTable<Key, Val>, life: &Arc<Life>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let owner = table
        .insert(&[Key::new(500, life)], Val::new(&drops))
        .unwrap_or_else(|e| panic!("insert after the panic failed: {e}"));
    assert!(table.get(&Key::new(500, life)).is_some());
    drop(owner.kill_and_drain());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_key_eq_under_the_shard_lock() {
    let life = Arc::new(Life::default());
    let table = ResTable::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let first = table
        .insert(&[Key::new(1, &life)], Val::new(&drops))
        .unwrap();
    let keys = [Key::new(1, &life)];
    life.panic_in_eq.store(true, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| {
        drop(table.insert(&keys, Val::new(&drops)));
    }));
    life.panic_in_eq.store(false, Ordering::SeqCst);
    assert!(result.is_err(), "the key's eq did not panic");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the value was not dropped exactly once"
    );
    assert_eq!(alive(&life), 2, "the insert's clones of its keys leaked");
    assert_usable(&table, &life);
    drop(first.kill_and_drain());
    drop(keys);
    assert!(collect_until(|| alive(&life) == 0), "a node or key leaked");
}

#[test]
fn a_panicking_key_clone_drops_the_value_outside_the_locks() {
    // The value's drop inserts into the same shard: had it run under the insert's
    // locks, it would wait for them forever.
    let life = Arc::new(Life::default());
    let table = Arc::new(ResTable::new());
    let drops = Arc::new(AtomicUsize::new(0));
    let (done, finished) = mpsc::channel();
    {
        let (table, life, drops) = (Arc::clone(&table), Arc::clone(&life), Arc::clone(&drops));
        thread::spawn(move || {
            let keys = [Key::new(1, &life), Key::new(2, &life), Key::new(3, &life)];
            let mut value = Val::new(&drops);
            value.reenter = Some((Arc::clone(&table), Arc::clone(&life)));
            life.panic_in_clone_of.store(2, Ordering::SeqCst);
            let result = catch_unwind(AssertUnwindSafe(|| drop(table.insert(&keys, value))));
            life.panic_in_clone_of.store(usize::MAX, Ordering::SeqCst);
            done.send(result.is_err()).unwrap();
        });
    }
    let panicked = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("insert deadlocked: the value was dropped under a shard lock");
    assert!(panicked, "the key's clone did not panic");
    // The value and the one its drop inserted (and dropped again at once).
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert!(table.is_empty());
    assert_usable(&table, &life);
    assert!(collect_until(|| alive(&life) == 0), "a node or key leaked");
}

#[test]
fn a_key_in_use_hands_back_the_value_and_the_key_without_cloning() {
    let life = Arc::new(Life::default());
    let table = ResTable::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let first = table
        .insert(&[Key::new(7, &life)], Val::new(&drops))
        .unwrap();
    let keys = [Key::new(6, &life), Key::new(7, &life)];
    let err = table.insert(&keys, Val::new(&drops)).unwrap_err();
    assert_eq!(err.key().map(|k| k.id), Some(7));
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the value was dropped");
    drop(err);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop((first, keys));
    assert!(collect_until(|| alive(&life) == 0), "a node or key leaked");
}

/// A value whose drop panics, dropped by `release`; the node must still be retired
/// (its keys dropped once the epoch catches up) and the table must stay usable.
fn panicking_value_drop(release: impl FnOnce(&ResTable<Key, Val>, restable::Owner<Key, Val>)) {
    let life = Arc::new(Life::default());
    let table = ResTable::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let mut value = Val::new(&drops);
    value.panic_in_drop = true;
    let owner = table
        .insert(&[Key::new(1, &life), Key::new(2, &life)], value)
        .unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| release(&table, owner)));
    assert!(result.is_err(), "the value's drop did not panic");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the value was not dropped exactly once"
    );
    assert!(table.is_empty());
    assert_usable(&table, &life);
    assert!(
        collect_until(|| alive(&life) == 0),
        "the node was never retired"
    );
}

#[test]
fn a_panicking_value_drop_in_the_last_put() {
    panicking_value_drop(|table, owner| {
        let r = table.get(&Key::new(1, &owner.keys()[0].life)).unwrap();
        drop(owner); // the owner lets go; the reference is now the last user
        drop(r);
    });
}

#[test]
fn a_panicking_value_drop_in_the_owner_drop() {
    panicking_value_drop(|_, owner| drop(owner));
}

#[test]
fn a_panicking_value_drop_in_the_dying_drop() {
    panicking_value_drop(|_, owner| drop(owner.kill()));
}

#[test]
fn a_panicking_key_drop_in_the_collector_stays_there() {
    let life = Arc::new(Life::default());
    let table = Arc::new(ResTable::new());
    let drops = Arc::new(AtomicUsize::new(0));
    let mut fragile = Key::new(1, &life);
    fragile.fragile = true; // and so is every clone of it
    let owner = table.insert(&[fragile.clone(), Key::new(2, &life)], Val::new(&drops));
    drop(owner.unwrap().kill_and_drain());
    // Another object retired beside it: its keys must be freed too.
    let other = table
        .insert(&[Key::new(3, &life)], Val::new(&drops))
        .unwrap();
    drop(other.kill_and_drain());
    life.panic_in_drop.store(true, Ordering::SeqCst);
    // Our own copy goes quietly; the table's copy panics when the collector drops it.
    fragile.fragile = false;
    drop(fragile);
    // Hand this thread's garbage to the global queue (too young to be freed yet), so
    // that the reader below is the one that frees it.
    crossbeam_epoch::pin().flush();
    let reader = {
        let (table, life) = (Arc::clone(&table), Arc::clone(&life));
        thread::spawn(move || {
            // Unrelated lookups, which collect garbage now and then, and explicit flushes.
            let probe = Key::new(4, &life);
            collect_until(|| {
                assert!(table.get(&probe).is_none());
                alive(&life) == 1 // only `probe` is left
            })
        })
    };
    let collected = reader
        .join()
        .expect("a key's panicking drop escaped from an unrelated thread's lookup");
    life.panic_in_drop.store(false, Ordering::SeqCst);
    assert!(
        collected,
        "the keys retired beside the panicking one leaked"
    );
    assert_usable(&table, &life);
}

/// The table's drop destroys every detached object even when some values' drops panic:
/// nobody could remove the rest afterwards (it used to stop at the first panic, leaving
/// the rest and their blocks leaked). The first panic goes on once all are destroyed.
#[test]
fn a_panicking_value_drop_in_the_table_drop_destroys_the_rest() {
    let life = Arc::new(Life::default());
    let drops = Arc::new(AtomicUsize::new(0));
    let table = ResTable::new();
    for id in 1..=50 {
        let mut value = Val::new(&drops);
        value.panic_in_drop = id % 7 == 3;
        table
            .insert(&[Key::new(id, &life)], value)
            .unwrap()
            .detach();
    }
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(table)));
    assert!(dropped.is_err(), "the values' panics were swallowed");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        50,
        "some values were never dropped"
    );
    assert!(
        collect_until(|| alive(&life) == 0),
        "some nodes were never retired"
    );
}
