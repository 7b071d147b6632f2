//! Feature `track-refs`: a drain that does not end says who holds the object.
//! `cargo test --features track-refs --test track_refs` (in `.ci/run`).
#![cfg(feature = "track-refs")]

use restable::ResTable;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::Duration;

/// One test function: the stuck-drain limit is global, and no other test may drain
/// while it is set.
#[test]
fn holders_are_recorded_shown_and_named_by_a_stuck_drain() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32, 2], "qp").unwrap();

    // Each way of taking a reference records its caller's line and thread.
    let by_get = table.get(&1).unwrap();
    let get_line = line!() - 1;
    let by_owned = table.get_owned(&2).unwrap();
    let owned_line = line!() - 1;
    let by_clone = by_owned.clone();
    let clone_line = line!() - 1;
    let dying = owner.kill();
    let lines: Vec<u32> = dying.holders().iter().map(|h| h.location.line()).collect();
    assert_eq!(lines, [get_line, owned_line, clone_line]);
    assert!(dying.holders().iter().all(
        |h| h.location.file().ends_with("track_refs.rs") && h.thread == thread::current().id()
    ));
    let debug = format!("{dying:?}");
    assert!(
        debug.contains("holders") && debug.contains("track_refs.rs"),
        "{debug}"
    );

    // Puts forget their records; one moved to another thread keeps its origin.
    drop(by_get);
    drop(by_clone);
    assert_eq!(dying.holders().len(), 1);
    let mover = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drop(by_owned);
    });

    // A drain stuck past the limit panics, naming the holder; with no limit (or once
    // the holder is gone) it waits as usual.
    restable::set_stuck_drain_limit(Some(Duration::from_millis(50)));
    let stuck = catch_unwind(AssertUnwindSafe(|| dying.wait()));
    let payload = stuck.expect_err("the stuck wait returned");
    let message = payload.downcast_ref::<String>().expect("a message");
    assert!(
        message.contains(&format!("track_refs.rs:{owned_line}")),
        "{message}"
    );
    restable::set_stuck_drain_limit(None);
    assert_eq!(dying.drain(), "qp");
    mover.join().unwrap();
    assert!(table.get(&1).is_none());
}
