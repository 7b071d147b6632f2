//! A killed object waiting for its holders: [`Dying`] and the ways to drain it.

use crate::guard::abandon;
use crate::node::{self, Node};
use crate::sync::Arc;
use crate::table::{self, Registry};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// A killed object: no `get` finds it any more and its keys are free, but references
/// taken before the kill may still be out. Draining waits for them and hands the value
/// back.
///
/// Dropping a `Dying` without draining never blocks: the value is then dropped by the
/// last reference to go (or right away if none is out).
///
/// ```
/// let table = restable::ResTable::new();
/// let owner = table.insert(&[1u32], "qp").unwrap();
/// let r = table.get(&1).unwrap();
/// let dying = owner.kill();
/// let dying = dying.try_drain().unwrap_err(); // `r` is still out
/// drop(r);
/// assert_eq!(dying.try_drain().unwrap(), "qp");
/// ```
///
/// Drained while another thread lets go:
///
/// ```
/// let table = restable::ResTable::new();
/// let owner = table.insert(&[1u32], 7u8).unwrap();
/// std::thread::scope(|s| {
///     let r = table.get(&1).unwrap();
///     let dying = owner.kill();
///     s.spawn(move || drop(r));
///     assert_eq!(dying.drain(), 7); // parks until the spawned thread's put
/// });
/// ```
pub struct Dying<K, T> {
    node: NonNull<Node<K, T>>,
    /// The table's shared part, kept so the drained node's block can go back to it.
    registry: ManuallyDrop<Arc<Registry<K, T>>>,
}

// SAFETY: as for `Owner`: moving `T` out or dropping it needs `T: Send`, the `&T` that
// holders on other threads keep needs `T: Sync`.
unsafe impl<K: Send + Sync, T: Send + Sync> Send for Dying<K, T> {}
// SAFETY: `&Dying` only reads the state word and the keys.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for Dying<K, T> {}

impl<K, T> Dying<K, T> {
    /// # Safety
    /// `node` is killed and unlinked from `registry`'s index, and the caller hands its
    /// ownership to the `Dying`.
    pub(crate) unsafe fn new(node: NonNull<Node<K, T>>, registry: Arc<Registry<K, T>>) -> Self {
        Dying {
            node,
            registry: ManuallyDrop::new(registry),
        }
    }

    fn node(&self) -> &Node<K, T> {
        // SAFETY: we own the node (`OWNED` is set), so it stays allocated.
        unsafe { self.node.as_ref() }
    }

    /// Waits until every reference is put (spinning briefly, then parking) and returns
    /// the value. The last put wakes the drain; no wake-up can be lost.
    ///
    /// # Deadlock
    ///
    /// Never returns while the calling thread itself holds a [`Ref`](crate::Ref) to the
    /// object — the drain waits for that reference, and the reference waits for the
    /// thread. A close-by-name path writes exactly this (`get(name)`, find the owner,
    /// `kill_and_drain`): drop the `Ref` first, or use
    /// [`drain_timeout`](Self::drain_timeout) when a holder may be stuck. (It is
    /// dashmap's "`remove` while holding a `Ref`" deadlock.) restable does not try to
    /// detect it: a `Ref` is `Send`, so a reference taken on this thread may be held —
    /// and later dropped — by another one at the moment of the drain, and no check at
    /// that moment can tell the two apart without firing on correct code.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], String::from("qp")).unwrap();
    /// assert_eq!(owner.kill().drain(), "qp");
    /// ```
    pub fn drain(self) -> T {
        let drained = self.node().wait_for_refs(None);
        debug_assert!(drained, "a wait without deadline returns only when drained");
        // SAFETY: `wait_for_refs` saw zero references with `Acquire`.
        unsafe { self.take() }
    }

    /// Returns the value if no reference is out right now, or gives the `Dying` back.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], 1).unwrap();
    /// assert_eq!(owner.kill().try_drain().unwrap(), 1);
    /// ```
    pub fn try_drain(self) -> Result<T, Self> {
        if self.node().refs() == 0 {
            // SAFETY: zero references, seen with `Acquire` after the kill.
            Ok(unsafe { self.take() })
        } else {
            Err(self)
        }
    }

    /// Like [`drain`](Self::drain), but gives the `Dying` back if references are still
    /// out after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], 'q').unwrap();
    /// let held = table.get(&1).unwrap();
    /// let dying = owner.kill().drain_timeout(Duration::from_millis(1)).unwrap_err();
    /// drop(held);
    /// assert_eq!(dying.drain_timeout(Duration::from_secs(1)).unwrap(), 'q');
    /// ```
    pub fn drain_timeout(self, timeout: Duration) -> Result<T, Self> {
        // A timeout too large for `Instant` means no deadline.
        self.drain_until(Instant::now().checked_add(timeout))
    }

    fn drain_until(self, deadline: Option<Instant>) -> Result<T, Self> {
        if self.node().wait_for_refs(deadline) {
            // SAFETY: `wait_for_refs` saw zero references with `Acquire`.
            Ok(unsafe { self.take() })
        } else {
            Err(self)
        }
    }

    /// Moves the value out and retires the node.
    ///
    /// # Safety
    /// No reference is out (seen with `Acquire`).
    unsafe fn take(self) -> T {
        let mut this = ManuallyDrop::new(self);
        let node = this.node.as_ptr();
        // SAFETY: killed, unlinked (by `Owner::kill`), no references (caller), and `this`
        // is consumed without running its drop, so the node and the registry handle are
        // used once, here.
        unsafe {
            let value = node::take_value(node);
            table::retire(node, Some(ManuallyDrop::take(&mut this.registry)));
            value
        }
    }

    /// The number of references still out. Once it reads zero, it stays zero.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], ()).unwrap();
    /// let (a, b) = (table.get(&1).unwrap(), table.get(&1).unwrap());
    /// let dying = owner.kill();
    /// assert_eq!(dying.refs(), 2);
    /// drop((a, b));
    /// assert_eq!(dying.refs(), 0);
    /// ```
    pub fn refs(&self) -> usize {
        self.node().refs()
    }

    /// The keys the object had; all of them may already name newer objects.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let dying = table.insert(&[4u32, 5], ()).unwrap().kill();
    /// assert_eq!(dying.keys(), &[4, 5]);
    /// ```
    pub fn keys(&self) -> &[K] {
        self.node().keys()
    }
}

impl<K, T> Drop for Dying<K, T> {
    fn drop(&mut self) {
        // SAFETY: we own the node and give that up here, exactly once; the registry
        // handle is not used after this.
        unsafe { abandon(self.node, ManuallyDrop::take(&mut self.registry)) }
    }
}

impl<K: fmt::Debug, T> fmt::Debug for Dying<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dying")
            .field("keys", &self.keys())
            .field("refs", &self.refs())
            .finish()
    }
}
