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
}

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
    ReadSection { guard: sync::pin() }
}

impl ReadSection {
    /// Unpins and pins again, so that memory retired since the section opened can be
    /// reclaimed; costs what opening a section costs. Does nothing beyond that if the
    /// thread is also pinned elsewhere (another section, an iterator).
    ///
    /// ```
    /// let mut section = restable::read_section();
    /// section.refresh();
    /// ```
    pub fn refresh(&mut self) {
        self.guard.repin();
    }
}

impl fmt::Debug for ReadSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSection").finish_non_exhaustive()
    }
}
