//! Loom models of the destroy/event races, on restable's real code: its atomics, shard
//! locks and parking run on loom's, and so does crossbeam-epoch (`crossbeam_loom`), with
//! reclamation driven from inside each model.
//!
//! Run through `loom-tests/run` (release, own target dir, preemption bound 2 unless
//! `LOOM_MAX_PREEMPTIONS` says otherwise).
#![cfg(loom)]

mod support;

use loom::sync::Arc;
use loom::thread;
use restable::{Builder, InsertErrorKind, Owner};
use std::time::Duration;
use support::{model, model_seeing, spawn_with, Qp, Table};

const QPN: u32 = 0x51;
const SQ: u32 = 0x8000_0003; // send queue ids carry bit 31, as mana's MANA_SENDQ_MASK
const RQ: u32 = 0x3;

/// The event path on its own thread: look the QP up under `key` and, if found, read it
/// while holding the reference (it must still hold `payload`).
fn spawn_event_handler(table: &Arc<Table>, key: u32, payload: u32) -> thread::JoinHandle<()> {
    spawn_with(table, move |table| {
        if let Some(qp) = table.get(&key) {
            assert_eq!(qp.read(), payload, "a holder saw a destroyed QP");
        }
    })
}

/// The destroy-vs-event skeleton shared by models 1, 2, 9 and 9b: a QP holding `payload`
/// under `QPN`, an event handler racing `destroy`, reclamation run by the destroyer. If
/// `destroy` hands the QP back, the destroyer writes to it (as it would free its hardware
/// resources) while the handler may still be running: loom reports that as a data race
/// unless every holder's read happened before. Either way the QP is dropped exactly once.
fn destroy_vs_event_handler(payload: u32, destroy: fn(Owner<u32, Qp>) -> Option<Qp>) {
    let table = Arc::new(Table::new());
    let (qp, drops) = Qp::new(payload);
    let owner = table.insert(&[QPN], qp).unwrap();
    let handler = spawn_event_handler(&table, QPN, payload);
    if let Some(mut qp) = destroy(owner) {
        qp.scribble();
    }
    restable::loom_collect();
    handler.join().unwrap();
    assert_eq!(drops.count(), 1);
}

/// 1. Event handler vs destroy. mana: the EQ handler's `mana_get_qp_ref` + event callback
/// + `mana_put_qp_ref` racing `mana_table_remove_qp`; mlx5: `mlx5_get_rsc` in the event
/// path racing `destroy_resource_common`. The holder must never see a dropped or moved
/// value, and the drain must return only after the put.
#[test]
fn event_handler_vs_destroy() {
    model("event_handler_vs_destroy", || {
        destroy_vs_event_handler(1, |owner| Some(owner.kill_and_drain()))
    });
}

/// 2. Lost wake-up: the last put racing the drainer going to sleep (restrack's
/// `rdma_restrack_del` → `wait_for_completion` vs the last `kref_put` → `complete`), after
/// a timed drain gave up first: the time-out must leave no state that makes the real
/// drain miss its wake-up. (Under loom a timed park times out at once.)
#[test]
fn last_put_vs_drainer_parking() {
    model("last_put_vs_drainer_parking", || {
        destroy_vs_event_handler(2, |owner| {
            Some(match owner.kill().drain_timeout(Duration::from_secs(1)) {
                Ok(qp) => qp,
                Err(dying) => dying.drain(),
            })
        })
    });
}

/// 2b. Two waiters on one `Dying` (it is `Sync`: `wait` and `wait_timeout` take `&self`),
/// one of which gives up while the other sleeps, racing the last put: the sleeper must be
/// woken, whatever the one that gave up left behind. (A timed-out waiter used to clear
/// the flag that tells the last put to wake anyone: issue 22.)
#[test]
fn timed_out_waiter_vs_waiter() {
    model_seeing(
        "timed_out_waiter_vs_waiter",
        &["timed out", "drained in time"],
        |seen| {
            let table = Arc::new(Table::new());
            let (qp, drops) = Qp::new(3);
            let owner = table.insert(&[QPN], qp).unwrap();
            let r = table.get_owned(&QPN).unwrap();
            let dying = Arc::new(owner.kill());
            // Plain spawns, not `support::spawn`: neither thread starts with an insert
            // (what the registration is for), and registered they took the model from
            // 398 executions past ten minutes.
            let waiter = {
                let dying = Arc::clone(&dying);
                thread::spawn(move || dying.wait())
            };
            let holder = thread::spawn(move || {
                assert_eq!(r.read(), 3, "a holder saw a drained QP");
                drop(r);
            });
            match dying.wait_timeout(Duration::from_secs(1)) {
                true => seen.saw("drained in time"),
                false => seen.saw("timed out"),
            }
            waiter.join().unwrap();
            holder.join().unwrap();
            drop(dying);
            restable::loom_collect();
            assert_eq!(drops.count(), 1);
        },
    );
}

/// 3. Publish before init: mlx5 inserted into its radix tree before setting the
/// refcount and completion. A get racing the insert sees a fully built object or none.
#[test]
fn get_vs_insert_publish() {
    model_seeing("get_vs_insert_publish", &["found", "not yet"], |seen| {
        let table = Arc::new(Table::new());
        let creator = spawn_with(&table, move |table| {
            table.insert(&[QPN, RQ], Qp::new(3).0).unwrap()
        });
        if let Some(qp) = table.get(&RQ) {
            assert_eq!(qp.read(), 3, "half-initialized object");
            assert_eq!(qp.keys(), &[QPN, RQ]);
            seen.saw("found");
        } else {
            seen.saw("not yet");
        }
        let owner = creator.join().unwrap();
        owner.kill_and_drain();
        restable::loom_collect();
    });
}

/// 4a. Multi-key insert: a get on one key that succeeds means the insert happened, so
/// every other key resolves too (a UD QP stored under its send then its receive queue).
#[test]
fn multi_key_insert_is_atomic() {
    model_seeing("multi_key_insert_is_atomic", &["both", "neither"], |seen| {
        let table = Arc::new(Table::new());
        let creator = spawn_with(&table, move |table| {
            table.insert(&[SQ, RQ], Qp::new(4).0).unwrap()
        });
        let on_sq = table.get(&SQ).is_some();
        let on_rq = table.get(&RQ).is_some();
        assert!(
            !on_sq || on_rq,
            "found by its first key but not by its second"
        );
        seen.saw(match (on_sq, on_rq) {
            (true, true) => "both",
            (false, false) => "neither",
            _ => "second only",
        });
        creator.join().unwrap().kill_and_drain();
        restable::loom_collect();
    });
}

/// 4b. An insert that fails on its last key racing a get on its first: mana's UD/GSI
/// path stores `sq_id | BIT(31)` and then `rq_id`, and on failure erases the first
/// without draining a reference that a poller may have taken in between. Here no
/// reference to the failed object may exist, ever, and the value comes back.
#[test]
fn failed_insert_is_never_visible() {
    model("failed_insert_is_never_visible", || {
        let table = Arc::new(Table::new());
        let blocker = table.insert(&[RQ], Qp::new(0).0).unwrap();
        let creator = spawn_with(&table, move |table| {
            let err = table.insert(&[SQ, RQ], Qp::new(5).0).unwrap_err();
            assert_eq!(
                (err.kind(), err.key()),
                (InsertErrorKind::KeyInUse, Some(&RQ))
            );
            assert_eq!(err.into_value().read(), 5);
        });
        assert!(
            table.get(&SQ).is_none(),
            "got a reference to a failed insert"
        );
        creator.join().unwrap();
        blocker.kill_and_drain();
        restable::loom_collect();
    });
}

/// 5. Multi-key kill: an event handler looks the QP up by QPN, then a CQ poller by a
/// work-queue id, while the QP is destroyed. Kill hides every key at once: once the get
/// by QPN has failed, the later get by the receive queue id fails too (kill unlinks the
/// keys in order, QPN first, so unlinking before hiding would fail this).
#[test]
fn get_by_wq_id_vs_kill() {
    model("get_by_wq_id_vs_kill", || {
        let table = Arc::new(Table::new());
        let owner = table.insert(&[QPN, SQ, RQ], Qp::new(6).0).unwrap();
        let poller = spawn_with(&table, move |table| {
            let on_qpn = table.get(&QPN).map(|qp| qp.read());
            let on_rq = table.get(&RQ).map(|qp| qp.read());
            assert!(
                on_qpn.is_some() || on_rq.is_none(),
                "killed under QPN, live under RQ"
            );
        });
        let mut qp = owner.kill_and_drain();
        qp.scribble();
        for key in [QPN, SQ, RQ] {
            assert!(table.get(&key).is_none());
        }
        restable::loom_collect();
        poller.join().unwrap();
    });
}

/// 6. Immediate reuse: mana hardware hands a freed QPN to the next create. Kill, insert
/// a new object under the same key while a reference to the old one is still held, and
/// race a get: it returns the new object or none, never the old one.
#[test]
fn reuse_after_kill_vs_get() {
    model("reuse_after_kill_vs_get", || {
        let table = Arc::new(Table::new());
        let old = table.insert(&[QPN], Qp::new(7).0).unwrap();
        let held = table.get(&QPN).unwrap();
        let dying = old.kill();
        // A get after the kill finds the new object (payload 8) or none, never the old.
        let getter = spawn_event_handler(&table, QPN, 8);
        let new = table.insert(&[QPN], Qp::new(8).0).unwrap();
        assert_eq!(held.read(), 7);
        drop(held);
        let mut old_qp = dying.drain();
        old_qp.scribble();
        restable::loom_collect();
        getter.join().unwrap();
        new.kill_and_drain();
    });
}

/// 7. Two creates racing for one id: exactly one wins; the loser gets its value back.
#[test]
fn two_inserts_for_one_key() {
    model_seeing("two_inserts_for_one_key", &["mine", "theirs"], |seen| {
        let table = Arc::new(Table::new());
        let other = spawn_with(&table, move |table| {
            table
                .insert(&[RQ, QPN], Qp::new(9).0)
                .map_err(|e| e.into_value().read())
        });
        let mine = table
            .insert(&[QPN], Qp::new(10).0)
            .map_err(|e| e.into_value().read());
        let theirs = other.join().unwrap();
        match (&mine, &theirs) {
            (Ok(_), Err(9)) => {
                assert_eq!(table.get(&QPN).unwrap().read(), 10);
                seen.saw("mine");
            }
            (Err(10), Ok(_)) => {
                assert_eq!(table.get(&QPN).unwrap().read(), 9);
                seen.saw("theirs");
            }
            _ => panic!(
                "not exactly one winner: {:?} {:?}",
                mine.is_ok(),
                theirs.is_ok()
            ),
        }
        assert!(table.get(&RQ).is_some() == theirs.is_ok());
        drop((mine, theirs));
        restable::loom_collect();
    });
}

/// 8. A `Ref` clone racing the drain: the clone is a new reference the drain must wait
/// for, although it is taken after the kill.
#[test]
fn ref_clone_vs_drain() {
    model("ref_clone_vs_drain", || {
        let table = Arc::new(Table::new());
        let owner = table.insert(&[QPN], Qp::new(11).0).unwrap();
        let holder = spawn_with(&table, move |table| {
            if let Some(first) = table.get(&QPN) {
                let second = first.clone();
                drop(first);
                assert_eq!(second.read(), 11);
            }
        });
        let dying = owner.kill();
        let mut qp = dying.drain();
        qp.scribble();
        restable::loom_collect();
        holder.join().unwrap();
    });
}

/// 9. Dropping the owner (or the dying handle) racing the last put: the value is
/// dropped exactly once, by whoever lets go last, and never while a holder reads it.
#[test]
fn owner_drop_vs_last_put() {
    model("owner_drop_vs_last_put", || {
        destroy_vs_event_handler(12, |owner| {
            drop(owner);
            None
        })
    });
}

/// 9b. As 9, through `kill` and dropping the `Dying`.
#[test]
fn dying_drop_vs_last_put() {
    model("dying_drop_vs_last_put", || {
        destroy_vs_event_handler(13, |owner| {
            drop(owner.kill());
            None
        })
    });
}

/// Keys after `from` that live in index shard `shard` of `table` (or, with `same` false,
/// in the other one: under loom the index has two), so that a model puts keys where its
/// race needs them whatever the hash.
fn keys_in_shard(
    table: &Table,
    shard: usize,
    same: bool,
    from: u32,
) -> impl Iterator<Item = u32> + '_ {
    (from..).filter(move |key| (table.shard_of(key) == shard) == same)
}

/// 10. Index growth racing get: under loom a shard starts with one two-slot bucket, so a
/// second key in a shard copies its slots into a larger array and publishes it while the
/// reader may be on the old one, or loading the new one. Two of the three new keys join
/// the reader's shard, one goes to the other.
#[test]
fn index_growth_vs_get() {
    model("index_growth_vs_get", || {
        let table = Arc::new(Table::new());
        let home = table.shard_of(&QPN);
        let mut same = keys_in_shard(&table, home, true, 1);
        let mut other = keys_in_shard(&table, home, false, 1);
        let keys = [same.next(), same.next(), other.next()].map(Option::unwrap);
        let present = table.insert(&[QPN], Qp::new(14).0).unwrap();
        let reader = spawn_with(&table, move |table| {
            let qp = table
                .get(&QPN)
                .expect("a live object vanished during growth");
            assert_eq!(qp.read(), 14);
        });
        let grower = table.insert(&keys, Qp::new(15).0).unwrap();
        reader.join().unwrap();
        grower.kill_and_drain();
        present.kill_and_drain();
        restable::loom_collect();
    });
}

/// 10b. A second growth while a reader may still be on the array before the last: growth
/// waits for nothing, so two retired arrays may be pending at once, and the reader's
/// must stay readable (frozen) until it unpins. Each insert adds two keys to the reader's
/// one-bucket shard (and one to the other), growing it twice: to two buckets at its
/// second key, to four at its fourth.
#[test]
fn second_growth_vs_get() {
    model("second_growth_vs_get", || {
        let table = Arc::new(Table::new());
        let home = table.shard_of(&QPN);
        let mut same = keys_in_shard(&table, home, true, 1);
        let mut other = keys_in_shard(&table, home, false, 1);
        let first_keys = [same.next(), same.next(), other.next()].map(Option::unwrap);
        let second_keys = [other.next(), same.next(), same.next()].map(Option::unwrap);
        let present = table.insert(&[QPN], Qp::new(18).0).unwrap();
        let reader = spawn_with(&table, move |table| {
            let qp = table
                .get(&QPN)
                .expect("a live object vanished during growth");
            assert_eq!(qp.read(), 18);
        });
        let first = table.insert(&first_keys, Qp::new(19).0).unwrap();
        restable::loom_collect();
        let second = table.insert(&second_keys, Qp::new(20).0).unwrap();
        reader.join().unwrap();
        assert_eq!(table.get(&QPN).map(|qp| qp.read()), Some(18));
        for owner in [second, first, present] {
            owner.kill_and_drain();
        }
        restable::loom_collect();
    });
}

/// 11. Iteration racing kill: `rdma res show` walks the restrack table (get, unlock,
/// fill, put) while a QP is destroyed. Every object yielded is readable; the other,
/// untouched object is always yielded.
#[test]
fn iter_vs_kill() {
    model("iter_vs_kill", || {
        let table = Arc::new(Table::new());
        let victim = table.insert(&[QPN], Qp::new(16).0).unwrap();
        let bystander = table.insert(&[RQ], Qp::new(17).0).unwrap();
        let dumper = spawn_with(&table, move |table| {
            let seen: Vec<u32> = table.iter().map(|qp| qp.read()).collect();
            assert!(seen.contains(&17), "a live object was skipped: {seen:?}");
            assert!(seen.iter().all(|&v| v == 16 || v == 17));
        });
        let mut qp = victim.kill_and_drain();
        qp.scribble();
        restable::loom_collect();
        dumper.join().unwrap();
        bystander.kill_and_drain();
    });
}

/// 12. Block reuse: a destroyed QP's memory goes to the next create, but only after its
/// grace period. An event handler that matched the old QP's key before the destroy must
/// not end up holding the object that took over the block: it gets the old QP or none.
#[test]
fn recycled_block_vs_stale_reader() {
    model("recycled_block_vs_stale_reader", move || {
        let table = Arc::new(Table::new());
        // A block is reused by creates whose first key lives in the same index shard.
        let neighbour = keys_in_shard(&table, table.shard_of(&QPN), true, QPN + 1)
            .next()
            .unwrap();
        let old = table.insert(&[QPN], Qp::new(21).0).unwrap();
        let handler = spawn_event_handler(&table, QPN, 21);
        let mut qp = old.kill_and_drain();
        qp.scribble();
        restable::loom_collect();
        let new = table.insert(&[neighbour], Qp::new(22).0).unwrap();
        handler.join().unwrap();
        new.kill_and_drain();
        restable::loom_collect();
    });
}

/// 13. Pages of a cache-aligned table: whoever lets go of a page last frees it. Here that
/// is either the epoch's collector, freeing the node of an object whose last reference
/// outlived both its owner and the table, or the table's drop, whose page carver holds
/// the page it carves from. Were the page freed while its node still lived, the holder's
/// read or the other side's release would touch freed memory.
#[test]
fn page_outlives_its_table() {
    model("page_outlives_its_table", || {
        let table: Table = Builder::new().cache_aligned().build();
        let (qp, drops) = Qp::new(31);
        let owner = table.insert(&[QPN], qp).unwrap();
        let held = table.get_owned(&QPN).unwrap();
        let holder = support::spawn(move || {
            assert_eq!(held.read(), 31);
            drop(held);
            restable::loom_collect();
        });
        drop(owner);
        drop(table);
        holder.join().unwrap();
        restable::loom_collect();
        assert_eq!(drops.count(), 1);
    });
}

/// Two writers whose shard sets overlap, each object's keys given in the opposite shard
/// order to the other's (mana: a QP created with its QPN in one shard and its work
/// queues in another, beside a create whose ids land the other way round). Writers
/// lock their shards one by one, in ascending shard order whatever the key order: both
/// inserts succeed, and neither waits forever (in key order, each could hold one shard
/// and wait for the other's: loom reports the deadlock).
#[test]
fn crossed_multi_shard_inserts() {
    model("crossed_multi_shard_inserts", || {
        let table = Arc::new(Table::new());
        let in_0: Vec<u32> = keys_in_shard(&table, 0, true, 1).take(2).collect();
        let in_1: Vec<u32> = keys_in_shard(&table, 1, true, 1).take(2).collect();
        let (qp, drops) = Qp::new(1);
        let (other_qp, other_drops) = Qp::new(2);
        let keys = [in_1[0], in_0[0]];
        let other = spawn_with(&table, move |table| table.insert(&keys, other_qp).ok());
        let owner = table
            .insert(&[in_0[1], in_1[1]], qp)
            .expect("its keys are free");
        let other_owner = other.join().unwrap().expect("the other insert failed");
        assert_eq!(table.get(&in_1[0]).map(|qp| qp.read()), Some(2));
        assert_eq!(owner.kill_and_drain().read(), 1);
        drop(other_owner);
        drop(table);
        restable::loom_collect();
        assert_eq!((drops.count(), other_drops.count()), (1, 1));
    });
}

/// Owners drained on one thread while the table is dropped on another: the table's
/// shared part (index, spare blocks) goes with whichever lets go last — the table, or
/// a drained node's disposal, which recycles its block into that shared part after the
/// table is gone. The two objects share a home shard, whose handle count reaches zero
/// only with the second. Freed early, the rest would touch freed memory (loom: an
/// access to a dropped atomic, or a double free). A plain spawn: the destroyer does not
/// insert.
#[test]
fn owner_outlives_its_table() {
    model("owner_outlives_its_table", || {
        let table = Table::new();
        let (qp, drops) = Qp::new(41);
        let (other, other_drops) = Qp::new(42);
        let shard = table.shard_of(&QPN);
        let next = keys_in_shard(&table, shard, true, QPN + 1).next().unwrap();
        let owner = table.insert(&[QPN], qp).unwrap();
        let other = table.insert(&[next], other).unwrap();
        let destroyer = thread::spawn(move || {
            let mut qp = owner.kill_and_drain();
            qp.scribble();
            drop(qp);
            restable::loom_collect();
        });
        drop(table);
        drop(other.kill_and_drain());
        destroyer.join().unwrap();
        restable::loom_collect();
        assert_eq!((drops.count(), other_drops.count()), (1, 1));
    });
}
