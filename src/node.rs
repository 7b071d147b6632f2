//! The node: one tracked object, its keys, and the state word that counts its holders.
//!
//! Every transition of an object's life is one atomic read-modify-write on
//! [`Node::state`], so "is it reachable", "how many references are out", "is a drainer
//! asleep" and "who drops `T`" are always answered by one consistent value. The bits:
//!
//! ```text
//!  63     62      61       60 ..................................... 0
//! +------+-------+--------+------------------------------------------+
//! | LIVE | OWNED | PARKED |                 refs                     |
//! +------+-------+--------+------------------------------------------+
//! ```
//!
//! The orderings are argued in the crate documentation; each call site repeats the short
//! version.

use crate::index::Entry;
use crate::sync::{self, AtomicUsize, Ordering, Parked, Shared};
use std::mem::ManuallyDrop;
use std::ptr;
use std::time::Instant;

/// Set while `get` may hand out new references. Set once, by the insert that publishes
/// the node (its linearization point); cleared once, by `kill` (its linearization
/// point). Never set on a node whose insert failed.
pub(crate) const LIVE: usize = 1 << (usize::BITS - 1);

/// Set while an `Owner` or `Dying` exists for the node: it, not the last reference, will
/// take or drop `T`. Cleared when that handle is dropped without draining.
pub(crate) const OWNED: usize = 1 << (usize::BITS - 2);

/// Set by a drainer that is about to sleep (or sleeps) until the last reference goes:
/// whoever drops the reference count to zero must wake it.
pub(crate) const PARKED: usize = 1 << (usize::BITS - 3);

/// One outstanding `Ref`.
pub(crate) const REF: usize = 1;

/// The bits that count outstanding `Ref`s.
pub(crate) const REFS: usize = PARKED - 1;

/// More references than this is a leak (e.g. `mem::forget` in a loop), not a workload;
/// we refuse rather than let the count run into the flag bits.
const MAX_REFS: usize = REFS >> 1;

/// One object and the keys it answers to.
pub(crate) struct Node<K, T> {
    state: AtomicUsize,
    keys: Box<[K]>,
    /// One index entry per key, in the order of `keys`, allocated with the node and
    /// freed with it; each carries the key's hash, so kill needs no hasher.
    entries: Box<[Entry<K, Node<K, T>>]>,
    /// Moved out by the drain or dropped by the last holder; never by `Node`'s own drop.
    value: ManuallyDrop<T>,
}

/// What a put-ref (or an abandon) left for its caller to do.
#[must_use]
pub(crate) enum Release {
    /// Somebody else still holds the node.
    Held,
    /// The caller was the last holder and the owner is gone: drop `T`, free the node.
    Last,
}

impl<K, T> Node<K, T> {
    /// A node that is owned but not yet live (no `get` can take a reference to it), with
    /// an index entry for each key, hashed by `hash`.
    pub(crate) fn boxed(keys: &[K], hash: impl Fn(&K) -> u64, value: T) -> Box<Self>
    where
        K: Clone,
    {
        let entries = keys
            .iter()
            .map(|key| Entry::new(hash(key), key.clone(), std::ptr::null()))
            .collect();
        let mut node = Box::new(Node {
            state: AtomicUsize::new(OWNED),
            keys: keys.into(),
            entries,
            value: ManuallyDrop::new(value),
        });
        let at: *const Self = &*node;
        for entry in node.entries.iter_mut() {
            entry.set_node(at);
        }
        node
    }

    /// The value of a node that was never published (its insert failed).
    #[allow(clippy::boxed_local)] // the node lives in a Box from its birth
    pub(crate) fn into_value(self: Box<Self>) -> T {
        debug_assert_eq!(self.state(), OWNED);
        ManuallyDrop::into_inner(self.value)
    }

    pub(crate) fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The node's index entries, one per key.
    pub(crate) fn entries(&self) -> &[Entry<K, Node<K, T>>] {
        &self.entries
    }

    pub(crate) fn value(&self) -> &T {
        &self.value
    }

    /// The raw state word (for `Debug` and tests).
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Relaxed)
    }

    pub(crate) fn refs(&self) -> usize {
        self.state.load(Ordering::Acquire) & REFS
    }

    pub(crate) fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) & LIVE != 0
    }

    /// Insert's linearization point. Called with every key linked and the shard locks
    /// still held. A plain store is enough: while `LIVE` is clear nobody else writes the
    /// word (`get` only reads it, and there are no references to put). `Release` so that
    /// a reader whose `get` succeeds also sees every key's index entry and `T` itself.
    pub(crate) fn publish(&self) {
        debug_assert_eq!(self.state(), OWNED);
        self.state.store(OWNED | LIVE, Ordering::Release);
    }

    /// Get-ref: takes a reference if the node is live. Lock-free: it retries only when
    /// another thread changed the word in between, and never waits for one.
    ///
    /// `Acquire` on success pairs with `publish`'s `Release`: the new holder sees the
    /// fully built object. A failed attempt reads nothing else of the node.
    #[inline]
    pub(crate) fn try_get(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LIVE == 0 {
                return false;
            }
            check_refs(state);
            match self.state.compare_exchange_weak(
                state,
                state + REF,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Takes one more reference on behalf of a holder that already has one, so the node
    /// cannot reach zero meanwhile: `Relaxed` is enough (as in `Arc::clone`).
    pub(crate) fn clone_ref(&self) {
        let old = self.state.fetch_add(REF, Ordering::Relaxed);
        check_refs(old);
    }

    /// Put-ref. `Release` so that everything the holder did with `T` happens before the
    /// drainer (which loads the word with `Acquire`) takes `T`, and before the last holder
    /// drops it; the `Acquire` fence on the last-holder path completes that pairing, as in
    /// `Arc::drop`.
    ///
    /// After the decrement the caller may touch the node only if it gets `Last`: an owner
    /// that drains may free it at any moment. Waking a parked drainer touches only the
    /// parking lot, keyed by the node's address.
    #[inline]
    pub(crate) fn put(&self) -> Release {
        let old = self.state.fetch_sub(REF, Ordering::Release);
        debug_assert!(old & REFS != 0, "put-ref without a reference");
        if old & REFS != REF {
            return Release::Held;
        }
        self.last_put(old)
    }

    #[cold]
    fn last_put(&self, old: usize) -> Release {
        if old & PARKED != 0 {
            sync::unpark_all(self.wait_key());
            return Release::Held;
        }
        if old & OWNED != 0 {
            return Release::Held;
        }
        sync::fence(Ordering::Acquire);
        Release::Last
    }

    /// Kill's linearization point: no `get` succeeds after this. `AcqRel` costs nothing
    /// extra on the control path; what the guarantee needs is that this write is in the
    /// word's modification order before the index entries are unlinked (program order plus
    /// the index's `Release` stores give that to any reader that sees the unlink).
    /// Returns whether the node was live (false only for a node that was never published).
    pub(crate) fn kill(&self) -> bool {
        self.state.fetch_and(!LIVE, Ordering::AcqRel) & LIVE != 0
    }

    /// The owner lets go without draining: `T` goes to whoever is last. `AcqRel`: release
    /// for a last holder that will drop `T`, acquire in case this call is the last one.
    pub(crate) fn abandon(&self) -> Release {
        let old = self.state.fetch_and(!OWNED, Ordering::AcqRel);
        debug_assert!(old & LIVE == 0, "abandon before kill");
        if old & REFS == 0 {
            Release::Last
        } else {
            Release::Held
        }
    }

    /// Waits until no reference is out, or until `deadline`. Returns whether the node is
    /// now free of references; once it is, it stays so (the node is not live, and only a
    /// holder can make a new reference).
    ///
    /// The `Acquire` load that sees zero synchronizes with every put's `Release` (they
    /// form one release sequence on this word), so the caller may then take `T`.
    pub(crate) fn wait_for_refs(&self, deadline: Option<Instant>) -> bool {
        debug_assert!(
            self.state() & (LIVE | OWNED) == OWNED,
            "drain needs kill and owner"
        );
        for _ in 0..sync::DRAIN_SPINS {
            if self.refs() == 0 {
                return true;
            }
            sync::spin_hint();
        }
        loop {
            if self.refs() == 0 {
                return true;
            }
            // The lot runs `validate` under its lock and the last put's `unpark_all` takes
            // the same lock after its decrement, so either `validate` sees zero and we do
            // not sleep, or the put sees `PARKED` and wakes us: no lost wake-up.
            let parked = sync::park(
                self.wait_key(),
                || self.set_parked(),
                || {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                },
                deadline,
            );
            if parked == Parked::TimedOut {
                return self.refs() == 0;
            }
        }
    }

    /// The drainer's `validate`: sets `PARKED` and says whether references are still out
    /// (whether to sleep). `Relaxed` is enough: the put that drops the last reference is
    /// an RMW on the same word, so it either comes first (we see zero and stay awake) or
    /// sees `PARKED` (and wakes us through the lot's lock, which we hold here).
    fn set_parked(&self) -> bool {
        let old = self.state.fetch_or(PARKED, Ordering::Relaxed);
        old & REFS != 0
    }

    fn wait_key(&self) -> usize {
        self as *const Self as usize
    }
}

/// Moves `T` out of a drained node and frees the node.
///
/// # Safety
/// The caller holds the node's owner (consumed by this call), the node is killed and
/// unlinked, and `wait_for_refs` has returned true.
pub(crate) unsafe fn take_and_retire<K, T>(node: *const Node<K, T>) -> T {
    // SAFETY: no `Ref` exists and none can be made (not live), and the owner is consumed,
    // so nobody reads the value concurrently or afterwards.
    let value = unsafe { ptr::read(&*(*node).value) };
    // SAFETY: the value was moved out just above; see `retire`.
    unsafe { retire(node) };
    value
}

/// Drops `T` and frees the node, for whoever got [`Release::Last`].
///
/// # Safety
/// The caller got `Release::Last` for this node (so it is killed, unlinked, and nobody
/// else holds it) and does not touch it afterwards.
pub(crate) unsafe fn drop_and_retire<K, T>(node: *const Node<K, T>) {
    // SAFETY: the caller is the last holder of any kind; the value is still in place and
    // nothing else reads or drops it.
    unsafe { ptr::drop_in_place(ptr::addr_of!((*node).value).cast_mut().cast::<T>()) };
    // SAFETY: the value was dropped just above; see `retire`.
    unsafe { retire(node) };
}

/// Frees a node once no pinned reader can still be looking at its state word.
///
/// # Safety
/// The node is unreachable from the index (all its entries unlinked), nothing will touch
/// it again, and its value has been moved out or dropped (`Node` never drops it).
unsafe fn retire<K, T>(node: *const Node<K, T>) {
    let guard = sync::pin();
    // SAFETY: only epoch-pinned readers that loaded the pointer from the index before it
    // was unlinked can still see the node; `defer_destroy` waits for them.
    unsafe { guard.defer_destroy(Shared::from(node)) }
}

#[inline]
fn check_refs(state: usize) {
    if state & REFS >= MAX_REFS {
        too_many_refs();
    }
}

#[cold]
#[inline(never)]
fn too_many_refs() -> ! {
    panic!("restable: reference count overflow (references leaked with mem::forget?)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_disjoint() {
        assert_eq!(LIVE & OWNED, 0);
        assert_eq!((LIVE | OWNED) & PARKED, 0);
        assert_eq!((LIVE | OWNED | PARKED) & REFS, 0);
        assert_eq!(LIVE | OWNED | PARKED | REFS, usize::MAX);
    }

    #[test]
    fn get_needs_live() {
        let node = Node::boxed(&[1u32], |_| 0, "v");
        assert!(!node.try_get(), "unpublished node handed out a reference");
        node.publish();
        assert!(node.try_get());
        assert_eq!(node.refs(), 1);
        assert!(node.kill());
        assert!(!node.try_get(), "killed node handed out a reference");
        assert!(matches!(node.put(), Release::Held), "owner still holds it");
        assert_eq!(node.refs(), 0);
    }

    #[test]
    fn last_holder_after_abandon_is_told() {
        let node = Node::boxed(&[1u32], |_| 0, 5u8);
        node.publish();
        assert!(node.try_get());
        node.clone_ref();
        node.kill();
        assert!(matches!(node.abandon(), Release::Held));
        assert!(matches!(node.put(), Release::Held));
        assert!(matches!(node.put(), Release::Last));
    }

    #[test]
    fn wait_times_out_with_a_reference_out() {
        let node = Node::boxed(&[1u32], |_| 0, ());
        node.publish();
        assert!(node.try_get());
        node.kill();
        assert!(!node.wait_for_refs(Some(Instant::now())));
        assert_eq!(
            node.state() & PARKED,
            0,
            "a timed-out drainer left PARKED set"
        );
        assert!(matches!(node.put(), Release::Held));
        assert!(node.wait_for_refs(None));
    }
}
