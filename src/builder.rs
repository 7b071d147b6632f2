//! [`Builder`]: the options a table is made with.

use crate::table::{DefaultHashBuilder, ResTable};
use std::hash::BuildHasher;

/// The options of a new [`ResTable`]: its capacity, its hasher, and whether its objects
/// get cache lines of their own. [`ResTable::new`], [`with_capacity`](ResTable::with_capacity)
/// and the others are shorthands for a builder with the defaults.
///
/// ```
/// use restable::{Builder, ResTable};
///
/// // A driver's QP table: thousands of objects, looked up from the interrupt handlers of
/// // several CPUs, so each object's reference count gets a cache line of its own.
/// let qps: ResTable<u32, &str> = Builder::new().capacity(4096).cache_aligned().build();
/// let _qp = qps.insert(&[7], "qp 7").unwrap();
/// assert_eq!(*qps.get(&7).unwrap(), "qp 7");
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<S = DefaultHashBuilder> {
    capacity: usize,
    hasher: S,
    cache_aligned: bool,
}

impl Builder {
    /// The defaults: no capacity reserved, the [`DefaultHashBuilder`], and objects
    /// allocated from the global allocator.
    ///
    /// ```
    /// let table: restable::ResTable<u64, ()> = restable::Builder::new().build();
    /// assert!(table.is_empty());
    /// ```
    pub fn new() -> Self {
        Builder {
            capacity: 0,
            hasher: DefaultHashBuilder::default(),
            cache_aligned: false,
        }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Builder<S> {
    /// Room for about `capacity` keys before the table's index grows.
    ///
    /// [`build`](Self::build) panics on a capacity no index can hold, as
    /// [`ResTable::with_capacity`] does.
    ///
    /// ```
    /// let table: restable::ResTable<u64, ()> =
    ///     restable::Builder::new().capacity(1 << 16).build();
    /// assert!(table.index_stats().slots * 3 / 4 >= 1 << 16);
    /// ```
    pub fn capacity(self, capacity: usize) -> Self {
        Builder { capacity, ..self }
    }

    /// Hashes keys with `hasher` instead of the default.
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// let table: restable::ResTable<u64, (), RandomState> =
    ///     restable::Builder::new().hasher(RandomState::new()).build();
    /// assert!(table.is_empty());
    /// ```
    pub fn hasher<H>(self, hasher: H) -> Builder<H> {
        Builder {
            capacity: self.capacity,
            hasher,
            cache_aligned: self.cache_aligned,
        }
    }

    /// Gives every object whole cache lines of its own, the way the kernel's
    /// `SLAB_HWCACHE_ALIGN` caches do: its node (state word, keys, their hashes, value) is
    /// carved from pages the table allocates, starting on a 64-byte line, instead of
    /// being a block from the global allocator placed wherever that puts it.
    ///
    /// What it buys: a node of a few words holds its state word, first key and value in
    /// one line, and shares no line with its neighbours, so threads that look up
    /// different objects no longer take each other's lines with every reference they
    /// take. On the 2-vCPU EPYC guest of the README's benchmarks, two threads looking up
    /// disjoint halves of 1,024 objects took 18.2 ns a lookup instead of 26.8, one thread
    /// 15.5 instead of 17.1 (`benches/NOTES.md`). Inserts that find no recycled block
    /// call no allocator (a page holds up to 64 lines).
    ///
    /// What it costs: memory. A node takes whole lines: an object with one `u64` key and
    /// a `u64` value 64 bytes instead of 40 (about 96 bytes an object in all, index and
    /// owner included, against 69); one with six keys 128 bytes either way. A page is
    /// freed with its last node, so a table that grew and then shrank keeps every page
    /// that still holds a live object (4 KiB at most for each).
    ///
    /// ```
    /// let table: restable::ResTable<u64, u64> =
    ///     restable::Builder::new().cache_aligned().build();
    /// let _a = table.insert(&[1], 10).unwrap();
    /// let r = table.get(&1).unwrap();
    /// // The node's header is two words and its keys follow: it starts a line.
    /// assert_eq!(r.keys().as_ptr() as usize % 64, 16);
    /// ```
    pub fn cache_aligned(self) -> Self {
        Builder {
            cache_aligned: true,
            ..self
        }
    }

    /// The table.
    pub fn build<K, T>(self) -> ResTable<K, T, S>
    where
        S: BuildHasher,
    {
        ResTable::from_parts(self.capacity, self.hasher, self.cache_aligned)
    }
}
