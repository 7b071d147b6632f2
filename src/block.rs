//! Node blocks: where a node's memory comes from and where it goes. By default each node
//! is an allocation of its own. In a table built
//! [`cache_aligned`](crate::Builder::cache_aligned), small nodes are whole cache lines
//! carved from pages their shard allocates, so that each starts a line of its own; large
//! or over-aligned ones are still allocated on their own.
//!
//! Why pages: `malloc` puts a block at any 16-byte boundary. A node of one `u64` key and
//! a `u64` value (40 bytes) then straddles two lines in half the cases, so a lookup that
//! misses in the cache may wait for the state word's line and then for the key's; and it
//! shares lines with the nodes allocated just before and after it, so two threads looking
//! up neighbouring objects took each other's lines with every reference (workload 3 of
//! the benchmarks measured 28–81 ns a lookup across runs of one build, depending on where
//! the heap happened to start). Aligned allocation (`posix_memalign`) costs three times a
//! `malloc` and wastes more than the node at this size. A page is one plain allocation,
//! carved under the shard's lock by bumping an index: an insert that finds no recycled
//! block calls no allocator either. What it costs is memory (a 40-byte node takes 64), so
//! it is the user's choice, not the default.
//!
//! ```text
//!  allocation:  [ padding | Header ][ line 0 ][ line 1 ] ... [ line n-1 ]
//!                                   ^ aligned to LINE
//! ```
//!
//! - A block is the lines of one node: a layout of at most [`MAX_BLOCK_LINES`] lines and
//!   at most line alignment is rounded up to whole lines and carved; others are
//!   allocated. A carved block keeps the index of its first line (in its node's header
//!   while it is a node, in its recycling link after), so whoever frees it finds the
//!   page's header at a fixed distance before it.
//! - [`Header::live`] counts the page's blocks that are not yet freed, plus the
//!   carver's hold: when a page is made it is set to its line count plus one — every
//!   block it could ever hold, and the carver — so carving a block costs no atomic
//!   operation. When the carver leaves the page (full, or its shard dropped) it takes off
//!   the part of that reservation it did not carve, plus its hold. Whoever brings the
//!   count to zero frees the page. Every decrement is `AcqRel`: the last one sees every
//!   other holder's writes to the page before it frees it. Blocks are freed off the hot
//!   paths (past a shard's spare blocks, and at drop), so the stronger ordering costs
//!   nothing measurable and needs no separate fence to argue about.
//! - A shard's pages start small and double up to [`MAX_PAGE_LINES`] lines (4 KiB), so a
//!   table of a few objects spread over all shards holds a few hundred bytes a shard,
//!   not a page each.
//!
//! A page lives until its last block is freed, so a table that grew and then shrank
//! keeps each page that still holds a live node (at most [`MAX_PAGE_LINES`] lines for
//! one object, in the worst spread).

use crate::sync::{self, AtomicUsize, Ordering};
use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

/// A cache line: the unit blocks are carved in and aligned to.
pub(crate) const LINE: usize = 64;

/// The largest carved block, in lines; larger nodes are allocated on their own.
pub(crate) const MAX_BLOCK_LINES: usize = 8;

/// The largest page, in lines: 4 KiB of nodes.
const MAX_PAGE_LINES: usize = 64;

/// A shard's first page, in lines.
const FIRST_PAGE_LINES: usize = 2;

/// [`Block::line`] of a block that was allocated on its own, not carved.
const UNPAGED: u16 = u16::MAX;

const _: () = assert!(MAX_PAGE_LINES < UNPAGED as usize && MAX_BLOCK_LINES <= MAX_PAGE_LINES);

/// A node's memory: the block `ptr` points at, with the layout its node asked for.
pub(crate) struct Block {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) layout: Layout,
    /// The index of the block's first line in its page, or [`UNPAGED`].
    pub(crate) line: u16,
}

impl Block {
    /// A block from the global allocator.
    pub(crate) fn alloc(layout: Layout) -> Block {
        // SAFETY: a node's layout is never zero-sized (the header holds the state word).
        let ptr = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Block {
            ptr,
            layout,
            line: UNPAGED,
        }
    }

    /// How many bytes the block has: its layout's, or its lines'.
    pub(crate) fn size(&self) -> usize {
        match self.line {
            UNPAGED => self.layout.size(),
            _ => lines(self.layout) * LINE,
        }
    }

    /// Gives the block back: to the allocator, or to its page (which goes back to the
    /// allocator with its last block).
    pub(crate) fn free(self) {
        if self.line == UNPAGED {
            // SAFETY: allocated by `Block::alloc` with `layout`; nothing refers to it.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
            return;
        }
        // SAFETY: the page stays allocated while its header counts this block.
        unsafe { Header::release(self.header(), 1) };
    }

    /// The header of a carved block's page: `line` lines before the block is the page's
    /// line 0, which the header directly precedes (`Carver::refill`), in the same
    /// allocation.
    fn header(&self) -> *mut Header {
        debug_assert_ne!(self.line, UNPAGED);
        self.ptr
            .as_ptr()
            .wrapping_sub(usize::from(self.line) * LINE + size_of::<Header>())
            .cast::<Header>()
    }
}

/// Whole lines for a node of `layout`.
fn lines(layout: Layout) -> usize {
    layout.size().div_ceil(LINE)
}

/// The start of a page's allocation, just before its line 0.
#[repr(C)]
struct Header {
    /// Blocks not yet freed, plus the carver's reservation while it carves the page.
    live: AtomicUsize,
    /// The allocation (for `dealloc`; the header sits wherever aligning line 0 put it).
    alloc: *mut u8,
    /// How many lines the page has.
    lines: usize,
}

impl Header {
    /// The layout of a page of `lines` lines: room for the header and for aligning
    /// line 0, whatever alignment the allocator returns.
    fn layout(lines: usize) -> Layout {
        Layout::from_size_align(
            lines * LINE + size_of::<Header>() + LINE,
            align_of::<Header>(),
        )
        .expect("a page's size is small")
    }

    /// Takes `n` off the page's count, and frees the page if that was the rest of it.
    ///
    /// # Safety
    /// `header` is a live page's, and the caller holds `n` of its count.
    unsafe fn release(header: *mut Header, n: usize) {
        // SAFETY: the caller's contract: the page is allocated until its count is zero.
        let live = unsafe { &(*header).live };
        // `AcqRel`: see the module documentation.
        if live.fetch_sub(n, Ordering::AcqRel) != n {
            return;
        }
        // SAFETY: the count is zero: no block and no carver refers to the page any more.
        unsafe {
            let (at, lines) = ((*header).alloc, (*header).lines);
            ptr::drop_in_place(header);
            sync::dealloc(at, Header::layout(lines));
        }
    }
}

/// A shard's page being carved; used only under the shard's lock.
pub(crate) struct Carver {
    /// The current page's header; null before the first page.
    page: *mut Header,
    /// The current page's line 0.
    line0: *mut u8,
    /// Its first line not carved yet, and how many it has.
    next: usize,
    lines: usize,
    /// Blocks carved from it so far.
    carved: usize,
}

// SAFETY: a carver only hands out blocks that hold nothing yet; whoever holds the shard
// lock owns it, on any thread.
unsafe impl Send for Carver {}

impl Carver {
    pub(crate) fn new() -> Self {
        Carver {
            page: ptr::null_mut(),
            line0: ptr::null_mut(),
            next: 0,
            lines: 0,
            carved: 0,
        }
    }

    /// A new block for a node of `layout`: whole lines of the current page (or of a new
    /// one), or an allocation of its own if the node is large or over-aligned.
    #[inline]
    pub(crate) fn block(&mut self, layout: Layout) -> Block {
        let lines = lines(layout);
        if lines > MAX_BLOCK_LINES || layout.align() > LINE {
            return Block::alloc(layout);
        }
        if self.lines - self.next < lines {
            self.refill(lines);
        }
        let line = self.next;
        self.next += lines;
        self.carved += 1;
        Block {
            // SAFETY: `line + lines <= self.lines`: inside the page's allocation.
            ptr: unsafe { NonNull::new_unchecked(self.line0.add(line * LINE)) },
            layout,
            line: line as u16,
        }
    }

    /// Leaves the current page and allocates the next, of at least `need` lines: twice
    /// the last one's, up to [`MAX_PAGE_LINES`].
    #[cold]
    fn refill(&mut self, need: usize) {
        let lines = match self.lines {
            0 => FIRST_PAGE_LINES,
            last => (last * 2).min(MAX_PAGE_LINES),
        }
        .max(need);
        self.leave();
        let layout = Header::layout(lines);
        // SAFETY: not zero-sized.
        let at = unsafe { sync::alloc(layout) };
        if at.is_null() {
            alloc::handle_alloc_error(layout);
        }
        let line0_addr = (at as usize + size_of::<Header>()).next_multiple_of(LINE);
        let line0 = at.wrapping_add(line0_addr - at as usize);
        let page = line0.wrapping_sub(size_of::<Header>()).cast::<Header>();
        // SAFETY: the header and `lines` lines after it lie inside the allocation
        // (`Header::layout` leaves room for the header and for aligning line 0), and the
        // header's address is aligned for it (a line's minus a multiple of its alignment).
        unsafe {
            page.write(Header {
                live: AtomicUsize::new(lines + 1),
                alloc: at,
                lines,
            })
        };
        *self = Carver {
            page,
            line0,
            next: 0,
            lines,
            carved: 0,
        };
    }

    /// Gives back the part of the current page's reservation not carved, and the hold.
    fn leave(&mut self) {
        if !self.page.is_null() {
            // SAFETY: ours: the count includes `lines + 1 - carved` for the carver.
            unsafe { Header::release(self.page, self.lines + 1 - self.carved) };
            self.page = ptr::null_mut();
        }
    }
}

impl Drop for Carver {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 16).unwrap()
    }

    fn live(block: &Block) -> usize {
        // SAFETY: the block is carved and not freed, so its page is allocated.
        unsafe { (*block.header()).live.load(Ordering::Relaxed) }
    }

    #[test]
    fn blocks_are_whole_lines_on_line_boundaries() {
        let mut carver = Carver::new();
        let blocks: Vec<Block> = [40, 64, 65, 200, 24]
            .into_iter()
            .map(|size| carver.block(layout(size)))
            .collect();
        for b in &blocks {
            assert_eq!(b.ptr.as_ptr() as usize % LINE, 0);
            assert_ne!(b.line, UNPAGED);
            assert_eq!(b.size(), b.layout.size().div_ceil(LINE) * LINE);
        }
        // No two blocks overlap.
        let mut spans: Vec<_> = blocks
            .iter()
            .map(|b| (b.ptr.as_ptr() as usize, b.ptr.as_ptr() as usize + b.size()))
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
        for b in blocks {
            b.free();
        }
    }

    #[test]
    fn large_and_over_aligned_nodes_are_allocated_on_their_own() {
        let mut carver = Carver::new();
        let big = carver.block(layout(MAX_BLOCK_LINES * LINE + 1));
        let aligned = carver.block(Layout::from_size_align(64, 128).unwrap());
        assert_eq!((big.line, aligned.line), (UNPAGED, UNPAGED));
        assert!(carver.page.is_null(), "no page for them");
        big.free();
        aligned.free();
    }

    #[test]
    fn a_page_counts_its_blocks_and_the_carver() {
        let mut carver = Carver::new();
        let first = carver.block(layout(40));
        // The first page has FIRST_PAGE_LINES lines: its count is that plus the hold.
        assert_eq!(live(&first), FIRST_PAGE_LINES + 1);
        let second = carver.block(layout(40));
        assert_eq!(first.ptr.as_ptr().wrapping_add(LINE), second.ptr.as_ptr());
        // The third needs a new page: the first keeps only its two blocks.
        let third = carver.block(layout(40));
        assert_eq!(live(&first), 2);
        assert_eq!(live(&third), 2 * FIRST_PAGE_LINES + 1);
        first.free();
        assert_eq!(live(&second), 1);
        drop(carver);
        // The carver left the second page: only `third` holds it.
        assert_eq!(live(&third), 1);
        second.free(); // frees the first page (Miri and valgrind check that it is freed)
        third.free(); // and the second
    }

    #[test]
    fn pages_double_up_to_their_largest() {
        let mut carver = Carver::new();
        let mut blocks = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..4 * MAX_PAGE_LINES {
            blocks.push(carver.block(layout(64)));
            if carver.lines != sizes.last().copied().unwrap_or(0) {
                sizes.push(carver.lines);
            }
        }
        assert_eq!(sizes, [2, 4, 8, 16, 32, 64]);
        for b in blocks {
            b.free();
        }
    }
}
