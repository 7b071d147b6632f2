//! Borrowed reads (`ResTable::pin`): lookups that take no reference, and drains that
//! wait for them anyway — a grace period, driven by the drainer.

mod common;

use common::{count, counter, Counted};
use restable::ResTable;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// Runs the epoch's collector from this thread until `done`, or panics after 10 s.
fn collect_until(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "never reclaimed");
        crossbeam_epoch::pin().flush();
        thread::yield_now();
    }
}

#[test]
fn borrowed_lookups_find_what_counted_ones_find() {
    let table = ResTable::new();
    let _a = table.insert(&[1u32, 10], String::from("a")).unwrap();
    table.insert_detached(&[2u32], String::from("b")).unwrap();
    let guard = table.pin();
    assert_eq!(guard.get(&1).map(String::as_str), Some("a"));
    assert_eq!(guard.get(&10).map(String::as_str), Some("a"));
    assert_eq!(guard.get(&2).map(String::as_str), Some("b"));
    assert_eq!(guard.get(&3), None);
    assert!(guard.contains_key(&2) && !guard.contains_key(&3));
    assert_eq!(guard.find(&10).unwrap().keys(), &[1, 10]);
    drop(guard);
    assert_eq!(table.remove(&2).unwrap().drain(), "b");
    assert_eq!(table.pin().get(&2), None);
}

/// Every draining form refuses while a reader on another thread still holds a value it
/// read borrowed, and the drain completes once the reader's guard is gone.
#[test]
fn drains_wait_for_a_borrowed_reader_in_its_guard() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], vec![7u8; 64]).unwrap();
    let (read, killed, check_done) = (Barrier::new(2), Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let guard = table.pin();
            let value = guard.get(&1).unwrap();
            read.wait();
            killed.wait();
            // Unreachable by key, still readable through the borrow.
            assert!(guard.get(&1).is_none());
            check_done.wait();
            assert!(value.iter().all(|&b| b == 7));
            drop(guard);
        });
        read.wait();
        let dying = owner.kill();
        killed.wait();
        let dying = dying.try_drain().unwrap_err();
        let dying = dying.drain_timeout(Duration::from_millis(20)).unwrap_err();
        assert!(!dying.wait_timeout(Duration::from_millis(20)));
        assert_eq!(dying.refs(), 1, "the grace period counts as a reference");
        check_done.wait();
        let start = Instant::now();
        assert_eq!(dying.drain(), vec![7u8; 64]);
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

/// `wait`, then `revive`, then a second kill: both grace periods are waited for.
#[test]
fn revive_keeps_earlier_grace_periods_counted() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 5u64).unwrap();
    assert_eq!(table.pin().get(&1), Some(&5));
    let dying = owner.kill();
    dying.wait(); // the grace period ends: nobody is pinned
    assert_eq!(dying.refs(), 0);
    let owner = dying.revive().unwrap();
    let guard = table.pin();
    assert_eq!(guard.get(&1), Some(&5));
    let dying = owner.kill();
    assert!(!dying.wait_timeout(Duration::from_millis(5)));
    drop(guard);
    assert_eq!(dying.drain(), 5);
}

/// Dropping the owner of an object a reader still reads borrowed leaves the value in
/// place until the reader's guard is gone; then the epoch drops it, once.
#[test]
fn owner_drop_keeps_the_value_until_the_reader_unpins() {
    let table = ResTable::new();
    let drops = counter();
    let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
    let (read, dropped) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let guard = table.pin();
            let value = guard.get(&1).unwrap();
            read.wait();
            dropped.wait();
            thread::sleep(Duration::from_millis(20));
            assert_eq!(value.id, 1);
            assert_eq!(count(&drops), 0, "dropped under a borrowed reader");
        });
        read.wait();
        drop(owner);
        for _ in 0..10 {
            crossbeam_epoch::pin().flush();
        }
        dropped.wait();
    });
    collect_until(|| count(&drops) == 1);
    assert_eq!(count(&drops), 1);
}

/// The same for a detached object removed and dropped, and for `retain`.
#[test]
fn remove_and_retain_wait_for_borrowed_readers() {
    let table = ResTable::new();
    let drops = counter();
    for id in 0..4u32 {
        table
            .insert_detached(&[id], Counted::new(id.into(), &drops))
            .unwrap();
    }
    let guard = table.pin();
    let values: Vec<_> = (0..4u32).map(|id| guard.get(&id).unwrap()).collect();
    let dying = table.remove(&0).unwrap();
    table.retain(|keys, _| keys[0] == 3);
    assert_eq!(table.len(), 1);
    let dying = dying.drain_timeout(Duration::from_millis(5)).unwrap_err();
    assert_eq!(count(&drops), 0);
    assert_eq!(values.iter().map(|v| v.id).sum::<u64>(), 6);
    drop(guard);
    assert_eq!(dying.drain().id, 0);
    collect_until(|| count(&drops) == 3);
    drop(table);
    assert_eq!(count(&drops), 4);
}

/// An object only ever read counted drains without a grace period, even while another
/// thread stays pinned the whole time (which would hold a grace period back forever).
#[test]
fn unborrowed_objects_drain_beside_a_thread_pinned_all_along() {
    let table = ResTable::new();
    let _other = table.insert(&[u32::MAX], 0u64).unwrap();
    let (pinned, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let guard = table.pin();
            assert_eq!(guard.get(&u32::MAX), Some(&0));
            pinned.wait();
            done.wait();
        });
        pinned.wait();
        for id in 0..1_000u32 {
            let owner = table.insert(&[id], u64::from(id)).unwrap();
            let r = table.get(&id).unwrap();
            assert_eq!(*r, u64::from(id));
            drop(r);
            let dying = owner.kill();
            let value = dying
                .drain_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("object {id} waited for a grace period"));
            assert_eq!(value, u64::from(id));
        }
        done.wait();
    });
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> &str {
    match payload.downcast_ref::<String>() {
        Some(message) => message,
        None => payload.downcast_ref::<&str>().unwrap(),
    }
}

/// A thread that drains a borrowed object while itself pinned would wait for its own
/// pin: refused with a panic that names the cause; the timed forms time out.
#[test]
fn draining_a_borrowed_object_while_pinned_panics() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], ()).unwrap();
    let guard = table.pin();
    assert!(guard.get(&1).is_some());
    let dying = owner.kill();
    let dying = dying.drain_timeout(Duration::from_millis(5)).unwrap_err();
    let dying = dying.try_drain().unwrap_err();
    let err = panic::catch_unwind(AssertUnwindSafe(|| dying.wait())).unwrap_err();
    assert!(panic_message(&err).contains("while this thread is pinned"));
    drop(guard);

    // The same inside a read section, with the borrowed read made elsewhere.
    let owner = table.insert(&[2u32], ()).unwrap();
    assert!(table.pin().get(&2).is_some());
    let section = restable::read_section();
    let err = panic::catch_unwind(AssertUnwindSafe(|| owner.kill_and_drain())).unwrap_err();
    assert!(panic_message(&err).contains("while this thread is pinned"));
    drop(section);
}

/// Draining inside a guard is fine for objects nobody read borrowed.
#[test]
fn draining_an_unborrowed_object_while_pinned_is_fine() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 3u8).unwrap();
    let guard = table.pin();
    assert!(guard.contains_key(&1));
    assert_eq!(owner.kill_and_drain(), 3);
    drop(guard);
}

/// A counted reference taken from a borrowed hit outlives the guard, across a kill.
#[test]
fn a_borrowed_hit_becomes_a_counted_reference() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], String::from("qp")).unwrap();
    let guard = table.pin();
    let hit = guard.find(&1).unwrap();
    let dying = owner.kill();
    let r = hit.to_owned_ref(); // after the kill: the grace period holds the object
    drop(guard);
    let r = thread::spawn(move || {
        assert_eq!(*r, "qp");
        r
    })
    .join()
    .unwrap();
    let dying = dying.drain_timeout(Duration::from_millis(5)).unwrap_err();
    drop(r);
    assert_eq!(dying.drain(), "qp");
}

/// Readers that refresh their guards between batches let the drains of borrowed objects
/// through; nothing is lost or dropped twice.
#[test]
fn borrowed_readers_that_refresh_let_drains_through() {
    let table = ResTable::<u32, Counted>::new();
    let drops = counter();
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut guard = table.pin();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for id in 0..64u32 {
                        if let Some(v) = guard.get(&id) {
                            assert_eq!(v.id, u64::from(id));
                        }
                    }
                    guard.refresh();
                }
            });
        }
        for round in 0..300u32 {
            let id = round % 64;
            let owner = table
                .insert(&[id], Counted::new(id.into(), &drops))
                .unwrap();
            thread::yield_now();
            let value = owner
                .kill()
                .drain_timeout(Duration::from_secs(10))
                .expect("a refreshing reader held a grace period back");
            assert_eq!(value.id, u64::from(id));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(count(&drops), 300);
}

struct CountingWaker {
    thread: thread::Thread,
    wakes: std::sync::atomic::AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// An async drain of a borrowed object completes with nobody else running: it is woken
/// (by the epoch's put, which the helper thread drives), not re-polled in a loop.
#[test]
fn an_async_drain_of_a_borrowed_object_completes_alone() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 9u32).unwrap();
    assert_eq!(table.pin().get(&1), Some(&9));
    let waker = Arc::new(CountingWaker {
        thread: thread::current(),
        wakes: Default::default(),
    });
    let mut drain = std::pin::pin!(owner.kill().drain_async());
    let cx_waker = Waker::from(Arc::clone(&waker));
    let mut cx = Context::from_waker(&cx_waker);
    let start = Instant::now();
    let mut polls = 0;
    let value = loop {
        polls += 1;
        if let Poll::Ready(value) = drain.as_mut().poll(&mut cx) {
            break value;
        }
        thread::park_timeout(Duration::from_secs(1));
        assert!(start.elapsed() < Duration::from_secs(10), "never woken");
    };
    assert_eq!(value, 9);
    assert!(polls <= 3, "{polls} polls: re-polled rather than woken");
}

/// The race itself, small enough for Miri's many seeds (`.ci/run`): a borrowed reader
/// reads the value on one thread while another kills the object, drains it and writes
/// to what it got back. The reader says when it has the value borrowed and goes on
/// reading; the destroyer starts then. Miri reports a data race, or a use of freed
/// memory, unless every read the reader makes happens before the drain returns.
#[test]
fn a_borrowed_read_races_kill_and_drain() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let table = ResTable::new();
    let owner = table.insert(&[1u32], String::from("qp 1")).unwrap();
    let borrowed = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let guard = table.pin();
            let value = guard.get(&1).unwrap();
            borrowed.store(true, Ordering::Release);
            for _ in 0..8 {
                assert_eq!(value, "qp 1");
                thread::yield_now();
            }
        });
        while !borrowed.load(Ordering::Acquire) {
            thread::yield_now();
        }
        let mut value = owner.kill_and_drain();
        value.push_str(" (destroyed)");
        assert_eq!(value, "qp 1 (destroyed)");
    });
}
