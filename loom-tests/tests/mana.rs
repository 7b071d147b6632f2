//! A loom model at adapter level: mana_ib's destroy racing an EQ event and a CQE for
//! the same QP, through `restable::mana` on the simulated device.
#![cfg(loom)]

#[allow(dead_code)] // this model uses only the runner
mod support;

use loom::sync::Arc;
use restable::mana::sim::Device;
use restable::mana::{Cqe, Driver, GdmaEvent, QpType};
use support::model;

/// `mana_ib_event_handler` (QP_FATAL by QPN) and `mana_handle_cqe` (by receive queue id)
/// racing `mana_ib_destroy_qp`. Whatever the interleaving: nothing is delivered after
/// the hardware destroy began, the QP is gone from the table and the hardware, and the
/// next create gets the freed QPN without colliding.
///
/// By default one thread takes the event and then the completion (the interrupt and
/// the poller on one CPU); with `LOOM_MANA_SEPARATE_THREADS=1` each path gets its own
/// thread, which is a much larger model (it did not finish in 10 minutes at bound 2).
#[test]
fn destroy_vs_eq_event_and_cqe() {
    let separate = std::env::var_os("LOOM_MANA_SEPARATE_THREADS").is_some();
    model("destroy_vs_eq_event_and_cqe", move || {
        let driver = Arc::new(Driver::new(Device::new()));
        let owner = driver.create_qp(QpType::Ud, None).unwrap();
        let hw = owner.hw().clone();
        let event = GdmaEvent::qp_fatal(hw.qpn);
        let cqe = Cqe {
            wq_id: hw.recv_queue,
            is_send: false,
        };
        let racers = if separate {
            let (eq_driver, cq_driver) = (Arc::clone(&driver), Arc::clone(&driver));
            vec![
                support::spawn(move || eq_driver.table().handle_event(&event)),
                support::spawn(move || {
                    cq_driver.table().handle_cqe(&cqe);
                }),
            ]
        } else {
            let driver = Arc::clone(&driver);
            vec![support::spawn(move || {
                driver.table().handle_event(&event);
                driver.table().handle_cqe(&cqe);
            })]
        };
        driver.destroy_qp(owner).unwrap();
        restable::loom_collect();
        for racer in racers {
            racer.join().unwrap();
        }
        let stats = driver.table().stats();
        assert_eq!(
            stats.late_deliveries, 0,
            "delivered after the hardware destroy began"
        );
        assert_eq!(stats.events_delivered + stats.events_stale, 1);
        assert_eq!(stats.completions + stats.completions_stale, 1);
        let next = driver.create_qp(QpType::Ud, None).unwrap();
        assert_eq!(
            next.qpn(),
            hw.qpn,
            "the hardware reuses the freed QPN at once"
        );
        driver.destroy_qp(next).unwrap();
        assert!(driver.table().is_empty());
        assert_eq!(driver.device().live_qps(), 0);
    });
}
