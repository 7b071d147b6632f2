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
use crate::recycle::Block;
use crate::sync::{self, AtomicUsize, Ordering, Parked};
use std::alloc::{self, Layout};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
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

/// One object and the keys it answers to: the header of a single allocation that also
/// holds the keys and one index entry per key,
///
/// ```text
/// [ Node: state, keys, entries, len, value ][ K; len ][ Entry; len ]
/// ```
///
/// so an insert allocates once and a kill frees once, and a lookup that finds an entry
/// finds its key and state word in the same block. The node is only ever handled through
/// raw pointers that cover the whole block (from the allocation); `keys` and `entries`
/// are such pointers too, so `&Node` can reach the arrays behind it.
pub(crate) struct Node<K, T> {
    state: AtomicUsize,
    keys: NonNull<K>,
    /// Entry `i` is key `i`'s; each carries the key's hash, so kill needs no hasher.
    entries: NonNull<Entry<K, Node<K, T>>>,
    len: usize,
    /// Moved out by the drain or dropped by the last holder; never by `free`.
    value: ManuallyDrop<T>,
}

/// Where the arrays sit in a node's block, for a given number of keys.
struct Blocks {
    layout: Layout,
    keys: usize,
    entries: usize,
}

/// A block whose keys are being written: if a key's clone or hash panics, drops the
/// keys written so far and frees the block (the value, not yet moved in, unwinds with
/// the caller).
struct Building<K> {
    base: NonNull<u8>,
    layout: Layout,
    keys: NonNull<K>,
    written: usize,
}

impl<K> Drop for Building<K> {
    fn drop(&mut self) {
        // SAFETY: the first `written` keys were written and nothing else refers to the
        // block, which `alloc::alloc` made with `layout`.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                self.keys.as_ptr(),
                self.written,
            ));
            alloc::dealloc(self.base.as_ptr(), self.layout);
        }
    }
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
    fn blocks(len: usize) -> Blocks {
        // `len` is at most `MAX_KEYS`, so only a key type of absurd size overflows.
        let overflow = "restable: node size overflows isize";
        let header = Layout::new::<Self>();
        let (layout, keys) = header
            .extend(Layout::array::<K>(len).expect(overflow))
            .expect(overflow);
        let (layout, entries) = layout
            .extend(Layout::array::<Entry<K, Self>>(len).expect(overflow))
            .expect(overflow);
        Blocks {
            layout: layout.pad_to_align(),
            keys,
            entries,
        }
    }

    /// The layout of the block of a node with `len` keys.
    pub(crate) fn layout(len: usize) -> Layout {
        Self::blocks(len).layout
    }

    /// A node that is owned but not yet live (no `get` can take a reference to it), with
    /// an index entry for each key; `hashes[i]` is `keys[i]`'s hash. It is built in
    /// `block` (a recycled block with `layout(keys.len())`) or in a new allocation. If
    /// cloning a key panics, the block is freed and `value` dropped on the way out.
    pub(crate) fn new_in(
        block: Option<NonNull<u8>>,
        keys: &[K],
        hashes: &[u64],
        value: T,
    ) -> NonNull<Self>
    where
        K: Clone,
    {
        debug_assert_eq!(keys.len(), hashes.len());
        let blocks = Self::blocks(keys.len());
        let base = block.unwrap_or_else(|| {
            // SAFETY: the layout is never zero-sized (the header holds the state word).
            let base = unsafe { alloc::alloc(blocks.layout) };
            NonNull::new(base).unwrap_or_else(|| alloc::handle_alloc_error(blocks.layout))
        });
        // SAFETY: both offsets lie inside the block, as `blocks` computed them.
        let (at_keys, at_entries) = unsafe {
            (
                base.add(blocks.keys).cast::<K>(),
                base.add(blocks.entries).cast::<Entry<K, Self>>(),
            )
        };
        let node = base.cast::<Self>();
        let mut building = Building {
            base,
            layout: blocks.layout,
            keys: at_keys,
            written: 0,
        };
        for (i, (key, &entry_hash)) in keys.iter().zip(hashes).enumerate() {
            // SAFETY: slot `i` of each array is inside the block and not yet written;
            // `building` drops the keys written so far if a later clone panics.
            unsafe {
                let key_at = at_keys.add(i);
                key_at.write(key.clone());
                building.written = i + 1;
                at_entries
                    .add(i)
                    .write(Entry::new(entry_hash, key_at.as_ptr(), node.as_ptr()));
            }
        }
        std::mem::forget(building);
        // SAFETY: the header is inside the block and not yet written.
        unsafe {
            node.write(Node {
                state: AtomicUsize::new(OWNED),
                keys: at_keys,
                entries: at_entries,
                len: keys.len(),
                value: ManuallyDrop::new(value),
            })
        };
        node
    }

    /// The value of a node that was never published (its insert failed); frees the node.
    ///
    /// # Safety
    /// `node` came from `new_in`, was never linked, and is not used again.
    pub(crate) unsafe fn into_value(node: NonNull<Self>) -> T {
        // SAFETY: nobody else ever saw the node; the value is moved out before `free`,
        // which leaves it alone.
        unsafe {
            debug_assert_eq!(node.as_ref().state(), OWNED);
            let value = ptr::read(&*node.as_ref().value);
            Self::free(node.as_ptr());
            value
        }
    }

    /// Drops the header and the keys and frees the block; leaves the value alone.
    ///
    /// # Safety
    /// As for [`Node::dispose`].
    pub(crate) unsafe fn free(node: *mut Self) {
        // SAFETY: the caller's contract.
        unsafe { Self::dispose(node) }.free()
    }

    /// Drops the header and the keys and returns the block, for reuse or freeing;
    /// leaves the value alone.
    ///
    /// # Safety
    /// `node` came from `new_in`, nothing will touch it again, and its value has been
    /// moved out or dropped.
    pub(crate) unsafe fn dispose(node: *mut Self) -> Block {
        // SAFETY: the caller's contract; `len` and the array pointers describe the block
        // `new_in` built, whose entries need no drop beyond their own fields.
        unsafe {
            let len = (*node).len;
            let (keys, entries) = ((*node).keys, (*node).entries);
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(entries.as_ptr(), len));
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(keys.as_ptr(), len));
            ptr::drop_in_place(node);
            Block {
                ptr: NonNull::new_unchecked(node.cast()),
                layout: Self::blocks(len).layout,
            }
        }
    }

    pub(crate) fn keys(&self) -> &[K] {
        // SAFETY: `alloc` wrote `len` keys there; they live as long as the node.
        unsafe { std::slice::from_raw_parts(self.keys.as_ptr(), self.len) }
    }

    /// The hash that picks the node's home shard, its first key's: the shard that counts
    /// the node among the table's objects and that its block goes back to.
    pub(crate) fn home(&self) -> u64 {
        self.entries()[0].hash()
    }

    /// The node's index entries, one per key.
    pub(crate) fn entries(&self) -> &[Entry<K, Node<K, T>>] {
        // SAFETY: `alloc` wrote `len` entries there; they live as long as the node.
        unsafe { std::slice::from_raw_parts(self.entries.as_ptr(), self.len) }
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

/// Moves `T` out of a drained node.
///
/// # Safety
/// The caller holds the node's owner, the node is killed and unlinked, `wait_for_refs`
/// has returned true, and the node is retired right after (never read again).
pub(crate) unsafe fn take_value<K, T>(node: *const Node<K, T>) -> T {
    // SAFETY: no `Ref` exists and none can be made (not live), and the owner is being
    // consumed, so nobody reads the value concurrently or afterwards.
    unsafe { ptr::read(&*(*node).value) }
}

/// Drops `T` in place, for whoever got [`Release::Last`].
///
/// # Safety
/// The caller got `Release::Last` for this node (so it is killed, unlinked, and nobody
/// else holds it), and the node is retired right after.
pub(crate) unsafe fn drop_value<K, T>(node: *const Node<K, T>) {
    // SAFETY: the caller is the last holder of any kind; the value is still in place and
    // nothing else reads or drops it.
    unsafe { ptr::drop_in_place(ptr::addr_of!((*node).value).cast_mut().cast::<T>()) }
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

    /// A test's node, freed (value included) when the test ends.
    struct Owned<T>(NonNull<Node<u32, T>>);

    impl<T> Owned<T> {
        fn new(keys: &[u32], value: T) -> Self {
            Owned(Node::new_in(None, keys, &vec![0; keys.len()], value))
        }
    }

    impl<T> std::ops::Deref for Owned<T> {
        type Target = Node<u32, T>;
        fn deref(&self) -> &Node<u32, T> {
            // SAFETY: freed only by our drop.
            unsafe { self.0.as_ref() }
        }
    }

    impl<T> Drop for Owned<T> {
        fn drop(&mut self) {
            // SAFETY: the tests never link the node; nothing else has it.
            unsafe {
                ManuallyDrop::drop(&mut (*self.0.as_ptr()).value);
                Node::free(self.0.as_ptr());
            }
        }
    }

    #[test]
    fn bits_are_disjoint() {
        assert_eq!(LIVE & OWNED, 0);
        assert_eq!((LIVE | OWNED) & PARKED, 0);
        assert_eq!((LIVE | OWNED | PARKED) & REFS, 0);
        assert_eq!(LIVE | OWNED | PARKED | REFS, usize::MAX);
    }

    #[test]
    fn get_needs_live() {
        let node = Owned::new(&[1u32], "v");
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
        let node = Owned::new(&[1u32], 5u8);
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
        let node = Owned::new(&[1u32], ());
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
