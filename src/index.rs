//! The index: key → node, read without locks, written under per-shard locks.
//!
//! Keys are spread over a fixed number of shards by the top bits of their hash. A shard
//! is an epoch-protected array of bucket heads; a bucket is a singly linked chain of
//! entries, newest first. Every entry is immutable except its `next` link.
//!
//! - Readers pin the epoch, load the shard's array and walk one chain with `Acquire`
//!   loads. They never lock, never write, never allocate.
//! - Writers lock the shard, then publish with `Release` stores: a new entry (fully
//!   built, `next` already set) becomes reachable with one store to its predecessor; an
//!   unlinked entry is handed to the epoch collector, so a reader that is walking over it
//!   can finish.
//! - Growth (the shard holds more entries than buckets): the writer builds a new array
//!   of twice the size from copies of the entries, swaps it in with one `Release` store
//!   and retires the old array with its chains. Readers that still walk the old array see
//!   a frozen, consistent snapshot: growth never stops them.
//!
//! The index stores raw node pointers and knows nothing about node state: the table's
//! callers decide what an entry's node means (see `evict_if`).

use crate::sync::{Atomic, Guard, Mutex, MutexGuard, Ordering, Owned, Shared};
use std::borrow::Borrow;

/// How many shards a table's index has: enough that writers on 2–16 cores rarely meet on
/// one lock. Under loom a small number keeps the models small while still exercising
/// inserts that lock more than one shard.
#[cfg(not(loom))]
const SHARD_BITS: u32 = 5;
#[cfg(loom)]
const SHARD_BITS: u32 = 1;

const SHARDS: usize = 1 << SHARD_BITS;

/// Smallest bucket array; under loom 1, so a second key already grows the shard.
#[cfg(not(loom))]
const MIN_BUCKETS: usize = 8;
#[cfg(loom)]
const MIN_BUCKETS: usize = 1;

pub(crate) struct Index<K, N> {
    shards: Box<[Shard<K, N>]>,
}

/// One shard; aligned to its own cache lines so that writers on neighbouring shards do
/// not slow each other's readers.
#[repr(align(128))]
struct Shard<K, N> {
    /// Writers hold this for every store into `buckets` or a chain; it guards the number
    /// of entries linked in the shard.
    writer: Mutex<usize>,
    buckets: Atomic<Buckets<K, N>>,
}

struct Buckets<K, N> {
    heads: Box<[Atomic<Entry<K, N>>]>,
}

struct Entry<K, N> {
    hash: u64,
    key: K,
    node: *const N,
    next: Atomic<Entry<K, N>>,
}

impl<K, N> Index<K, N> {
    /// An index with room for about `capacity` entries before any shard grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let per_shard = capacity
            .div_ceil(SHARDS)
            .next_power_of_two()
            .max(MIN_BUCKETS);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                writer: Mutex::new(0),
                buckets: Atomic::new(Buckets::new(per_shard)),
            })
            .collect();
        Index { shards }
    }

    /// The shard a hash lives in. Writers that need several shards lock them in
    /// ascending order of this number.
    #[inline]
    pub(crate) fn shard_of(hash: u64) -> usize {
        (hash >> (u64::BITS - SHARD_BITS)) as usize
    }

    /// The node under `key`, if any entry is linked; lock-free.
    #[inline]
    pub(crate) fn find<'g, Q>(&self, hash: u64, key: &Q, guard: &'g Guard) -> Option<&'g N>
    where
        K: Borrow<Q> + 'g,
        N: 'g,
        Q: Eq + ?Sized,
    {
        self.shards[Self::shard_of(hash)].find(hash, key, guard)
    }

    /// Locks the shard `shard` for writing.
    pub(crate) fn lock(&self, shard: usize) -> ShardWriter<'_, K, N> {
        let shard = &self.shards[shard];
        ShardWriter {
            len: shard.writer.lock(),
            shard,
        }
    }
}

/// A position in a walk over every entry of an index, kept across calls without
/// borrowing the guard: see [`Cursor::next`].
pub(crate) struct Cursor<K, N> {
    /// The shard being walked, or the next one to start.
    shard: usize,
    /// The array loaded when the walk entered `shard` (null before).
    buckets: *const Buckets<K, N>,
    /// The bucket being walked.
    bucket: usize,
    /// The next entry of that bucket's chain.
    entry: *const Entry<K, N>,
}

impl<K, N> Default for Cursor<K, N> {
    fn default() -> Self {
        Cursor {
            shard: 0,
            buckets: std::ptr::null(),
            bucket: 0,
            entry: std::ptr::null(),
        }
    }
}

impl<K, N> Cursor<K, N> {
    /// The next linked entry, shard by shard; each shard's array is loaded once, when
    /// the walk enters it, and walked as it was then.
    ///
    /// # Safety
    /// Every call on one cursor passes the same `index` and a guard that has stayed
    /// pinned since the first call (the cursor holds pointers loaded under it).
    pub(crate) unsafe fn next<'g>(
        &mut self,
        index: &'g Index<K, N>,
        guard: &'g Guard,
    ) -> Option<(&'g K, &'g N)> {
        loop {
            // SAFETY: loaded under `guard`, which is still pinned (caller's contract).
            if let Some(entry) = unsafe { self.entry.as_ref() } {
                self.entry = entry.next.load(Ordering::Acquire, guard).as_raw();
                return Some(entry.pair());
            }
            // SAFETY: as above.
            match unsafe { self.buckets.as_ref() } {
                Some(buckets) if self.bucket + 1 < buckets.heads.len() => {
                    self.bucket += 1;
                    self.entry = buckets.heads[self.bucket]
                        .load(Ordering::Acquire, guard)
                        .as_raw();
                }
                started => {
                    if started.is_some() {
                        self.shard += 1;
                    }
                    let shard = index.shards.get(self.shard)?;
                    let buckets = shard.buckets.load(Ordering::Acquire, guard);
                    // SAFETY: published with `Release`, retired only through the epoch.
                    let first = unsafe { buckets.deref() }.heads[0].load(Ordering::Acquire, guard);
                    self.buckets = buckets.as_raw();
                    self.bucket = 0;
                    self.entry = first.as_raw();
                }
            }
        }
    }
}

impl<K, N> Drop for Index<K, N> {
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            // SAFETY: `&mut self`: no reader or writer is left, and retired arrays are the
            // collector's to free; this one is still linked and so ours.
            unsafe {
                let guard = crossbeam_epoch::unprotected();
                drop(shard.buckets.load(Ordering::Relaxed, guard).into_owned());
            }
        }
    }
}

impl<K, N> Shard<K, N> {
    #[inline]
    fn find<'g, Q>(&self, hash: u64, key: &Q, guard: &'g Guard) -> Option<&'g N>
    where
        K: Borrow<Q> + 'g,
        N: 'g,
        Q: Eq + ?Sized,
    {
        // SAFETY: published with `Release`, retired only through the epoch.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        let chain = Chain {
            next: buckets.head(hash).load(Ordering::Acquire, guard),
            guard,
        };
        for (entry_key, node) in chain.with_hash(hash) {
            if entry_key.borrow() == key {
                return Some(node);
            }
        }
        None
    }
}

/// A locked shard.
pub(crate) struct ShardWriter<'a, K, N> {
    len: MutexGuard<'a, usize>,
    shard: &'a Shard<K, N>,
}

impl<K, N> ShardWriter<'_, K, N> {
    /// The node linked under `key`, if any.
    pub(crate) fn find<'g, Q>(&self, hash: u64, key: &Q, guard: &'g Guard) -> Option<&'g N>
    where
        K: Borrow<Q> + 'g,
        N: 'g,
        Q: Eq + ?Sized,
    {
        self.shard.find(hash, key, guard)
    }

    /// Unlinks the entry with this hash that points at `node`, if one is linked, and
    /// hands it to the epoch collector. Matching on the node rather than the key means
    /// kill needs nothing of `K`, and never removes a newer object's entry.
    pub(crate) fn unlink(&mut self, hash: u64, node: *const N, guard: &Guard) -> bool {
        // SAFETY (both derefs): we hold the shard lock, so the array and every linked
        // entry stay linked while we look, and the guard keeps them alive beyond that.
        let buckets = unsafe { self.shard.buckets.load(Ordering::Acquire, guard).deref() };
        let mut link = buckets.head(hash);
        loop {
            let current = link.load(Ordering::Acquire, guard);
            let Some(entry) = (unsafe { current.as_ref() }) else {
                return false;
            };
            if entry.hash == hash && std::ptr::eq(entry.node, node) {
                link.store(entry.next.load(Ordering::Acquire, guard), Ordering::Release);
                *self.len -= 1;
                // SAFETY: unlinked just above, under the lock; readers still on it are
                // pinned.
                unsafe { guard.defer_destroy(current) };
                return true;
            }
            link = &entry.next;
        }
    }
}

impl<K: Clone, N> ShardWriter<'_, K, N> {
    /// Links a new entry for `key` at the head of its bucket (the caller has checked that
    /// none is linked), growing the shard first if it is full.
    pub(crate) fn link(&mut self, hash: u64, key: K, node: *const N, guard: &Guard) {
        // SAFETY: as in `evict_if`.
        let mut buckets = unsafe { self.shard.buckets.load(Ordering::Acquire, guard).deref() };
        if *self.len >= buckets.heads.len() {
            buckets = self.grow(buckets, guard);
        }
        let head = buckets.head(hash);
        let entry = Owned::new(Entry {
            hash,
            key,
            node,
            next: Atomic::null(),
        });
        entry
            .next
            .store(head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
        head.store(entry, Ordering::Release);
        *self.len += 1;
    }

    /// Replaces the shard's array with one twice as large, built from copies of the
    /// entries, and retires the old array (with its chains) through the epoch.
    #[cold]
    fn grow<'g>(&self, old: &Buckets<K, N>, guard: &'g Guard) -> &'g Buckets<K, N> {
        let new = Buckets::new(old.heads.len() * 2);
        for head in old.heads.iter() {
            let chain = Chain {
                next: head.load(Ordering::Acquire, guard),
                guard,
            };
            for entry in chain {
                let copy = Owned::new(Entry {
                    hash: entry.hash,
                    key: entry.key.clone(),
                    node: entry.node,
                    next: Atomic::null(),
                });
                let new_head = new.head(entry.hash);
                copy.next
                    .store(new_head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
                new_head.store(copy, Ordering::Relaxed);
            }
        }
        let new = Owned::new(new).into_shared(guard);
        let old = self.shard.buckets.swap(new, Ordering::Release, guard);
        // SAFETY: unreachable for new readers from here on; readers still walking it are
        // pinned. Its drop frees the chains it owns (entries unlinked earlier were retired
        // on their own and are no longer in them).
        unsafe {
            guard.defer_destroy(old);
            new.deref()
        }
    }
}

impl<K, N> Buckets<K, N> {
    fn new(len: usize) -> Self {
        debug_assert!(len.is_power_of_two());
        Buckets {
            heads: (0..len).map(|_| Atomic::null()).collect(),
        }
    }

    #[inline]
    fn head(&self, hash: u64) -> &Atomic<Entry<K, N>> {
        &self.heads[hash as usize & (self.heads.len() - 1)]
    }
}

impl<K, N> Drop for Buckets<K, N> {
    fn drop(&mut self) {
        for head in self.heads.iter() {
            // SAFETY: an array is dropped only when no reader can reach it (epoch) or by
            // its sole owner; the entries on its chains belong to it alone.
            unsafe {
                let guard = crossbeam_epoch::unprotected();
                let mut next = head.load(Ordering::Relaxed, guard);
                while !next.is_null() {
                    let entry = next.into_owned();
                    next = entry.next.load(Ordering::Relaxed, guard);
                }
            }
        }
    }
}

/// A walk along one chain.
struct Chain<'g, K, N> {
    next: Shared<'g, Entry<K, N>>,
    guard: &'g Guard,
}

impl<'g, K, N> Chain<'g, K, N> {
    #[inline]
    fn with_hash(self, hash: u64) -> impl Iterator<Item = (&'g K, &'g N)> {
        self.filter(move |entry| entry.hash == hash)
            .map(Entry::pair)
    }
}

impl<'g, K, N> Iterator for Chain<'g, K, N> {
    type Item = &'g Entry<K, N>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // SAFETY: every entry on a chain was published with `Release` and is freed only
        // through the epoch that `guard` pins.
        let entry = unsafe { self.next.as_ref() }?;
        self.next = entry.next.load(Ordering::Acquire, self.guard);
        Some(entry)
    }
}

impl<K, N> Entry<K, N> {
    fn pair(&self) -> (&K, &N) {
        // SAFETY: an entry's node outlives it: a node is retired only after every one of
        // its entries has been unlinked, and both are freed through the same epoch.
        (&self.key, unsafe { &*self.node })
    }
}
