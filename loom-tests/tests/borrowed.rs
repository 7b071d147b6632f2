//! Loom models of borrowed reads (`ResTable::pin`) and their grace periods, on the real
//! code: a borrowed reader holds no reference, so the only thing between its read of the
//! value and the drainer's move is the grace period of the kill.
//!
//! Run through `loom-tests/run` (`LOOM_TEST_BINARY=borrowed` for these alone).
#![cfg(loom)]

mod support;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use support::{model, model_seeing, spawn, spawn_with, Qp, Table};

const QPN: u32 = 0x51;
const RQ: u32 = 0x52;

/// A borrowed reader (one guard, one lookup, a read of the value) racing kill + drain,
/// after which the destroyer writes to the value it got back: loom reports a data race
/// unless the reader's read happened before the drain's return. `marked_first` has the
/// object read borrowed once before the race, so the racing read takes the path that
/// writes nothing; otherwise it is the object's first borrowed read, which marks it.
fn borrowed_read_vs_kill_and_drain(marked_first: bool, seen: &support::Seen) {
    let table = Arc::new(Table::new());
    let (qp, drops) = Qp::new(7);
    let owner = table.insert(&[QPN], qp).unwrap();
    if marked_first {
        assert_eq!(table.pin().get(&QPN).map(Qp::read), Some(7));
    }
    let reader = spawn_with(&table, |table| {
        let guard = table.pin();
        let found = guard.get(&QPN).map(|qp| {
            assert_eq!(qp.read(), 7, "a borrowed reader saw a drained QP");
        });
        drop(guard);
        found.is_some()
    });
    let mut qp = owner.kill_and_drain();
    qp.scribble();
    drop(qp);
    match reader.join().unwrap() {
        true => seen.saw("read"),
        false => seen.saw("missed"),
    }
    restable::loom_collect();
    assert_eq!(drops.count(), 1);
}

/// 1. A borrowed read of an object already marked `BORROWED` (a plain load) racing its
/// kill and drain: the drain must wait for the reader's guard.
#[test]
fn borrowed_read_vs_drain() {
    model_seeing("borrowed_read_vs_drain", &["read", "missed"], |seen| {
        borrowed_read_vs_kill_and_drain(true, seen)
    });
}

/// 2. The object's first borrowed read — the CAS that sets `BORROWED` — racing the kill:
/// either the kill sees the mark and the drain waits, or the read misses.
#[test]
fn borrow_mark_vs_kill() {
    model_seeing("borrow_mark_vs_kill", &["read", "missed"], |seen| {
        borrowed_read_vs_kill_and_drain(false, seen)
    });
}

/// 3. An object only ever read counted drains while another thread stays pinned (in a
/// guard, reading another object) until the drain is over: no grace period, so no wait
/// for that thread. Were one begun, the drain would wait for a pin that waits for the
/// drain, and loom would report the livelock.
#[test]
fn unborrowed_drain_beside_a_pinned_thread() {
    model("unborrowed_drain_beside_a_pinned_thread", || {
        let table = Arc::new(Table::new());
        let (other, _) = Qp::new(1);
        let _other = table.insert(&[1], other).unwrap();
        let (qp, drops) = Qp::new(2);
        let owner = table.insert(&[QPN], qp).unwrap();
        let drained = Arc::new(AtomicBool::new(false));
        let pinned = {
            let (table, drained) = (Arc::clone(&table), Arc::clone(&drained));
            spawn(move || {
                let guard = table.pin();
                assert_eq!(guard.get(&1).map(Qp::read), Some(1));
                while !drained.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                drop(guard);
            })
        };
        if let Some(qp) = table.get(&QPN) {
            assert_eq!(qp.read(), 2);
        }
        let mut qp = owner.kill_and_drain();
        qp.scribble();
        drained.store(true, Ordering::Release);
        pinned.join().unwrap();
        drop(qp);
        assert_eq!(drops.count(), 1);
    });
}

/// 4. The grace period's end — the epoch's put, on a thread that collects (the helper
/// thread's job outside loom) — racing an async drain's registration of its waker: the
/// drain must be woken, or loom reports the deadlock.
#[test]
fn grace_wake_vs_async_drain() {
    model("grace_wake_vs_async_drain", || {
        let table = Arc::new(Table::new());
        let (qp, drops) = Qp::new(4);
        let owner = table.insert(&[QPN], qp).unwrap();
        assert_eq!(table.pin().get(&QPN).map(Qp::read), Some(4));
        let dying = owner.kill();
        let drained = Arc::new(AtomicBool::new(false));
        // The stand-in for `restable-grace`: pushes the epoch while the drain waits.
        let helper = {
            let drained = Arc::clone(&drained);
            spawn(move || {
                while !drained.load(Ordering::Acquire) {
                    restable::loom_collect();
                    thread::yield_now();
                }
            })
        };
        let mut qp = loom::future::block_on(dying.drain_async());
        qp.scribble();
        drained.store(true, Ordering::Release);
        helper.join().unwrap();
        drop(qp);
        assert_eq!(drops.count(), 1);
    });
}

/// 5. Multi-key kill seen by borrowed reads (the EQ handler by QPN, then the CQ poller
/// by work-queue id, both under one guard), the object already marked `BORROWED`: once
/// the read by QPN has missed, the read by the receive queue id misses too. Kill unlinks
/// QPN first, so a borrowed read that trusted the mark without checking `LIVE` would
/// find the object under the receive queue id after the QPN had gone.
#[test]
fn borrowed_reads_by_two_keys_vs_kill() {
    model("borrowed_reads_by_two_keys_vs_kill", || {
        let table = Arc::new(Table::new());
        let (qp, drops) = Qp::new(5);
        let owner = table.insert(&[QPN, RQ], qp).unwrap();
        assert_eq!(table.pin().get(&RQ).map(Qp::read), Some(5));
        let reader = spawn_with(&table, |table| {
            let guard = table.pin();
            let on_qpn = guard.get(&QPN).map(Qp::read);
            let on_rq = guard.get(&RQ).map(Qp::read);
            assert!(
                on_qpn.is_some() || on_rq.is_none(),
                "killed under QPN, live under RQ"
            );
        });
        let mut qp = owner.kill_and_drain();
        qp.scribble();
        drop(qp);
        reader.join().unwrap();
        restable::loom_collect();
        assert_eq!(drops.count(), 1);
    });
}
