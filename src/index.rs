//! The index: key → node, read without locks, written under per-shard locks.
//!
//! Keys are spread over a fixed number of shards by the top bits of their hash (the
//! hasher's output folded through [`spread`] first, so that its bit fields are
//! independent whatever the hasher). A shard owns one epoch-protected array of
//! one-cache-line buckets, open-addressed, which the index holds as one word: the
//! array's address with log2 of its length in the low bits ([`ArrayWord`]), so a lookup
//! goes from that word straight to its bucket:
//!
//! ```text
//!  bucket (64 bytes):
//! +-----------------------------------------------+----------+
//! | ctrl: tag 0 | tag 1 | ... | tag 6 | overflow  |  8 bytes |
//! +-----------------------------------------------+----------+
//! | slot 0: node address | key position           |  8 bytes |
//! | ...                                           |          |
//! | slot 6                                        |  8 bytes |
//! +-----------------------------------------------+----------+
//! ```
//!
//! - A slot holds a *value*, not a link: the address of a node (aligned to
//!   [`NODE_ALIGN`]) with the position of one of its keys in the
//!   low bits. Nothing of the index lives inside the nodes, so an array can be copied
//!   while readers walk the old one.
//! - `ctrl` holds a 7-bit tag of each occupied slot's hash (top bit set, so a tag is
//!   never 0; 0 is an empty slot) and, in its last byte, overflow bits: bit `b` is set
//!   once a key whose hash picks `b` ([`overflow_bit`]) and whose home is this bucket was
//!   placed in a later one. A key lives in its home bucket (picked by the hash's low bits)
//!   or, if that was full, in the first bucket with room along its probe sequence (home,
//!   then 1, 3, 6, … buckets on: triangular steps, which visit every bucket of a
//!   power-of-two array and, unlike steps of one, keep a dense stretch of hashes from
//!   growing into one long run of full buckets), setting the overflow bit of every bucket
//!   it passed.
//! - **Lookup** (no lock, no write, no allocation): an `Acquire` load of the shard's
//!   array word, then one of the home bucket's `ctrl`, which gives every tag; each slot
//!   whose tag matches is loaded (`Acquire`) and its key compared (`Equivalent`). The
//!   first equal key is the answer, live or not (the table then tries to take a
//!   reference). If none matches and the bucket's overflow bit for this hash is clear,
//!   the key is absent; otherwise the next bucket of the sequence is read the same way.
//!   A miss reads one line, a hit two (bucket, node).
//! - **Writers** hold the shard's lock (one word in the shard's own lines, see
//!   [`crate::lock`]; several shards in ascending order, see [`LockedShards`]), which
//!   is all they need to read it safely (see
//!   [`ShardWriter`]), having prefetched each key's first bucket before taking it
//!   (so a cold table's misses overlap instead of piling up inside the locks; see
//!   [`Index::prefetch`]). Linking stores the slot, then the tag (both `Release`); a
//!   reader that sees the tag sees the slot and the node behind it. Unlinking clears
//!   the tag, then the slot; overflow bits stay until the next rebuild, so a reader
//!   that started before the unlink never stops early. The slot is free for the next
//!   insert at once. A reader that loaded a tag before the slot was cleared and
//!   reused may load the new slot value: it compares that node's key like any other
//!   and moves on if it differs. Nodes are retired through the epoch only after
//!   every one of their slots was cleared, so whatever a pinned reader loads stays
//!   readable.
//! - **Why a stale answer is still a correct one.** Under one key the index holds at
//!   most one node at a time: a writer unlinks a dead node's slot before linking its
//!   successor. A reader that finds a dead node (in the current array, or in an older
//!   copy) therefore saw it at a moment when no successor was published yet, and the node
//!   was dead at some point during the lookup: the `None` it returns is linearized there.
//! - **Rebuild** (growth, or cleaning up overflow bits), under the shard's lock: the
//!   writer copies every occupied slot into a new array (twice the size when the shard is
//!   three quarters full, the same size when overflow bits have piled up; prefetching
//!   the nodes a few buckets ahead, whose hashes it reads), publishes its word with one
//!   `Release` swap and, once the shard locks are released (see [`Retired`]: nothing
//!   pins or collects under a shard lock), defers freeing the old array to the epoch.
//!   Nothing waits: readers
//!   still on the old array see a frozen copy (liveness is in the nodes, so a stale copy
//!   is harmless, as above), and the next rebuild does not need the old array freed.
//!   The grower flushes the deferred free of an array of 1 KiB or more to the epoch's
//!   global queue, so it goes as soon as the threads pinned at that moment have
//!   unpinned; smaller ones wait until the thread has deferred 64 things.
//! - **Index memory** of a table of N keys: 64-byte buckets of 7 slots, at most three
//!   quarters full and, after a growth, at least a quarter (so 12–37 bytes a key, plus
//!   64 shards' first bucket), plus the arrays retired while a reader stayed pinned: the
//!   growths of one pin add up to less than the current arrays, and same-size rebuilds
//!   (one per half a shard's buckets of overflows) add one array each; plus at most
//!   64 KiB of arrays under 1 KiB per writing thread, waiting in its bag.
//!
//! A shard also keeps, under its lock, the count of objects whose first key lives
//! there (the table's `len`, without a shared counter) and the node blocks retired from
//! there, for reuse by its next insert (see `recycle`).
//!
//! The index knows nothing about node state: the table decides what a found node means.

use crate::block::{Block, Carver};
use crate::lock::ShardLock;
use crate::node::NODE_ALIGN;
use crate::recycle::{Incoming, Spare};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, CellMut, Guard, LockedCell, Ordering};
use equivalent::Equivalent;
use std::ptr;

/// How many shards a table's index has: as many as a writer's set of locked shards
/// has bits for (see [`LockedShards`]). Each shard has its own lock and counters, in
/// its own cache lines, so writers on different shards share no memory; two writers of
/// six-key objects share some shard a little under half of the time. Under loom two
/// keep the models small while still exercising inserts that lock more than one shard.
#[cfg(not(loom))]
const SHARDS: usize = 64;
#[cfg(loom)]
const SHARDS: usize = 2;

const _: () = assert!(
    SHARDS <= 64,
    "a writer's locked shards are the bits of a u64 (see `LockedShards`)"
);

/// Slots per bucket: seven 8-byte slots and the control word fill one cache line. Under
/// loom two, so that a second key already grows a shard and a third may overflow.
#[cfg(not(loom))]
const SLOTS: usize = 7;
#[cfg(loom)]
const SLOTS: usize = 2;

/// The byte of `ctrl` that holds the overflow bits (the bytes before it are tags).
const OVERFLOW_SHIFT: u32 = 56;

/// One in each byte of `ctrl`.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;

/// The top bit of each tag byte of `ctrl` (not of the overflow byte, nor of bytes past
/// `SLOTS`).
const TAG_HIGH_BITS: u64 = 0x8080_8080_8080_8080 & ((1 << (8 * SLOTS)) - 1);

/// The low bits of a slot value that hold the key's position in its node.
const KEY_BITS: usize = NODE_ALIGN - 1;

/// A rebuild that retires an array of at least this many bytes hands it to the epoch's
/// global queue at once; smaller ones wait in the thread's bag of deferred work, which
/// holds at most 64 items (so at most 64 KiB of them). Under loom every array is handed
/// over: that is the path on which a retired array may be freed soonest, while a reader
/// may still be on it, which the growth models are there to explore (with the arrays
/// left in the bag, `index_growth_vs_get` ran 6,681 executions instead of 38,273).
#[cfg(not(loom))]
const FLUSH_BYTES: usize = 1024;
#[cfg(loom)]
const FLUSH_BYTES: usize = 0;

/// How many buckets ahead of its copying a rebuild prefetches the nodes of (see
/// [`ShardWriter::prefetch_nodes`]): about as many cache misses in flight as a core
/// keeps, at up to 5 entries a bucket.
const REBUILD_AHEAD: usize = 4;

/// A rebuild is due when an insert would fill more than this share of a shard's slots.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 4;

#[cold]
#[inline(never)]
fn capacity_overflow(capacity: usize) -> ! {
    panic!("restable: capacity overflow (no index can hold {capacity} keys)");
}

/// What the index needs of the nodes it points to: each key and its hash, by position.
pub(crate) trait Keyed<K> {
    /// Key `idx` of the node at `node`.
    ///
    /// # Safety
    /// `node` is allocated for `'a` (the caller is pinned, or holds the shard lock of a
    /// slot that holds it) and has more than `idx` keys.
    unsafe fn key<'a>(node: *const Self, idx: usize) -> &'a K;

    /// The hash of key `idx` of the node at `node`.
    ///
    /// # Safety
    /// As for [`Keyed::key`].
    unsafe fn hash(node: *const Self, idx: usize) -> u64;
}

/// What the index makes of a key's hash before it takes bits from it: the two halves of
/// its product with an odd constant, folded together, so that every bit of the result
/// depends on every bit of the hash. The index takes several independent fields from
/// one hash (the shard from the top bits, the tag and overflow bit from the middle, the
/// bucket from the bottom); a hasher whose output is good only as a whole — foldhash's
/// fast hasher with one seed in a few hundred, or an identity hasher on integer IDs —
/// otherwise leaves those fields correlated, and keys pile up in a few buckets or
/// shards.
#[inline]
pub(crate) fn spread(hash: u64) -> u64 {
    const ODD: u128 = 0x9e37_79b9_7f4a_7c15;
    let product = u128::from(hash) * ODD;
    (product >> 64) as u64 ^ product as u64
}

/// The tag of a hash as `ctrl` stores it: bits 32-38 of the hash, which pick neither the
/// bucket (below 2^32 buckets a shard) nor, but for one hash in about ten thousand, the
/// shard (see [`Index::shard_of`]); the top bit is set so that no tag is 0 (empty).
#[inline]
fn tag(hash: u64) -> u8 {
    0x80 | (hash >> 32) as u8 & 0x7f
}

/// The overflow bit of a hash (bits 39-41), within the overflow byte: keys with other
/// bits are not sent on to the next bucket by this one's overflows.
#[inline]
fn overflow_bit(hash: u64) -> u64 {
    1 << (OVERFLOW_SHIFT + (hash >> 39) as u32 % 8)
}

/// The byte of `ctrl` that holds slot `at`'s tag (0: the slot is free).
#[inline]
fn tag_byte(at: usize) -> u64 {
    0xff << (8 * at)
}

/// The top bit of every tag byte of `ctrl` that may equal the tag repeated in every byte
/// of `tags` (false positives only after a true match, from the borrow; the key
/// comparison settles them).
#[inline]
fn matching(ctrl: u64, tags: u64) -> u64 {
    let diff = ctrl ^ tags;
    diff.wrapping_sub(LOW_BITS) & !diff & TAG_HIGH_BITS
}

/// A slot's value: a node's address with the position of one of its keys in the low
/// bits (nodes are aligned to `NODE_ALIGN > MAX_KEYS - 1`). Null is an empty slot.
pub(crate) struct Slot<N>(*mut N);

// Not derived: a derive would ask the same of `N`.
impl<N> Clone for Slot<N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for Slot<N> {}

impl<N> PartialEq for Slot<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<N> Slot<N> {
    pub(crate) fn new(node: *const N, idx: usize) -> Self {
        debug_assert!(node as usize & KEY_BITS == 0 && idx <= KEY_BITS);
        Slot(node.cast_mut().map_addr(|a| a | idx))
    }

    pub(crate) fn node(self) -> *const N {
        self.0.map_addr(|a| a & !KEY_BITS)
    }

    pub(crate) fn idx(self) -> usize {
        self.0.addr() & KEY_BITS
    }
}

pub(crate) struct Index<K, N> {
    /// Each shard's bucket array, as an [`ArrayWord`]: all that lookups read before the
    /// bucket they want. Kept apart from what writers write on every insert and kill
    /// (`shards`), so lookups miss here only after a growth; and here, not behind a
    /// pointer, one dependent load shorter. Stored into by the shard's lock holder.
    arrays: [AtomicPtr<Bucket<N>>; SHARDS],
    _keys: std::marker::PhantomData<K>,
    shards: [Shard; SHARDS],
}

/// What a shard's writers keep besides its array; aligned to its own cache lines (two:
/// x86's adjacent-line prefetcher pairs them), so that writers on different shards
/// share no line, and no lookup reads one.
#[repr(align(128))]
struct Shard {
    /// Writers hold it to touch `state`.
    lock: ShardLock,
    /// See [`ShardWriter`].
    state: LockedCell<ShardState>,
    /// See [`ShardWriter::add_objects`]; read without the lock by [`Index::objects`].
    objects: AtomicUsize,
    /// Blocks of nodes whose first key lives here, back from their grace period.
    incoming: Incoming,
    /// How many handles on the table's shared part count here (see
    /// [`Index::handles`]).
    handles: AtomicUsize,
}

/// What a shard's writers share, under its lock.
struct ShardState {
    /// Occupied slots in the current array.
    len: usize,
    /// Overflow bits set in the current array: once they reach half its buckets, the
    /// next insert rebuilds it (clearing them).
    overflows: usize,
    /// Node blocks for this shard's next inserts (see [`crate::recycle`]).
    spare: Spare,
    /// Where this shard's new node blocks come from in a cache-aligned table (see
    /// [`crate::block`]); others allocate each block on its own.
    pages: Option<Carver>,
}

/// One cache line of the index.
#[repr(C, align(64))]
struct Bucket<N> {
    ctrl: AtomicU64,
    slots: [AtomicPtr<N>; SLOTS],
}

/// A shard's bucket array as one word, what [`Index::arrays`] holds: the address of its
/// first bucket, with log2 of the bucket count in the low bits, which are free because
/// buckets are aligned to a cache line. A lookup loads the word and then the bucket it
/// wants: no header in between, whose load the bucket's address would wait for. The
/// array is a `Box<[Bucket<N>]>` turned into this word ([`array_word`]) and back
/// ([`free_array`]).
type ArrayWord<N> = *mut Bucket<N>;

/// The low bits of an [`ArrayWord`] that hold log2 of the bucket count.
const LEN_BITS: usize = align_of::<Bucket<()>>() - 1;

const _: () = assert!(
    usize::BITS as usize <= LEN_BITS + 1,
    "log2 of any bucket count fits in an array word's low bits"
);

/// A shard's bucket array, borrowed from its [`ArrayWord`] for as long as the caller is
/// pinned (or holds the shard's lock).
struct Buckets<'a, K, N> {
    /// A power of two of them.
    buckets: &'a [Bucket<N>],
    _keys: std::marker::PhantomData<K>,
}

impl<K, N: Keyed<K>> Index<K, N> {
    /// An index with room for about `capacity` keys before any shard grows, whose nodes
    /// are carved as whole cache lines if `cache_aligned`.
    ///
    /// Panics ("capacity overflow", as `Vec` and `HashMap` do) before allocating anything
    /// if the index for `capacity` keys would be larger than any allocation can be.
    pub(crate) fn with_capacity(capacity: usize, cache_aligned: bool) -> Self {
        let buckets = capacity
            .div_ceil(SHARDS)
            .checked_mul(LOAD_DEN)
            .and_then(|slots| {
                (slots / LOAD_NUM)
                    .div_ceil(SLOTS)
                    .checked_next_power_of_two()
            })
            .filter(|&buckets| {
                let bytes = buckets.checked_mul(size_of::<Bucket<N>>() * SHARDS);
                bytes.is_some_and(|bytes| bytes <= isize::MAX as usize)
            })
            .unwrap_or_else(|| capacity_overflow(capacity));
        let arrays = std::array::from_fn(|_| AtomicPtr::new(array_word(Bucket::array(buckets))));
        let shards = std::array::from_fn(|_| Shard {
            lock: ShardLock::new(),
            state: LockedCell::new(ShardState {
                len: 0,
                overflows: 0,
                spare: Spare::new(),
                pages: cache_aligned.then(Carver::new),
            }),
            objects: AtomicUsize::new(0),
            incoming: Incoming::new(),
            handles: AtomicUsize::new(0),
        });
        Index {
            arrays,
            _keys: std::marker::PhantomData,
            shards,
        }
    }

    /// The node linked under `key`, if any; lock-free. The pointer is valid while
    /// `guard` stays pinned.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q, guard: &Guard) -> Option<*const N>
    where
        Q: Equivalent<K> + ?Sized,
    {
        self.buckets(Self::shard_of(hash), guard)
            .find(hash, key)
            .map(|(_, _, slot)| slot.node())
    }

    /// The sum of every shard's object count (see [`ShardWriter::add_objects`]): exact
    /// when no writer runs.
    pub(crate) fn objects(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.objects.load(Ordering::Relaxed))
            .fold(0, usize::wrapping_add)
    }

    /// The index's shape right now: how many buckets and keys its shards have, the most
    /// buckets a lookup of a present key reads, and the most keys in one shard. Exact
    /// when no writer runs.
    pub(crate) fn stats(&self, guard: &Guard) -> IndexStats {
        let mut stats = IndexStats {
            shards: SHARDS,
            ..IndexStats::default()
        };
        for shard in 0..SHARDS {
            let buckets = self.buckets(shard, guard);
            stats.buckets += buckets.buckets.len();
            let mut entries = 0;
            for (at, bucket) in buckets.buckets.iter().enumerate() {
                for slot in bucket.occupied() {
                    // SAFETY: pinned, and found in the index.
                    let hash = unsafe { N::hash(slot.node(), slot.idx()) };
                    entries += 1;
                    stats.longest_probe = stats.longest_probe.max(buckets.probe_len(hash, at));
                }
            }
            stats.entries += entries;
            stats.largest_shard = stats.largest_shard.max(entries);
        }
        stats.slots = stats.buckets * SLOTS;
        stats
    }
}

impl<K, N> Index<K, N> {
    /// Shard `shard`'s current array, borrowed for as long as the guard stays pinned.
    #[inline]
    fn buckets<'g>(&self, shard: usize, _pinned: &'g Guard) -> Buckets<'g, K, N> {
        // SAFETY: published with `Release` (and loaded with `Acquire`), and retired only
        // through the epoch, so it stays allocated while the caller's guard is pinned.
        unsafe { Buckets::from_word(self.arrays[shard].load(Ordering::Acquire)) }
    }

    /// The counter of the shard of `hash` that the table's shared part counts its handles
    /// in (see `table::Registry`): kept here, in each shard's own lines, so that the
    /// handles of objects homed in different shards share no word.
    #[inline]
    pub(crate) fn handles(&self, hash: u64) -> &AtomicUsize {
        &self.shards[Self::shard_of(hash)].handles
    }

    /// Gives a dead node's block back to the shard of `hash` (its first key's), for
    /// reuse by an insert there. Lock-free.
    pub(crate) fn recycle(&self, hash: u64, block: Block) {
        self.shards[Self::shard_of(hash)].incoming.push(block);
    }

    /// Starts loading the bucket where `hash`'s probe begins, without waiting for it. A
    /// writer calls this for each of its keys before it locks their shards, so that in a
    /// large, cold table the cache misses of its keys overlap one another (and the wait
    /// for the locks) instead of coming one after another while the shards are held —
    /// where a writer's locked instruction would also keep them from starting early.
    /// Only a hint: the writer probes the shard again under its lock, whatever happened
    /// in between. Under loom it does nothing, so that the models see the same accesses.
    /// Needs no pin: it only computes the bucket's address from the array word and never
    /// reads through it, and a prefetch of memory freed meanwhile is harmless.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        #[cfg(not(loom))]
        {
            // `Relaxed`: a hint; whatever array the word names, nothing is read from it.
            let word = self.arrays[Self::shard_of(hash)].load(Ordering::Relaxed);
            let buckets = array_parts(word);
            let home = hash as usize & (buckets.len() - 1);
            crate::sync::prefetch(buckets.cast::<Bucket<N>>().wrapping_add(home));
        }
        #[cfg(loom)]
        let _ = hash;
    }

    /// The shard a hash lives in.
    #[inline]
    pub(crate) fn shard_of(hash: u64) -> usize {
        // The top 32 bits scaled to 0..SHARDS (a multiply, not a modulo): the top
        // bits decide, and the low ones, where tags and overflow bits come from, move
        // the result only for hashes next to a boundary between two shards.
        (((hash >> 32) * SHARDS as u64) >> 32) as usize
    }
}

/// The shape of a table's index, from [`ResTable::index_stats`](crate::ResTable::index_stats):
/// for tests and diagnostics of how well the index keeps up with growth.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexStats {
    /// Shards: each has its own lock and bucket array (64; two under loom).
    pub shards: usize,
    /// Buckets over all shards (each 64 bytes).
    pub buckets: usize,
    /// Slots over all buckets (7 a bucket; two under loom): at most three quarters of
    /// them hold an entry.
    pub slots: usize,
    /// Keys linked (one per key of each object not yet unlinked).
    pub entries: usize,
    /// The most buckets a lookup of a linked key reads (1: every key in its home bucket).
    pub longest_probe: usize,
    /// The most keys linked in one shard: about `entries / shards` when the hashes
    /// spread well.
    pub largest_shard: usize,
}

/// A position in a walk over every slot of an index, kept across calls without
/// borrowing the guard: see [`Cursor::next`].
pub(crate) struct Cursor<K, N> {
    /// The shard being walked, or the next one to start.
    shard: usize,
    /// The array loaded when the walk entered `shard` (null before).
    buckets: ArrayWord<N>,
    /// The next slot of that array, counting across buckets.
    slot: usize,
    _keys: std::marker::PhantomData<K>,
}

impl<K, N> Default for Cursor<K, N> {
    fn default() -> Self {
        Cursor {
            shard: 0,
            buckets: ptr::null_mut(),
            slot: 0,
            _keys: std::marker::PhantomData,
        }
    }
}

impl<K, N> Cursor<K, N> {
    /// The next occupied slot, shard by shard; each shard's array is loaded once, when
    /// the walk enters it, and walked as it was then (a rebuild meanwhile leaves it
    /// frozen, and the epoch keeps it).
    ///
    /// # Safety
    /// Every call on one cursor passes the same `index` and a guard that has stayed
    /// pinned since the first call (the cursor holds pointers loaded under it).
    pub(crate) unsafe fn next(&mut self, index: &Index<K, N>, _pinned: &Guard) -> Option<Slot<N>> {
        loop {
            let buckets = (!self.buckets.is_null()).then(|| {
                // SAFETY: loaded under the guard, which is still pinned (caller's
                // contract).
                unsafe { Buckets::<K, N>::from_word(self.buckets) }
            });
            match buckets {
                Some(buckets) if self.slot < buckets.buckets.len() * SLOTS => {
                    let bucket = &buckets.buckets[self.slot / SLOTS];
                    let at = self.slot % SLOTS;
                    self.slot += 1;
                    if let Some(slot) = bucket.get(bucket.ctrl.load(Ordering::Acquire), at) {
                        return Some(slot);
                    }
                }
                started => {
                    if started.is_some() {
                        self.shard += 1;
                    }
                    let array = index.arrays.get(self.shard)?;
                    self.buckets = array.load(Ordering::Acquire);
                    self.slot = 0;
                }
            }
        }
    }
}

impl<K, N> Drop for Index<K, N> {
    fn drop(&mut self) {
        for array in &self.arrays {
            // SAFETY: `&mut self`: no reader or writer is left, and retired arrays are the
            // collector's to free; this one is still published and so ours. The nodes
            // are not the index's.
            unsafe { free_array(array.load(Ordering::Relaxed)) }
        }
    }
}

/// A shard whose lock the caller holds (through [`LockedShards`]), for writing.
///
/// Writers need no pin: under the shard's lock nothing they read can be retired. Its
/// array is replaced and retired only by a rebuild, under the same lock, and a node is
/// retired only once all its slots are unlinked, also under the locks of their shards,
/// so every node a locked shard's slots point to stays allocated while the lock is
/// held. Nothing under a shard lock pins, flushes or collects (a rebuild's replaced
/// array is retired after the unlock, see [`Retired`]), and writers do not pin at all.
pub(crate) struct ShardWriter<'a, K, N> {
    state: CellMut<'a, ShardState>,
    shard: &'a Shard,
    array: &'a AtomicPtr<Bucket<N>>,
    /// Where a rebuild leaves the array it replaced (see [`Retired`]).
    retired: &'a mut Vec<ArrayWord<N>>,
    _keys: std::marker::PhantomData<K>,
}

impl<K, N: Keyed<K>> ShardWriter<'_, K, N> {
    /// The slot linked under `key`, if any.
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<Slot<N>>
    where
        Q: Equivalent<K> + ?Sized,
    {
        self.buckets().find(hash, key).map(|(_, _, slot)| slot)
    }

    /// Clears `slot` (key `slot.idx()` of its node, whose hash is `hash`) if it is still
    /// linked. Matching on the node rather than the key means kill runs no user code,
    /// and never removes a newer object's key.
    pub(crate) fn unlink(&mut self, hash: u64, slot: Slot<N>) -> bool {
        let buckets = self.buckets();
        let Some((bucket, at, _)) = buckets.probe(hash, |found| found == slot) else {
            return false;
        };
        let bucket = &buckets.buckets[bucket];
        // The tag first: a reader that still sees it loads the slot, and finds either
        // this node (dead by now, or about to be) or null.
        let ctrl = bucket.ctrl.load(Ordering::Relaxed);
        bucket.ctrl.store(ctrl & !tag_byte(at), Ordering::Release);
        bucket.slots[at].store(ptr::null_mut(), Ordering::Release);
        self.state.len -= 1;
        true
    }

    /// Links `slot` (key `slot.idx()` of its node, whose hash is `hash`; the caller has
    /// checked that no node is linked under the key), rebuilding the shard first if it
    /// is full or its overflow bits have piled up.
    ///
    /// # Safety
    /// The slot's node stays allocated until this slot is unlinked again and the node
    /// is then retired through the epoch.
    pub(crate) unsafe fn link(&mut self, hash: u64, slot: Slot<N>) {
        let buckets = self.buckets().buckets.len();
        if (self.state.len + 1) * LOAD_DEN > buckets * SLOTS * LOAD_NUM {
            self.rebuild(buckets * 2);
        } else if self.state.overflows * 2 > buckets {
            // Past half full, a copy at the same size would set about as many overflow
            // bits again (and the next insert would rebuild once more): grow instead.
            let half_full = self.state.len * 2 > buckets * SLOTS;
            self.rebuild(if half_full { buckets * 2 } else { buckets });
        }
        self.state.overflows += self.buckets().place(hash, slot, Ordering::Release);
        self.state.len += 1;
    }

    /// A block with `layout` for a node whose first key lives here: a recycled one if one
    /// is at hand, else a new one. Takes in the blocks recycled since the last writer
    /// first (so a shard that only sees kills still bounds what it keeps).
    pub(crate) fn block(&mut self, layout: std::alloc::Layout) -> Block {
        self.absorb_recycled();
        let state = &mut *self.state;
        state
            .spare
            .take(layout)
            .unwrap_or_else(|| match &mut state.pages {
                Some(pages) => pages.block(layout),
                None => Block::alloc(layout),
            })
    }

    /// Copies every occupied slot into a new array of `len` buckets, publishes it and
    /// retires the old one. Waits for nothing: readers on the old array see it frozen.
    #[cold]
    fn rebuild(&mut self, len: usize) {
        let old = self.buckets();
        let new = array_word(Bucket::array(len));
        // SAFETY: ours, and not published yet.
        let new_buckets = unsafe { Buckets::<K, N>::from_word(new) };
        let mut overflows = 0;
        for (at, bucket) in old.buckets.iter().enumerate() {
            Self::prefetch_nodes(old.buckets.get(at + REBUILD_AHEAD));
            for slot in bucket.occupied() {
                // SAFETY: linked, and we hold the shard lock: the node is not retired.
                let hash = unsafe { N::hash(slot.node(), slot.idx()) };
                // Unpublished yet: the swap's `Release` publishes all of it.
                overflows += new_buckets.place(hash, slot, Ordering::Relaxed);
            }
        }
        self.state.overflows = overflows;
        // Handed to the epoch only once the locks are released (see `Retired`): pinning
        // or flushing here could run the collector, and with it other code, under them.
        self.retired.push(self.array.swap(new, Ordering::Release));
    }
}

/// Bucket arrays that rebuilds replaced while their shards were locked, handed to the
/// epoch once the locks are released: see [`LockedShards::unlock`].
///
/// Why not under the locks: an outermost pin collects on every 128th call, and a flush
/// always does, and collecting runs deferred functions — a retired node's `K::drop`, or
/// any other crossbeam-epoch user's deferred closure in the process (one that drops an
/// `Owner` kills, and so takes shard locks). Run under a shard lock, such code
/// deadlocked on the lock its own thread held (issue 22). So no pin, flush or
/// collection ever happens while a shard lock is held, and what a rebuild retires waits
/// here instead.
///
/// Deferring after the unlock is as safe as right after the swap: the epoch runs a
/// deferred function once every thread pinned when it was deferred has unpinned, and a
/// reader that may still walk a replaced array loaded its word while pinned, before the
/// swap, and so is still pinned at the deferral.
#[must_use = "dropping it hands the replaced arrays to the epoch"]
pub(crate) struct Retired<N>(Vec<ArrayWord<N>>);

impl<N> Drop for Retired<N> {
    /// Inline: on almost every write nothing was retired, and that check is all it costs.
    #[inline]
    fn drop(&mut self) {
        if !self.0.is_empty() {
            self.hand_over();
        }
    }
}

impl<N> Retired<N> {
    #[cold]
    fn hand_over(&mut self) {
        let guard = crate::sync::pin();
        let mut flush = false;
        for &word in &self.0 {
            flush |= size_of::<Bucket<N>>() * array_parts(word).len() >= FLUSH_BYTES;
            // SAFETY: the array is unreachable for new readers since its swap, and the
            // epoch frees it once every reader that may still walk it has unpinned (see
            // above). Only the array is freed: the nodes are not the index's.
            unsafe { guard.defer_unchecked(move || free_array(word)) };
        }
        // Deferred work waits in this thread's bag until 64 items fill it, and an
        // insert-only workload defers nothing else: flushed, the array goes as soon as
        // the epoch moves on, which lookups and writers drive. A flush costs about as
        // much as copying a 1 KiB array, so smaller arrays wait for the bag to fill.
        if flush {
            guard.flush();
        }
    }
}

impl<K, N> ShardWriter<'_, K, N> {
    /// Starts loading the nodes that `bucket`'s slots point to, for a rebuild that will
    /// read their hashes a few buckets from now. A rebuild reads each entry's hash from
    /// its node, a cache miss per entry in a table larger than the cache: prefetched
    /// [`REBUILD_AHEAD`] buckets ahead, those misses overlap instead of coming one after
    /// another. Only a hint; under loom it does nothing, so that the models see the same
    /// accesses.
    #[inline]
    fn prefetch_nodes(bucket: Option<&Bucket<N>>) {
        #[cfg(not(loom))]
        for slot in bucket.into_iter().flat_map(Bucket::occupied) {
            crate::sync::prefetch(slot.node());
        }
        #[cfg(loom)]
        let _ = bucket;
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

    fn buckets(&self) -> Buckets<'_, K, N> {
        // SAFETY: we hold the shard lock, so the array stays the shard's (and allocated)
        // while we use it.
        unsafe { Buckets::from_word(self.array.load(Ordering::Acquire)) }
    }
}

impl<N> Bucket<N> {
    /// `len` empty buckets, from zeroed memory: an empty bucket is all zero bits, so a
    /// large array costs no initializing pass (and its pages are touched only when used).
    #[cfg(not(loom))]
    fn array(len: usize) -> Box<[Self]> {
        let layout = std::alloc::Layout::array::<Self>(len).expect("restable: index too large");
        // SAFETY: the layout is not zero-sized (`len >= 1`, and a bucket is 64 bytes).
        let buckets = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Self>();
        if buckets.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: allocated by the global allocator with `Layout::array::<Self>(len)`, as
        // `Box<[Self]>` frees it; zero bits are a valid bucket (a `0` control word and
        // null slots: atomics have the layout of their integer or pointer).
        unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(buckets, len)) }
    }

    /// Under loom atomics are model objects, not plain integers: built one by one.
    #[cfg(loom)]
    fn array(len: usize) -> Box<[Self]> {
        (0..len)
            .map(|_| Bucket {
                ctrl: AtomicU64::new(0),
                slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            })
            .collect()
    }

    /// Slot `at`, if `ctrl` (this bucket's, loaded by the caller) shows it occupied and
    /// it is not cleared since.
    #[inline]
    fn get(&self, ctrl: u64, at: usize) -> Option<Slot<N>> {
        if ctrl & tag_byte(at) == 0 {
            return None;
        }
        let slot = self.slots[at].load(Ordering::Acquire);
        (!slot.is_null()).then_some(Slot(slot))
    }

    /// Every occupied slot.
    fn occupied(&self) -> impl Iterator<Item = Slot<N>> + '_ {
        let ctrl = self.ctrl.load(Ordering::Acquire);
        (0..SLOTS).filter_map(move |at| self.get(ctrl, at))
    }
}

/// The [`ArrayWord`] of `buckets` (a power of two of them), which it now owns.
fn array_word<N>(buckets: Box<[Bucket<N>]>) -> ArrayWord<N> {
    debug_assert!(buckets.len().is_power_of_two());
    let log2 = buckets.len().trailing_zeros() as usize;
    Box::into_raw(buckets)
        .cast::<Bucket<N>>()
        .map_addr(|addr| addr | log2)
}

/// Frees the array behind `word`.
///
/// # Safety
/// `word` came from [`array_word`], and nothing uses its array any more.
unsafe fn free_array<N>(word: ArrayWord<N>) {
    // SAFETY: the caller's contract; `array_parts` gives back the `Box`'s slice.
    drop(unsafe { Box::from_raw(array_parts(word)) });
}

/// The slice of buckets an [`ArrayWord`] stands for.
fn array_parts<N>(word: ArrayWord<N>) -> *mut [Bucket<N>] {
    let len = 1 << (word.addr() & LEN_BITS);
    ptr::slice_from_raw_parts_mut(word.map_addr(|addr| addr & !LEN_BITS), len)
}

impl<'a, K, N> Buckets<'a, K, N> {
    /// The array behind `word`.
    ///
    /// # Safety
    /// `word` came from [`array_word`], and its array stays allocated for `'a`.
    #[inline]
    unsafe fn from_word(word: ArrayWord<N>) -> Self {
        Buckets {
            // SAFETY: the caller's contract.
            buckets: unsafe { &*array_parts(word) },
            _keys: std::marker::PhantomData,
        }
    }

    /// The bucket count minus one: picks a bucket from a hash's low bits.
    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// `hash`'s probe sequence: its home bucket, then 1, 3, 6, … buckets on. Triangular
    /// steps visit every bucket of a power-of-two array once in as many steps, so however
    /// the array changes meanwhile, a walk reads each bucket once at most.
    #[inline]
    fn sequence(&self, hash: u64) -> impl Iterator<Item = usize> {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        (0..self.buckets.len()).map(move |step| {
            at = (at + step) & mask;
            at
        })
    }

    /// Walks `hash`'s probe sequence (home bucket, then on while the bucket's overflow bit
    /// for `hash` is set) and returns the first slot whose tag matches and for which
    /// `wanted` holds, with its bucket and position: what every lookup, the writers'
    /// included, goes through.
    #[inline]
    fn probe(
        &self,
        hash: u64,
        mut wanted: impl FnMut(Slot<N>) -> bool,
    ) -> Option<(usize, usize, Slot<N>)> {
        let tags = LOW_BITS * u64::from(tag(hash));
        let overflow = overflow_bit(hash);
        for at in self.sequence(hash) {
            let bucket = &self.buckets[at];
            let ctrl = bucket.ctrl.load(Ordering::Acquire);
            let mut matches = matching(ctrl, tags);
            while matches != 0 {
                let slot = matches.trailing_zeros() as usize / 8;
                matches &= matches - 1;
                // A matching tag is never 0, so no need to check the slot is occupied:
                // it may have been cleared since (null), which `wanted` never sees.
                let found = bucket.slots[slot].load(Ordering::Acquire);
                if !found.is_null() && wanted(Slot(found)) {
                    return Some((at, slot, Slot(found)));
                }
            }
            if ctrl & overflow == 0 {
                return None;
            }
        }
        None
    }

    /// How many buckets `hash`'s probe sequence reads to reach bucket `at` (1 for its
    /// home bucket).
    fn probe_len(&self, hash: u64, at: usize) -> usize {
        let before = self.sequence(hash).position(|bucket| bucket == at);
        before.expect("every bucket is on every probe sequence") + 1
    }

    /// Places `slot` in the first bucket of `hash`'s probe sequence with a free slot:
    /// the slot first, then its tag (both with `order`), after setting the overflow bit
    /// of every full bucket passed. Returns how many overflow bits it set. The caller
    /// holds the shard's lock (or owns the unpublished array) and has made sure there is
    /// a free slot.
    fn place(&self, hash: u64, slot: Slot<N>, order: Ordering) -> usize {
        let tag = u64::from(tag(hash));
        let mut overflows = 0;
        for at in self.sequence(hash) {
            let bucket = &self.buckets[at];
            let ctrl = bucket.ctrl.load(Ordering::Relaxed);
            if let Some(free) = (0..SLOTS).find(|&i| ctrl & tag_byte(i) == 0) {
                bucket.slots[free].store(slot.0, order);
                bucket.ctrl.store(ctrl | tag << (8 * free), order);
                return overflows;
            }
            if ctrl & overflow_bit(hash) == 0 {
                bucket.ctrl.store(ctrl | overflow_bit(hash), order);
                overflows += 1;
            }
        }
        unreachable!("restable: a shard below three quarters full has a free slot")
    }
}

impl<K, N: Keyed<K>> Buckets<'_, K, N> {
    /// The slot whose key is `key`, with its bucket and position.
    #[inline]
    fn find<Q>(&self, hash: u64, key: &Q) -> Option<(usize, usize, Slot<N>)>
    where
        Q: Equivalent<K> + ?Sized,
    {
        // Only the key is compared: the tags already rule out all but one in 128 other
        // keys, and the key sits at a fixed offset in the node's first line, where the
        // stored hash's place depends on the key count (one more dependent load).
        self.probe(hash, |slot| {
            // SAFETY: the slot was published with `Release` and loaded with `Acquire`, so
            // the node is built; the caller is pinned (or holds the lock), and nodes are
            // retired only after their slots are cleared.
            key.equivalent(unsafe { N::key(slot.node(), slot.idx()) })
        })
    }
}

/// The shards of one node's keys, all locked (see [`crate::lock`]). Unlocks them when
/// dropped.
///
/// How writers synchronize, and why they cannot deadlock: a writer takes the locks of
/// its set in ascending shard order, each lock once however many of its keys live
/// there, and holds them all until it is done. A writer that waits holds only shards
/// below the one it waits for, so in any chain of writers each waiting for the next,
/// the shards waited for strictly increase, and the chain can never close into a
/// cycle. Writers whose sets are disjoint touch no common memory: each shard's lock,
/// counters and spare blocks are in its own lines.
pub(crate) struct LockedShards<'a, K, N> {
    index: &'a Index<K, N>,
    /// Bit `i`: shard `i` is held.
    set: u64,
    /// The arrays rebuilds replaced meanwhile, retired once the locks are released.
    retired: Vec<ArrayWord<N>>,
}

impl<'a, K, N> LockedShards<'a, K, N> {
    /// Locks the shards of these key hashes. Each key's first bucket is prefetched
    /// before the locks are taken (see [`Index::prefetch`]).
    #[inline]
    pub(crate) fn new(index: &'a Index<K, N>, hashes: impl Iterator<Item = u64>) -> Self {
        let set = hashes.fold(0u64, |set, hash| {
            index.prefetch(hash);
            set | 1 << Index::<K, N>::shard_of(hash)
        });
        // Ascending: the lowest set bit first (see above).
        let mut todo = set;
        while todo != 0 {
            index.shards[todo.trailing_zeros() as usize].lock.lock();
            todo &= todo - 1;
        }
        LockedShards {
            index,
            set,
            retired: Vec::new(),
        }
    }

    /// Releases the locks and returns the arrays that rebuilds replaced meanwhile, which
    /// go to the epoch when the result drops — which may run the collector, and with it
    /// other code. An insert or a revive drops it only once its `Owner` exists, so that
    /// a panic from that code cannot leave a published object without one. (Dropping
    /// the `LockedShards` instead releases the locks and retires the arrays at once.)
    pub(crate) fn unlock(mut self) -> Retired<N> {
        let retired = Retired(std::mem::take(&mut self.retired));
        drop(self);
        retired
    }

    /// The locked shard that `hash` lives in.
    #[inline]
    pub(crate) fn writer(&mut self, hash: u64) -> ShardWriter<'_, K, N> {
        let at = Index::<K, N>::shard_of(hash);
        assert!(
            self.set & 1 << at != 0,
            "restable: the shard of every key of the node is locked"
        );
        let shard = &self.index.shards[at];
        ShardWriter {
            // SAFETY: we hold the shard's lock bit until we are dropped, and `&mut self`
            // keeps this the only `CellMut` of it while the writer lives.
            state: unsafe { shard.state.get_mut() },
            shard,
            array: &self.index.arrays[at],
            retired: &mut self.retired,
            _keys: std::marker::PhantomData,
        }
    }
}

impl<K, N> Drop for LockedShards<'_, K, N> {
    fn drop(&mut self) {
        let mut todo = self.set;
        while todo != 0 {
            self.index.shards[todo.trailing_zeros() as usize]
                .lock
                .unlock();
            todo &= todo - 1;
        }
        drop(Retired(std::mem::take(&mut self.retired)));
    }
}
