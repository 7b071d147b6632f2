//! The last user of a node holds no reference into it.
//!
//! A put, an abandon or a drain may let another thread drain, retire, recycle or free a
//! node's block the instant its read-modify-write lands. If the thread that did the RMW
//! still holds a `&Node` (a function argument, which Miri's Tree Borrows protects for
//! the whole call), that free is undefined behaviour even though the thread never reads
//! the block again: rust-lang/rust#55005, the bug `Arc::drop` had.
//!
//! Built with `--cfg restable_delay`, restable sleeps right after each such RMW, so the
//! other thread's free lands while the releasing thread is still inside the call; Miri
//! then reports the protected reference. Run by `.ci/run` as
//! `RUSTFLAGS="--cfg restable_delay" MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks"
//! cargo +nightly miri test --test last_user`. Without the cfg (and without Miri) the
//! tests still check the values and drop counts.

mod common;

use common::{count, counter, Counted};
use restable::ResTable;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

/// Lets the epoch advance until the drained node's deferred recycling has run.
fn collect_garbage() {
    for _ in 0..8 {
        crossbeam_epoch::pin().flush();
    }
}

#[test]
fn last_put_while_the_drainer_recycles_the_block() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], 5u64).unwrap();
    let r = table.get(&1).unwrap();
    let dying = owner.kill();
    thread::scope(|s| {
        s.spawn(move || drop(r)); // the put that lets the drain go on
        assert_eq!(dying.drain(), 5);
        collect_garbage(); // the block goes back to its shard while the put may still run
    });
    // The recycled block is reused by the next insert.
    let again = table.insert(&[1u32], 6u64).unwrap();
    assert_eq!(again.kill_and_drain(), 6);
}

#[test]
fn abandon_while_the_last_put_frees_the_block() {
    let drops = counter();
    let table = ResTable::new();
    let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
    let r = table.get(&1).unwrap();
    let dying = owner.kill();
    let both_ready = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            both_ready.wait();
            drop(dying); // the abandon: the put below becomes the last user
        });
        both_ready.wait();
        // With `restable_delay` the abandon sleeps after its RMW; land the last put
        // and the free inside that window.
        thread::sleep(Duration::from_millis(20));
        drop(r);
        collect_garbage();
    });
    collect_garbage();
    assert_eq!(count(&drops), 1, "the value is dropped exactly once");
}

#[test]
fn last_put_after_the_owner_let_go_frees_while_others_put() {
    let drops = counter();
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2], Counted::new(1, &drops)).unwrap();
    let (a, b) = (table.get(&1).unwrap(), table.get(&2).unwrap());
    drop(owner); // kill + abandon: the last of `a` and `b` drops the value
    thread::scope(|s| {
        s.spawn(move || drop(a));
        s.spawn(move || drop(b));
    });
    collect_garbage();
    assert_eq!(count(&drops), 1);
}
