//! Grace periods: how a kill waits for borrowed readers, the `synchronize_rcu()` of a
//! table.
//!
//! A borrowed read ([`crate::Pinned::get`]) holds no reference, only an epoch pin. So a
//! kill (or remove) of a node that was ever read borrowed (`BORROWED` in its state word)
//! gives the node one more reference, held by the epoch: [`begin`] counts it, and the
//! function it defers puts it back once every thread that was pinned at the kill has
//! unpinned. Until then the node's references cannot reach zero, so no drain takes `T`
//! and no last holder drops it — whichever way the object goes (drain, timed drain,
//! async drain, revive and a later kill, a dropped `Owner` or `Dying`), it waits for the
//! borrowed readers the same way it waits for `Ref`s, with the same wake-up.
//!
//! The epoch advances only when some thread collects, so a drainer never waits for
//! that to happen by chance ([`Driver`]): it flushes the epoch itself, with backoff.
//! An async drain hands that job to a helper thread (`sync::want_epoch_driver`). The
//! algorithm and its orderings are in `docs/implementation.md`, "Borrowed reads and
//! grace periods".

use crate::node::{self, Node, Release};
use crate::sync;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A grace period begun on a node and not yet handed to the epoch.
#[must_use = "a begun grace period must be deferred, or the node is never drained"]
pub(crate) struct Grace<K, T> {
    node: *const Node<K, T>,
    /// What [`Node::begin_grace`] added to the word, for [`Node::end_grace`].
    units: usize,
}

/// Begins a grace period for `node` if `old` — its state word before the kill or claim
/// that made the caller its owner — says it was read borrowed. One branch for a node
/// that never was.
///
/// Call it right after that kill or claim, before the owner can drain.
///
/// # Safety
/// The caller owns the node, and `node` is the allocation's own pointer (an owner's,
/// or a slot's), never one derived from a `&Node`: the epoch's put may free the block
/// through it, and a shared reference's tag covers only the header, read-only, so a
/// free through it would be undefined behaviour (Miri's Tree Borrows reports it).
#[inline]
pub(crate) unsafe fn begin<K, T>(node: *const Node<K, T>, old: usize) -> Option<Grace<K, T>> {
    if old & crate::node::BORROWED == 0 {
        return None;
    }
    // SAFETY: the caller owns the node, so it is allocated.
    let units = unsafe { &*node }.begin_grace();
    Some(Grace { node, units })
}

impl<K, T> Grace<K, T> {
    /// Hands the grace period to the epoch: once every thread pinned now has unpinned,
    /// the epoch's reference is put, on whichever thread collects (waking drainers, or
    /// dropping `T` if the owner is gone). Flushes, so that the deferred put is in the
    /// global queue at once and any thread's collection — the drainer's first of all —
    /// can run it. Runs the collector (user code): never call it under a shard lock.
    pub(crate) fn defer(self) {
        let Grace { node, units } = self;
        let guard = sync::pin();
        // SAFETY: the grace's reference keeps the node allocated until `end` puts it, once.
        // The closure may run on any thread and may drop `T` there: only nodes of tables
        // whose `T: Send + 'static` can be read borrowed (`ResTable::pin`'s bounds), so
        // only they get here; `K: Send + 'static` is every insert's bound.
        unsafe { guard.defer_unchecked(move || end(node, units)) };
        guard.flush();
    }
}

/// The epoch's put of a grace period's reference. If it was the last holder's (the
/// owner let go), drops `T` and frees the node here, on the collecting thread; a
/// panicking `T::drop` is contained there as a `K::drop` is (see `Node::dispose`): the
/// node is freed regardless, and the unrelated call that collected goes on.
///
/// Freed at once, not retired through the epoch again: this runs a grace period after
/// the kill unlinked the node (the grace was deferred after the unlink), so no pinned
/// thread can still hold a pointer to it from the index. If the node was revived and
/// killed again, the last of its grace periods to end — the only one that can be the
/// last holder — ends after the newest unlink's grace period. (Deferring again from
/// inside the collector also failed when the collector itself was being torn down.)
///
/// # Safety
/// `units` are what `Node::begin_grace` added to this node's word, given up once.
unsafe fn end<K, T>(node: *const Node<K, T>, units: usize) {
    // SAFETY: the caller's contract.
    if let Release::Last = unsafe { Node::end_grace(node, units) } {
        // SAFETY: `Last`: nobody else holds the node or reads its value; it is killed,
        // unlinked, and past its grace period (above), so nothing can reach it.
        unsafe {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| node::drop_value(node)));
            Node::free(node.cast_mut());
        }
    }
}

/// A drainer's side of a grace period: pushes the epoch forward while the node it waits
/// for has one pending, with backoff, and says when to look again.
pub(crate) struct Driver {
    /// The pause before the next push.
    backoff: Duration,
}

/// How many flushes a drainer makes back to back before its first pause: three advance
/// the epoch past a grace period when no other thread holds it back.
const EAGER_FLUSHES: u32 = 3;

/// How many more flushes a drainer makes, a few spins apart, before its first timed
/// pause: a reader on another core has a few microseconds to end its guard (a batch of
/// lookups takes about that), where even the shortest sleep would wait for the
/// scheduler. Yielding instead would hand the core to a reader that shares it, but
/// with more threads than cores the scheduler then runs the drainer again only after a
/// whole time slice (measured: 4 ms, against 0.1 ms for the pause). Under loom,
/// `spin_hint` yields already.
#[cfg(not(loom))]
const SPINNING_FLUSHES: u32 = 32;
#[cfg(loom)]
const SPINNING_FLUSHES: u32 = 0;

/// Spins between two of those flushes.
const SPINS_PER_FLUSH: u32 = 16;

impl Driver {
    pub(crate) fn new() -> Self {
        Driver {
            backoff: sync::GRACE_BACKOFF_MIN,
        }
    }

    /// Pushes the epoch, and returns when the drainer should push again if it is still
    /// waiting. `pending` says whether the grace period is still pending.
    ///
    /// A thread that is itself pinned holds the epoch back: if the grace period is still
    /// pending after it pushed as far as its pin lets it, an untimed drain (`untimed`)
    /// panics, naming the cause, since it might never end; a timed one goes on until its
    /// deadline.
    pub(crate) fn push(&mut self, untimed: bool, pending: impl Fn() -> bool) -> Instant {
        if self.backoff == sync::GRACE_BACKOFF_MIN {
            push_eagerly(&pending);
            for _ in 0..SPINNING_FLUSHES {
                if !pending() {
                    break;
                }
                for _ in 0..SPINS_PER_FLUSH {
                    sync::spin_hint();
                }
                sync::flush();
            }
        } else {
            sync::flush();
        }
        if untimed && pending() && sync::is_pinned() {
            drain_while_pinned();
        }
        // Under loom there is no clock: a timed park returns at once, so the drainer
        // yields here to let the readers it waits for run.
        sync::spin_hint();
        let next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(sync::GRACE_BACKOFF_MAX);
        next
    }
}

/// Flushes the epoch a few times back to back, while `pending` says the grace period is
/// not over: enough to end it when no other thread holds the epoch back. Never blocks.
pub(crate) fn push_eagerly(pending: impl Fn() -> bool) {
    for _ in 0..EAGER_FLUSHES {
        sync::flush();
        if !pending() {
            return;
        }
    }
}

/// An untimed drain of a borrowed object while the draining thread is pinned. See
/// `docs/implementation.md`, "the self-deadlock".
#[cold]
#[inline(never)]
fn drain_while_pinned() -> ! {
    panic!(
        "restable: drain of an object that was read borrowed, while this thread is pinned \
         (inside a table guard from `ResTable::pin`, a `read_section`, or an `iter`): the \
         drain waits for a grace period, which this thread's own pin holds back, so it could \
         wait forever; drop the guard first, or use `drain_timeout`"
    );
}
