//! A killed object waiting for its holders: [`Dying`] and the ways to drain it — by
//! blocking ([`Dying::drain`]), by awaiting ([`Drain`]), or by waiting first and then
//! deciding ([`Dying::wait`], then [`Dying::drain`] or [`Dying::revive`]).

use crate::error::ReviveError;
use crate::grace;
use crate::guard::{abandon, Owner};
use crate::node::{self, Node};
use crate::sync;
use crate::table::{self, Registry};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
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
#[must_use = "dropping a `Dying` without draining it leaves the value to be dropped by the \
              last reference; `drain` it to get the value back"]
pub struct Dying<K, T> {
    node: NonNull<Node<K, T>>,
    /// A handle on the table's shared part (see `table::Registry`), kept so the drained
    /// node's block can go back to it.
    registry: NonNull<Registry<K, T>>,
}

// SAFETY: as for `Owner`: moving `T` out or dropping it needs `T: Send`, the `&T` that
// holders on other threads keep needs `T: Sync`.
unsafe impl<K: Send + Sync, T: Send + Sync> Send for Dying<K, T> {}
// SAFETY: `&Dying` only reads the state word, the keys and `&T`.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for Dying<K, T> {}

impl<K, T> Dying<K, T> {
    /// # Safety
    /// `node` is killed and unlinked from `registry`'s index, and the caller hands its
    /// ownership, with a handle on the registry counted at its home, to the `Dying`.
    pub(crate) unsafe fn new(node: NonNull<Node<K, T>>, registry: NonNull<Registry<K, T>>) -> Self {
        Dying { node, registry }
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
    /// that moment can tell the two apart without firing on correct code. It can be
    /// diagnosed in one look, though: with the `track-refs` feature,
    /// `Dying::holders` (and this `Dying`'s `Debug`) name where each reference
    /// still out was taken, and `set_stuck_drain_limit` makes a drain that waits too long
    /// panic with that list.
    ///
    /// # Borrowed readers
    ///
    /// If the object was ever read borrowed ([`ResTable::pin`](crate::ResTable::pin)), the
    /// drain also waits for a grace period: until every table guard (and read section)
    /// open at the kill, on any thread, has been dropped or refreshed. The drain pushes the
    /// epoch itself — with nobody else pinned it ends in microseconds, with readers that
    /// refresh their guards as soon as they have. The grace period counts as one
    /// reference in [`refs`](Self::refs) until then.
    ///
    /// # Panics
    ///
    /// Inside a [`retain`](crate::ResTable::retain) predicate, when draining the object
    /// the predicate was given: `retain`'s own reference to it, which never leaves the
    /// thread, would keep the drain waiting forever (so does [`wait`](Self::wait)).
    ///
    /// While the calling thread is itself pinned — it holds a table guard
    /// ([`Pinned`](crate::Pinned)), a [`read_section`](crate::read_section) or an
    /// [`iter`](crate::ResTable::iter) — and the object's grace period is pending after
    /// the drain pushed the epoch as far as that pin lets it: the pin holds the grace
    /// period back, and unlike a `Ref` it cannot be sent to another thread to end, so
    /// this is detected for certain (in release builds too) and refused rather than
    /// hung. Drop the guard first; [`drain_timeout`](Self::drain_timeout) and
    /// [`wait_timeout`](Self::wait_timeout) just time out. Objects never read borrowed
    /// have no grace period and drain inside a guard as anywhere.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], String::from("qp")).unwrap();
    /// assert_eq!(owner.kill().drain(), "qp");
    /// ```
    pub fn drain(self) -> T {
        self.wait();
        // SAFETY: `wait` returns once it saw zero references with `Acquire`.
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
        let node = self.node();
        if node.grace_pending() && !sync::is_pinned() {
            // Never blocks: a few pushes of the epoch, which end the grace period of a
            // borrowed object at once when no other thread holds it back.
            grace::push_eagerly(|| node.grace_pending());
        }
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

    /// Waits until every reference is put, and keeps the object: afterwards
    /// [`drain`](Self::drain) returns at once, or [`revive`](Self::revive) puts the object
    /// back. The begin of a destroy that may still fail (the kernel restrack's
    /// `begin_del`): kill, wait, try the hardware, then commit (`drain`) or abort
    /// (`revive`).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let dying = table.insert(&[1u32], "qp").unwrap().kill();
    /// dying.wait();
    /// assert_eq!(dying.refs(), 0);
    /// assert_eq!(dying.drain(), "qp"); // no more waiting
    /// ```
    pub fn wait(&self) {
        #[cfg(feature = "track-refs")]
        if let Some(limit) = crate::track::stuck_drain_limit() {
            if !self.wait_timeout(limit) {
                crate::track::stuck(self.wait_key(), limit);
            }
            return;
        }
        let drained = self.node().wait_for_refs(None);
        debug_assert!(drained, "a wait without deadline returns only when drained");
    }

    /// Where each reference still out was taken, oldest first (feature `track-refs`):
    /// for a drain that does not end.
    ///
    /// ```
    /// # #[cfg(feature = "track-refs")] {
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], ()).unwrap();
    /// let r = table.get(&1).unwrap(); // this line is the holder
    /// let dying = owner.kill();
    /// assert_eq!(dying.holders().len(), 1);
    /// assert_eq!(dying.holders()[0].location.line(), line!() - 3);
    /// # drop(r);
    /// # }
    /// ```
    #[cfg(feature = "track-refs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "track-refs")))]
    pub fn holders(&self) -> Vec<crate::Holder> {
        crate::track::holders(self.wait_key())
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; returns whether every reference
    /// was put.
    ///
    /// ```
    /// use std::time::Duration;
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], ()).unwrap();
    /// let held = table.get(&1).unwrap();
    /// let dying = owner.kill();
    /// assert!(!dying.wait_timeout(Duration::from_millis(1)));
    /// drop(held);
    /// assert!(dying.wait_timeout(Duration::from_secs(1)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.node()
            .wait_for_refs(Instant::now().checked_add(timeout))
    }

    /// Aborts the kill: links the object under all its keys again and makes it live, in
    /// one step — every key resolves to it from the same instant, as after an insert.
    /// References taken before the kill stay valid.
    ///
    /// The keys were free from the kill on, so another object may have taken one since.
    /// Then nothing is linked, nothing becomes visible, and the error names the key and
    /// hands this `Dying` back. (The kernel restrack's 2026 `abort_del` cannot say this: a
    /// new object created under a placeholder's id ends up untracked.)
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let dying = table.insert(&[1u32, 2], "qp").unwrap().kill();
    /// assert!(table.get(&1).is_none());
    /// let owner = dying.revive().unwrap(); // the hardware destroy failed: put it back
    /// assert_eq!(*table.get(&2).unwrap(), "qp");
    ///
    /// let dying = owner.kill();
    /// let _new = table.insert(&[2u32], "new qp").unwrap(); // key 2 reused meanwhile
    /// let err = dying.revive().unwrap_err();
    /// assert_eq!(err.key(), &2);
    /// assert!(table.get(&1).is_none()); // nothing of the old object came back
    /// assert_eq!(err.into_dying().drain(), "qp");
    /// ```
    pub fn revive(self) -> Result<Owner<K, T>, ReviveError<K, T>>
    where
        K: Eq,
    {
        // SAFETY: our handle keeps the registry allocated.
        match unsafe { self.registry.as_ref() }.revive(self.node) {
            Err(at) => Err(ReviveError::new(self, at)),
            Ok(retired) => {
                let this = ManuallyDrop::new(self);
                // SAFETY: linked and live again; ownership and the registry handle move
                // from `this` (never dropped) to the `Owner`, once.
                let owner = unsafe { Owner::new(this.registry, this.node) };
                // Now that the owner exists, what a growth retired may go to the epoch
                // (and the collector run).
                drop(retired);
                Ok(owner)
            }
        }
    }

    /// A future that resolves to the value once every reference is put: the drain of an
    /// async task, which must not block its executor's thread. Also what `.await` on the
    /// `Dying` itself does. See [`Drain`].
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
    /// #             return v;
    /// #         }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], String::from("conn")).unwrap();
    /// let r = table.get_owned(&1).unwrap();
    /// let dying = owner.kill();
    /// std::thread::spawn(move || drop(r)); // the last holder, elsewhere
    /// assert_eq!(block_on(dying.drain_async()), "conn");
    /// ```
    pub fn drain_async(self) -> Drain<K, T> {
        Drain {
            dying: Some(self),
            registered: false,
            driven: false,
        }
    }

    /// The key under which this drain waits: threads in the parking lot, tasks in the
    /// waker registry.
    fn wait_key(&self) -> usize {
        Node::wait_key(self.node.as_ptr())
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
        let this = ManuallyDrop::new(self);
        let node = this.node.as_ptr();
        // SAFETY: killed, unlinked (by `Owner::kill`), no references (caller), and `this`
        // is consumed without running its drop, so the node and the registry handle are
        // used once, here.
        unsafe {
            let value = node::take_value(node);
            table::retire(node, Some(this.registry));
            value
        }
    }

    /// The number of references still out, counting a pending grace period of a
    /// borrowed object as one (see [`drain`](Self::drain)). Once it reads zero, it stays
    /// zero.
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
        unsafe { abandon(self.node, self.registry) }
    }
}

/// A killed object can still be read by its owner — a driver needs the QP's hardware ids
/// to destroy it — while no new reference can be taken to it.
///
/// ```
/// let table = restable::ResTable::new();
/// let dying = table.insert(&[1u32], [0x51u32, 3]).unwrap().kill();
/// assert_eq!(dying[0], 0x51);
/// ```
impl<K, T> std::ops::Deref for Dying<K, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.node().value()
    }
}

impl<K, T> IntoFuture for Dying<K, T> {
    type Output = T;
    type IntoFuture = Drain<K, T>;

    /// `dying.await` is `dying.drain_async().await`.
    fn into_future(self) -> Drain<K, T> {
        self.drain_async()
    }
}

/// The future of [`Dying::drain_async`] (and of `.await` on a [`Dying`]): resolves to the
/// value once every reference is put.
///
/// It needs no runtime: it registers the task's waker, and the last put wakes it. The
/// registration and the last put are ordered by the registry's lock, as a parked thread
/// and the last put are by the parking lot's, so the wake-up cannot be lost.
///
/// Cancellation-safe: dropping it drops the [`Dying`], which never blocks; the value is
/// then dropped by the last reference to go.
///
/// **Under a timeout, keep the drain**: `tokio::time::timeout(d, dying)` takes the
/// `Dying` into the timed-out future, which drops it — the object is then destroyed by
/// its last reference, and you cannot retry or revive. Await `&mut drain` instead (a
/// `Drain` is `Unpin`): after a time-out the drain is still yours, to await again, log
/// its [`Dying::refs`] through [`Drain::dying`], or drop.
///
/// ```
/// # async fn example(dying: restable::Dying<u32, String>) {
/// use std::time::Duration;
/// let mut drain = dying.drain_async();
/// let conn = match tokio::time::timeout(Duration::from_secs(5), &mut drain).await {
///     Ok(conn) => conn,
///     Err(_elapsed) => {
///         eprintln!("still held by {} references", drain.dying().map_or(0, |d| d.refs()));
///         drain.await // keep waiting (or drop `drain` to leave it to the last holder)
///     }
/// };
/// # drop(conn);
/// # }
/// ```
///
/// ```
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
/// #             return v;
/// #         }
/// #     }
/// # }
/// let table = restable::ResTable::new();
/// let owner = table.insert(&[1u32], 5u8).unwrap();
/// assert_eq!(block_on(async { owner.kill().await }), 5);
/// ```
#[must_use = "futures do nothing unless polled; dropping a `Drain` drops its `Dying`"]
pub struct Drain<K, T> {
    /// `None` once the value has been returned.
    dying: Option<Dying<K, T>>,
    /// Whether a waker may be registered under the node's key.
    registered: bool,
    /// Whether this drain asked the epoch's helper thread to push the epoch for it (a
    /// grace period was pending), and must tell it when it no longer waits.
    driven: bool,
}

impl<K, T> Drain<K, T> {
    /// The object being drained; `None` once the drain has returned the value.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], ()).unwrap();
    /// let r = table.get(&1).unwrap();
    /// let drain = owner.kill().drain_async();
    /// assert_eq!(drain.dying().unwrap().refs(), 1);
    /// # drop(r);
    /// ```
    pub fn dying(&self) -> Option<&Dying<K, T>> {
        self.dying.as_ref()
    }
}

impl<K, T> Future for Drain<K, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let dying = this
            .dying
            .as_ref()
            .expect("restable: `Drain` polled after it returned the value");
        loop {
            if dying.refs() == 0 {
                break;
            }
            // `set_parked` runs under the registry's lock and the last put wakes under
            // it after its decrement: either we see zero here (and loop to take the
            // value) or the put sees `PARKED` and finds our waker.
            if sync::register_waker(dying.wait_key(), cx.waker(), || dying.node().set_parked()) {
                this.registered = true;
                // A grace period ends only when some thread collects: have the helper
                // thread push the epoch while we wait (registered first, so the wake of
                // the epoch's put finds our waker). Should the helper be missing (its
                // spawn failed), push once per poll and ask to be polled again.
                if dying.node().grace_pending() && !this.driven {
                    if sync::want_epoch_driver() {
                        this.driven = true;
                    } else {
                        sync::flush();
                        cx.waker().wake_by_ref();
                    }
                }
                return Poll::Pending;
            }
        }
        if this.registered {
            sync::forget_waker(dying.wait_key());
        }
        if this.driven {
            this.driven = false;
            sync::release_epoch_driver();
        }
        let dying = this.dying.take().expect("checked above");
        // SAFETY: `refs` saw zero with `Acquire`, and zero is final.
        Poll::Ready(unsafe { dying.take() })
    }
}

impl<K, T> Drop for Drain<K, T> {
    fn drop(&mut self) {
        if let Some(dying) = &self.dying {
            if self.registered {
                // While we own the node its address names only it, so this forgets our
                // waker and nobody else's.
                sync::forget_waker(dying.wait_key());
            }
        }
        if self.driven {
            sync::release_epoch_driver();
        }
        // Then the `Dying` drops: never blocks, the last reference drops the value.
    }
}

impl<K: fmt::Debug, T> fmt::Debug for Drain<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").field("dying", &self.dying).finish()
    }
}

impl<K: fmt::Debug, T> fmt::Debug for Dying<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Dying");
        out.field("keys", &self.keys()).field("refs", &self.refs());
        #[cfg(feature = "track-refs")]
        out.field("holders", &self.holders());
        out.finish()
    }
}
