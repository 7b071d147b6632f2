//! Recycling node blocks: once a killed node's grace period is over, its block goes back
//! to the index shard it came from, for that shard's next insert, instead of to the
//! allocator.
//!
//! Why: the epoch runs deferred work on whichever thread collects, and readers pin far
//! more often than writers, so they end up freeing most killed nodes. With the system
//! allocator every such free is a cross-thread free, which contends with the writer's
//! next `malloc` on the allocator's arena lock: with one thread looking up and one
//! destroying and re-creating objects, lookups took 145 ns under churn, and 43 ns when
//! (as an experiment) killed nodes were not freed at all. Now the collecting thread only
//! pushes the block onto a lock-free stack, and writers reuse blocks without calling the
//! allocator at all.
//!
//! - [`Incoming::push`] (the deferred work, any thread): a Treiber-stack push, a CAS
//!   loop with `Release`, so whoever takes the stack sees the block's link and layout.
//! - [`Spare::absorb`] (a writer, under its shard's lock): takes the whole stack with one
//!   `swap(null, Acquire)`. Nobody ever pops a single block off the shared stack, so
//!   there is no ABA problem; the taken blocks are the writer's alone and go onto the
//!   shard's spare list, which only lock holders touch. Past [`KEEP`] spare blocks the
//!   writer frees the rest (on the control path, where the allocator's cost belongs).
//! - [`Spare::take`]: the first spare block, among the first [`SCAN`], that has the
//!   layout the insert needs; otherwise the insert allocates. Tables whose objects all
//!   have the same number of keys (the usual case) always reuse the first block; tables
//!   that mix a few shapes find theirs within a few.
//!
//! A block waiting here holds no key and no value: both were dropped or moved out before
//! the node was retired. What stays allocated is bounded by `KEEP` blocks per shard, plus
//! the blocks retired since that shard's last writer; the index frees them all when the
//! table goes.

use crate::block::Block;
use crate::sync::{AtomicPtr, Ordering};
use std::alloc::Layout;
use std::ptr::{self, NonNull};

/// The most spare blocks a shard keeps for reuse; more are freed. Enough to absorb the
/// kills between two inserts of a busy writer without holding on to much memory once the
/// table shrinks (64 shards × 64 blocks of a few hundred bytes).
const KEEP: usize = 64;

/// How many spare blocks an insert looks at for one of its layout (tables whose objects
/// have different numbers of keys keep blocks of several layouts).
const SCAN: usize = 8;

/// What a retired block holds while it waits: written over the start of the dead node.
/// Every node block is at least this large and aligned ([`LINK_SIZE`], [`LINK_ALIGN`]),
/// by construction of its layout (`Node::layout`), so recycling never has to refuse one.
struct Free {
    next: *mut Free,
    layout: Layout,
    line: u16,
}

/// The size a block needs to carry its recycling link.
pub(crate) const LINK_SIZE: usize = size_of::<Free>();

/// The alignment a block needs to carry its recycling link.
pub(crate) const LINK_ALIGN: usize = align_of::<Free>();

impl Block {
    /// Writes the `Free` header over the block and returns it as a stack link.
    fn into_link(self, next: *mut Free) -> *mut Free {
        debug_assert!(
            self.size() >= LINK_SIZE && self.layout.align() >= LINK_ALIGN,
            "every node layout has room for the link"
        );
        let link = self.ptr.as_ptr().cast::<Free>();
        // SAFETY: the block is ours, and every node block is large and aligned enough for
        // the link (`Node::layout`, and `NODE_ALIGN >= LINK_ALIGN`).
        unsafe {
            link.write(Free {
                next,
                layout: self.layout,
                line: self.line,
            })
        };
        link
    }

    /// # Safety
    /// `link` came from `into_link` and is owned by the caller.
    unsafe fn from_link(link: *mut Free) -> (Block, *mut Free) {
        // SAFETY: the caller's contract.
        let Free { next, layout, line } = unsafe { link.read() };
        let ptr = NonNull::new(link.cast::<u8>()).expect("a stack link is never null");
        (Block { ptr, layout, line }, next)
    }
}

/// The blocks retired into a shard since its last writer, pushed without a lock.
pub(crate) struct Incoming {
    head: AtomicPtr<Free>,
}

impl Incoming {
    pub(crate) fn new() -> Self {
        Incoming {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Gives `block` back for reuse. Lock-free: it retries only when another push or a
    /// writer's take changed the stack in between.
    pub(crate) fn push(&self, block: Block) {
        let link = block.into_link(ptr::null_mut());
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `link` is still ours until the CAS below publishes it.
            unsafe { (*link).next = head };
            match self
                .head
                .compare_exchange_weak(head, link, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut link = self.head.load(Ordering::Relaxed);
        while !link.is_null() {
            // SAFETY: `&mut self`: every link on the stack is ours.
            let (block, next) = unsafe { Block::from_link(link) };
            block.free();
            link = next;
        }
    }
}

/// A shard's spare blocks, touched only under the shard's lock.
pub(crate) struct Spare {
    head: *mut Free,
    len: usize,
}

// SAFETY: the blocks hold no keys or values, only the `Free` header; whoever holds the
// shard lock owns them, on any thread.
unsafe impl Send for Spare {}

impl Spare {
    pub(crate) fn new() -> Self {
        Spare {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// Moves the shard's incoming blocks here, freeing those beyond `KEEP`.
    pub(crate) fn absorb(&mut self, incoming: &Incoming) {
        if incoming.head.load(Ordering::Relaxed).is_null() {
            return;
        }
        // `Acquire` pairs with each push's `Release`: we see every link and layout.
        let mut link = incoming.head.swap(ptr::null_mut(), Ordering::Acquire);
        while !link.is_null() {
            // SAFETY: the swap made the whole stack ours.
            let (block, next) = unsafe { Block::from_link(link) };
            if self.len < KEEP {
                self.head = block.into_link(self.head);
                self.len += 1;
            } else {
                block.free();
            }
            link = next;
        }
    }

    /// A spare block with `layout`, if one is among the first [`SCAN`] spare blocks.
    pub(crate) fn take(&mut self, layout: Layout) -> Option<Block> {
        let mut at: *mut *mut Free = &mut self.head;
        for _ in 0..SCAN {
            // SAFETY: `at` is the list head or the `next` field of a link on it; links on
            // the spare list are the lock holder's, i.e. ours.
            let link = unsafe { *at };
            if link.is_null() {
                return None;
            }
            // SAFETY: as above.
            if unsafe { (*link).layout } == layout {
                // SAFETY: as above; unlinking it makes the block ours alone.
                unsafe {
                    let (block, next) = Block::from_link(link);
                    *at = next;
                    self.len -= 1;
                    return Some(block);
                }
            }
            // SAFETY: as above.
            at = unsafe { &mut (*link).next };
        }
        None
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        while !self.head.is_null() {
            // SAFETY: `&mut self`: the list is ours.
            let (block, next) = unsafe { Block::from_link(self.head) };
            block.free();
            self.head = next;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn block(size: usize) -> Block {
        Block::alloc(Layout::from_size_align(size, 8).unwrap())
    }

    #[test]
    fn blocks_come_back_only_with_their_layout() {
        let small = Layout::from_size_align(64, 8).unwrap();
        let big = Layout::from_size_align(128, 8).unwrap();
        let incoming = Incoming::new();
        let mut spare = Spare::new();
        let a = block(64);
        let a_ptr = a.ptr;
        incoming.push(a);
        incoming.push(block(128));
        assert!(spare.take(small).is_none(), "nothing absorbed yet");
        spare.absorb(&incoming);
        assert_eq!(spare.len, 2);
        // Absorbing reverses the stack, so `a` comes first: a request for the other
        // layout finds its block behind it, and then none is left for that layout.
        let got_big = spare.take(big).expect("the 128-byte block is spare");
        assert!(spare.take(big).is_none());
        let got_small = spare.take(small).expect("the 64-byte block is spare");
        assert_eq!(got_small.ptr, a_ptr);
        assert_eq!(spare.len, 0);
        got_big.free();
        got_small.free();
    }

    #[test]
    fn spare_keeps_at_most_keep_blocks() {
        let incoming = Incoming::new();
        let mut spare = Spare::new();
        for _ in 0..KEEP + 10 {
            incoming.push(block(32));
        }
        spare.absorb(&incoming);
        assert_eq!(spare.len, KEEP);
        assert!(incoming.head.load(Ordering::Relaxed).is_null());
    }
}
