//! Shard locks: one lock word per index shard, in the shard's own cache lines, so that
//! writers on different shards share no memory at all.
//!
//! An insert or a kill of an object with several keys holds the shards of all its keys at
//! once (that is what makes it all-or-nothing). It takes their locks one by one in
//! ascending shard order (see `index::LockedShards`), which is what keeps two writers
//! with overlapping shard sets from deadlocking: each waits only for a shard above every
//! shard it holds, so no cycle of waits can form.
//!
//! Until the write-path rework (issue 24) every shard's lock was a bit of one shared
//! word, taken for a whole set with one CAS: fewer locked instructions for a six-key
//! object, but every lock and unlock in the table moved that one cache line between
//! cores, so two writers on disjoint shards serialized on it like on a global spinlock
//! (two threads' insert + kill cycles on disjoint keys were slower than one global
//! mutex's).
//!
//! One shard's word:
//!
//! - [`ShardLock::lock`]: a `compare_exchange` from 0 to [`LOCKED`] (`Acquire`: the
//!   holder sees what the previous holders of the shard wrote).
//! - [`ShardLock::unlock`]: a `swap` to 0 (`Release`), which also says whether a writer
//!   sleeps on the word ([`WAITERS`]).
//! - A writer that finds the shard taken spins briefly, then parks on the word's address.
//!   Inside the parking lot's `validate` (under the lot's lock) it sets [`WAITERS`] with a
//!   `fetch_or` and sleeps only if that RMW still saw [`LOCKED`]. Both that and the
//!   unlock's `swap` are read-modify-writes of the one word, so one comes first: either
//!   the sleeper's sees the shard free and it does not sleep, or the unlock's sees
//!   `WAITERS` and wakes every sleeper through the lot's lock, which the sleeper holds
//!   until it is queued. Each woken writer tries again, and sets `WAITERS` again if it
//!   goes back to sleep. No lost wake-up, and no `SeqCst` needed (loom checks this).
//!
//! Not fair: a writer may be overtaken while it sleeps. Writers hold shards for a few
//! hundred nanoseconds at most, and never while running user code other than `K::eq`.

use crate::sync::{self, AtomicUsize, Ordering};

/// How often a writer retries before it parks. Shards are held briefly, so a short spin
/// usually saves a sleep; under loom the spin only multiplies interleavings.
#[cfg(not(loom))]
const LOCK_SPINS: u32 = 100;
#[cfg(loom)]
const LOCK_SPINS: u32 = 0;

/// Set while a writer holds the shard.
pub(crate) const LOCKED: usize = 1;

/// Set while a writer sleeps (or is about to) until the shard is unlocked.
pub(crate) const WAITERS: usize = 2;

/// One shard's lock (see the module documentation). It lives in the shard's own cache
/// lines, beside what only that shard's writers touch.
pub(crate) struct ShardLock {
    word: AtomicUsize,
}

impl ShardLock {
    pub(crate) fn new() -> Self {
        ShardLock {
            word: AtomicUsize::new(0),
        }
    }

    /// Blocks until the shard is free, then locks it.
    #[inline]
    pub(crate) fn lock(&self) {
        if self
            .word
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            let word = self.word.load(Ordering::Relaxed);
            if word & LOCKED == 0 {
                // Keeps `WAITERS` if it is set: other sleepers still need the wake-up.
                if self
                    .word
                    .compare_exchange_weak(
                        word,
                        word | LOCKED,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
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
            sync::park(
                self.wait_key(),
                || self.word.fetch_or(WAITERS, Ordering::Relaxed) & LOCKED != 0,
                None,
            );
        }
    }

    /// Unlocks the shard, waking the writers asleep on it.
    #[inline]
    pub(crate) fn unlock(&self) {
        let word = self.word.swap(0, Ordering::Release);
        debug_assert!(word & LOCKED != 0, "unlock of a shard not locked");
        if word & WAITERS != 0 {
            sync::unpark_all(self.wait_key());
        }
    }

    /// The parking lot key of the writers waiting here: the word's address, which no
    /// drainer uses (drainers wait on node addresses).
    fn wait_key(&self) -> usize {
        std::ptr::from_ref(&self.word).addr()
    }
}
