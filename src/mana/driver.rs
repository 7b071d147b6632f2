//! The driver's create and destroy flows: the QP table and the (simulated) hardware, in
//! the order that makes immediate id reuse safe.

use super::sim::{Device, HwError};
use super::{EventHandler, Qp, QpId, QpOwner, QpTable, QpType};
use crate::sync::{AtomicU64, Ordering};
use crate::InsertErrorKind;
use std::fmt;

/// In which order `destroy_qp` takes a QP down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DestroyOrder {
    /// Kill (unreachable, ids free in the table) → drain (wait for every lookup that
    /// found it) → hardware destroy (the hardware frees the ids). The right order.
    #[default]
    KillDrainThenHw,
    /// The naive order: hardware destroy first, then erase from the table. The hardware
    /// hands the freed ids to the very next create while the table still holds them:
    /// that create collides, and lookups can reach a QP whose hardware is gone. Only for
    /// showing why the right order matters.
    HwThenErase,
}

/// Why `create_qp` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// The hardware refused.
    Hardware(HwError),
    /// The hardware handed out an id the table still holds for another QP. Cannot
    /// happen with [`DestroyOrder::KillDrainThenHw`]. The new hardware QP was destroyed
    /// again.
    IdCollision(QpId),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Hardware(err) => write!(f, "create_qp: {err}"),
            CreateError::IdCollision(id) => {
                write!(
                    f,
                    "create_qp: hardware reused {id:?}, still held by another QP"
                )
            }
        }
    }
}

impl std::error::Error for CreateError {}

/// Why `destroy_qp` failed; the QP is not lost.
#[non_exhaustive]
pub enum DestroyError {
    /// The hardware destroy failed. The QP was already drained, so it is stored again
    /// under all its ids (which the hardware still owns, so nobody else can hold them)
    /// and handed back, live: events and completions reach it again, and the caller may
    /// retry the destroy. (mlx5 had to add an `invalid` flag after a retried destroy
    /// underflowed its refcount; here the retry goes through a new owner.)
    Hardware(HwError, QpOwner),
}

impl fmt::Debug for DestroyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestroyError::Hardware(err, owner) => f
                .debug_tuple("Hardware")
                .field(err)
                .field(&owner.qpn())
                .finish(),
        }
    }
}

impl fmt::Display for DestroyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestroyError::Hardware(err, owner) => write!(
                f,
                "destroy_qp {:#x}: {err}; the QP is live again, retry later",
                owner.qpn()
            ),
        }
    }
}

impl std::error::Error for DestroyError {}

/// A mana_ib device: the QP table plus the hardware.
#[derive(Debug, Default)]
pub struct Driver {
    table: QpTable,
    device: Device,
    order: DestroyOrder,
    created: AtomicU64,
    destroyed: AtomicU64,
    create_failures: AtomicU64,
}

impl Driver {
    /// A driver for `device`, destroying in the right order.
    ///
    /// ```
    /// use restable::mana::{sim::Device, Driver};
    /// let driver = Driver::new(Device::new());
    /// assert!(driver.table().is_empty());
    /// ```
    pub fn new(device: Device) -> Self {
        Self::with_order(device, DestroyOrder::default())
    }

    /// A driver for `device` that destroys in `order`.
    ///
    /// ```
    /// use restable::mana::{sim::Device, DestroyOrder, Driver, QpType};
    /// let naive = Driver::with_order(Device::new(), DestroyOrder::HwThenErase);
    /// let qp = naive.create_qp(QpType::Ud, None).unwrap();
    /// naive.destroy_qp(qp).unwrap(); // alone it works; racing a create it collides
    /// ```
    pub fn with_order(device: Device, order: DestroyOrder) -> Self {
        Driver {
            table: QpTable::new(),
            device,
            order,
            created: AtomicU64::new(0),
            destroyed: AtomicU64::new(0),
            create_failures: AtomicU64::new(0),
        }
    }

    /// The QP table (the lookup paths).
    ///
    /// ```
    /// let driver = restable::mana::Driver::default();
    /// assert_eq!(driver.table().len(), 0);
    /// ```
    pub fn table(&self) -> &QpTable {
        &self.table
    }

    /// The hardware.
    ///
    /// ```
    /// let driver = restable::mana::Driver::default();
    /// assert_eq!(driver.device().live_qps(), 0);
    /// ```
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// QPs created, destroyed, and creates that failed, so far.
    ///
    /// ```
    /// use restable::mana::{Driver, QpType};
    /// let driver = Driver::default();
    /// let qp = driver.create_qp(QpType::Rc, None).unwrap();
    /// driver.destroy_qp(qp).unwrap();
    /// assert_eq!(driver.counts(), (1, 1, 0)); // created, destroyed, create failures
    /// ```
    pub fn counts(&self) -> (u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            load(&self.created),
            load(&self.destroyed),
            load(&self.create_failures),
        )
    }

    /// Creates a QP in hardware and stores it under its ids ([`Qp::ids`]).
    ///
    /// ```
    /// use restable::mana::{sim::Device, Driver, QpType};
    /// let driver = Driver::new(Device::new());
    /// let ud = driver.create_qp(QpType::Ud, None).unwrap();
    /// assert!(driver.table().get_qp_ref(ud.hw().send_queue, true).is_some());
    /// driver.destroy_qp(ud).unwrap();
    /// ```
    pub fn create_qp(
        &self,
        qp_type: QpType,
        event_handler: Option<EventHandler>,
    ) -> Result<QpOwner, CreateError> {
        let result = self.try_create(qp_type, event_handler);
        let counter = match result {
            Ok(_) => &self.created,
            Err(_) => &self.create_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn try_create(
        &self,
        qp_type: QpType,
        event_handler: Option<EventHandler>,
    ) -> Result<QpOwner, CreateError> {
        let hw = self
            .device
            .create_qp(qp_type)
            .map_err(CreateError::Hardware)?;
        match self.table.store_qp(Qp::new(hw, event_handler)) {
            Ok(owner) => Ok(owner),
            Err(err) => {
                debug_assert_eq!(err.kind(), InsertErrorKind::KeyInUse);
                let id = *err.key().expect("KeyInUse names the key");
                let qp = err.into_value();
                self.device
                    .destroy_qp(qp.hw())
                    .expect("undoing a create: destroying a QP nobody has seen");
                Err(CreateError::IdCollision(id))
            }
        }
    }

    /// Destroys a QP in the driver's [`DestroyOrder`]. With the right order, when this
    /// returns no lookup holds the QP, none can find it, and the hardware has its ids
    /// back for the next create.
    ///
    /// On a hardware failure the QP is stored again and handed back (see
    /// [`DestroyError`]).
    ///
    /// ```
    /// use restable::mana::{sim::Device, DestroyError, Driver, QpType};
    /// let driver = Driver::new(Device::new());
    /// let qp = driver.create_qp(QpType::Rc, None).unwrap();
    /// driver.device().fail_next_destroys(1);
    /// let DestroyError::Hardware(_, qp) = driver.destroy_qp(qp).unwrap_err() else { unreachable!() };
    /// assert!(driver.table().get_qp_by_qpn(qp.qpn()).is_some()); // live again
    /// driver.destroy_qp(qp).unwrap(); // the retry succeeds
    /// ```
    pub fn destroy_qp(&self, owner: QpOwner) -> Result<(), DestroyError> {
        match self.order {
            DestroyOrder::KillDrainThenHw => {
                // Unreachable under every id, ids free in the table; then no event or
                // completion holds it any more (restrack's begin_del).
                let dying = owner.kill();
                dying.wait();
                dying.set_hw_destroy_started(true);
                if let Err(err) = self.device.destroy_qp(dying.hw()) {
                    // abort_del: the hardware still owns the ids, so no create can have
                    // taken them, and the QP goes back under all of them at once.
                    dying.set_hw_destroy_started(false);
                    let owner = dying.revive().unwrap_or_else(|e| {
                        panic!("reviving a QP whose ids the hardware still owns: {e}")
                    });
                    return Err(DestroyError::Hardware(err, owner));
                }
                // commit_del: no reference is out, so this returns at once.
                drop(dying.drain());
            }
            DestroyOrder::HwThenErase => {
                owner.set_hw_destroy_started(true);
                if let Err(err) = self.device.destroy_qp(owner.hw()) {
                    owner.set_hw_destroy_started(false);
                    return Err(DestroyError::Hardware(err, owner));
                }
                // The ids are back in the hardware's pools; a create on another thread
                // can get them now, while the table still maps them to this QP.
                QpTable::remove_qp(owner);
            }
        }
        self.destroyed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
