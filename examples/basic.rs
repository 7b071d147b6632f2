//! A walk through insert → get → kill → drain, with a second thread holding a reference
//! across the kill.
//!
//! Run: `cargo run --release --example basic`

use restable::ResTable;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// What a driver would keep per queue pair.
#[derive(Debug)]
struct QueuePair {
    qpn: u32,
    name: &'static str,
}

/// The QP's ids in one key space: the QPN, its send queue and its receive queue. Send and
/// receive queue ids may be equal, so the tag keeps them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum QpKey {
    Qpn(u32),
    SendQueue(u32),
    RecvQueue(u32),
}

fn main() {
    let table = ResTable::new();

    // 1. Insert under all the QP's ids at once.
    let keys = [QpKey::Qpn(0x51), QpKey::SendQueue(3), QpKey::RecvQueue(3)];
    let owner = table
        .insert(
            &keys,
            QueuePair {
                qpn: 0x51,
                name: "rc-qp",
            },
        )
        .expect("fresh ids");
    println!("inserted {:?} under {:?}", *owner, owner.keys());

    // 2. Get-ref by any id (what an interrupt handler or CQ poller does).
    {
        let qp = table.get(&QpKey::RecvQueue(3)).expect("live");
        println!(
            "get(RecvQueue(3)) -> qpn {:#x}; reference put when `qp` drops",
            qp.qpn
        );
    }

    // 3. A second thread takes a reference and keeps it for a while.
    let step = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let qp = table.get(&QpKey::Qpn(0x51)).expect("live");
            println!("[event thread] holding a reference to {}", qp.name);
            step.wait();
            thread::sleep(Duration::from_millis(200));
            println!(
                "[event thread] done with {}, putting the reference",
                qp.name
            );
        });
        step.wait();

        // 4. Kill: unreachable under every id at once; the ids are free again.
        let dying = owner.kill();
        println!(
            "killed: get(Qpn(0x51)) = {:?}, {} reference(s) still out",
            table.get(&QpKey::Qpn(0x51)).map(|r| r.qpn),
            dying.refs()
        );
        let reuse = table
            .insert(
                &keys,
                QueuePair {
                    qpn: 0x51,
                    name: "next rc-qp",
                },
            )
            .expect("ids reusable right after kill");
        println!("ids reused at once by {}", reuse.name);

        // 5. Drain: park until the event thread lets go, then own the QP again.
        let start = Instant::now();
        let qp = dying.drain();
        println!(
            "drained {} after {:?}: now free to destroy it in hardware",
            qp.name,
            start.elapsed()
        );
        assert_eq!(reuse.kill_and_drain().name, "next rc-qp");
    });
    assert!(table.is_empty());
    println!("table empty: ok");
}
