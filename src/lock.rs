//! Shard locks: any set of the index's shards, locked and unlocked with one atomic
//! read-modify-write each.
//!
//! An insert or a kill of an object with several keys must hold the shards of all its
//! keys at once (that is what makes it all-or-nothing). With one mutex per shard, a
//! six-key object locks and unlocks about five shards: ten locked instructions, which
//! were most of an insert + kill cycle. Here the shards' locks are the bits of one word:
//!
//! - [`ShardLocks::lock`] sets every bit of its set with one `compare_exchange` once
//!   none of them is set (`Acquire`: the holder sees what the previous holders of those
//!   shards wrote). Writers whose sets are disjoint never wait for each other; all of a
//!   set is taken at once, so no order among shards is needed and two writers cannot
//!   deadlock.
//! - [`ShardLocks::unlock`] clears the set with one `fetch_and` (`Release`).
//! - A writer that finds a shard of its set taken spins briefly, then parks on the word's
//!   address. Inside the parking lot's `validate` (under the lot's lock) it sets
//!   [`WAITERS`] with a `fetch_or` and sleeps only if that RMW still saw a shard of its
//!   set taken. An unlock clears its shards and `WAITERS` with one `fetch_and` and, if
//!   `WAITERS` was set, wakes every sleeper (each checks again, and sets `WAITERS` again
//!   if it goes back to sleep). Both are read-modify-writes of the one word, so one comes
//!   first: either the sleeper's sees the shards free and it does not sleep, or the
//!   unlock's sees `WAITERS` and wakes it through the lot's lock, which the sleeper holds
//!   until it is queued. No lost wake-up, and no `SeqCst` needed (loom could not check a
//!   `SeqCst` load; it checks this).
//!
//! Not fair: a writer may be overtaken while it sleeps. Writers hold shards for a few
//! hundred nanoseconds at most, and never while running user code other than `K::eq`.

use crate::sync::{self, AtomicU64, Ordering};

/// How often a writer retries before it parks. Shards are held briefly, so a short spin
/// usually saves a sleep; under loom the spin only multiplies interleavings.
#[cfg(not(loom))]
const LOCK_SPINS: u32 = 100;
#[cfg(loom)]
const LOCK_SPINS: u32 = 0;

/// Set in [`ShardLocks`]' word while a writer sleeps (or is about to) until some shard
/// is unlocked; the other bits are the shards' locks.
pub(crate) const WAITERS: u64 = 1 << 63;

/// The locks of up to 63 shards: shard `i` is locked while bit `i` of `held` is set.
///
/// Aligned to 128 bytes (two lines: x86's adjacent-line prefetcher pairs them), so the
/// word that every writer writes shares no cache line with what readers read: next to
/// the index's shard pointer, each lock and unlock made every lookup on another core
/// miss.
#[repr(align(128))]
pub(crate) struct ShardLocks {
    held: AtomicU64,
}

impl ShardLocks {
    pub(crate) fn new() -> Self {
        ShardLocks {
            held: AtomicU64::new(0),
        }
    }

    /// Blocks until no shard in `set` is locked, then locks them all at once.
    pub(crate) fn lock(&self, set: u64) {
        debug_assert!(set != 0 && set & WAITERS == 0);
        let mut spins = 0;
        loop {
            let held = self.held.load(Ordering::Relaxed);
            if held & set == 0 {
                if self
                    .held
                    .compare_exchange_weak(held, held | set, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if spins < LOCK_SPINS {
                spins += 1;
                sync::spin_hint();
                continue;
            }
            // `Relaxed`: the lock itself is taken by the CAS above, after the wake-up.
            sync::park(
                self.wait_key(),
                || self.held.fetch_or(WAITERS, Ordering::Relaxed) & set != 0,
                None,
            );
        }
    }

    /// Unlocks every shard in `set` (all locked by the caller) and wakes the writers
    /// that sleep, if any.
    pub(crate) fn unlock(&self, set: u64) {
        let held = self.held.fetch_and(!(set | WAITERS), Ordering::Release);
        debug_assert_eq!(held & set, set, "unlock of shards not locked");
        if held & WAITERS != 0 {
            sync::unpark_all(self.wait_key());
        }
    }

    /// The parking lot key of the writers waiting here: the word's address, which no
    /// node can have while the table lives.
    fn wait_key(&self) -> usize {
        std::ptr::from_ref(&self.held).addr()
    }
}
