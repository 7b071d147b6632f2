//! The node: one tracked object, its keys, and the state word that counts its holders.
//!
//! Every transition of an object's life is one atomic read-modify-write on
//! [`Node::state`], so "is it reachable", "how many references are out", "is a drainer
//! asleep" and "who drops `T`" are always answered by one consistent value. The bits:
//!
//! ```text
//!  63     62      61       60         59         58 ...... 43   42 ............. 0
//! +------+-------+--------+----------+----------+-------------+------------------+
//! | LIVE | OWNED | PARKED | DETACHED | BORROWED |   graces    |       refs       |
//! +------+-------+--------+----------+----------+-------------+------------------+
//! ```
//!
//! (On 32-bit targets `graces` is 6 bits wide.) The orderings are argued in
//! `docs/implementation.md`; each call site repeats the short version.

use crate::block::Block;
use crate::index::Keyed;
use crate::sync::{self, AtomicUsize, Ordering, Parked};
use crate::table::MAX_KEYS;
use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::time::Instant;

/// Set while `get` may hand out new references. Set by the insert that publishes the
/// node (its linearization point), cleared by `kill` or `remove` (theirs); set again
/// only by `revive`, which re-links every key first. Never set on a node whose insert
/// failed.
pub(crate) const LIVE: usize = 1 << (usize::BITS - 1);

/// Set while an `Owner` or `Dying` exists for the node: it, not the last reference, will
/// take or drop `T`. Cleared when that handle is dropped without draining.
pub(crate) const OWNED: usize = 1 << (usize::BITS - 2);

/// Set by a drainer (a thread, or an async task through its waker) that is about to
/// sleep or sleeps until the last reference goes: whoever drops the reference count to
/// zero while the owner still exists must wake every drainer of the node. Never cleared:
/// several threads may wait on one `&Dying`, and a waiter that times out or a cancelled
/// async drain cannot know whether another still sleeps, so clearing it could strand
/// that one; left set, it costs the last put one wake of nobody. Meaningless once
/// `OWNED` is clear.
pub(crate) const PARKED: usize = 1 << (usize::BITS - 3);

/// Set (with `OWNED` and `LIVE`) while the table itself owns the node: its `Owner` was
/// detached, and `remove` by any of its keys claims it — clearing `LIVE` and this bit in
/// one CAS, so of two racing removes exactly one gets the `Dying`.
pub(crate) const DETACHED: usize = 1 << (usize::BITS - 4);

/// Set by the first borrowed read of the node (`Pinned::get`), only while `LIVE`, and
/// never cleared: some thread may have read the value without a reference, so a kill
/// or remove must give the node a grace period (see [`crate::grace`]) before anyone
/// takes or drops `T`. A node never read borrowed has it clear and pays nothing.
pub(crate) const BORROWED: usize = 1 << (usize::BITS - 5);

/// How many bits count pending grace periods: plenty for the kill/revive cycles that
/// can overlap one pinned reader's section, while leaving `refs` 43 bits (21 on 32-bit
/// targets).
const GRACE_BITS: u32 = if usize::BITS == 64 { 16 } else { 6 };

/// One pending grace period: the epoch holds a reference (counted in `refs` too, as one
/// [`REF`]) until every thread that was pinned at the kill has unpinned.
pub(crate) const GRACE: usize = 1 << (usize::BITS - 5 - GRACE_BITS);

/// The bits that count pending grace periods.
pub(crate) const GRACES: usize = BORROWED - GRACE;

/// One outstanding reference: a `Ref`, an `OwnedRef`, or a pending grace period's.
pub(crate) const REF: usize = 1;

/// The bits that count outstanding references.
pub(crate) const REFS: usize = GRACE - 1;

/// More references than this is a leak (e.g. `mem::forget` in a loop), not a workload;
/// we refuse rather than let the count run into the flag bits.
const MAX_REFS: usize = REFS >> 1;

/// One object and the keys it answers to: the header of a single allocation that also
/// holds the keys, their hashes and the value,
///
/// ```text
/// [ Node: state, len, line, value offset ][ K; len ][ u64; len ][ T ]
/// ```
///
/// so an insert allocates once and a kill frees once, and a lookup that finds a key's
/// slot in the index finds the state word and (for keys of a few words) the key in the
/// node's first cache line. The header is two words: the hashes (each key's, so kill
/// and index growth need no hasher) start right after the keys, and are found by
/// computing that offset again from the key count ([`Node::hashes_at`]). The block is
/// aligned to at least [`NODE_ALIGN`], so the index can keep a key's position in the low
/// bits of the node's address. Its size is not rounded up to that alignment: a node of
/// one `u64` key and a `u64` value takes 40 bytes, a 48-byte chunk for glibc's `malloc`,
/// where rounding made it 64. In a cache-aligned table nodes of up to eight lines are
/// instead carved from their shard's pages as whole lines (see [`crate::block`]): that
/// node then fills a line of its own, holding its state word, key and value, which no
/// neighbour shares. The node is only ever handled through raw pointers that cover the
/// whole block (from the allocation), so `&Node` can reach the arrays behind it.
#[repr(C)]
pub(crate) struct Node<K, T> {
    state: AtomicUsize,
    /// How many keys.
    len: u16,
    /// Where the block sits in its page ([`Block::line`]), for whoever frees it.
    line: u16,
    /// Where the value sits, from the start of the block. Moved out by the drain or
    /// dropped by the last holder; never by `free`.
    value_at: u32,
    _owns: PhantomData<(K, T)>,
}

/// The alignment of every node block: the index stores a key's position (below
/// `MAX_KEYS`) in the low bits of its node's address.
pub(crate) const NODE_ALIGN: usize = MAX_KEYS;

/// The smallest node block: what a retired block needs to carry its recycling link
/// (see [`crate::recycle`]), whatever the node's types.
const MIN_BLOCK: usize = crate::recycle::LINK_SIZE;

const _: () = assert!(
    NODE_ALIGN >= crate::recycle::LINK_ALIGN,
    "every node block is aligned enough to carry a recycling link"
);

const _: () = assert!(
    MAX_KEYS <= u16::MAX as usize,
    "a key count fits the header's `len`"
);

/// An insert's own clones of its keys, made before it takes any shard lock: `K::clone`
/// is user code, which may panic or block, and must not run under a lock. Moved into the
/// node's block (a plain copy, leaving this empty) once the insert has checked its keys;
/// dropped with whatever is left, on the caller's thread, outside any lock.
pub(crate) struct ClonedKeys<K> {
    keys: [MaybeUninit<K>; MAX_KEYS],
    /// How many of `keys`, from the front, are initialized and ours.
    len: usize,
}

impl<K: Clone> ClonedKeys<K> {
    /// Clones `keys` in after the ones held (up to `MAX_KEYS` in all). If a clone panics,
    /// the ones made so far are dropped on the way out. The caller makes the set with
    /// [`ClonedKeys::empty`] and clones into it where it lies: a filled set returned by
    /// value was copied whole, all `MAX_KEYS` slots, through a `memcpy` call, on every
    /// insert.
    #[inline]
    pub(crate) fn clone_in(&mut self, keys: &[K]) {
        for (slot, key) in self.keys[self.len..].iter_mut().zip(keys) {
            slot.write(key.clone());
            self.len += 1;
        }
    }
}

impl<K> ClonedKeys<K> {
    /// A set with no keys yet (nothing to copy when it is returned: its slots are
    /// uninitialized).
    #[inline]
    pub(crate) fn empty() -> Self {
        ClonedKeys {
            keys: [const { MaybeUninit::uninit() }; MAX_KEYS],
            len: 0,
        }
    }

    /// Takes key `i` out; the others stay to be dropped.
    pub(crate) fn take(mut self, i: usize) -> K {
        assert!(i < self.len, "restable: cloned key {i} out of range");
        // SAFETY: `i < len`, so the slot is initialized; swapping the last initialized
        // key into it and shrinking `len` keeps `keys[..len]` exactly the ones we own.
        unsafe {
            let key = self.keys[i].assume_init_read();
            self.len -= 1;
            let last = self.keys[self.len].as_ptr();
            ptr::copy(last, self.keys[i].as_mut_ptr(), 1);
            key
        }
    }
}

impl<K> Drop for ClonedKeys<K> {
    fn drop(&mut self) {
        // SAFETY: `keys[..len]` are initialized and ours.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                self.keys.as_mut_ptr().cast::<K>(),
                self.len,
            ))
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
    /// The block's alignment: the header's, raised to [`NODE_ALIGN`], and the arrays'.
    const ALIGN: usize = {
        // Neither `Ord::max` nor `for` work in a `const` yet.
        let aligns = [
            align_of::<Self>(),
            align_of::<K>(),
            align_of::<u64>(),
            align_of::<T>(),
        ];
        let (mut align, mut i) = (NODE_ALIGN, 0);
        while i < aligns.len() {
            if aligns[i] > align {
                align = aligns[i];
            }
            i += 1;
        }
        align
    };

    /// Whether the block of a node with `MAX_KEYS` keys, the largest there is, has a size
    /// that fits the `u32` offsets of the header (and, rounded up to [`Node::ALIGN`], a
    /// `Layout`). Evaluated once per type, at compile time; false only for key or value
    /// types of absurd size.
    const FITS: bool = match Self::end_checked(MAX_KEYS) {
        Some(size) => {
            let layout_max = isize::MAX as usize - (Self::ALIGN - 1);
            size <= u32::MAX as usize && size <= layout_max
        }
        None => false,
    };

    /// Where the keys start: right after the header, rounded up to `K`'s alignment.
    #[inline]
    const fn keys_at() -> usize {
        size_of::<Self>().next_multiple_of(align_of::<K>())
    }

    /// Where the hashes of a node with `len` keys start: after the keys, rounded up to a
    /// `u64`'s alignment.
    #[inline]
    const fn hashes_at(len: usize) -> usize {
        (Self::keys_at() + len * size_of::<K>()).next_multiple_of(align_of::<u64>())
    }

    /// Where the value of a node with `len` keys starts: after the hashes, rounded up to
    /// `T`'s alignment.
    #[inline]
    const fn value_at(len: usize) -> usize {
        (Self::hashes_at(len) + len * size_of::<u64>()).next_multiple_of(align_of::<T>())
    }

    /// The end of the value of a node with `len` keys (the block's size), `None` if the
    /// arithmetic overflows: [`Node::FITS`]'s check of the offsets above.
    const fn end_checked(len: usize) -> Option<usize> {
        let Some(keys) = len.checked_mul(size_of::<K>()) else {
            return None;
        };
        let Some(keys_end) = Self::keys_at().checked_add(keys) else {
            return None;
        };
        let Some(hashes) = keys_end.checked_next_multiple_of(align_of::<u64>()) else {
            return None;
        };
        let Some(hashes_end) = hashes.checked_add(len * size_of::<u64>()) else {
            return None;
        };
        let Some(value) = hashes_end.checked_next_multiple_of(align_of::<T>()) else {
            return None;
        };
        value.checked_add(size_of::<T>())
    }

    /// The layout of the block of a node with `len` keys (at most `MAX_KEYS`). Plain
    /// arithmetic on constants of the types, so it costs a few instructions: the
    /// overflow checks were done once, in [`Node::FITS`].
    ///
    /// The size is at least [`MIN_BLOCK`]: a retired block carries its recycling link
    /// over its start (a node of no-size keys and a small value is smaller than that
    /// link; recycling one used to panic in the epoch's collector, on whatever thread
    /// collected: issue 22).
    #[inline]
    fn layout(len: usize) -> Layout {
        assert!(Self::FITS, "restable: node size overflows u32");
        debug_assert!(len <= MAX_KEYS);
        let size = (Self::value_at(len) + size_of::<T>()).max(MIN_BLOCK);
        // SAFETY: `ALIGN` is a power of two (the largest of several), and `FITS` (checked
        // above, for the largest `len`) bounds `size` rounded up to it by `isize::MAX`.
        unsafe { Layout::from_size_align_unchecked(size, Self::ALIGN) }
    }

    /// A node that is owned but not yet live (no `get` can take a reference to it);
    /// `hashes[i]` is key `i`'s hash. It is built in the block `block` returns for the
    /// node's layout (a recycled block of exactly that layout, or a new one), in place:
    /// `value` is written straight into the block, never into a `Node` on the stack
    /// first, so a large `T` costs no extra stack copy. Runs no user code.
    pub(crate) fn new_in(
        block: impl FnOnce(Layout) -> Block,
        keys: &mut ClonedKeys<K>,
        hashes: &[u64],
        value: T,
    ) -> NonNull<Self> {
        let len = keys.len;
        debug_assert_eq!(len, hashes.len());
        let layout = Self::layout(len);
        let block = block(layout);
        debug_assert_eq!(block.layout, layout);
        let base = block.ptr;
        let node = base.cast::<Self>();
        // SAFETY: every offset lies inside the block, whose size `layout` computed from
        // them, and fits a `u32` (`FITS`, checked there); every field and array slot
        // written below is inside the block and not yet written. The keys are moved
        // (copied, and `keys` emptied), so they are owned once.
        unsafe {
            let at_keys = base.add(Self::keys_at()).cast::<K>();
            let at_hashes = base.add(Self::hashes_at(len)).cast::<u64>();
            // One loop for both arrays, which the compiler keeps as moves: two
            // `copy_nonoverlapping`s of a few words were two calls into libc's `memcpy`
            // (a one-key insert + kill 3 % faster without them).
            for (i, (key, &hash)) in keys.keys[..len].iter().zip(hashes).enumerate() {
                at_keys.add(i).write(key.assume_init_read());
                at_hashes.add(i).write(hash);
            }
            keys.len = 0;
            base.add(Self::value_at(len)).cast::<T>().write(value);
            node.write(Node {
                state: AtomicUsize::new(OWNED),
                len: len as u16,
                line: block.line,
                value_at: Self::value_at(len) as u32,
                _owns: PhantomData,
            });
            debug_assert_eq!(Self::keys_ptr(node.as_ptr()), at_keys.as_ptr());
            debug_assert_eq!(Self::hashes_ptr(node.as_ptr()), at_hashes.as_ptr());
        }
        node
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
        // SAFETY: the caller's contract; `len` and the offsets describe the block `new_in`
        // built. The value is separate (moved out or dropped already).
        unsafe {
            let (len, line) = ((*node).len as usize, (*node).line);
            let keys = ptr::slice_from_raw_parts_mut(Self::keys_ptr(node).cast_mut(), len);
            // This usually runs in the epoch's collector, on whichever thread collects: a
            // panicking `K::drop` must not escape from that thread's unrelated `get`, nor
            // skip the rest of the collector's garbage. The panic hook has already
            // reported it; the block is freed regardless. (A slice's drop goes on with
            // the remaining keys after one panics.)
            let _ = panic::catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(keys)));
            ptr::drop_in_place(node);
            Block {
                ptr: NonNull::new_unchecked(node.cast()),
                layout: Self::layout(len),
                line,
            }
        }
    }

    /// Where the keys of the node at `node` start: right after the header, at an offset
    /// that depends only on the types.
    ///
    /// # Safety
    /// `node` came from `new_in`.
    #[inline]
    unsafe fn keys_ptr(node: *const Self) -> *const K {
        // SAFETY: `new_in` puts the keys there, inside the block.
        unsafe { node.cast::<u8>().add(Self::keys_at()).cast() }
    }

    pub(crate) fn keys(&self) -> &[K] {
        // SAFETY: `new_in` wrote `len` keys there; they live as long as the node.
        unsafe { std::slice::from_raw_parts(Self::keys_ptr(self), self.len as usize) }
    }

    /// Each key's hash, in key order.
    pub(crate) fn hashes(&self) -> &[u64] {
        // SAFETY: `new_in` wrote `len` hashes there; they live as long as the node.
        unsafe { std::slice::from_raw_parts(Self::hashes_ptr(self), self.len as usize) }
    }

    /// # Safety
    /// `node` came from `new_in` and is not yet freed.
    #[inline]
    unsafe fn hashes_ptr(node: *const Self) -> *const u64 {
        // SAFETY: the caller's contract; `len` is written once, before the node is
        // shared, and never again, and `new_in` put the hashes at this offset.
        unsafe {
            node.cast::<u8>()
                .add(Self::hashes_at((*node).len as usize))
                .cast()
        }
    }

    /// The hash that picks the node's home shard, its first key's: the shard that counts
    /// the node among the table's objects and that its block goes back to.
    pub(crate) fn home(&self) -> u64 {
        self.hashes()[0]
    }

    pub(crate) fn value(&self) -> &T {
        // SAFETY: `new_in` wrote the value there; it stays until the drain moves it out
        // or the last holder drops it, neither of which can happen while `&self` is held
        // by an owner or a reference holder.
        unsafe { &*Self::value_ptr(self) }
    }

    /// Where the value of the node at `node` sits.
    ///
    /// # Safety
    /// `node` came from `new_in` and is not yet freed.
    unsafe fn value_ptr(node: *const Self) -> *mut T {
        // SAFETY: the caller's contract; `value_at` never changes.
        unsafe {
            node.cast::<u8>()
                .add((*node).value_at as usize)
                .cast::<T>()
                .cast_mut()
        }
    }

    /// The raw state word (for `Debug` and tests).
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Relaxed)
    }

    pub(crate) fn refs(&self) -> usize {
        self.state.load(Ordering::Acquire) & REFS
    }

    /// The state word of the node at `node`: all that a thread which may not be the
    /// node's last user touches. Never a `&Node`: as a function argument a `&Node` is
    /// protected for the whole call, so another thread freeing or reusing the block the
    /// moment our read-modify-write lets it would be undefined behaviour even if we
    /// never read the node again (rust-lang/rust#55005, the bug `Arc::drop` had). A
    /// reference to the atomic alone is not violated by that, as long as we do not use
    /// it after the decisive RMW.
    ///
    /// # Safety
    /// The block stays allocated for `'a` (the caller is pinned, or holds a reference or
    /// the owner).
    #[inline]
    unsafe fn word<'a>(node: *const Self) -> &'a AtomicUsize {
        // SAFETY: the caller's contract; a place expression, so no `&Node` is made.
        unsafe { &(*node).state }
    }

    /// Whether `get` may take a reference to the node at `node`.
    ///
    /// # Safety
    /// As for [`Node::word`].
    pub(crate) unsafe fn is_live(node: *const Self) -> bool {
        // SAFETY: the caller's contract.
        unsafe { Self::word(node) }.load(Ordering::Acquire) & LIVE != 0
    }

    /// Insert's linearization point. Called with every key linked and the shard locks
    /// still held. A plain store is enough: while `LIVE` is clear nobody else writes the
    /// word (`get` only reads it, and there are no references to put). `Release` so that
    /// a reader whose `get` succeeds also sees every key's index slot and `T` itself.
    pub(crate) fn publish(&self) {
        debug_assert_eq!(self.state(), OWNED);
        self.state.store(OWNED | LIVE, Ordering::Release);
    }

    /// [`Node::publish`] for a node the table owns from the start (the map-style insert):
    /// live and detached at once, so `remove` may claim it. `Release` as there.
    pub(crate) fn publish_detached(&self) {
        debug_assert_eq!(self.state(), OWNED);
        self.state.store(OWNED | LIVE | DETACHED, Ordering::Release);
    }

    /// Get-ref: takes a reference if the node is live. Lock-free: it retries only when
    /// another thread changed the word in between, and never waits for one.
    ///
    /// The first attempt is a CAS from the word's usual value for a live node that nobody
    /// holds — `LIVE | OWNED`, with `DETACHED` if `detached` says the table's objects
    /// usually are — rather than a load followed by a CAS: when the node's cache line is
    /// in another core's cache (the other half of a line shared with a neighbouring node,
    /// or a node another thread just used), a load fetches it shared and the CAS must then
    /// take it again for writing, where one CAS takes it once. Two threads looking up
    /// disjoint keys of 1,024 one-key objects: 30.1 → 25.0 ns a lookup, 26.8 → 23.3 in a
    /// read section (medians of 11 interleaved runs); one thread alone: unchanged. A
    /// wrong guess costs a failed CAS, which returns the word's value for the next
    /// attempt (detached nodes guessed as owned: 15.2 → 15.8 ns a lone lookup, hence
    /// the hint).
    ///
    /// `Acquire` on success pairs with `publish`'s `Release`: the new holder sees the
    /// fully built object. A failed attempt reads nothing else of the node.
    ///
    /// # Safety
    /// As for [`Node::word`] (a reader is pinned): the node may be dead, even have its
    /// value dropped by its last holder meanwhile, but not yet freed.
    #[inline]
    pub(crate) unsafe fn try_get(node: *const Self, detached: bool) -> bool {
        // SAFETY: the caller's contract.
        let word = unsafe { Self::word(node) };
        let mut state = LIVE | OWNED | if detached { DETACHED } else { 0 };
        loop {
            if state & LIVE == 0 {
                return false;
            }
            check_refs(state);
            match word.compare_exchange(state, state + REF, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Takes one more reference on behalf of a holder that already has one, so the node
    /// cannot reach zero meanwhile: `Relaxed` is enough (as in `Arc::clone`).
    ///
    /// At the bound it refuses, and leaves the count as it was: the increment is taken
    /// back before the panic, so no reference is counted that nobody holds (which would
    /// keep a drain waiting forever). Taking it back cannot be a last put: the caller
    /// still holds its own reference. `fetch_add` and then the check, rather than a CAS
    /// loop, so that a clone costs one uncontended RMW; several threads cloning at the
    /// bound at once overshoot it by one each, far below the flag bits.
    pub(crate) fn clone_ref(&self) {
        let old = self.state.fetch_add(REF, Ordering::Relaxed);
        if old & REFS >= MAX_REFS {
            self.state.fetch_sub(REF, Ordering::Relaxed);
            too_many_refs();
        }
    }

    /// Put-ref. `Release` so that everything the holder did with `T` happens before the
    /// drainer (which loads the word with `Acquire`) takes `T`, and before the last holder
    /// drops it; on the last-holder path an `Acquire` load completes that pairing.
    ///
    /// After the decrement the caller may touch the node only if it gets `Last`: an owner
    /// that drains may free it at any moment, so this works from a raw pointer and
    /// touches only the state word (see [`Node::word`]). Waking a parked drainer touches
    /// only the parking lot, keyed by the node's address.
    ///
    /// # Safety
    /// The caller holds a reference to the node, which this gives up.
    #[inline]
    pub(crate) unsafe fn put(node: *const Self) -> Release {
        // SAFETY: our reference keeps the block allocated until the decrement.
        let word = unsafe { Self::word(node) };
        let old = word.fetch_sub(REF, Ordering::Release);
        debug_assert!(old & REFS != 0, "put-ref without a reference");
        if old & REFS != REF {
            sync::after_release();
            return Release::Held;
        }
        Self::last_put(node, word, old)
    }

    #[cold]
    fn last_put(node: *const Self, word: &AtomicUsize, old: usize) -> Release {
        if old & OWNED != 0 {
            if old & PARKED != 0 {
                // The woken drainer may free the node at once: from here on only its
                // address is used, as the key of the waiting drainers.
                sync::wake_drainers(Self::wait_key(node));
            }
            sync::after_release();
            return Release::Held;
        }
        // Nobody else can change the word now (no owner, no reference, not live), so this
        // load reads our own decrement, the last of the release sequence of every earlier
        // put: it synchronizes with all of them, as `Arc::drop`'s fence does. A load
        // rather than a fence because ThreadSanitizer does not model fences (std's `Arc`
        // uses this load under TSan) and this path is cold.
        word.load(Ordering::Acquire);
        Release::Last
    }

    /// Kill's linearization point: no `get` succeeds after this. `AcqRel` costs nothing
    /// extra on the control path; what the guarantee needs is that this write is in the
    /// word's modification order before the index slots are cleared (program order plus
    /// the index's `Release` stores give that to any reader that sees the unlink).
    /// Returns the word as it was before the kill: whether the node was live (`LIVE`:
    /// false only for a node never published), and whether it was ever read borrowed
    /// (`BORROWED`: then it needs a grace period). `BORROWED` is set by an RMW of this
    /// word while `LIVE` is set, so a mark and this kill are ordered: either the kill
    /// sees the mark, or the mark's CAS sees `LIVE` clear and its read misses.
    pub(crate) fn kill(&self) -> usize {
        self.state.fetch_and(!LIVE, Ordering::AcqRel)
    }

    /// The owner leaves the node with the table: from now on `remove` (or the table's
    /// drop) may claim it, on another thread, and drain or drop `T` there. `Release`, so
    /// that the owner's reads of `T` happen before that: the claim's `Acquire` CAS reads
    /// this write or a later RMW of its release sequence. (`Relaxed` here was a data
    /// race between the owner's last read and the remover's drop, found by
    /// ThreadSanitizer: issue 22.)
    pub(crate) fn detach(&self) {
        let old = self.state.fetch_or(DETACHED, Ordering::Release);
        debug_assert!(old & (LIVE | OWNED | DETACHED) == LIVE | OWNED);
    }

    /// `remove`'s linearization point: if the node is live and detached, clears both
    /// bits in one CAS and makes the caller its owner (as `kill` would), returning the
    /// word as it was (for `BORROWED`, as [`Node::kill`]). `AcqRel` as `kill`; a failed
    /// claim reads nothing else.
    ///
    /// # Safety
    /// As for [`Node::word`] (the caller is pinned).
    pub(crate) unsafe fn claim_detached(node: *const Self) -> Option<usize> {
        // SAFETY: the caller's contract.
        let word = unsafe { Self::word(node) };
        word.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |state| {
            (state & (LIVE | DETACHED) == LIVE | DETACHED).then_some(state & !(LIVE | DETACHED))
        })
        .ok()
    }

    /// Borrowed get: whether a borrowed reader may read the node's value for as long as
    /// it stays pinned. A plain `Acquire` load when the node is live and already marked
    /// `BORROWED` — the read writes nothing; otherwise [`Node::mark_borrowed`].
    /// `Acquire` pairs with `publish`'s (and `revive`'s) `Release`, as in `try_get`.
    ///
    /// # Safety
    /// As for [`Node::word`]: the caller is pinned, and stays pinned for as long as it
    /// reads the value.
    #[inline]
    pub(crate) unsafe fn try_borrow(node: *const Self) -> bool {
        // SAFETY: the caller's contract.
        let word = unsafe { Self::word(node) };
        let state = word.load(Ordering::Acquire);
        if state & (LIVE | BORROWED) == LIVE | BORROWED {
            return true;
        }
        Self::mark_borrowed(word, state)
    }

    /// The first borrowed read of a node: sets `BORROWED` with a CAS that requires
    /// `LIVE`, so that it is ordered against the kill's `fetch_and` on the same word —
    /// either the kill sees the mark (and gives the node a grace period), or this CAS
    /// sees `LIVE` clear and the read misses. `Acquire` as in `try_borrow`.
    #[cold]
    fn mark_borrowed(word: &AtomicUsize, mut state: usize) -> bool {
        loop {
            if state & LIVE == 0 {
                return false;
            }
            if state & BORROWED != 0 {
                return true;
            }
            match word.compare_exchange_weak(
                state,
                state | BORROWED,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Starts a grace period after a kill or claim whose old word had `BORROWED`: counts
    /// it as one reference, and in `graces` unless that field is full (the returned
    /// units say what to take back). The caller owns the node, so `refs` cannot reach
    /// zero and hand `T` to anyone meanwhile; `Relaxed`, as a `Ref` clone.
    pub(crate) fn begin_grace(&self) -> usize {
        let units = if self.state() & GRACES == GRACES {
            REF
        } else {
            REF + GRACE
        };
        // Only the owner adds graces, one at a time, so the field cannot overflow
        // between the check and the add.
        self.state.fetch_add(units, Ordering::Relaxed);
        units
    }

    /// Ends a grace period begun with `begin_grace`, which returned `units`: a put of the
    /// epoch's reference, with everything a put does (see [`Node::put`]).
    ///
    /// # Safety
    /// The grace period was begun on this node and is given up here, once.
    pub(crate) unsafe fn end_grace(node: *const Self, units: usize) -> Release {
        // SAFETY: the grace's reference keeps the block allocated until the decrement.
        let word = unsafe { Self::word(node) };
        let old = word.fetch_sub(units, Ordering::Release);
        debug_assert!(old & REFS != 0, "grace end without a reference");
        if old & REFS != REF {
            sync::after_release();
            return Release::Held;
        }
        Self::last_put(node, word, old)
    }

    /// Whether a grace period of the node is pending (counted in `graces`): a drainer
    /// must then drive the epoch.
    pub(crate) fn grace_pending(&self) -> bool {
        self.state.load(Ordering::Relaxed) & GRACES != 0
    }

    /// `revive`'s linearization point: a killed node, its keys linked again, becomes
    /// live again. An RMW, not a store: references taken before the kill may still be
    /// out. `Release` as in `publish`.
    pub(crate) fn revive(&self) {
        let old = self.state.fetch_or(LIVE, Ordering::Release);
        debug_assert!(
            old & (LIVE | OWNED | DETACHED) == OWNED,
            "revive of a live node"
        );
    }

    /// The owner lets go without draining: `T` goes to whoever is last. `AcqRel`: release
    /// for a last holder that will drop `T`, acquire in case this call is the last one.
    /// Like [`Node::put`], it touches only the state word: after the RMW the last
    /// reference may free the node at any moment.
    ///
    /// # Safety
    /// The caller holds the node's owner (killed), which this gives up.
    pub(crate) unsafe fn abandon(node: *const Self) -> Release {
        // SAFETY: the owner keeps the block allocated until the RMW.
        let word = unsafe { Self::word(node) };
        let old = word.fetch_and(!OWNED, Ordering::AcqRel);
        debug_assert!(old & LIVE == 0, "abandon before kill");
        if old & REFS == 0 {
            Release::Last
        } else {
            sync::after_release();
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
        if deadline.is_none() && crate::visit::is_visiting(Self::wait_key(self)) {
            drain_inside_retain();
        }
        let mut grace = None;
        loop {
            if self.refs() == 0 {
                return true;
            }
            // With a grace period pending, push the epoch ourselves and sleep only until
            // the next push (or the deadline, if sooner): the epoch's put, which ends
            // it, runs only when some thread collects (see `crate::grace`).
            let mut wake_at = deadline;
            if self.grace_pending() {
                let next = grace
                    .get_or_insert_with(crate::grace::Driver::new)
                    .push(deadline.is_none(), || self.grace_pending());
                if self.refs() == 0 {
                    return true;
                }
                wake_at = Some(deadline.map_or(next, |deadline| deadline.min(next)));
            }
            // The lot runs `validate` under its lock and the last put's `unpark_all` takes
            // the same lock after its decrement, so either `validate` sees zero and we do
            // not sleep, or the put sees `PARKED` and wakes us: no lost wake-up. A waiter
            // that times out leaves `PARKED` set: other threads may wait on `&Dying` too
            // (`wait` beside another's `wait_timeout`), and only the flag tells the last
            // put to wake them. Left set, it costs one wake of nobody.
            let parked = sync::park(Self::wait_key(self), || self.set_parked(), wake_at);
            if parked == Parked::TimedOut && wake_at == deadline {
                return self.refs() == 0;
            }
        }
    }

    /// What a drainer of the node at `node` waits on, in the parking lot and in the waker
    /// registry: the node's address, which names no other node while the drainer owns it.
    pub(crate) fn wait_key(node: *const Self) -> usize {
        node as usize
    }

    /// The drainer's `validate`: sets `PARKED` and says whether references are still out
    /// (whether to sleep). `Relaxed` is enough: the put that drops the last reference is
    /// an RMW on the same word, so it either comes first (we see zero and stay awake) or
    /// sees `PARKED` (and wakes us through the lot's lock, which we hold here).
    pub(crate) fn set_parked(&self) -> bool {
        let old = self.state.fetch_or(PARKED, Ordering::Relaxed);
        old & REFS != 0
    }
}

impl<K, T> Keyed<K> for Node<K, T> {
    #[inline]
    unsafe fn key<'a>(node: *const Self, idx: usize) -> &'a K {
        // SAFETY: the caller's contract; keys are written before the node is linked and
        // dropped only when its block is disposed of, after its grace period.
        unsafe { &*Self::keys_ptr(node).add(idx) }
    }

    #[inline]
    unsafe fn hash(node: *const Self, idx: usize) -> u64 {
        // SAFETY: as for `key`.
        unsafe { *Self::hashes_ptr(node).add(idx) }
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
    unsafe { ptr::read(Node::value_ptr(node)) }
}

/// Drops `T` in place, for whoever got [`Release::Last`].
///
/// # Safety
/// The caller got `Release::Last` for this node (so it is killed, unlinked, and nobody
/// else holds it), and the node is retired right after.
pub(crate) unsafe fn drop_value<K, T>(node: *const Node<K, T>) {
    // SAFETY: the caller is the last holder of any kind; the value is still in place and
    // nothing else reads or drops it.
    unsafe { ptr::drop_in_place(Node::value_ptr(node)) }
}

#[inline]
fn check_refs(state: usize) {
    if state & REFS >= MAX_REFS {
        too_many_refs();
    }
}

/// An untimed drain from inside a `retain` predicate of the object the predicate was
/// given: `retain` holds a reference to it until the predicate returns, so the drain
/// could never end. Refused rather than hung (issue 22).
#[cold]
#[inline(never)]
fn drain_inside_retain() -> ! {
    panic!(
        "restable: drain of the object a `retain` predicate is looking at, from inside that \
         predicate: `retain` holds a reference to it until the predicate returns, so the drain \
         would wait forever; return `false` to remove it, or drain it after `retain` returns"
    );
}

#[cold]
#[inline(never)]
fn too_many_refs() -> ! {
    panic!("restable: reference count overflow (references leaked with mem::forget?)");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `keys`, cloned as an insert clones them.
    fn cloned<K: Clone>(keys: &[K]) -> ClonedKeys<K> {
        let mut cloned = ClonedKeys::empty();
        cloned.clone_in(keys);
        cloned
    }

    /// A test's node, freed (value included) when the test ends.
    struct Owned<T>(NonNull<Node<u32, T>>);

    impl<T> Owned<T> {
        fn new(keys: &[u32], value: T) -> Self {
            Owned(Node::new_in(
                Block::alloc,
                &mut cloned(keys),
                &vec![0; keys.len()],
                value,
            ))
        }

        fn ptr(&self) -> *const Node<u32, T> {
            self.0.as_ptr()
        }

        fn try_get(&self) -> bool {
            self.try_get_guessing(false)
        }

        fn try_get_guessing(&self, detached: bool) -> bool {
            // SAFETY: the node lives until the test's end.
            unsafe { Node::try_get(self.ptr(), detached) }
        }

        fn put(&self) -> Release {
            // SAFETY: as above; the tests put only references they took.
            unsafe { Node::put(self.ptr()) }
        }

        fn abandon(&self) -> Release {
            // SAFETY: as above; the tests abandon once, after the kill.
            unsafe { Node::abandon(self.ptr()) }
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
                drop_value(self.ptr());
                Node::free(self.0.as_ptr());
            }
        }
    }

    /// What `Layout::extend` makes of a node's parts (raised to the recycling link's
    /// size): the reference `Node::layout`'s arithmetic must agree with, since a
    /// recycled block is reused only for the very layout it was allocated with.
    fn extended<K, T>(len: usize) -> (Layout, usize, usize) {
        let header = Layout::new::<Node<K, T>>().align_to(NODE_ALIGN).unwrap();
        let (layout, _) = header.extend(Layout::array::<K>(len).unwrap()).unwrap();
        let (layout, hashes) = layout.extend(Layout::array::<u64>(len).unwrap()).unwrap();
        let (layout, value) = layout.extend(Layout::new::<T>()).unwrap();
        let size = layout.size().max(MIN_BLOCK);
        let layout = Layout::from_size_align(size, layout.align()).unwrap();
        (layout, hashes, value)
    }

    fn layout_agrees<K, T>() {
        for len in 1..=MAX_KEYS {
            let (layout, hashes, value) = extended::<K, T>(len);
            assert_eq!(Node::<K, T>::layout(len), layout, "{len} keys");
            assert_eq!(Node::<K, T>::hashes_at(len), hashes, "{len} keys");
            assert_eq!(Node::<K, T>::value_at(len), value, "{len} keys");
            // `FITS` checks sizes with its own, checked copy of the offsets: it must
            // reach the same end, or it would vouch for a size it never computed.
            assert_eq!(
                Node::<K, T>::end_checked(len).map(|end| end.max(MIN_BLOCK)),
                Some(layout.size()),
                "{len} keys"
            );
            assert!(layout.size() >= crate::recycle::LINK_SIZE, "{len} keys");
        }
    }

    #[test]
    fn layout_is_what_layout_extend_makes() {
        #[repr(align(64))]
        struct Wide(#[allow(dead_code)] u8);
        layout_agrees::<u64, u64>();
        layout_agrees::<u8, u8>();
        layout_agrees::<u16, ()>();
        layout_agrees::<(u8, u32, u8), String>();
        layout_agrees::<Wide, u8>();
        layout_agrees::<u8, Wide>();
        layout_agrees::<[u8; 3], [u8; 5]>();
        layout_agrees::<String, Vec<u8>>();
        // Smaller than a recycling link on their own (24 bytes for one key): raised.
        layout_agrees::<(), ()>();
        layout_agrees::<(), u8>();
        layout_agrees::<u8, ()>();
        assert_eq!(Node::<(), ()>::layout(1).size(), MIN_BLOCK);
        assert_eq!(Node::<u64, u64>::layout(1).size(), 40);
    }

    #[test]
    fn absurd_key_sizes_do_not_fit() {
        const {
            assert!(Node::<[u8; 1 << 20], u8>::FITS);
            assert!(
                !Node::<[u8; 1 << 28], u8>::FITS,
                "16 keys of 256 MiB overflow u32"
            );
            assert!(!Node::<u8, [u8; 1 << 32]>::FITS);
        }
    }

    #[test]
    fn bits_are_disjoint() {
        let flags = [LIVE, OWNED, PARKED, DETACHED, BORROWED, GRACES, REFS];
        for (i, a) in flags.iter().enumerate() {
            for b in &flags[i + 1..] {
                assert_eq!(a & b, 0);
            }
        }
        assert_eq!(
            LIVE | OWNED | PARKED | DETACHED | BORROWED | GRACES | REFS,
            usize::MAX
        );
        assert_eq!(GRACES & GRACE, GRACE, "GRACE is the field's unit");
        assert_eq!(GRACES.count_ones(), GRACE_BITS);
    }

    #[test]
    fn get_needs_live() {
        let node = Owned::new(&[1u32], "v");
        assert!(!node.try_get(), "unpublished node handed out a reference");
        node.publish();
        assert!(node.try_get());
        assert_eq!(node.refs(), 1);
        assert_ne!(node.kill() & LIVE, 0);
        assert!(!node.try_get(), "killed node handed out a reference");
        assert!(matches!(node.put(), Release::Held), "owner still holds it");
        assert_eq!(node.refs(), 0);
    }

    /// `try_get`'s first CAS guesses the word; whatever the word really holds, a wrong
    /// guess must neither take a reference to a node that is not live nor refuse one
    /// that is.
    #[test]
    fn get_is_right_whatever_it_guesses() {
        for detached in [false, true] {
            let node = Owned::new(&[1u32], "v");
            assert!(!node.try_get_guessing(detached), "unpublished");
            node.publish();
            assert!(node.try_get_guessing(detached), "owned, no references");
            assert!(node.try_get_guessing(detached), "owned, one reference out");
            node.detach();
            assert!(node.try_get_guessing(detached), "detached, references out");
            assert_eq!(node.refs(), 3);
            for _ in 0..3 {
                assert!(matches!(node.put(), Release::Held));
            }
            assert!(node.try_get_guessing(detached), "detached, no references");
            assert!(matches!(node.put(), Release::Held));
            assert_ne!(node.kill() & LIVE, 0);
            assert!(!node.try_get_guessing(detached), "killed");
            assert_eq!(node.state() & (LIVE | REFS), 0);
        }
    }

    #[test]
    fn borrow_marks_only_live_nodes_and_kill_sees_the_mark() {
        let node = Owned::new(&[1u32], "v");
        // SAFETY: the node lives until the test's end.
        let borrow = || unsafe { Node::try_borrow(node.ptr()) };
        assert!(!borrow(), "unpublished node lent out");
        assert_eq!(node.state() & BORROWED, 0);
        node.publish();
        let unborrowed = node.kill();
        assert_eq!(
            unborrowed & BORROWED,
            0,
            "never borrowed, so no grace period"
        );
        node.revive();
        assert!(borrow());
        assert!(borrow(), "a marked node lends without a write");
        let old = node.kill();
        assert_eq!(old & (LIVE | BORROWED), LIVE | BORROWED);
        assert!(!borrow(), "killed node lent out");
        let units = node.begin_grace();
        assert_eq!(units, REF + GRACE);
        assert!(node.grace_pending());
        assert_eq!(node.refs(), 1, "a grace period counts as a reference");
        // SAFETY: the grace just begun, ended once.
        assert!(matches!(
            unsafe { Node::end_grace(node.ptr(), units) },
            Release::Held
        ));
        assert!(!node.grace_pending());
        assert_eq!(node.refs(), 0);
    }

    /// With `graces` full, a grace period still counts as a reference.
    #[test]
    fn a_full_grace_count_still_counts_the_reference() {
        let node = Owned::new(&[1u32], ());
        node.publish();
        node.kill();
        node.state.fetch_or(GRACES, Ordering::Relaxed);
        let units = node.begin_grace();
        assert_eq!(units, REF);
        assert_eq!(node.refs(), 1);
        // SAFETY: as above.
        assert!(matches!(
            unsafe { Node::end_grace(node.ptr(), units) },
            Release::Held
        ));
        node.state.fetch_and(!GRACES, Ordering::Relaxed);
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
        assert_ne!(
            node.state() & PARKED,
            0,
            "a timed-out drainer cleared PARKED, which another waiter may still need"
        );
        assert!(matches!(node.put(), Release::Held));
        assert!(node.wait_for_refs(None));
    }

    /// A clone at the bound is refused without counting a reference nobody holds.
    #[test]
    fn clone_at_the_bound_leaves_the_count_alone() {
        let node = Owned::new(&[1u32], ());
        node.publish();
        assert!(node.try_get());
        node.state.fetch_add(MAX_REFS - 1, Ordering::Relaxed);
        let refused = panic::catch_unwind(AssertUnwindSafe(|| node.clone_ref()));
        assert!(refused.is_err(), "a clone past the bound was accepted");
        assert_eq!(node.refs(), MAX_REFS, "the refused clone stayed counted");
        node.state.fetch_sub(MAX_REFS - 1, Ordering::Relaxed);
        assert!(matches!(node.put(), Release::Held));
    }

    #[test]
    fn cloned_keys_hand_out_one_and_drop_the_rest() {
        let drops = std::sync::Arc::new(AtomicUsize::new(0));
        #[derive(Clone)]
        struct Key(u32, std::sync::Arc<AtomicUsize>);
        impl Drop for Key {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
        let keys: Vec<Key> = (0..4).map(|i| Key(i, drops.clone())).collect();
        let taken = cloned(&keys).take(1);
        assert_eq!(taken.0, 1);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            3,
            "the other three clones dropped"
        );
        drop(taken);
        drop(keys);
        assert_eq!(drops.load(Ordering::Relaxed), 8);
    }
}
