//! The table: insert under several keys, get-ref, kill.

use crate::error::{InsertError, InsertErrorKind};
use crate::guard::{Owner, Ref};
use crate::index::{Index, ShardWriter};
use crate::node::Node;
use crate::sync::{self, Arc, AtomicUsize, Guard, Ordering};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// The most keys one object may answer to. An insert locks the index shards of all its
/// keys at once, so the bound keeps that (and the stack arrays it uses) small; an RDMA
/// QP needs at most six (its QPN and five hardware queues).
pub const MAX_KEYS: usize = 16;

/// The hasher a table uses unless told otherwise: foldhash's fast hasher, randomly
/// seeded. It is several times cheaper than SipHash on integer keys (a large share of a
/// lookup's cost), and its output spreads well over the shard and bucket bits.
#[cfg(not(loom))]
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// Under loom every execution of a model must make the same choices, so the default
/// hasher has a fixed seed there.
#[cfg(loom)]
pub type DefaultHashBuilder = foldhash::fast::FixedState;

/// A concurrent table of objects, each findable under one or more keys, with lock-free
/// get-ref and kill-and-drain.
///
/// See the [crate documentation](crate) for the algorithm.
///
/// ```
/// use restable::ResTable;
///
/// let table = ResTable::new();
/// let qp = table.insert(&[0x42u32, 0x1000], "qp 0x42").unwrap();
///
/// // The event path: look up by any key; the reference is put when it drops.
/// assert_eq!(*table.get(&0x1000).unwrap(), "qp 0x42");
///
/// // Destroy: unreachable at once, then wait for holders, then own the value again.
/// let value = qp.kill_and_drain();
/// assert_eq!(value, "qp 0x42");
/// assert!(table.get(&0x42).is_none());
/// ```
///
/// With a reference held on another thread:
///
/// ```
/// use restable::ResTable;
/// use std::sync::Barrier;
///
/// let table = ResTable::new();
/// let qp = table.insert(&[7u32], String::from("qp")).unwrap();
/// let step = Barrier::new(2);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let r = table.get(&7).unwrap();
///         step.wait(); // 1: the reference is out
///         step.wait(); // 2: the object has been killed
///         assert_eq!(*r, "qp"); // still valid: the drain waits for us
///     });
///     step.wait();
///     let dying = qp.kill();
///     assert!(table.get(&7).is_none()); // unreachable although a reference is out
///     step.wait();
///     assert_eq!(dying.drain(), "qp"); // returns once the reference is dropped
/// });
/// ```
pub struct ResTable<K, T, S = DefaultHashBuilder> {
    registry: Arc<Registry<K, T>>,
    hasher: S,
}

/// What `Owner`s share with the table: the index and the live count. The hasher stays
/// with the table; nodes keep their keys' hashes.
pub(crate) struct Registry<K, T> {
    index: Index<K, Node<K, T>>,
    live: AtomicUsize,
}

// SAFETY: the raw node pointers in the index are shared the way `Ref`, `Owner` and `Dying`
// share nodes: `T` is read through `&T` from several threads (needs `Sync`) and moved or
// dropped on whichever thread lets go last (needs `Send`); likewise `K`.
unsafe impl<K: Send + Sync, T: Send + Sync> Send for Registry<K, T> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for Registry<K, T> {}

impl<K, T> ResTable<K, T, DefaultHashBuilder>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// An empty table.
    ///
    /// ```
    /// let table = restable::ResTable::<u32, String>::new();
    /// assert!(table.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty table with room for about `capacity` keys before its index grows.
    ///
    /// ```
    /// let table = restable::ResTable::<u32, ()>::with_capacity(4096);
    /// assert_eq!(table.len(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, DefaultHashBuilder::default())
    }
}

impl<K, T, S> Default for ResTable<K, T, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
    S: BuildHasher + Default,
{
    fn default() -> Self {
        Self::with_capacity_and_hasher(0, S::default())
    }
}

impl<K, T, S> ResTable<K, T, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
    S: BuildHasher,
{
    /// An empty table that hashes keys with `hasher`.
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// let table = restable::ResTable::<u32, (), _>::with_hasher(RandomState::new());
    /// let _a = table.insert(&[1], ()).unwrap();
    /// assert!(table.contains_key(&1));
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// An empty table with room for about `capacity` keys, hashing with `hasher`.
    ///
    /// ```
    /// let table = restable::ResTable::<u32, (), _>::with_capacity_and_hasher(
    ///     64,
    ///     std::collections::hash_map::RandomState::new(),
    /// );
    /// assert!(table.is_empty());
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        ResTable {
            registry: Arc::new(Registry {
                index: Index::with_capacity(capacity),
                live: AtomicUsize::new(0),
            }),
            hasher,
        }
    }

    /// Inserts `value` under every key in `keys`, all or nothing.
    ///
    /// On success every key resolves to the object, and the returned [`Owner`] is the
    /// only way to destroy it. On failure no key resolves to it — no thread could ever
    /// have taken a reference to it, even while the insert ran — and the error hands the
    /// value back. Keys of a killed object may be reused at once.
    ///
    /// Errors: [`KeyInUse`](InsertErrorKind::KeyInUse) if a key names a live object,
    /// [`DuplicateKey`](InsertErrorKind::DuplicateKey) if `keys` repeats a key,
    /// [`NoKeys`](InsertErrorKind::NoKeys) if it is empty,
    /// [`TooManyKeys`](InsertErrorKind::TooManyKeys) past [`MAX_KEYS`].
    ///
    /// Writers lock only the index shards of their own keys.
    ///
    /// ```
    /// use restable::ResTable;
    ///
    /// let table = ResTable::new();
    /// let qp = table.insert(&["qpn:7", "sq:3", "rq:3"], 7).unwrap();
    /// assert_eq!(qp.keys(), &["qpn:7", "sq:3", "rq:3"]);
    /// let err = table.insert(&["qpn:8", "rq:3"], 8).unwrap_err();
    /// assert_eq!(err.key(), Some(&"rq:3"));
    /// assert!(table.get(&"qpn:8").is_none()); // all or nothing
    /// assert_eq!(err.into_value(), 8);
    /// ```
    pub fn insert(&self, keys: &[K], value: T) -> Result<Owner<K, T>, InsertError<K, T>> {
        if let Err((kind, key)) = check_keys(keys) {
            return Err(InsertError::new(kind, key, value));
        }
        let node = Box::into_raw(Node::boxed(keys, |key| self.hasher.hash_one(key), value));
        // SAFETY: just allocated; nothing else can see it until it is linked.
        let node_ref = unsafe { &*node };
        match self.registry.link_all(node_ref) {
            Ok(()) => Ok(Owner::new(Arc::clone(&self.registry), node)),
            Err(key) => {
                // SAFETY: never linked, so never seen by anybody: ours to take apart.
                let node = unsafe { Box::from_raw(node) };
                Err(InsertError::new(
                    InsertErrorKind::KeyInUse,
                    Some(key),
                    node.into_value(),
                ))
            }
        }
    }

    /// Get-ref: the object under `key`, with a reference that is put when the [`Ref`]
    /// drops. Lock-free and allocation-free: it never waits for a writer, so it may run
    /// in an interrupt-like context while inserts, kills and index growth go on.
    ///
    /// Returns `None` if no live object answers to `key` — including one that is being
    /// killed, and one whose insert has not completed.
    ///
    /// ```
    /// use restable::ResTable;
    ///
    /// let table = ResTable::new();
    /// let _qp = table.insert(&[1u32, 2], "qp").unwrap();
    /// let r = table.get(&2).unwrap();
    /// assert_eq!(*r, "qp");
    /// assert_eq!(r.keys(), &[1, 2]);
    /// assert!(table.get(&3).is_none());
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<Ref<'_, K, T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let guard = sync::pin();
        let node = self.registry.index.find(hash, key, &guard)?;
        // The epoch keeps the node's memory valid until here; from here on our
        // reference does.
        // SAFETY: `try_get` took the reference the `Ref` owns; it borrows `self`.
        node.try_get().then(|| unsafe { Ref::new(node) })
    }

    /// Whether a live object answers to `key` right now (without taking a reference).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let qp = table.insert(&[1u32], ()).unwrap();
    /// assert!(table.contains_key(&1));
    /// drop(qp); // dropping the owner kills the object
    /// assert!(!table.contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let guard = sync::pin();
        self.registry
            .index
            .find(hash, key, &guard)
            .is_some_and(Node::is_live)
    }

    /// The number of live objects (inserted and not yet killed), not of keys. Exact when
    /// no insert or kill runs concurrently.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[1u32, 2, 3], ()).unwrap();
    /// assert_eq!(table.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.registry.live.load(Ordering::Relaxed)
    }

    /// Whether [`len`](Self::len) is zero.
    ///
    /// ```
    /// let table = restable::ResTable::<u8, ()>::default();
    /// assert!(table.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reference to each live object, once per object however many keys it has.
    ///
    /// Objects inserted or killed while the iteration runs may or may not be seen. The
    /// iterator pins the epoch while it lives (so memory freed meanwhile is reclaimed
    /// after it is dropped) and holds no reference except the ones it has yielded, so
    /// killing and draining an object from inside the loop is fine (as long as its own
    /// `Ref` is dropped first).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _a = table.insert(&[1u32, 10], 'a').unwrap();
    /// let _b = table.insert(&[2u32, 20], 'b').unwrap();
    /// let mut seen: Vec<char> = table.iter().map(|r| *r).collect();
    /// seen.sort();
    /// assert_eq!(seen, ['a', 'b']);
    /// ```
    pub fn iter(&self) -> Iter<'_, K, T> {
        Iter {
            registry: &self.registry,
            cursor: crate::index::Cursor::default(),
            guard: sync::pin(),
        }
    }
}

/// Validates a key list: non-empty, at most `MAX_KEYS`, no key twice.
fn check_keys<K: Eq + Clone>(keys: &[K]) -> Result<(), (InsertErrorKind, Option<K>)> {
    if keys.is_empty() {
        return Err((InsertErrorKind::NoKeys, None));
    }
    if keys.len() > MAX_KEYS {
        return Err((InsertErrorKind::TooManyKeys, None));
    }
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            return Err((InsertErrorKind::DuplicateKey, Some(key.clone())));
        }
    }
    Ok(())
}

impl<K: Eq + Clone, T> Registry<K, T> {
    /// Links `node` under all its keys and publishes it, or links nothing and returns the
    /// key that is in use.
    ///
    /// Locks the shards of all keys, in ascending order (so two inserts cannot deadlock),
    /// checks every key, links every entry, and publishes (`LIVE`, insert's linearization
    /// point) before unlocking. Nothing is linked before every check has passed, and an
    /// entry whose node is not live under a held lock can only be a killed node's (a
    /// pending insert holds its locks until it publishes): it is unlinked here, so a
    /// key is reusable from its kill's linearization point on.
    fn link_all(&self, node: &Node<K, T>) -> Result<(), K> {
        let mut shards = [0usize; MAX_KEYS];
        let count = node.entries().len();
        for (shard, entry) in shards.iter_mut().zip(node.entries()) {
            *shard = Index::<K, Node<K, T>>::shard_of(entry.hash());
        }
        let shards = &mut shards[..count];
        shards.sort_unstable();
        let mut locked: [Option<ShardWriter<'_, K, Node<K, T>>>; MAX_KEYS] =
            std::array::from_fn(|_| None);
        let mut previous = None;
        for (slot, &shard) in locked.iter_mut().zip(shards.iter()) {
            if previous != Some(shard) {
                *slot = Some(self.index.lock(shard));
                previous = Some(shard);
            }
        }
        // A key's writer sits at the first position of its shard in the sorted list.
        let writer = |hash: u64| {
            let shard = Index::<K, Node<K, T>>::shard_of(hash);
            shards.partition_point(|&s| s < shard)
        };
        let guard = sync::pin();
        for entry in node.entries() {
            let (hash, key) = (entry.hash(), entry.key());
            let slot = locked[writer(hash)].as_mut().expect("shard locked above");
            if let Some(other) = slot.find(hash, key, &guard) {
                if other.is_live() {
                    return Err(key.clone());
                }
                slot.unlink(hash, other, &guard);
            }
        }
        for entry in node.entries() {
            let slot = locked[writer(entry.hash())]
                .as_mut()
                .expect("shard locked above");
            // SAFETY: the entry is part of the node, which stays allocated until it is
            // killed (unlinking every entry) and then retired through the epoch.
            unsafe { slot.link(entry, &guard) };
        }
        node.publish();
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<K, T> Registry<K, T> {
    /// Kill: makes the node unreachable under all its keys at once (clearing `LIVE`),
    /// then unlinks its entries so the keys can be reused. An entry a newer insert has
    /// already evicted is simply not found.
    pub(crate) fn kill(&self, node: &Node<K, T>) {
        let was_live = node.kill();
        debug_assert!(was_live, "kill of a node that was not live");
        self.live.fetch_sub(1, Ordering::Relaxed);
        let guard = sync::pin();
        for entry in node.entries() {
            let hash = entry.hash();
            let mut shard = self.index.lock(Index::<K, Node<K, T>>::shard_of(hash));
            shard.unlink(hash, node, &guard);
        }
    }
}

/// Iterator over the live objects of a table; see [`ResTable::iter`].
pub struct Iter<'a, K, T> {
    registry: &'a Registry<K, T>,
    cursor: crate::index::Cursor<K, Node<K, T>>,
    guard: Guard,
}

impl<'a, K: Eq, T> Iterator for Iter<'a, K, T> {
    type Item = Ref<'a, K, T>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // SAFETY: the cursor has only ever been advanced under `self.guard`, which
            // is still pinned.
            let (key, node) = unsafe { self.cursor.next(&self.registry.index, &self.guard) }?;
            // One entry per object yields it: the one for its first key.
            if *key == node.keys()[0] && node.try_get() {
                // SAFETY: `try_get` took the reference; the `Ref` borrows the table.
                return Some(unsafe { Ref::new(node) });
            }
        }
    }
}

impl<K, T, S> fmt::Debug for ResTable<K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResTable")
            .field("len", &self.registry.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, T> fmt::Debug for Iter<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}
