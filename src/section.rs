//! Read sections: one epoch pin for a batch of lookups, as `rcu_read_lock()` is for a
//! kernel interrupt handler.
//!
//! See [`ReadSection`] for what a section buys and what it costs. Crossbeam-epoch
//! makes it cheap: `pin` on a thread that is already pinned only bumps a counter, so the
//! section is one pinned guard and nothing else.

use crate::sync::{self, Guard};
use std::fmt;

/// One epoch pin held across a batch of lookups on this thread, opened by
/// [`read_section`].
///
/// A get-ref pins the epoch, and pinning a thread that is not pinned yet costs a full
/// fence: about a fifth of an uncontended get+put here. A thread that is already pinned
/// pins again for the price of a counter increment. An event handler or a completion
/// poller looks up a batch of ids at a time (one interrupt's EQEs, one poll of a CQ), so
/// it can pin once for the batch, as the kernel does with `rcu_read_lock()`.
///
/// The price is reclamation: memory retired anywhere while a section is open (by any
/// table's kill or growth) is not freed or reused until the section closes or is
/// [refreshed](ReadSection::refresh). Hold one for a batch, not for the life of a
/// thread. References taken in a section are ordinary [`Ref`](crate::Ref)s: they may
/// outlive it, and draining waits for them, not for the section.
///
/// Not `Send`: the pin belongs to the thread that took it.
///
/// ```
/// use restable::ResTable;
///
/// let table = ResTable::new();
/// let _qp = table.insert(&[7u32], "qp").unwrap();
/// let events = [7u32, 8, 7];
///
/// let section = restable::read_section();
/// let found = events.iter().filter(|id| table.get(*id).is_some()).count();
/// drop(section);
/// assert_eq!(found, 2);
/// ```
pub struct ReadSection {
    guard: Guard,
    /// Refreshes so far, to collect on every [`COLLECT_EVERY`]th.
    refreshes: u32,
}

/// How many refreshes go between two in which the section also collects. The epoch
/// advances only when some thread collects, and crossbeam collects on every 128th
/// outermost pin of a thread: a thread that lives in a section refreshed between batches
/// never takes one. Were every busy thread in such a section, no memory retired by any
/// of them would ever be freed; in the benchmarks two writers in sections piled up
/// millions of deferred frees, which the next workload then paid for (inserts 3-20
/// times slower). A collection frees at most 8 × 64 deferred items, so collecting every
/// 4 refreshes keeps up with a section that retires one object per lookup at the
/// documented batch of 64; a thread that does not pin otherwise collects every 128
/// lookups, so this is no more often than that.
const COLLECT_EVERY: u32 = 4;

/// Opens a [`ReadSection`] on the calling thread: until it drops, lookups on this thread
/// (in any table) skip the epoch's fence.
///
/// A poller that runs for long refreshes its section between batches:
///
/// ```
/// use restable::ResTable;
///
/// let table = ResTable::new();
/// let _cq = table.insert(&[1u32], 0u64).unwrap();
/// let mut section = restable::read_section();
/// for batch in 0..4 {
///     for _ in 0..64 {
///         assert_eq!(table.get(&1).as_deref(), Some(&0));
///     }
///     section.refresh(); // lets memory retired meanwhile be reclaimed
/// }
/// ```
pub fn read_section() -> ReadSection {
    ReadSection {
        guard: sync::pin(),
        refreshes: 0,
    }
}

impl ReadSection {
    /// The section's pin, for lookups made under it.
    #[inline]
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Moves the section to the current epoch, so that memory retired since the
    /// section opened can be reclaimed, and on every fourth refresh also hands this
    /// thread's retired memory to the epoch and collects (frees what no thread can
    /// reach any more, and lets the epoch advance). Costs less than opening a section,
    /// except on those collecting refreshes. Does not move the section if the thread is
    /// also pinned elsewhere (another section, an iterator).
    ///
    /// ```
    /// let mut section = restable::read_section();
    /// section.refresh();
    /// ```
    pub fn refresh(&mut self) {
        self.guard.repin();
        self.refreshes = self.refreshes.wrapping_add(1);
        if self.refreshes % COLLECT_EVERY == 0 {
            self.guard.flush();
        }
    }
}

impl fmt::Debug for ReadSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSection").finish_non_exhaustive()
    }
}
