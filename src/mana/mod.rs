//! A mana_ib adapter: the driver's QP table, its interrupt (EQ) path and its completion
//! (CQ) path, on top of [`ResTable`].
//!
//! What the merged driver writes by hand — an xarray under an IRQ-safe lock, a
//! `refcount_t` and a `completion` per QP, `mana_get_qp_ref`/`mana_put_qp_ref`/
//! `mana_table_remove_qp` — becomes:
//!
//! | mana_ib | here |
//! | --- | --- |
//! | `mana_table_store_qp(mdev, qp)` | [`QpTable::store_qp`] (all ids, all or nothing) |
//! | `mana_get_qp_ref(mdev, qid, is_sq)` | [`QpTable::get_qp_ref`] (lock-free) |
//! | `mana_put_qp_ref(qp)` | dropping the [`QpRef`] |
//! | `mana_table_remove_qp(mdev, qp)` | [`QpTable::remove_qp`] (kill, then drain) |
//! | `mana_ib_event_handler` | [`QpTable::handle_events`] (one interrupt's EQEs) |
//! | `mana_handle_cqe` (rdma-core) | [`QpTable::poll_cq`] (one poll's CQEs) |
//!
//! The two hot paths read the way the kernel reads hot objects under RCU: one table
//! guard ([`ResTable::pin`]) for the batch, and a borrowed lookup per entry, which takes
//! no reference count and writes nothing to the QP's state. `remove_qp` waits for such
//! readers as for counted ones (a grace period, only for QPs that were read borrowed).
//! A callback that needs the QP beyond the batch takes a counted reference from the
//! borrowed one ([`Borrowed::to_owned_ref`](crate::Borrowed::to_owned_ref)).
//!
//! The key type [`QpId`] keeps QPNs, send-queue ids and receive-queue ids apart (the
//! kernel sets bit 31, [`MANA_SENDQ_MASK`], on send-queue ids for the same reason: send
//! and receive queue ids come from separate hardware spaces and may be equal).
//!
//! [`sim`] is a simulated device that reuses freed ids last-in first-out, as the hardware
//! does; [`Driver`] puts both together into the create/destroy flows, and
//! [`sim::Workload`] drives them from interrupt, poller and control threads (the
//! demo, `cargo run --release -p mana-demo`).
//!
//! ```
//! use restable::mana::{sim::Device, Driver, GdmaEvent, QpType};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! let driver = Driver::new(Device::new());
//! let fatal = Arc::new(AtomicUsize::new(0));
//! let seen = Arc::clone(&fatal);
//! let qp = driver
//!     .create_qp(QpType::Rc, Some(Box::new(move |_qp, _event| {
//!         seen.fetch_add(1, Ordering::Relaxed);
//!     })))
//!     .unwrap();
//!
//! // The interrupt path: a QP_FATAL EQE names the QPN.
//! driver.table().handle_event(&GdmaEvent::qp_fatal(qp.qpn()));
//! assert_eq!(fatal.load(Ordering::Relaxed), 1);
//!
//! // Destroy: kill → drain → hardware destroy → ids back to the pool.
//! let qpn = qp.qpn();
//! driver.destroy_qp(qp).unwrap();
//! driver.table().handle_event(&GdmaEvent::qp_fatal(qpn)); // stale: counted, not delivered
//! assert_eq!(fatal.load(Ordering::Relaxed), 1);
//! assert_eq!(driver.table().stats().events_stale, 1);
//! ```

mod driver;
pub mod sim;
// The load harness spawns OS threads and reads the clock: never part of a loom model.
#[cfg(not(loom))]
mod workload;

pub use driver::{CreateError, DestroyError, DestroyOrder, Driver};

use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::{Borrowed, InsertError, Owner, Ref, ResTable};
use std::fmt;

/// The GDMA event type of a fatal QP error (`GDMA_EQE_RNIC_QP_FATAL`); the QPN is in
/// `details[0]`.
pub const GDMA_EQE_RNIC_QP_FATAL: u8 = 176;

/// The bit the kernel driver sets on send-queue ids in its single-`u32` key space.
/// [`QpId`] makes the distinction a type instead; [`QpId::from_raw`] reads the kernel's
/// encoding.
pub const MANA_SENDQ_MASK: u32 = 1 << 31;

/// One id a QP answers to in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QpId {
    /// The QP number, named by events (EQEs).
    Qpn(u32),
    /// A send work queue id, named by send completions.
    SendQueue(u32),
    /// A receive work queue id, named by receive completions.
    RecvQueue(u32),
}

impl QpId {
    /// A work-queue id as a CQE names it: the id and whether it is a send queue.
    ///
    /// ```
    /// use restable::mana::QpId;
    /// assert_eq!(QpId::work_queue(3, true), QpId::SendQueue(3));
    /// assert_ne!(QpId::work_queue(3, true), QpId::work_queue(3, false));
    /// ```
    pub fn work_queue(id: u32, is_send: bool) -> QpId {
        if is_send {
            QpId::SendQueue(id)
        } else {
            QpId::RecvQueue(id)
        }
    }

    /// Reads the kernel's encoding of a work-queue key (`qid | MANA_SENDQ_MASK` for send
    /// queues).
    ///
    /// ```
    /// use restable::mana::{QpId, MANA_SENDQ_MASK};
    /// assert_eq!(QpId::from_raw(7 | MANA_SENDQ_MASK), QpId::SendQueue(7));
    /// assert_eq!(QpId::from_raw(7), QpId::RecvQueue(7));
    /// ```
    pub fn from_raw(key: u32) -> QpId {
        QpId::work_queue(key & !MANA_SENDQ_MASK, key & MANA_SENDQ_MASK != 0)
    }
}

/// The two QP types the driver creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpType {
    /// Reliable connected: five hardware queues.
    Rc,
    /// Unreliable datagram (also GSI): one send and one receive queue.
    Ud,
}

/// An event from the event queue (`struct gdma_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdmaEvent {
    /// `GDMA_EQE_*`.
    pub event_type: u8,
    /// Type-specific data; for [`GDMA_EQE_RNIC_QP_FATAL`], the QPN in `details[0]`.
    pub details: [u32; 4],
}

impl GdmaEvent {
    /// A QP_FATAL event for `qpn`.
    ///
    /// ```
    /// let event = restable::mana::GdmaEvent::qp_fatal(9);
    /// assert_eq!(event.details[0], 9);
    /// ```
    pub fn qp_fatal(qpn: u32) -> Self {
        GdmaEvent {
            event_type: GDMA_EQE_RNIC_QP_FATAL,
            details: [qpn, 0, 0, 0],
        }
    }
}

/// A completion queue entry, reduced to what the lookup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// The work queue the completion is for.
    pub wq_id: u32,
    /// Whether that is a send queue.
    pub is_send: bool,
}

/// What the driver reports to a QP's owner (`ib_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QpEvent {
    /// The QP hit a fatal error (`IB_EVENT_QP_FATAL`).
    Fatal,
}

/// The event callback a QP's user registers (`ibqp->event_handler`). It runs in the
/// interrupt path with the QP borrowed under the interrupt's table guard: it must not
/// block, and if it needs the QP after it returns (to hand it to a work queue, say) it
/// takes a counted reference with [`to_owned_ref`](Borrowed::to_owned_ref).
///
/// ```
/// use restable::mana::{sim::Device, Driver, EventHandler, GdmaEvent, QpRef, QpType};
/// use restable::OwnedRef;
/// use std::sync::{Arc, Mutex};
///
/// // Keeps the failed QP for a recovery worker that runs after the interrupt.
/// let failed: Arc<Mutex<Vec<OwnedRef<_, _>>>> = Arc::default();
/// let queue = Arc::clone(&failed);
/// let handler: EventHandler = Box::new(move |qp, _event| queue.lock().unwrap().push(qp.to_owned_ref()));
/// let driver = Driver::new(Device::new());
/// let qp = driver.create_qp(QpType::Rc, Some(handler)).unwrap();
/// driver.table().handle_event(&GdmaEvent::qp_fatal(qp.qpn()));
/// assert_eq!(failed.lock().unwrap()[0].qpn(), qp.qpn());
/// failed.lock().unwrap().clear(); // the worker is done: destroy may drain now
/// driver.destroy_qp(qp).unwrap();
/// ```
pub type EventHandler = Box<dyn Fn(&QpBorrowed<'_>, QpEvent) + Send + Sync>;

/// A queue pair as the driver keeps it.
pub struct Qp {
    hw: sim::HwQp,
    event_handler: Option<EventHandler>,
    events: AtomicU64,
    completions: AtomicU64,
    /// Set when the driver starts freeing the QP's hardware resources; a delivery that
    /// finds it set is a late delivery (the table let a lookup reach a QP being torn
    /// down).
    hw_destroy_started: AtomicBool,
}

impl Qp {
    /// A QP for the hardware queues `hw`, with an optional event callback.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpType};
    /// let hw = Device::new().create_qp(QpType::Ud).unwrap();
    /// let qp = Qp::new(hw.clone(), Some(Box::new(|qp, event| println!("{:#x}: {event:?}", qp.qpn()))));
    /// assert_eq!(qp.hw(), &hw);
    /// ```
    pub fn new(hw: sim::HwQp, event_handler: Option<EventHandler>) -> Self {
        Qp {
            hw,
            event_handler,
            events: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            hw_destroy_started: AtomicBool::new(false),
        }
    }

    /// The QP number.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpType};
    /// let hw = Device::new().create_qp(QpType::Rc).unwrap();
    /// assert_eq!(Qp::new(hw.clone(), None).qpn(), hw.qpn);
    /// ```
    pub fn qpn(&self) -> u32 {
        self.hw.qpn
    }

    /// The hardware queues behind the QP.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpType};
    /// let qp = Qp::new(Device::new().create_qp(QpType::Rc).unwrap(), None);
    /// assert_eq!(qp.hw().internal_queues.len(), 3);
    /// ```
    pub fn hw(&self) -> &sim::HwQp {
        &self.hw
    }

    /// Events delivered to this QP so far.
    ///
    /// ```
    /// use restable::mana::{Driver, GdmaEvent, QpType};
    /// let driver = Driver::default();
    /// let qp = driver.create_qp(QpType::Rc, None).unwrap();
    /// driver.table().handle_event(&GdmaEvent::qp_fatal(qp.qpn()));
    /// assert_eq!(qp.events(), 1);
    /// ```
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Completions delivered to this QP so far.
    ///
    /// ```
    /// use restable::mana::{Cqe, Driver, QpType};
    /// let driver = Driver::default();
    /// let qp = driver.create_qp(QpType::Ud, None).unwrap();
    /// driver.table().handle_cqe(&Cqe { wq_id: qp.hw().send_queue, is_send: true });
    /// assert_eq!(qp.completions(), 1);
    /// ```
    pub fn completions(&self) -> u64 {
        self.completions.load(Ordering::Relaxed)
    }

    /// The ids the QP is stored under, and why:
    ///
    /// - every QP: its QPN, which EQEs name;
    /// - UD: its send and its receive queue, which CQEs name;
    /// - RC: of its five hardware queues only the send requester queue and the receive
    ///   responder queue, the two whose completions reach the user's CQs. The send
    ///   responder (RDMA read responses), receive requester (acks) and fast-memory-
    ///   registration queues are the hardware's own; no CQE names them, so an entry for
    ///   them would cost memory and buy nothing.
    ///
    /// ```
    /// use restable::mana::{sim::Device, QpId, QpType};
    /// let device = Device::new();
    /// let qp = restable::mana::Qp::new(device.create_qp(QpType::Rc).unwrap(), None);
    /// let ids = qp.ids();
    /// assert_eq!(ids.len(), 3);
    /// assert!(matches!(ids[0], QpId::Qpn(_)));
    /// ```
    pub fn ids(&self) -> Vec<QpId> {
        vec![
            QpId::Qpn(self.hw.qpn),
            QpId::SendQueue(self.hw.send_queue),
            QpId::RecvQueue(self.hw.recv_queue),
        ]
    }

    /// Records a delivery; returns whether it came after the hardware destroy began.
    fn delivered(&self, counter: &AtomicU64) -> bool {
        counter.fetch_add(1, Ordering::Relaxed);
        self.hw_destroy_started.load(Ordering::SeqCst)
    }

    fn set_hw_destroy_started(&self, started: bool) {
        self.hw_destroy_started.store(started, Ordering::SeqCst);
    }
}

impl fmt::Debug for Qp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qp")
            .field("hw", &self.hw)
            .field("events", &self.events())
            .field("completions", &self.completions())
            .finish_non_exhaustive()
    }
}

/// A reference to a QP taken by a lookup; dropping it is `mana_put_qp_ref`.
pub type QpRef<'a> = Ref<'a, QpId, Qp>;

/// A QP borrowed under a table guard, as the event and completion paths see it: no
/// reference count taken, valid until the batch's guard ends.
pub type QpBorrowed<'g> = Borrowed<'g, QpId, Qp>;

/// The owner of a stored QP; the only way to remove it.
pub type QpOwner = Owner<QpId, Qp>;

/// What the two lookup paths have seen, as counters (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// QP_FATAL events delivered to a QP's callback.
    pub events_delivered: u64,
    /// QP_FATAL events for a QPN no live QP has (e.g. just destroyed).
    pub events_stale: u64,
    /// Events of a type this driver does not handle.
    pub events_unknown: u64,
    /// Completions delivered to a QP.
    pub completions: u64,
    /// Completions for a work queue no live QP has.
    pub completions_stale: u64,
    /// Events or completions that reached a QP after its hardware destroy began.
    pub late_deliveries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    events_delivered: AtomicU64,
    events_stale: AtomicU64,
    events_unknown: AtomicU64,
    completions: AtomicU64,
    completions_stale: AtomicU64,
    late_deliveries: AtomicU64,
}

/// The device's QP table: one `ResTable` keyed by [`QpId`], plus the counters of its two
/// lookup paths.
#[derive(Debug, Default)]
pub struct QpTable {
    qps: ResTable<QpId, Qp>,
    counters: Counters,
}

impl QpTable {
    /// An empty table.
    ///
    /// ```
    /// assert!(restable::mana::QpTable::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `qp` under all its [`ids`](Qp::ids) at once (`mana_table_store_qp`). On a
    /// collision nothing is stored and the QP comes back in the error.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let qp = Qp::new(device.create_qp(QpType::Ud).unwrap(), None);
    /// let owner = table.store_qp(qp).unwrap();
    /// assert!(table.get_qp_ref(owner.hw().recv_queue, false).is_some());
    /// ```
    pub fn store_qp(&self, qp: Qp) -> Result<QpOwner, InsertError<QpId, Qp>> {
        let ids = qp.ids();
        self.qps.insert(&ids, qp)
    }

    /// `mana_get_qp_ref`: the QP that owns work queue `qid`, with a reference. Lock-free.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let owner = table.store_qp(Qp::new(device.create_qp(QpType::Ud).unwrap(), None)).unwrap();
    /// let qp = table.get_qp_ref(owner.hw().send_queue, true).unwrap();
    /// assert_eq!(qp.qpn(), owner.qpn());
    /// ```
    pub fn get_qp_ref(&self, qid: u32, is_sq: bool) -> Option<QpRef<'_>> {
        self.qps.get(&QpId::work_queue(qid, is_sq))
    }

    /// The QP numbered `qpn`, with a reference. Lock-free.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let owner = table.store_qp(Qp::new(device.create_qp(QpType::Rc).unwrap(), None)).unwrap();
    /// assert!(table.get_qp_by_qpn(owner.qpn()).is_some());
    /// ```
    pub fn get_qp_by_qpn(&self, qpn: u32) -> Option<QpRef<'_>> {
        self.qps.get(&QpId::Qpn(qpn))
    }

    /// `mana_table_remove_qp`: makes the QP unreachable under all its ids, waits until
    /// every lookup that found it has let go, and hands it back. After this the hardware
    /// may free its ids.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let owner = table.store_qp(Qp::new(device.create_qp(QpType::Rc).unwrap(), None)).unwrap();
    /// let qpn = owner.qpn();
    /// let qp = QpTable::remove_qp(owner);
    /// assert!(table.get_qp_by_qpn(qpn).is_none());
    /// device.destroy_qp(qp.hw()).unwrap();
    /// ```
    pub fn remove_qp(owner: QpOwner) -> Qp {
        owner.kill_and_drain()
    }

    /// The EQ interrupt handler (`mana_ib_event_handler`) for one event; see
    /// [`handle_events`](Self::handle_events).
    ///
    /// ```
    /// use restable::mana::{QpTable, GdmaEvent};
    /// let table = QpTable::new();
    /// table.handle_event(&GdmaEvent { event_type: 1, details: [0; 4] });
    /// table.handle_event(&GdmaEvent::qp_fatal(42));
    /// let stats = table.stats();
    /// assert_eq!((stats.events_unknown, stats.events_stale), (1, 1));
    /// ```
    pub fn handle_event(&self, event: &GdmaEvent) {
        self.handle_events([*event]);
    }

    /// The EQ interrupt handler (`mana_ib_event_handler`) for one interrupt's events,
    /// under one table guard: for QP_FATAL, looks the QP up by QPN, borrowed, and calls
    /// its event callback with it. Never blocks, never fails: events for QPNs that are
    /// gone and events of other types are counted.
    ///
    /// ```
    /// use restable::mana::{Driver, GdmaEvent, QpType};
    /// let driver = Driver::default();
    /// let qp = driver.create_qp(QpType::Rc, None).unwrap();
    /// let eqes = [GdmaEvent::qp_fatal(qp.qpn()), GdmaEvent::qp_fatal(qp.qpn() + 1)];
    /// driver.table().handle_events(eqes);
    /// assert_eq!(qp.events(), 1);
    /// assert_eq!(driver.table().stats().events_stale, 1);
    /// ```
    pub fn handle_events(&self, events: impl IntoIterator<Item = GdmaEvent>) {
        let guard = self.qps.pin();
        let counters = &self.counters;
        for event in events {
            if event.event_type != GDMA_EQE_RNIC_QP_FATAL {
                counters.events_unknown.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(qp) = guard.find(&QpId::Qpn(event.details[0])) else {
                counters.events_stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if let Some(handler) = &qp.event_handler {
                handler(&qp, QpEvent::Fatal);
            }
            self.count_delivery(&qp, &qp.events, &counters.events_delivered);
        }
    }

    /// Completion handling (`mana_handle_cqe`) for one CQE; see
    /// [`poll_cq`](Self::poll_cq). Returns whether a QP took it.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Cqe, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let owner = table.store_qp(Qp::new(device.create_qp(QpType::Ud).unwrap(), None)).unwrap();
    /// assert!(table.handle_cqe(&Cqe { wq_id: owner.hw().recv_queue, is_send: false }));
    /// assert_eq!(owner.completions(), 1);
    /// ```
    pub fn handle_cqe(&self, cqe: &Cqe) -> bool {
        self.poll_cq([*cqe]) == 1
    }

    /// Completion handling (`mana_handle_cqe`) for one poll's CQEs, under one table
    /// guard: looks each CQE's QP up by its work queue, borrowed, and delivers the
    /// completion to it. Returns how many CQEs a QP took; the others are counted stale.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Cqe, Qp, QpTable, QpType};
    /// let (device, table) = (Device::new(), QpTable::new());
    /// let owner = table.store_qp(Qp::new(device.create_qp(QpType::Ud).unwrap(), None)).unwrap();
    /// let hw = owner.hw();
    /// let cqes = [
    ///     Cqe { wq_id: hw.recv_queue, is_send: false },
    ///     Cqe { wq_id: hw.send_queue, is_send: true },
    ///     Cqe { wq_id: 0x7fff_ffff, is_send: true }, // no such send queue
    /// ];
    /// assert_eq!(table.poll_cq(cqes), 2);
    /// assert_eq!(owner.completions(), 2);
    /// ```
    pub fn poll_cq(&self, cqes: impl IntoIterator<Item = Cqe>) -> usize {
        let guard = self.qps.pin();
        let counters = &self.counters;
        let mut delivered = 0;
        for cqe in cqes {
            let Some(qp) = guard.get(&QpId::work_queue(cqe.wq_id, cqe.is_send)) else {
                counters.completions_stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.count_delivery(qp, &qp.completions, &counters.completions);
            delivered += 1;
        }
        delivered
    }

    fn count_delivery(&self, qp: &Qp, per_qp: &AtomicU64, total: &AtomicU64) {
        total.fetch_add(1, Ordering::Relaxed);
        if qp.delivered(per_qp) {
            self.counters
                .late_deliveries
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The lookup paths' counters.
    ///
    /// ```
    /// assert_eq!(restable::mana::QpTable::new().stats(), Default::default());
    /// ```
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            events_delivered: load(&c.events_delivered),
            events_stale: load(&c.events_stale),
            events_unknown: load(&c.events_unknown),
            completions: load(&c.completions),
            completions_stale: load(&c.completions_stale),
            late_deliveries: load(&c.late_deliveries),
        }
    }

    /// The number of QPs stored.
    ///
    /// ```
    /// assert_eq!(restable::mana::QpTable::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.qps.len()
    }

    /// Whether no QP is stored.
    ///
    /// ```
    /// assert!(restable::mana::QpTable::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.qps.is_empty()
    }
}
