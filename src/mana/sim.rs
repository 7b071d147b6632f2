//! A simulated mana device: hands out QPNs and queue ids, reuses freed ones last-in
//! first-out as the hardware does, can be told to fail destroys, and produces EQEs and
//! CQEs — including ones for QPs that were just destroyed.

use super::{Cqe, GdmaEvent, QpType};
use crate::sync::{AtomicUsize, Mutex, Ordering};
pub use fastrand::Rng;
use std::collections::VecDeque;
use std::fmt;

#[cfg(not(loom))]
pub use super::workload::{Summary, Workload};

/// The hardware queues of one QP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwQp {
    /// RC or UD.
    pub qp_type: QpType,
    /// The QP number.
    pub qpn: u32,
    /// The send queue whose completions the user polls (RC: the send requester queue).
    pub send_queue: u32,
    /// The receive queue whose completions the user polls (RC: the receive responder
    /// queue).
    pub recv_queue: u32,
    /// RC only: the send responder queue, the receive requester queue and the fast
    /// memory registration queue, in that order. No CQE names them.
    pub internal_queues: Vec<u32>,
}

impl HwQp {
    /// Every id of the QP: QPN, send queue, receive queue, then the internal queues.
    ///
    /// ```
    /// use restable::mana::{sim::Device, QpType};
    /// let ud = Device::new().create_qp(QpType::Ud).unwrap();
    /// assert_eq!(ud.ids().collect::<Vec<_>>(), [ud.qpn, ud.send_queue, ud.recv_queue]);
    /// ```
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        [self.qpn, self.send_queue, self.recv_queue]
            .into_iter()
            .chain(self.internal_queues.iter().copied())
    }
}

/// Why the simulated hardware refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HwError {
    /// A destroy failed (as told by [`Device::fail_next_destroys`]); the QP and its ids
    /// stay allocated.
    DestroyFailed,
    /// No id of a kind is left.
    OutOfIds,
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HwError::DestroyFailed => f.write_str("hardware destroy command failed"),
            HwError::OutOfIds => f.write_str("hardware ran out of queue ids"),
        }
    }
}

impl std::error::Error for HwError {}

/// A pool of ids: freed ids are handed out again, most recently freed first.
#[derive(Debug)]
struct IdPool {
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    free: Vec<u32>,
    next_fresh: u32,
    limit: u32,
}

impl IdPool {
    fn new(first: u32, count: u32) -> Self {
        IdPool {
            state: Mutex::new(PoolState {
                free: Vec::new(),
                next_fresh: first,
                limit: first + count,
            }),
        }
    }

    fn alloc(&self) -> Result<u32, HwError> {
        let mut pool = self.state.lock();
        if let Some(id) = pool.free.pop() {
            return Ok(id);
        }
        if pool.next_fresh == pool.limit {
            return Err(HwError::OutOfIds);
        }
        pool.next_fresh += 1;
        Ok(pool.next_fresh - 1)
    }

    fn free(&self, id: u32) {
        self.state.lock().free.push(id);
    }
}

/// How many destroyed QPs the device remembers, to send them stale EQEs and CQEs.
const RECENTLY_DESTROYED: usize = 8;

/// The simulated device.
///
/// ```
/// use restable::mana::{sim::Device, QpType};
/// let device = Device::new();
/// let a = device.create_qp(QpType::Ud).unwrap();
/// device.destroy_qp(&a).unwrap();
/// let b = device.create_qp(QpType::Ud).unwrap();
/// assert_eq!(a.qpn, b.qpn); // a freed QPN goes to the very next create
/// ```
#[derive(Debug)]
pub struct Device {
    qpns: IdPool,
    send_queues: IdPool,
    recv_queues: IdPool,
    /// Destroys still to fail, from `fail_next_destroys`.
    failing_destroys: AtomicUsize,
    /// QPs the hardware has created and not destroyed (the source of events).
    live: Mutex<Vec<HwQp>>,
    recently_destroyed: Mutex<VecDeque<HwQp>>,
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Device {
    /// A device with 2^20 ids of each kind. Send and receive queue ids start at the same
    /// number, so a QP's send and receive queue often have equal ids.
    ///
    /// ```
    /// use restable::mana::{sim::Device, QpType};
    /// let ud = Device::new().create_qp(QpType::Ud).unwrap();
    /// assert_eq!(ud.send_queue, ud.recv_queue); // equal ids from separate spaces
    /// ```
    pub fn new() -> Self {
        Device {
            qpns: IdPool::new(0x100, 1 << 20),
            send_queues: IdPool::new(0x10, 1 << 20),
            recv_queues: IdPool::new(0x10, 1 << 20),
            failing_destroys: AtomicUsize::new(0),
            live: Mutex::new(Vec::new()),
            recently_destroyed: Mutex::new(VecDeque::with_capacity(RECENTLY_DESTROYED)),
        }
    }

    /// Creates a QP in hardware: a QPN and its queues (five for RC, two for UD).
    ///
    /// ```
    /// use restable::mana::{sim::Device, QpType};
    /// let rc = Device::new().create_qp(QpType::Rc).unwrap();
    /// assert_eq!(rc.internal_queues.len(), 3);
    /// ```
    pub fn create_qp(&self, qp_type: QpType) -> Result<HwQp, HwError> {
        let mut ids = Vec::with_capacity(6);
        for pool in self.pools(qp_type) {
            match pool.alloc() {
                Ok(id) => ids.push(id),
                Err(err) => {
                    for (pool, id) in self.pools(qp_type).zip(ids) {
                        pool.free(id);
                    }
                    return Err(err);
                }
            }
        }
        let hw = HwQp {
            qp_type,
            qpn: ids[0],
            send_queue: ids[1],
            recv_queue: ids[2],
            internal_queues: ids[3..].to_vec(),
        };
        self.live.lock().push(hw.clone());
        Ok(hw)
    }

    /// The pool of each of a QP's ids, in the order of [`HwQp::ids`]: QPN, send queue,
    /// receive queue, then for RC the send responder, receive requester and FMR queues.
    fn pools(&self, qp_type: QpType) -> impl Iterator<Item = &IdPool> {
        let count = match qp_type {
            QpType::Rc => 6,
            QpType::Ud => 3,
        };
        let (qpn, sq, rq) = (&self.qpns, &self.send_queues, &self.recv_queues);
        [qpn, sq, rq, sq, rq, rq].into_iter().take(count)
    }

    /// Destroys a QP in hardware and frees its ids (they go to the very next creates),
    /// unless told to fail, in which case nothing changes.
    ///
    /// ```
    /// use restable::mana::sim::{Device, HwError};
    /// use restable::mana::QpType;
    /// let device = Device::new();
    /// let qp = device.create_qp(QpType::Rc).unwrap();
    /// device.fail_next_destroys(1);
    /// assert_eq!(device.destroy_qp(&qp), Err(HwError::DestroyFailed));
    /// assert_eq!(device.destroy_qp(&qp), Ok(()));
    /// ```
    pub fn destroy_qp(&self, hw: &HwQp) -> Result<(), HwError> {
        let fail = self
            .failing_destroys
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(HwError::DestroyFailed);
        }
        {
            let mut live = self.live.lock();
            let at = live
                .iter()
                .position(|qp| qp.qpn == hw.qpn)
                .unwrap_or_else(|| {
                    panic!(
                        "destroy of QPN {:#x}, which the hardware does not have",
                        hw.qpn
                    )
                });
            live.swap_remove(at);
        }
        let mut recent = self.recently_destroyed.lock();
        if recent.len() == RECENTLY_DESTROYED {
            recent.pop_front();
        }
        recent.push_back(hw.clone());
        drop(recent);
        for (pool, id) in self.pools(hw.qp_type).zip(hw.ids()) {
            pool.free(id);
        }
        // The command's completion reaches the driver a moment after the hardware freed
        // the ids: another thread may run (and create) in between.
        crate::sync::yield_now();
        Ok(())
    }

    /// Makes the next `n` destroys fail.
    ///
    /// ```
    /// use restable::mana::{sim::{Device, HwError}, QpType};
    /// let device = Device::new();
    /// let qp = device.create_qp(QpType::Ud).unwrap();
    /// device.fail_next_destroys(2);
    /// assert_eq!(device.destroy_qp(&qp), Err(HwError::DestroyFailed));
    /// assert_eq!(device.destroy_qp(&qp), Err(HwError::DestroyFailed));
    /// assert_eq!(device.destroy_qp(&qp), Ok(()));
    /// ```
    pub fn fail_next_destroys(&self, n: usize) {
        self.failing_destroys.store(n, Ordering::Relaxed);
    }

    /// The number of QPs the hardware has.
    ///
    /// ```
    /// use restable::mana::{sim::Device, QpType};
    /// let device = Device::new();
    /// let qp = device.create_qp(QpType::Rc).unwrap();
    /// assert_eq!(device.live_qps(), 1);
    /// device.destroy_qp(&qp).unwrap();
    /// assert_eq!(device.live_qps(), 0);
    /// ```
    pub fn live_qps(&self) -> usize {
        self.live.lock().len()
    }

    /// The next event from the event queue: mostly QP_FATAL for a live QP, sometimes for
    /// a recently destroyed one, sometimes an event type the QP table does not handle.
    ///
    /// ```
    /// use restable::mana::sim::{Device, Rng};
    /// let event = Device::new().next_event(&mut Rng::with_seed(1));
    /// # let _ = event;
    /// ```
    pub fn next_event(&self, rng: &mut Rng) -> GdmaEvent {
        match rng.u64(..8) {
            0 => GdmaEvent {
                event_type: 131, // GDMA_EQE_HWC_INIT_DONE: not the QP table's
                details: [0; 4],
            },
            roll => match self.pick(rng, roll < 3) {
                Some(hw) => GdmaEvent::qp_fatal(hw.qpn),
                None => GdmaEvent::qp_fatal(0xdead),
            },
        }
    }

    /// The next completion: for a queue of a live QP, sometimes of a recently destroyed
    /// one; `None` when the device has no QP at all.
    ///
    /// ```
    /// use restable::mana::{sim::{Device, Rng}, QpType};
    /// let device = Device::new();
    /// assert_eq!(device.next_cqe(&mut Rng::with_seed(1)), None); // no QP, no completions
    /// let qp = device.create_qp(QpType::Ud).unwrap();
    /// let cqe = device.next_cqe(&mut Rng::with_seed(1)).unwrap();
    /// assert!(cqe.wq_id == qp.send_queue || cqe.wq_id == qp.recv_queue);
    /// ```
    pub fn next_cqe(&self, rng: &mut Rng) -> Option<Cqe> {
        let stale = rng.u64(..8) == 0;
        let hw = self.pick(rng, stale)?;
        let is_send = rng.u64(..2) == 0;
        let wq_id = if is_send {
            hw.send_queue
        } else {
            hw.recv_queue
        };
        Some(Cqe { wq_id, is_send })
    }

    /// A live QP, or a recently destroyed one if `stale` (a live one if none was).
    fn pick(&self, rng: &mut Rng, stale: bool) -> Option<HwQp> {
        if stale {
            let recent = self.recently_destroyed.lock();
            if !recent.is_empty() {
                return Some(recent[rng.u64(..recent.len() as u64) as usize].clone());
            }
        }
        let live = self.live.lock();
        (!live.is_empty()).then(|| live[rng.u64(..live.len() as u64) as usize].clone())
    }
}
