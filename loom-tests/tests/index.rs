//! Loom models of the races the open-addressed index brings: a lookup that reads a
//! bucket while the slot it matched is cleared and reused, and a lookup of a key that
//! overflowed into a later bucket while a slot of its home bucket is freed.
//!
//! Every key here hashes to 0, so all keys share one shard, one tag and one home bucket
//! (under loom a bucket has two slots): only the key comparison and the overflow bits
//! tell them apart. Run through `loom-tests/run`, like `races.rs`.
#![cfg(loom)]

#[allow(dead_code)] // these models use their own table type
mod support;

use loom::sync::Arc;
#[path = "../../tests/common/colliding.rs"]
mod colliding;

use colliding::Colliding;
use restable::ResTable;
use support::{model, spawn_with, Qp};

type CollidingTable = ResTable<u32, Qp, Colliding>;

/// A lookup of key 1 that has read its bucket's tags races the destroy of key 1's object
/// and the create of key 2's, which takes the same slot with the same tag: the lookup
/// loads the slot after the swap and must compare the key there, answering key 1's
/// object or none — never key 2's.
#[test]
fn slot_reuse_vs_stale_reader() {
    model("slot_reuse_vs_stale_reader", || {
        let table = Arc::new(CollidingTable::with_hasher(Colliding));
        let old = table.insert(&[1], Qp::new(31).0).unwrap();
        let reader = spawn_with(&table, |table| {
            if let Some(qp) = table.get(&1) {
                assert_eq!(qp.read(), 31, "key 1 answered with another object");
            }
        });
        let mut qp = old.kill_and_drain();
        qp.scribble();
        let new = table.insert(&[2], Qp::new(32).0).unwrap();
        reader.join().unwrap();
        new.kill_and_drain();
        restable::loom_collect();
    });
}

/// Keys 1 and 2 fill their home bucket, so key 3 goes on to the next one and sets the
/// home bucket's overflow bit. A lookup of key 3 races the destroy of key 1's object
/// (which frees a slot of the home bucket) and a create in that slot: key 3 is live
/// throughout, so the lookup must find it — a free slot in the home bucket does not mean
/// the probe may stop.
#[test]
fn overflowed_key_vs_unlink() {
    model("overflowed_key_vs_unlink", || {
        let table = Arc::new(CollidingTable::with_hasher(Colliding));
        let first = table.insert(&[1], Qp::new(41).0).unwrap();
        let second = table.insert(&[2], Qp::new(42).0).unwrap();
        let overflowed = table.insert(&[3], Qp::new(43).0).unwrap();
        let reader = spawn_with(&table, |table| {
            let qp = table
                .get(&3)
                .expect("a live key past its home bucket vanished");
            assert_eq!(qp.read(), 43);
        });
        first.kill_and_drain();
        let fourth = table.insert(&[4], Qp::new(44).0).unwrap();
        reader.join().unwrap();
        for owner in [fourth, overflowed, second] {
            owner.kill_and_drain();
        }
        restable::loom_collect();
    });
}
