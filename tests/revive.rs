//! Aborting a kill: wait for the holders, try the hardware, then drain or revive.

mod common;

use common::{count, counter, Counted};
use restable::ResTable;
use std::thread;

#[test]
fn revive_puts_every_key_back_at_once_and_keeps_old_references() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2, 3], "qp").unwrap();
    let old = table.get(&3).unwrap();
    let dying = owner.kill();
    assert!(table.get(&1).is_none());
    let owner = dying.revive().expect("no key was taken");
    for key in [1, 2, 3] {
        assert!(restable::Ref::ptr_eq(&table.get(&key).unwrap(), &old));
    }
    assert_eq!(table.len(), 1);
    drop(old);
    assert_eq!(owner.kill_and_drain(), "qp");
}

#[test]
fn a_failed_revive_shows_nothing_and_hands_the_object_back() {
    let drops = counter();
    let table = ResTable::new();
    let dying = table
        .insert(&[1u32, 2, 3], Counted::new(1, &drops))
        .unwrap()
        .kill();
    let newer = table.insert(&[3u32], Counted::new(2, &drops)).unwrap();
    let err = dying.revive().unwrap_err();
    assert_eq!(err.key(), &3);
    assert!(table.get(&1).is_none() && table.get(&2).is_none());
    assert_eq!(table.get(&3).unwrap().id, 2);
    assert_eq!(table.len(), 1);
    assert_eq!(err.into_dying().drain().id, 1);
    drop(newer);
    assert_eq!(count(&drops), 2);
}

#[test]
fn wait_then_revive_or_drain_is_a_destroy_that_may_fail() {
    // restrack's begin_del / abort_del / commit_del, with the hardware failing once.
    let table = ResTable::new();
    let mut owner = table.insert(&[0x51u32], String::from("qp")).unwrap();
    for hardware_fails in [true, false] {
        let holder = table.get_owned(&0x51).unwrap();
        let dying = owner.kill();
        let releaser = thread::spawn(move || drop(holder));
        dying.wait();
        releaser.join().unwrap();
        if hardware_fails {
            owner = dying.revive().unwrap();
            assert!(table.contains_key(&0x51));
        } else {
            assert_eq!(dying.drain(), "qp");
            assert!(table.is_empty());
            return;
        }
    }
}
