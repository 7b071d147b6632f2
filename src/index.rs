//! The index: key → node, read without locks, written under per-shard locks.
//!
//! Keys are spread over a fixed number of shards by the top bits of their hash. A shard
//! is an epoch-protected array of bucket heads; a bucket is a singly linked chain of
//! entries, newest first.
//!
//! Entries are intrusive: a node allocates one [`Entry`] per key together with itself,
//! and the index only links and unlinks them, so an insert allocates once for all its
//! keys and a kill frees nothing of its own (the entries go with the node). Each entry
//! has two links; a bucket array threads its chains through one of them (its `link`),
//! alternating from one array to the next.
//!
//! - Readers pin the epoch, load the shard's array and walk one chain through that
//!   array's link with `Acquire` loads. They never lock, never write, never allocate.
//! - Writers lock the shard and publish with `Release` stores: a new entry (its link
//!   already set) becomes reachable with one store to its predecessor; unlinking is one
//!   store that skips the entry. A reader standing on an unlinked entry can go on: the
//!   entry lives as long as its node, which is retired through the epoch only after all
//!   its entries are unlinked.
//! - Besides its chains a shard keeps, under the same lock, a count of the objects whose
//!   first key lives there (the table's `len`, without a shared counter) and the node
//!   blocks retired from there, for reuse by its next insert (see `recycle`).
//! - Growth (the shard holds more entries than buckets): the writer threads every linked
//!   entry into a new array twice the size through the *other* link, swaps the array in
//!   with one `Release` store and retires the old one. Readers still on the old array
//!   follow the old links, which nobody writes any more: growth never stops them. The
//!   next growth rewrites those old links, so it waits until the old array has been
//!   reclaimed — until then no reader can be on it (a shard that cannot grow yet just
//!   has longer chains for a while). The grower flushes the old array's deferred free
//!   to the epoch's global queue at once, so it is freed as soon as every thread pinned
//!   at that moment has unpinned: lone lookups and writers pin only briefly, and a table
//!   grown from `new()` keeps chains as short as a pre-sized one (`tests/growth.rs`).
//!   What still holds growth back is a thread pinned for the whole of a growth spurt
//!   (one long [`ReadSection`](crate::ReadSection)): that shard's chains lengthen until
//!   the section ends.
//! - Index memory: each shard keeps its current bucket array (8 bytes a bucket, at most
//!   twice its entries, at least 8) and at most one retired array, half that size,
//!   until the epoch frees it; entries live in their nodes (40 bytes a key).
//!
//! The index stores raw node pointers and knows nothing about node state: the table
//! decides what an entry's node means.

use crate::recycle::{Block, Incoming, Spare};
use crate::sync::{
    Arc, Atomic, AtomicBool, AtomicUsize, Guard, Mutex, MutexGuard, Ordering, Owned, Shared,
};
use equivalent::Equivalent;

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
    /// Writers hold this for every store into `buckets` or a chain.
    writer: Mutex<ShardState>,
    buckets: Atomic<Buckets<K, N>>,
    /// See [`ShardWriter::add_objects`]; read without the lock by [`Index::objects`].
    objects: AtomicUsize,
    /// Blocks of nodes whose first key lives here, back from their grace period.
    incoming: Incoming,
}

/// What a shard's writers share, under its lock.
struct ShardState {
    /// Entries linked in the shard.
    len: usize,
    /// Set once the array the last growth retired has been freed; `None` before the
    /// first growth.
    retired_freed: Option<Arc<AtomicBool>>,
    /// Node blocks for this shard's next inserts (see [`crate::recycle`]).
    spare: Spare,
}

struct Buckets<K, N> {
    heads: Box<[Atomic<Entry<K, N>>]>,
    /// Which of an entry's two links this array's chains go through.
    link: usize,
}

/// One key of a node, as linked into the index. Lives in its node's block, beside the
/// key it points to, and is freed with it; immutable once linked, except its links.
pub(crate) struct Entry<K, N> {
    hash: u64,
    key: *const K,
    node: *const N,
    next: [Atomic<Entry<K, N>>; 2],
}

impl<K, N> Entry<K, N> {
    /// The entry of the key at `key`, in the same block as `node`.
    pub(crate) fn new(hash: u64, key: *const K, node: *const N) -> Self {
        Entry {
            hash,
            key,
            node,
            next: [Atomic::null(), Atomic::null()],
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn key(&self) -> &K {
        // SAFETY: the key lives in the entry's own block, so as long as the entry does.
        unsafe { &*self.key }
    }

    /// The entry's node, as the pointer the node was allocated under (it covers the
    /// whole block, which a `&N` would not).
    pub(crate) fn node(&self) -> *const N {
        self.node
    }
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
                writer: Mutex::new(ShardState {
                    len: 0,
                    retired_freed: None,
                    spare: Spare::new(),
                }),
                buckets: Atomic::new(Buckets::new(per_shard, 0)),
                objects: AtomicUsize::new(0),
                incoming: Incoming::new(),
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

    /// The entry linked under `key`, if any; lock-free.
    #[inline]
    pub(crate) fn find<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<&'g Entry<K, N>>
    where
        K: 'g,
        N: 'g,
        Q: Equivalent<K> + ?Sized,
    {
        self.shards[Self::shard_of(hash)].find(hash, key, guard)
    }

    /// The sum of every shard's object count (see [`ShardWriter::add_objects`]): exact
    /// when no writer runs.
    pub(crate) fn objects(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.objects.load(Ordering::Relaxed))
            .fold(0, usize::wrapping_add)
    }

    /// The index's shape right now: how many buckets and linked entries its shards have,
    /// and the longest chain a lookup may walk. Exact when no writer runs.
    pub(crate) fn stats(&self, guard: &Guard) -> IndexStats {
        let mut stats = IndexStats::default();
        for shard in self.shards.iter() {
            // SAFETY: published with `Release`, retired only through the epoch.
            let buckets = unsafe { shard.buckets.load(Ordering::Acquire, guard).deref() };
            stats.buckets += buckets.heads.len();
            for head in buckets.heads.iter() {
                let chain = buckets.chain_from(head, guard).count();
                stats.entries += chain;
                stats.longest_chain = stats.longest_chain.max(chain);
            }
        }
        stats
    }

    /// Gives a dead node's block back to the shard of `hash` (its first key's), for
    /// reuse by an insert there. Lock-free.
    pub(crate) fn recycle(&self, hash: u64, block: Block) {
        self.shards[Self::shard_of(hash)].incoming.push(block);
    }

    /// Locks the shard `shard` for writing; the writer reads it under `guard`.
    pub(crate) fn lock<'a>(&'a self, shard: usize, guard: &'a Guard) -> ShardWriter<'a, K, N> {
        let shard = &self.shards[shard];
        ShardWriter {
            guard,
            state: shard.writer.lock(),
            shard,
        }
    }
}

/// The shape of a table's index, from [`ResTable::index_stats`](crate::ResTable::index_stats):
/// for tests and diagnostics of how well the index keeps up with growth.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexStats {
    /// Buckets over all shards.
    pub buckets: usize,
    /// Index entries linked (one per key of each object not yet unlinked).
    pub entries: usize,
    /// The most entries on one bucket's chain: the most a lookup walks.
    pub longest_chain: usize,
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
    ) -> Option<&'g Entry<K, N>> {
        loop {
            // SAFETY: loaded under `guard`, which is still pinned (caller's contract);
            // an entry is set only after its array.
            if let Some(entry) = unsafe { self.entry.as_ref() } {
                let link = unsafe { (*self.buckets).link };
                self.entry = entry.next[link].load(Ordering::Acquire, guard).as_raw();
                return Some(entry);
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
            // collector's to free; this one is still linked and so ours. Entries belong
            // to their nodes.
            unsafe {
                let guard = crossbeam_epoch::unprotected();
                drop(shard.buckets.load(Ordering::Relaxed, guard).into_owned());
            }
        }
    }
}

impl<K, N> Shard<K, N> {
    #[inline]
    fn find<'g, Q>(&self, hash: u64, key: &Q, guard: &'g Guard) -> Option<&'g Entry<K, N>>
    where
        K: 'g,
        N: 'g,
        Q: Equivalent<K> + ?Sized,
    {
        // SAFETY: published with `Release`, retired only through the epoch.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        buckets
            .chain(hash, guard)
            .find(|entry| entry.hash == hash && key.equivalent(entry.key()))
    }
}

/// A locked shard.
pub(crate) struct ShardWriter<'a, K, N> {
    /// A pinned guard, shared by all the shards one insert or kill locks. Under the lock
    /// nothing the writer reads can be retired, so the pin is not what keeps it safe; it
    /// is there to retire an array after a growth, and because loom explored only one
    /// execution of an insert racing a get (instead of 53,439) when writers read under
    /// `crossbeam_epoch::unprotected()`: we keep the models honest for one pin per insert
    /// or kill.
    guard: &'a Guard,
    state: MutexGuard<'a, ShardState>,
    shard: &'a Shard<K, N>,
}

impl<K, N> ShardWriter<'_, K, N> {
    /// The entry linked under `key`, if any.
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Entry<K, N>>
    where
        Q: Equivalent<K> + ?Sized,
    {
        self.shard.find(hash, key, self.guard)
    }

    /// Unlinks the entry with this hash that belongs to `node`, if one is linked.
    /// Matching on the node rather than the key means kill needs nothing of `K`, and
    /// never removes a newer object's entry.
    pub(crate) fn unlink(&mut self, hash: u64, node: *const N) -> bool {
        let guard = self.guard;
        let buckets = self.buckets();
        let mut link = buckets.head(hash);
        loop {
            let current = link.load(Ordering::Acquire, guard);
            // SAFETY: we hold the shard lock, so every entry on the chain is linked and
            // its node not yet retired.
            let Some(entry) = (unsafe { current.as_ref() }) else {
                return false;
            };
            let next = &entry.next[buckets.link];
            if entry.hash == hash && std::ptr::eq(entry.node, node) {
                link.store(next.load(Ordering::Acquire, guard), Ordering::Release);
                self.state.len -= 1;
                return true;
            }
            link = next;
        }
    }

    /// Links `entry` at the head of its bucket (the caller has checked that no entry for
    /// its key is linked), growing the shard first if it is full.
    ///
    /// # Safety
    /// `entry` belongs to a node that stays allocated until it is unlinked again and
    /// then retired through the epoch, and it is not linked anywhere now.
    pub(crate) unsafe fn link(&mut self, entry: &Entry<K, N>) {
        if self.state.len >= self.buckets().heads.len() {
            self.grow();
        }
        let guard = self.guard;
        let buckets = self.buckets();
        let head = buckets.head(entry.hash);
        entry.next[buckets.link].store(head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
        head.store(Shared::from(entry as *const Entry<K, N>), Ordering::Release);
        self.state.len += 1;
    }

    /// A recycled block with `layout` for a node whose first key lives here, if one is
    /// at hand. Takes in the blocks recycled since the last writer first (so a shard
    /// that only sees kills still bounds what it keeps).
    pub(crate) fn take_block(
        &mut self,
        layout: std::alloc::Layout,
    ) -> Option<std::ptr::NonNull<u8>> {
        self.absorb_recycled();
        self.state.spare.take(layout)
    }

    /// Takes in the blocks recycled since the last writer, freeing those past what the
    /// shard keeps.
    pub(crate) fn absorb_recycled(&mut self) {
        self.state.spare.absorb(&self.shard.incoming);
    }

    /// The objects whose first key lives in this shard: kept by the table (`len`)
    /// under the lock, so it costs no atomic read-modify-write.
    pub(crate) fn add_objects(&mut self, delta: isize) {
        let objects = &self.shard.objects;
        objects.store(
            objects.load(Ordering::Relaxed).wrapping_add_signed(delta),
            Ordering::Relaxed,
        );
    }

    fn buckets(&self) -> &Buckets<K, N> {
        // SAFETY: we hold the shard lock, so the array stays the shard's (and allocated)
        // while we use it.
        unsafe {
            self.shard
                .buckets
                .load(Ordering::Acquire, self.guard)
                .deref()
        }
    }

    /// Threads every entry into a new array twice the size, through the links the old
    /// array does not use, swaps it in and retires the old array. Does nothing if the
    /// array before the current one may still have readers (whose links the new one
    /// would overwrite): the shard then just has longer chains for a while.
    #[cold]
    fn grow(&mut self) {
        if let Some(freed) = &self.state.retired_freed {
            // `Acquire` pairs with the `Release` in the deferred free below: every reader
            // of that array is done with the links we are about to write.
            if !freed.load(Ordering::Acquire) {
                return;
            }
        }
        let guard = self.guard;
        let old = self.buckets();
        let new = Buckets::new(old.heads.len() * 2, 1 - old.link);
        for head in old.heads.iter() {
            for entry in old.chain_from(head, guard) {
                let new_head = new.head(entry.hash);
                entry.next[new.link]
                    .store(new_head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
                new_head.store(Shared::from(entry as *const Entry<K, N>), Ordering::Relaxed);
            }
        }
        let new = Owned::new(new).into_shared(guard);
        let old = self.shard.buckets.swap(new, Ordering::Release, guard);
        let freed = Arc::new(AtomicBool::new(false));
        self.state.retired_freed = Some(Arc::clone(&freed));
        let old = old.as_raw() as usize;
        // SAFETY: the old array is unreachable for new readers from the swap on; the
        // epoch runs this once every reader that may still walk it has unpinned. Only
        // the heads are freed: the entries belong to their nodes.
        unsafe {
            guard.defer_unchecked(move || {
                drop(Box::from_raw(old as *mut Buckets<K, N>));
                freed.store(true, Ordering::Release);
            });
        }
        // Deferred work waits in this thread's bag until 64 items fill it, and an
        // insert-only workload defers nothing else: without this flush the old array was
        // never freed, so the shard never grew again and its chains grew without bound
        // (a table grown from `new()` to 200,000 objects took 21 s). Flushed, the array
        // is freed as soon as the epoch moves on, which lookups and writers drive.
        guard.flush();
    }
}

impl<K, N> Buckets<K, N> {
    fn new(len: usize, link: usize) -> Self {
        debug_assert!(len.is_power_of_two());
        Buckets {
            heads: (0..len).map(|_| Atomic::null()).collect(),
            link,
        }
    }

    #[inline]
    fn head(&self, hash: u64) -> &Atomic<Entry<K, N>> {
        &self.heads[hash as usize & (self.heads.len() - 1)]
    }

    /// The chain of `hash`'s bucket.
    #[inline]
    fn chain<'g>(&'g self, hash: u64, guard: &'g Guard) -> impl Iterator<Item = &'g Entry<K, N>> {
        self.chain_from(self.head(hash), guard)
    }

    #[inline]
    fn chain_from<'g>(
        &'g self,
        head: &Atomic<Entry<K, N>>,
        guard: &'g Guard,
    ) -> impl Iterator<Item = &'g Entry<K, N>> {
        let mut next = head.load(Ordering::Acquire, guard);
        let link = self.link;
        std::iter::from_fn(move || {
            // SAFETY: every entry on a chain was published with `Release`, and its node is
            // freed only through the epoch that `guard` pins, after the entry's unlink.
            let entry = unsafe { next.as_ref() }?;
            next = entry.next[link].load(Ordering::Acquire, guard);
            Some(entry)
        })
    }
}
