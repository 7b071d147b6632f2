//! Loom models of the races that ownership beyond the `Owner` brings: an async drain's
//! waker registration against the last put, removes by key against each other and
//! against a lookup, and a revive against an insert of the same key.
//!
//! Run through `loom-tests/run`, like `races.rs`.
#![cfg(loom)]

mod support;

use loom::sync::Arc;
use support::{model, model_seeing, spawn_with, Qp, Table};

const QPN: u32 = 0x51;
const SQ: u32 = 0x8000_0003;

/// An async task drains (`Dying` awaited) while the last holder, on another thread, puts
/// its reference: whichever order the waker registration and the put land in, the task
/// is woken (a lost wake-up leaves `block_on` parked forever: loom reports a deadlock),
/// and it takes the value only after the holder's read.
#[test]
fn last_put_vs_async_drain() {
    model("last_put_vs_async_drain", || {
        let table = Arc::new(Table::new());
        let (qp, drops) = Qp::new(1);
        let owner = table.insert(&[QPN], qp).unwrap();
        let r = table.get_owned(&QPN).unwrap();
        let dying = owner.kill();
        let holder = support::spawn(move || {
            assert_eq!(r.read(), 1, "a holder saw a drained QP");
            drop(r);
        });
        let mut qp = loom::future::block_on(dying.drain_async());
        qp.scribble();
        holder.join().unwrap();
        drop(qp);
        restable::loom_collect();
        assert_eq!(drops.count(), 1);
    });
}

/// Two closes by two different keys of one detached object (mana: a QP destroyed by
/// QPN while a cleanup path removes it by its send queue id): exactly one remove gets
/// the object, the other gets `None`; the value is dropped once.
#[test]
fn remove_vs_remove() {
    model("remove_vs_remove", || {
        let table = Arc::new(Table::new());
        let (qp, drops) = Qp::new(1);
        table.insert(&[QPN, SQ], qp).unwrap().detach();
        let other = spawn_with(&table, |table| table.remove(&SQ).map(|d| d.drain()));
        let mine = table.remove(&QPN).map(|d| d.drain());
        let theirs = other.join().unwrap();
        assert!(
            mine.is_some() != theirs.is_some(),
            "not exactly one remove won"
        );
        assert!(table.get(&QPN).is_none() && table.get(&SQ).is_none());
        drop((mine, theirs));
        restable::loom_collect();
        assert_eq!(drops.count(), 1);
    });
}

/// A lookup racing a remove by another key: the holder's reads happen before the
/// remover, who drained the value, writes to it.
#[test]
fn remove_vs_get() {
    model("remove_vs_get", || {
        let table = Arc::new(Table::new());
        let (qp, drops) = Qp::new(7);
        table.insert(&[QPN, SQ], qp).unwrap().detach();
        let handler = spawn_with(&table, |table| {
            if let Some(qp) = table.get(&SQ) {
                assert_eq!(qp.read(), 7, "a holder saw a removed QP");
            }
        });
        let mut qp = table.remove(&QPN).expect("detached").drain();
        qp.scribble();
        restable::loom_collect();
        handler.join().unwrap();
        drop(qp);
        assert_eq!(drops.count(), 1);
    });
}

/// A failed hardware destroy revives a QP while a create reuses one of its ids (the
/// hole the kernel's `abort_del` leaves): exactly one of them gets the id.
#[test]
fn revive_vs_insert() {
    model_seeing("revive_vs_insert", &["revived", "created"], |seen| {
        let table = Arc::new(Table::new());
        let (old, old_drops) = Qp::new(1);
        let dying = table.insert(&[QPN, SQ], old).unwrap().kill();
        let (new, new_drops) = Qp::new(2);
        let creator = spawn_with(&table, move |table| table.insert(&[SQ], new).ok());
        let revived = dying.revive();
        let created = creator.join().unwrap();
        match (&revived, &created) {
            (Ok(_), None) => {
                assert_eq!(table.get(&SQ).map(|qp| qp.read()), Some(1));
                seen.saw("revived");
            }
            (Err(err), Some(_)) => {
                assert_eq!(err.key(), &SQ);
                assert_eq!(table.get(&SQ).map(|qp| qp.read()), Some(2));
                assert!(table.get(&QPN).is_none());
                seen.saw("created");
            }
            _ => panic!("revive and insert both won, or both lost"),
        }
        drop((revived, created));
        restable::loom_collect();
        assert_eq!((old_drops.count(), new_drops.count()), (1, 1));
    });
}

/// A revive that fails (one of its ids was taken after the kill) is never visible, not
/// even for a moment under its other id, to an event handler looking it up meanwhile.
#[test]
fn failed_revive_is_never_visible() {
    model("failed_revive_is_never_visible", || {
        let table = Arc::new(Table::new());
        let (old, drops) = Qp::new(1);
        let dying = table.insert(&[QPN, SQ], old).unwrap().kill();
        let (new, _) = Qp::new(2);
        let _newer = table.insert(&[SQ], new).unwrap();
        let reader = spawn_with(&table, |table| table.get(&QPN).map(|qp| qp.read()));
        let err = dying.revive().expect_err("its send queue id is taken");
        assert_eq!(reader.join().unwrap(), None, "a failed revive was visible");
        drop(err);
        restable::loom_collect();
        assert_eq!(drops.count(), 1);
    });
}
