//! Waits and locks that must never hang: every wake-up reaches every waiter, no shard lock
//! is held while other code runs, and a drain that could never end panics instead.
//!
//! Each test runs its body under a watchdog: a body that hangs fails the test after
//! [`LIMIT`] instead of hanging the suite (the stuck thread is left behind, and ends with
//! the test process).

mod common;

use common::colliding::Colliding;
use restable::ResTable;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a body may take before it counts as hung: far beyond what any of them needs
/// (well under a second), so that a slow machine never trips it.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `body` on a thread of its own and fails if it does not return within [`LIMIT`]
/// (or if it panics).
fn watchdog<R: Send + 'static>(what: &str, body: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        let result = body();
        let _ = done.send(());
        result
    });
    match finished.recv_timeout(LIMIT) {
        Ok(()) => runner.join().expect("the body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => unreachable!("the body returned without saying so"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: {what} (no end after {LIMIT:?})"),
    }
}

/// Waits until `done` holds, for at most [`LIMIT`]; says whether it did.
fn eventually(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A thread waits on a `Dying` with no deadline while another thread's timed wait on the
/// same `Dying` expires: the last put must still wake the first. (The timed-out waiter
/// used to clear the flag that tells the last put to wake anyone: the first thread then
/// slept forever, or until its own deadline.)
#[test]
fn a_timed_out_waiter_does_not_strand_another() {
    for untimed in [true, false] {
        watchdog("a waiter beside a timed-out one", move || {
            let table = ResTable::new();
            let owner = table.insert(&[1u32], ()).unwrap();
            let r = table.get_owned(&1).unwrap();
            let dying = owner.kill();
            thread::scope(|s| {
                let first = s.spawn(|| {
                    if untimed {
                        dying.wait();
                        true
                    } else {
                        dying.wait_timeout(LIMIT * 2)
                    }
                });
                // Let the first waiter park (it spins only briefly first).
                thread::sleep(Duration::from_millis(100));
                assert!(!dying.wait_timeout(Duration::from_millis(20)));
                let put = Instant::now();
                drop(r); // the last put
                assert!(first.join().unwrap(), "the first waiter timed out");
                assert!(
                    put.elapsed() < LIMIT / 2,
                    "the first waiter woke only at its own deadline ({:?} after the put)",
                    put.elapsed()
                );
            });
            dying.drain();
        });
    }
}

/// An async drain consumes its `Dying`, so no thread can wait beside it; but it may come
/// after waiters that timed out, and must still be woken by the last put, without
/// anyone polling it again.
#[test]
fn an_async_drain_after_timed_out_waiters_is_woken() {
    watchdog("an async drain after timeouts", || {
        let table = ResTable::new();
        let owner = table.insert(&[1u32], 5u8).unwrap();
        let r = table.get_owned(&1).unwrap();
        let dying = owner.kill();
        assert!(!dying.wait_timeout(Duration::from_millis(1)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let putter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            drop(r);
        });
        assert_eq!(runtime.block_on(dying.drain_async()), 5);
        putter.join().unwrap();
    });
}

/// Someone else's deferred function — here an `Owner` of this very table, dropped by
/// crossbeam-epoch's collector — must never run while an insert holds shard locks: it
/// kills, and needs those locks. Every key lands in one shard (a constant hasher), and
/// each round leaves such a function in the epoch's queue before the next insert, so
/// the inserts that grow the shard (and used to flush the collector from inside their
/// locks) meet one.
#[test]
fn a_growing_insert_runs_no_deferred_code_under_its_locks() {
    watchdog("an insert that grows its shard", || {
        let table: Arc<ResTable<u32, (), Colliding>> = Arc::new(ResTable::with_hasher(Colliding));
        let mut owners = Vec::new();
        let mut buckets = table.index_stats().buckets;
        let mut growths = 0;
        for k in 0..400u32 {
            let victim = table.insert(&[100_000 + k], ()).unwrap();
            crossbeam_epoch::pin().defer(move || drop(victim));
            crossbeam_epoch::pin().flush();
            owners.push(table.insert(&[k], ()).unwrap());
            let now = table.index_stats().buckets;
            growths += usize::from(now != buckets);
            buckets = now;
        }
        assert!(growths >= 4, "the shard grew only {growths} times");
        // Every victim was dropped by the collector, some of them by an insert's growth.
        assert!(eventually(|| {
            crossbeam_epoch::pin().flush();
            table.len() == owners.len()
        }));
    });
}

/// A key whose drop inserts into its own table: the table's copies of the keys are
/// dropped by the epoch's collector, which must not run under a shard lock either.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Reentrant {
    id: u32,
    /// This copy, when dropped, inserts a new object into [`REENTRANT`].
    reenters: bool,
}

impl Hash for Reentrant {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

static REENTRANT: OnceLock<ResTable<Reentrant, (), Colliding>> = OnceLock::new();

impl Drop for Reentrant {
    fn drop(&mut self) {
        if self.reenters {
            let table = REENTRANT.get().expect("set before any key");
            let key = Reentrant {
                id: self.id + 1_000_000,
                reenters: false,
            };
            table.insert(&[key], ()).expect("a fresh key").detach();
        }
    }
}

#[test]
fn a_key_drop_that_inserts_into_its_own_table_does_not_deadlock() {
    watchdog("a key drop inserting into its own table", || {
        let table = REENTRANT.get_or_init(|| ResTable::with_hasher(Colliding));
        let mut owners = Vec::new();
        for id in 0..400u32 {
            // The table keeps a clone of the key (which reenters too), and drops it in
            // the collector once the killed object's grace period is over: left to the
            // epoch's own pace (no flush here), some of those clones come due while an
            // insert grows the shard.
            let key = Reentrant { id, reenters: true };
            let dying = table.insert(std::slice::from_ref(&key), ()).unwrap();
            std::mem::forget(key); // our own copy must not insert
            dying.kill_and_drain();
            let key = Reentrant {
                id: 500_000 + id,
                reenters: false,
            };
            owners.push(table.insert(&[key], ()).unwrap());
        }
        // Every reentrant key was dropped by the collector, and inserted its object.
        assert!(eventually(|| {
            crossbeam_epoch::pin().flush();
            table.len() == owners.len() + 400
        }));
    });
}

/// A `retain` predicate that drains the very object it is looking at would wait for the
/// reference `retain` holds on it: refused with a panic that names the cause, for both
/// ways of getting at it (remove by key, and its owner), and the table stays usable.
#[test]
fn a_retain_predicate_draining_its_own_object_panics() {
    watchdog("retain draining its own object", || {
        let table = ResTable::new();
        table.insert(&[1u32], "detached").unwrap().detach();
        let refused = catch_unwind(AssertUnwindSafe(|| {
            table.retain(|keys, _| {
                let dying = table.remove(&keys[0]).expect("detached");
                dying.drain();
                true
            })
        }));
        let payload = refused.expect_err("the drain returned");
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or(payload.downcast_ref::<String>().map(String::as_str))
            .expect("a panic message");
        assert!(message.contains("`retain` predicate"), "{message}");
        assert!(table.is_empty(), "the removed object is still there");

        let owner = table.insert(&[2u32], "owned").unwrap();
        let mut owner = Some(owner);
        let refused = catch_unwind(AssertUnwindSafe(|| {
            table.retain(|_, _| {
                owner.take().expect("one object").kill_and_drain();
                true
            })
        }));
        assert!(refused.is_err(), "the owner's drain returned");
        assert!(table.is_empty());
        let again = table.insert(&[1u32, 2], "again").unwrap();
        assert_eq!(again.kill_and_drain(), "again");
    });
}

/// What the check must not refuse: a predicate that drains another object, drains with a
/// timeout, or leaves the drain until after `retain`.
#[test]
fn a_retain_predicate_may_drain_other_objects_and_time_out_on_its_own() {
    watchdog("retain draining other objects", || {
        let table = ResTable::new();
        for k in 0..4u32 {
            table.insert(&[k], k).unwrap().detach();
        }
        let mut removed = Vec::new();
        let mut timed_out = 0;
        table.retain(|keys, _| {
            let k = keys[0];
            if k % 2 == 0 {
                // The next object, not this one: its drain ends.
                if let Some(dying) = table.remove(&(k + 1)) {
                    removed.push(dying.drain());
                }
            } else if let Some(dying) = table.remove(&k) {
                // This one, with a deadline: times out (retain holds it), no panic.
                match dying.drain_timeout(Duration::from_millis(1)) {
                    Ok(_) => panic!("drained while retain held it"),
                    Err(dying) => {
                        timed_out += 1;
                        drop(dying);
                    }
                }
            }
            true
        });
        removed.sort();
        assert_eq!(removed.len() + timed_out, 2, "{removed:?}, {timed_out}");
        assert_eq!(table.len(), 2);
    });
}
