//! The async drain under a real executor: thousands of concurrent drains whose last
//! references are released from other (non-runtime) threads; and cancellation.

mod common;

use common::{count, counter, Counted};
use restable::ResTable;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

const DRAINS: u64 = 4_000;

#[test]
fn thousands_of_async_drains_woken_from_other_threads() {
    let table = Arc::new(ResTable::new());
    let drops = counter();
    // Holders on plain threads, releasing references in their own time.
    let (to_holders, holders_rx) = mpsc::channel::<restable::OwnedRef<u64, Counted>>();
    let holders_rx = Arc::new(std::sync::Mutex::new(holders_rx));
    let holders: Vec<_> = (0..3)
        .map(|i| {
            let rx = Arc::clone(&holders_rx);
            thread::spawn(move || {
                let mut n = 0u64;
                loop {
                    let r = rx.lock().unwrap().recv();
                    let Ok(r) = r else { break };
                    if (n + i) % 7 == 0 {
                        thread::sleep(Duration::from_micros(50));
                    }
                    n += 1;
                    drop(r);
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let drained: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..DRAINS)
            .map(|id| {
                let (table, drops, to_holders) =
                    (Arc::clone(&table), Arc::clone(&drops), to_holders.clone());
                tokio::spawn(async move {
                    let owner = table.insert(&[id], Counted::new(id, &drops)).unwrap();
                    for _ in 0..(id % 3) {
                        to_holders.send(table.get_owned(&id).unwrap()).unwrap();
                    }
                    let value = owner.kill().await; // `IntoFuture for Dying`
                    assert_eq!(value.id, id);
                    assert!(table.get(&id).is_none());
                    value.id
                })
            })
            .collect();
        let mut sum = 0;
        for task in tasks {
            sum += task.await.expect("a drain task panicked");
        }
        sum
    });
    drop(to_holders);
    for holder in holders {
        holder.join().unwrap();
    }
    assert_eq!(drained, (0..DRAINS).sum::<u64>());
    assert_eq!(
        count(&drops),
        DRAINS as usize,
        "every value dropped exactly once"
    );
    assert!(table.is_empty());
}

#[test]
fn a_cancelled_drain_never_blocks_and_the_last_holder_drops_the_value() {
    let table = ResTable::new();
    let drops = counter();
    let owner = table.insert(&[1u32], Counted::new(1, &drops)).unwrap();
    let r = table.get_owned(&1).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let drain = owner.kill().drain_async();
        // Polled (so its waker is registered and PARKED set), then given up on.
        let timed_out = tokio::time::timeout(Duration::from_millis(5), drain).await;
        assert!(timed_out.is_err(), "drained although a reference is out");
    });
    assert_eq!(count(&drops), 0, "the value went with the cancelled future");
    drop(r); // the last reference: drops the value, although a drainer once parked
    assert_eq!(count(&drops), 1);
}

#[test]
fn a_drain_with_no_reference_out_is_ready_at_once() {
    let table = ResTable::new();
    let owner = table.insert(&[1u32], "conn").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(owner.kill().drain_async()), "conn");
}

/// The documented pattern for a drain under a timeout: await `&mut drain`, so that after
/// the time-out the drain (and its `Dying`) is still ours to await again — unlike
/// `timeout(d, dying)`, which drops the `Dying` with the timed-out future.
#[test]
fn a_drain_under_a_timeout_can_be_awaited_again() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let table = ResTable::new();
    let drops = counter();
    let owner = table.insert(&[1u32], Counted::new(7, &drops)).unwrap();
    let held = table.get_owned(&1).unwrap();
    let mut drain = owner.kill().drain_async();
    runtime.block_on(async {
        let first = tokio::time::timeout(Duration::from_millis(10), &mut drain).await;
        assert!(first.is_err(), "drained while a reference was out");
        assert_eq!(drain.dying().map(|d| d.refs()), Some(1));
        assert_eq!(count(&drops), 0, "the time-out dropped the value");
        let putter = thread::spawn(move || drop(held));
        let value = tokio::time::timeout(Duration::from_secs(10), &mut drain)
            .await
            .expect("the second wait ends with the last put");
        assert_eq!(value.id, 7);
        assert!(drain.dying().is_none());
        putter.join().unwrap();
    });
    assert_eq!(count(&drops), 1);
}
