//! The table: insert under several keys, get-ref, kill.

use crate::drain::Dying;
use crate::error::{InsertError, InsertErrorKind, RemoveError};
use crate::grace;
use crate::guard::{OwnedRef, Owner, Ref};
use crate::index::{self, Index, LockedShards, Retired, Slot};
use crate::node::{self, ClonedKeys, Node};
use crate::sync::{self, AtomicBool, AtomicUsize, Guard, Ordering};
use equivalent::Equivalent;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

/// The most keys one object may answer to. An insert locks the index shards of all its
/// keys at once, so the bound keeps that (and the stack arrays it uses) small; an RDMA
/// QP needs at most six (its QPN and five hardware queues).
pub const MAX_KEYS: usize = 16;

/// The hasher a table uses unless told otherwise: foldhash's fast hasher, randomly
/// seeded. It is several times cheaper than SipHash on integer keys (a large share of a
/// lookup's cost). Whatever the hasher, the table folds its output through one more
/// multiply before taking the shard, bucket and tag from it, so a hasher good only as a
/// whole (this one, with an unlucky seed) or none at all (an identity hasher on integer
/// IDs) still spreads keys evenly.
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
/// Memory: an object is one block (its value, keys and their hashes): an allocation of
/// its own, or whole cache lines of the table's pages in a table built
/// [`cache_aligned`](crate::Builder::cache_aligned). When it is
/// destroyed, that block waits for the epoch's grace period and then goes back to the
/// table for the next insert instead of to the allocator; each of the index's 64 shards
/// keeps up to 64 such blocks, and frees the rest. So a table that shrinks keeps a little
/// memory for later, and a table under steady churn does not call the allocator at all.
/// Once the table and its last `Owner` are gone, everything is freed as the epoch catches
/// up.
///
/// The index takes 8 bytes a key in 64-byte buckets of seven, at most three quarters
/// full and, once grown, at least a quarter: 12–37 bytes a key, plus about 14 KiB for an
/// empty table. It grows by copying, never waiting for readers; each array it replaces
/// is freed once the threads pinned at that moment (lookups in flight, open
/// [`ReadSection`](crate::ReadSection)s and iterators) have moved on, so a thread that
/// stays pinned through a growth spurt keeps those arrays (together less than the
/// current index) until it unpins. Arrays under 1 KiB wait, besides, until the growing
/// thread has retired 64 things (at most 64 KiB a thread).
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
    /// The table's own handle on its shared part (see [`Registry::users`]), the pointer
    /// `Box::into_raw` made, which every handle copies: the last one frees it.
    registry: NonNull<Registry<K, T>>,
    hasher: S,
    _owns: PhantomData<Registry<K, T>>,
}

// SAFETY: the table is its registry handle and its hasher; the registry is `Send` and
// `Sync` under the same bounds (see below), the hasher under its own.
unsafe impl<K: Send + Sync, T: Send + Sync, S: Send> Send for ResTable<K, T, S> {}
// SAFETY: as above; `&ResTable` shares the registry and `&S`.
unsafe impl<K: Send + Sync, T: Send + Sync, S: Sync> Sync for ResTable<K, T, S> {}

/// What `Owner`s share with the table: the index (which also counts the live objects).
/// The hasher stays with the table; nodes keep their keys' hashes.
///
/// Its lifetime is counted without a word that every writer writes (which an `Arc` is:
/// each insert cloned it and each owner's drop released it, two RMWs on one line for
/// every writer in the process). A handle — an [`Owner`], a [`Dying`], a detached
/// object (the table's), a node waiting in the epoch to be recycled — counts in its
/// node's home shard (`Index::handles`, in that shard's own lines); [`users`] counts the
/// table itself plus each shard whose count is not zero. So a handle costs one RMW on
/// its home shard's line, and `users` changes only when a shard's count moves between
/// zero and one. The last to bring `users` to zero frees the registry.
///
/// Why that cannot free it early: a count goes from zero to one only in an insert, which
/// borrows the table, whose own unit keeps `users` above zero meanwhile; after the table
/// is dropped, counts only fall. Every decrement is `AcqRel`, so whoever frees the
/// registry has seen every handle holder's writes (through its shard's count, then
/// `users`).
///
/// [`users`]: Registry::users
pub(crate) struct Registry<K, T> {
    index: Index<K, Node<K, T>>,
    /// Set when the `ResTable` is dropped: from then on nobody could `remove` a detached
    /// object, so the table destroys the detached objects it finds, and `detach`
    /// destroys its object itself (see [`Registry::adopt`]).
    closed: AtomicBool,
    /// Set when the first object is detached, never cleared: from then on `get`'s first
    /// CAS guesses that a live node is detached (see `Node::try_get`). Only a guess, so a
    /// table that mixes owned and detached objects pays a failed CAS on some lookups,
    /// never a wrong answer.
    detached: sync::HintFlag,
    /// The table's hold (one) plus the shards whose handle count is not zero.
    users: AtomicUsize,
}

// SAFETY: the raw node pointers in the index are shared the way `Ref`, `Owner` and `Dying`
// share nodes: `T` is read through `&T` from several threads (needs `Sync`) and moved or
// dropped on whichever thread lets go last (needs `Send`); likewise `K`.
unsafe impl<K: Send + Sync, T: Send + Sync> Send for Registry<K, T> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for Registry<K, T> {}

impl<K, T> ResTable<K, T, DefaultHashBuilder> {
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
    /// # Panics
    ///
    /// If the index for `capacity` keys would exceed `isize::MAX` bytes ("capacity
    /// overflow", before anything is allocated), as `Vec::with_capacity` does. A
    /// capacity that fits but cannot be allocated aborts, as it does for `Vec`.
    ///
    /// ```
    /// let table = restable::ResTable::<u32, ()>::with_capacity(4096);
    /// assert_eq!(table.len(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, DefaultHashBuilder::default())
    }
}

impl<K, T, S: BuildHasher + Default> Default for ResTable<K, T, S> {
    fn default() -> Self {
        Self::with_capacity_and_hasher(0, S::default())
    }
}

/// The bounds sit on the operations that need them, not on the table: a table of values
/// that are not `Sync` (a `Cell`, say) is simply not `Sync` itself, and works on one
/// thread. `insert` needs `K: Send + 'static` because the table keeps its own copies of
/// the keys and drops them only after the epoch's grace period, in the epoch's
/// collector, on whichever thread collects — possibly after the caller's borrows ended.
/// Values are never dropped there (the last holder drops them), so `T` needs no such
/// bound.
impl<K, T, S: BuildHasher> ResTable<K, T, S> {
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
        Self::from_parts(capacity, hasher, false)
    }

    /// What [`Builder::build`](crate::Builder::build) makes.
    pub(crate) fn from_parts(capacity: usize, hasher: S, cache_aligned: bool) -> Self {
        let registry = Box::new(Registry {
            index: Index::with_capacity(capacity, cache_aligned),
            closed: AtomicBool::new(false),
            detached: sync::HintFlag::new(false),
            users: AtomicUsize::new(1),
        });
        ResTable {
            // SAFETY: `Box::into_raw` is never null.
            registry: unsafe { NonNull::new_unchecked(Box::into_raw(registry)) },
            hasher,
            _owns: PhantomData,
        }
    }

    /// The hash the index files `key` under: the table's hasher's, spread over all 64
    /// bits (see [`index::spread`]), so any `BuildHasher` — an identity hasher on
    /// integer IDs included — spreads keys over the shards and buckets.
    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        index::spread(self.hasher.hash_one(key))
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
    pub fn insert(&self, keys: &[K], value: T) -> Result<Owner<K, T>, InsertError<K, T>>
    where
        K: Eq + Hash + Clone + Send + 'static,
    {
        // SAFETY: `link_new` hands over a node linked and published, with its handle
        // counted: the owner's from now on.
        self.link_new(keys, value, Node::publish, |node| unsafe {
            Owner::new(self.registry, node)
        })
    }

    /// Inserts `value` under every key in `keys`, all or nothing, and leaves the object
    /// with the table: the map-style insert, for servers and handle tables that look
    /// objects up by key and destroy them by key. It stays until [`remove`](Self::remove)
    /// (or [`retain`](Self::retain), or the table's drop) takes it out; the table is its
    /// owner. The same as `insert(keys, value)?.detach()`, without making and giving up
    /// an [`Owner`].
    ///
    /// Errors as for [`insert`](Self::insert), each handing the value back.
    ///
    /// ```
    /// let conns = restable::ResTable::new();
    /// conns.insert_detached(&[7u32], "conn 7").unwrap();
    /// assert_eq!(*conns.get(&7).unwrap(), "conn 7");
    /// let err = conns.insert_detached(&[7], "again").unwrap_err();
    /// assert_eq!(err.into_value(), "again");
    /// assert_eq!(conns.remove(&7).unwrap().drain(), "conn 7");
    /// ```
    pub fn insert_detached(&self, keys: &[K], value: T) -> Result<(), InsertError<K, T>>
    where
        K: Eq + Hash + Clone + Send + 'static,
    {
        let registry = self.registry();
        if !registry.detached() {
            registry.detached.store(true, Ordering::Relaxed);
        }
        // The table is borrowed, so it cannot be closing: the object is the table's from
        // its publication on, with the handle the insert counted.
        self.link_new(keys, value, Node::publish_detached, |_| ())
    }

    /// What both inserts share: checks the keys, clones them, locks their shards, checks
    /// that none names a live object, builds the node, links it under every key, makes
    /// it live with `publish` (the linearization point), counts its handle and unlocks;
    /// then `own` makes the node's owner, and only after that what a growth retired goes
    /// to the epoch, which may run the collector — other code (see
    /// `LockedShards::unlock`).
    ///
    /// The caller's result is built here, and returned straight through: the error path
    /// holds the value, and an intermediate result that the caller unpacked with `?`
    /// copied it once more — a large value then overflowed a stack that
    /// `HashMap::insert` fits (`tests/large_values.rs`).
    #[inline(always)]
    fn link_new<R>(
        &self,
        keys: &[K],
        value: T,
        publish: fn(&Node<K, T>),
        own: impl FnOnce(NonNull<Node<K, T>>) -> R,
    ) -> Result<R, InsertError<K, T>>
    where
        K: Eq + Hash + Clone + Send + 'static,
    {
        let mut hashes = [0; MAX_KEYS];
        if let Err((kind, key)) = check_keys(keys, &mut hashes, |key| self.hash(key)) {
            return Err(InsertError::new(kind, key, value));
        }
        let hashes = &hashes[..keys.len()];
        // User code (`K::clone`) runs before any lock is taken; if it panics, the clones
        // made so far and `value` are dropped on the way out, and no lock is held.
        let mut cloned = ClonedKeys::empty();
        cloned.clone_in(keys);
        // Declared after `cloned`, so that on every path (a panicking `K::eq` included)
        // the locks are released before a key or the value is dropped.
        let registry = self.registry();
        let mut locked = LockedShards::new(&registry.index, hashes.iter().copied());
        if let Some(taken) = registry.check_free(&mut locked, keys, hashes) {
            drop(locked);
            // The key of the error is our clone of it: no further user code can fail here
            // except the other clones' `K::drop`, and that runs outside the locks.
            let key = cloned.take(taken);
            return Err(InsertError::new(
                InsertErrorKind::KeyInUse,
                Some(key),
                value,
            ));
        }
        // The node's home shard is its first key's (see `Node::home`).
        let node = Node::new_in(
            |layout| locked.writer(hashes[0]).block(layout),
            &mut cloned,
            hashes,
            value,
        );
        registry.link_all(&mut locked, node, publish);
        registry.acquire(hashes[0]);
        let retired = locked.unlock();
        let owner = own(node);
        drop(retired);
        Ok(owner)
    }

    /// Get-ref: the object under `key`, with a reference that is put when the [`Ref`]
    /// drops. Lock-free and allocation-free: it never waits for a writer, so it may run
    /// in an interrupt-like context while inserts, kills and index growth go on.
    ///
    /// Returns `None` if no live object answers to `key` — including one that is being
    /// killed, and one whose insert has not completed.
    ///
    /// Each call pins the epoch, which costs a fence unless the thread is pinned already;
    /// a handler that looks up a batch of ids can pin once for all of them with a
    /// [`read_section`](crate::read_section).
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
    ///
    /// Any `Q` that hashes like the key and implements [`Equivalent`] finds it, so a key
    /// type that owns a `String` is looked up by `&str` without allocating:
    ///
    /// ```
    /// use restable::{Equivalent, ResTable};
    ///
    /// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    /// enum ConnKey {
    ///     Id(u64),
    ///     Name(String),
    /// }
    ///
    /// /// A borrowed `ConnKey::Name`: hashes exactly as `ConnKey::Name(String)` does.
    /// #[derive(Hash)]
    /// enum ConnKeyRef<'a> {
    ///     #[allow(dead_code)]
    ///     Id(u64),
    ///     Name(&'a str),
    /// }
    ///
    /// impl Equivalent<ConnKey> for ConnKeyRef<'_> {
    ///     fn equivalent(&self, key: &ConnKey) -> bool {
    ///         match (self, key) {
    ///             (ConnKeyRef::Id(a), ConnKey::Id(b)) => a == b,
    ///             (ConnKeyRef::Name(a), ConnKey::Name(b)) => *a == b,
    ///             _ => false,
    ///         }
    ///     }
    /// }
    ///
    /// let conns = ResTable::new();
    /// let _c = conns
    ///     .insert(&[ConnKey::Id(7), ConnKey::Name("alice".into())], "conn 7")
    ///     .unwrap();
    /// assert_eq!(*conns.get(&ConnKeyRef::Name("alice")).unwrap(), "conn 7");
    /// ```
    #[inline]
    #[cfg_attr(feature = "track-refs", track_caller)]
    #[must_use = "the reference is put at once if unused; to test for a key, use `contains_key`"]
    pub fn get<Q>(&self, key: &Q) -> Option<Ref<'_, K, T>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.hash(key);
        let guard = sync::pin();
        let registry = self.registry();
        let node = registry.index.find(hash, key, &guard)?;
        // The epoch keeps the node's memory valid until here; from here on our
        // reference does.
        // SAFETY: (1) pinned, so the node is not freed yet; (2) `try_get` took the
        // reference the `Ref` owns, and the `Ref` borrows `self`.
        // (No closure around `Ref::new`: a closure would hide the caller's location from
        // `track_caller`, feature `track-refs`.)
        unsafe {
            if Node::try_get(node, registry.detached()) {
                Some(Ref::new(node))
            } else {
                None
            }
        }
    }

    /// Like [`get`](Self::get), but the reference does not borrow the table: it can go
    /// to a spawned thread or an async task. The drain waits for it like for any `Ref`.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _conn = table.insert(&[1u32], "conn").unwrap();
    /// let r = table.get_owned(&1).unwrap();
    /// std::thread::spawn(move || assert_eq!(*r, "conn")).join().unwrap();
    /// ```
    #[inline]
    #[cfg_attr(feature = "track-refs", track_caller)]
    #[must_use = "the reference is put at once if unused; to test for a key, use `contains_key`"]
    pub fn get_owned<Q>(&self, key: &Q) -> Option<OwnedRef<K, T>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.get(key).map(Ref::into_owned)
    }

    /// Removes the detached object under `key` (see [`Owner::detach`]): kills it — every
    /// key unreachable and free at once, as [`Owner::kill`] — and hands over the
    /// [`Dying`], to drain or drop. Returns `None` if no live object answers to `key`, or
    /// if the one that does still has its [`Owner`] (only its owner destroys it then);
    /// [`try_remove`](Self::try_remove) says which.
    /// Of two removes racing for one object, exactly one gets it.
    ///
    /// ```
    /// let conns = restable::ResTable::new();
    /// conns.insert(&[7u32], String::from("conn 7")).unwrap().detach();
    /// let r = conns.get(&7).unwrap(); // a worker still uses it
    /// let dying = conns.remove(&7).unwrap();
    /// assert!(conns.remove(&7).is_none() && conns.get(&7).is_none());
    /// drop(r);
    /// assert_eq!(dying.drain(), "conn 7");
    /// ```
    #[must_use = "dropping the `Dying` lets the last reference drop the value; drain it to get \
                  the value back"]
    pub fn remove<Q>(&self, key: &Q) -> Option<Dying<K, T>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.try_remove(key).ok()
    }

    /// Like [`remove`](Self::remove), but says why nothing was removed: no live object
    /// answers to `key` ([`RemoveError::NotFound`]), or the one that does still has its
    /// [`Owner`] ([`RemoveError::Owned`]) — which `remove`'s `None` does not tell apart.
    ///
    /// ```
    /// use restable::{RemoveError, ResTable};
    ///
    /// let table = ResTable::new();
    /// table.insert_detached(&[1u32], "detached").unwrap();
    /// let owner = table.insert(&[2u32], "owned").unwrap();
    /// assert_eq!(table.try_remove(&1).unwrap().drain(), "detached");
    /// assert_eq!(table.try_remove(&1).unwrap_err(), RemoveError::NotFound);
    /// assert_eq!(table.try_remove(&2).unwrap_err(), RemoveError::Owned);
    /// drop(owner);
    /// ```
    pub fn try_remove<Q>(&self, key: &Q) -> Result<Dying<K, T>, RemoveError>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.hash(key);
        let guard = sync::pin();
        let node = self
            .registry()
            .index
            .find(hash, key, &guard)
            .ok_or(RemoveError::NotFound)?;
        // SAFETY: pinned, and found in our index.
        match unsafe { Registry::claim(self.registry, node, Readers::MayBorrow) } {
            Some(dying) => Ok(dying),
            // SAFETY: pinned, so the node is not freed yet. A live node that could not be
            // claimed has its owner (it was live and not detached at the claim, or it
            // was revived since: either way an owner holds it now).
            None if unsafe { Node::is_live(node) } => Err(RemoveError::Owned),
            None => Err(RemoveError::NotFound),
        }
    }

    /// Removes every detached object for which `keep(keys, value)` is false, as
    /// [`remove`](Self::remove) would, and drops it (once its references are gone, by the
    /// last of them). Objects that still have their [`Owner`] are left alone. `keep` runs
    /// under no lock and may use the table — with one exception: while `keep` looks at an
    /// object, `retain` holds a reference to it, so an untimed drain of *that* object from
    /// inside `keep` (`remove` + [`drain`](Dying::drain), or its owner's
    /// [`kill_and_drain`](Owner::kill_and_drain)) could never end, and panics instead,
    /// naming the cause. Return `false` to remove it; other objects may be drained, and
    /// timed drains ([`drain_timeout`](Dying::drain_timeout)) of this one just time out.
    ///
    /// A panic in `keep` or in a removed value's drop unwinds out of `retain`; the objects
    /// it had not reached yet stay in the table.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// for id in 0..6u32 {
    ///     table.insert(&[id], id * 10).unwrap().detach();
    /// }
    /// table.retain(|_, value| value % 20 == 0);
    /// let mut left: Vec<u32> = table.iter().map(|r| *r).collect();
    /// left.sort();
    /// assert_eq!(left, [0, 20, 40]);
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&[K], &T) -> bool) {
        // SAFETY: the table's handle keeps the registry alive meanwhile.
        unsafe { Registry::remove_detached(self.registry, &mut keep, &mut drop) };
    }

    /// Removes every detached object for which `remove(keys, value)` is true, as
    /// [`remove`](Self::remove) would, and hands each back as its [`Dying`] — to drain,
    /// drain with a timeout, await or drop — like `Vec::extract_if`. Objects that still
    /// have their [`Owner`] are left alone; `remove` runs under no lock, with the same one
    /// exception as [`retain`](Self::retain)'s predicate.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// for id in 0..6u32 {
    ///     table.insert_detached(&[id], id * 10).unwrap();
    /// }
    /// let r = table.get(&2).unwrap(); // a holder of one of them
    /// let removed = table.extract_if(|_, value| value % 20 == 0);
    /// assert_eq!(removed.len(), 3);
    /// assert_eq!(table.len(), 3);
    /// drop(r);
    /// let mut values: Vec<u32> = removed.into_iter().map(|dying| dying.drain()).collect();
    /// values.sort();
    /// assert_eq!(values, [0, 20, 40]);
    /// ```
    #[must_use = "dropping the `Dying`s lets each value go with its last reference; use \
                  `retain` for that"]
    pub fn extract_if(&self, mut remove: impl FnMut(&[K], &T) -> bool) -> Vec<Dying<K, T>> {
        let mut removed = Vec::new();
        let mut keep = |keys: &[K], value: &T| !remove(keys, value);
        // SAFETY: the table's handle keeps the registry alive meanwhile.
        unsafe {
            Registry::remove_detached(self.registry, &mut keep, &mut |dying| removed.push(dying))
        };
        removed
    }

    /// Removes every detached object, as [`retain`](Self::retain) with a predicate that
    /// keeps none: each value is dropped by its last reference (at once if none is out).
    /// Objects that still have their [`Owner`] stay.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// table.insert_detached(&[1u32], "a").unwrap();
    /// let owned = table.insert(&[2u32], "b").unwrap();
    /// table.clear();
    /// assert!(table.get(&1).is_none());
    /// assert_eq!(table.len(), 1);
    /// drop(owned);
    /// ```
    pub fn clear(&self) {
        self.retain(|_, _| false);
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
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.hash(key);
        let guard = sync::pin();
        self.registry()
            .index
            .find(hash, key, &guard)
            // SAFETY: pinned, so the node is not freed yet.
            .is_some_and(|node| unsafe { Node::is_live(node) })
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
        self.registry().index.objects()
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

    /// The index's shape right now (shard, bucket and key counts, longest probe, largest
    /// shard): for tests and diagnostics, not a stable API.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owners: Vec<_> = (0..10_000u64).map(|k| table.insert(&[k], k).unwrap()).collect();
    /// let stats = table.index_stats();
    /// assert_eq!(stats.entries, 10_000);
    /// assert!(stats.entries * 4 <= stats.slots * 3, "at most three quarters full");
    /// assert!(stats.largest_shard <= 2 * stats.entries / stats.shards);
    /// # drop(owners);
    /// ```
    #[doc(hidden)]
    pub fn index_stats(&self) -> crate::index::IndexStats {
        self.registry().index.stats(&sync::pin())
    }

    /// The index shard `key` lives in (one of 64; two under loom): for tests that need
    /// keys to share a shard, or not, whatever the hash; not a stable API.
    #[doc(hidden)]
    pub fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        Index::<K, Node<K, T>>::shard_of(self.hash(key))
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
        Iter::new(self.registry())
    }
}

/// Validates a key list (non-empty, at most `MAX_KEYS`, no key twice) and writes the
/// keys' hashes to the front of `hashes`. Two keys are compared only if their hashes are
/// equal.
///
/// The caller's array is written in place: returned by value, it was copied with 16-byte
/// loads right after its 8-byte stores, and the copy stalled on failed store-to-load
/// forwards (perf: the hottest instruction of a one-key insert).
fn check_keys<K: Eq + Clone>(
    keys: &[K],
    hashes: &mut [u64; MAX_KEYS],
    hash: impl Fn(&K) -> u64,
) -> Result<(), (InsertErrorKind, Option<K>)> {
    if keys.is_empty() {
        return Err((InsertErrorKind::NoKeys, None));
    }
    if keys.len() > MAX_KEYS {
        return Err((InsertErrorKind::TooManyKeys, None));
    }
    for (i, key) in keys.iter().enumerate() {
        hashes[i] = hash(key);
        if (0..i).any(|j| hashes[j] == hashes[i] && keys[j] == *key) {
            return Err((InsertErrorKind::DuplicateKey, Some(key.clone())));
        }
    }
    Ok(())
}

/// Whether a claim must give a borrowed node a grace period.
#[derive(Clone, Copy)]
enum Readers {
    /// Borrowed readers of the table may be out (a `remove`, `retain`, `extract_if`).
    MayBorrow,
    /// None can be: the table is being dropped, and every guard borrows it.
    None,
}

impl<K, T> Registry<K, T> {
    /// The node linked under `key`, live or not; valid while `guard` stays pinned.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q, guard: &Guard) -> Option<*const Node<K, T>>
    where
        Q: Equivalent<K> + ?Sized,
    {
        self.index.find(hash, key, guard)
    }

    /// Whether an object was ever detached from this table: the guess `get` makes.
    #[inline]
    fn detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }
}

impl<K: Eq, T> Registry<K, T> {
    /// Insert's check, under the locks of all its keys' shards (taken in ascending order,
    /// so two inserts cannot deadlock): returns the position of the first key that names a live
    /// object, or `None` if all are free.
    ///
    /// A slot whose node is not live under a held lock can only be a killed node's (a
    /// pending insert holds its locks until it publishes): it is unlinked here, so a key
    /// is reusable from its kill's linearization point on. The only user code this runs
    /// is `K::eq` (through the probe), which is why a key's `Eq` must not touch the
    /// table it is a key of.
    fn check_free(
        &self,
        locked: &mut LockedShards<'_, K, Node<K, T>>,
        keys: &[K],
        hashes: &[u64],
    ) -> Option<usize> {
        for (i, (key, &hash)) in keys.iter().zip(hashes).enumerate() {
            let mut shard = locked.writer(hash);
            if let Some(other) = shard.find(hash, key) {
                // SAFETY: linked and we hold its shard's lock, so not yet retired.
                if unsafe { Node::is_live(other.node()) } {
                    return Some(i);
                }
                shard.unlink(hash, other);
            }
        }
        None
    }
}

impl<K: Eq, T> Registry<K, T> {
    /// Links a killed node under all its keys again and makes it live, or links nothing
    /// and returns the position of a key that names a live object now. On success the
    /// caller makes the node's `Owner` and then drops the [`Retired`] arrays (which may
    /// run the collector: see [`LockedShards::unlock`]).
    pub(crate) fn revive(&self, node: NonNull<Node<K, T>>) -> Result<Retired<Node<K, T>>, usize> {
        // SAFETY: the caller (a `Dying`) owns the node, so it stays allocated.
        let this = unsafe { node.as_ref() };
        let hashes = this.hashes();
        let mut locked = LockedShards::new(&self.index, hashes.iter().copied());
        if let Some(taken) = self.check_free(&mut locked, this.keys(), hashes) {
            return Err(taken);
        }
        self.link_all(&mut locked, node, Node::revive);
        Ok(locked.unlock())
    }
}

impl<K, T> Registry<K, T> {
    /// Links `node` under all its keys and makes it live with `publish` (the
    /// linearization point of insert or revive), after [`Registry::check_free`] and
    /// before the locks are released. Nothing is linked before every check has passed,
    /// so a failed insert or revive was never visible. Runs no user code.
    fn link_all(
        &self,
        locked: &mut LockedShards<'_, K, Node<K, T>>,
        node: NonNull<Node<K, T>>,
        publish: fn(&Node<K, T>),
    ) {
        // SAFETY: the caller owns the node (just built, or killed and held by a `Dying`).
        let this = unsafe { node.as_ref() };
        for (idx, &hash) in this.hashes().iter().enumerate() {
            // The slot holds the allocation's own pointer, never one derived from
            // `this`: whoever frees the block may have found it through the slot.
            // SAFETY: the node stays allocated until it is killed (unlinking every key)
            // and then retired through the epoch.
            unsafe {
                locked
                    .writer(hash)
                    .link(hash, Slot::new(node.as_ptr(), idx))
            };
        }
        publish(this);
        locked.writer(this.home()).add_objects(1);
    }

    /// Claims `node` if it is live and detached (`remove`'s linearization point), unlinks
    /// its keys and hands it over as a `Dying` — after beginning a grace period if the
    /// node was read borrowed and `readers` says borrowed readers may still be out.
    ///
    /// # Safety
    /// The caller is pinned, and found `node` in the index of `this`, which stays
    /// allocated meanwhile (the caller holds a handle on it).
    unsafe fn claim(
        this: NonNull<Self>,
        node: *const Node<K, T>,
        readers: Readers,
    ) -> Option<Dying<K, T>> {
        // SAFETY: the caller's contract.
        let old = unsafe { Node::claim_detached(node) }?;
        // SAFETY: the claim made us its owner, so it stays allocated.
        let this_node = unsafe { &*node };
        let grace = match readers {
            // SAFETY: claimed (ours), and `node` is the slot's pointer, the allocation's.
            Readers::MayBorrow => unsafe { grace::begin(node, old) },
            Readers::None => None,
        };
        // SAFETY: the caller keeps the registry allocated.
        unsafe { this.as_ref() }.unlink_all(this_node);
        if let Some(grace) = grace {
            grace.defer();
        }
        // SAFETY: killed and unlinked; its ownership, and the handle a detached node
        // counts, are ours to hand over. A node pointer from the index is never null.
        Some(unsafe { Dying::new(NonNull::new_unchecked(node.cast_mut()), this) })
    }

    /// See [`ResTable::retain`].
    ///
    /// # Safety
    /// `this` stays allocated meanwhile (the caller holds a handle on it).
    unsafe fn remove_detached(
        this: NonNull<Self>,
        keep: &mut impl FnMut(&[K], &T) -> bool,
        removed: &mut impl FnMut(Dying<K, T>),
    ) {
        // SAFETY: the caller's contract.
        for r in Iter::new(unsafe { this.as_ref() }) {
            // SAFETY: as above.
            unsafe { Self::visit(this, r, Readers::MayBorrow, keep, removed) };
        }
    }

    /// Asks `keep` about the object `r` refers to, and removes it (as `remove` would) if
    /// the answer is no. While `keep` runs, this thread is marked as looking at the
    /// object, so that an untimed drain of it from inside `keep` — which would wait for
    /// `r` forever — panics instead (see `visit`).
    ///
    /// # Safety
    /// `r` was found in the index of `this`, which stays allocated meanwhile.
    unsafe fn visit(
        this: NonNull<Self>,
        r: Ref<'_, K, T>,
        readers: Readers,
        keep: &mut impl FnMut(&[K], &T) -> bool,
        removed: &mut impl FnMut(Dying<K, T>),
    ) {
        let visit = crate::visit::enter(Node::wait_key(r.node_ptr()));
        let kept = keep(r.keys(), &r);
        drop(visit);
        if !kept {
            // SAFETY: `r` keeps the node allocated, and it was found in our index.
            if let Some(dying) = unsafe { Self::claim(this, r.node_ptr(), readers) } {
                // Our reference goes first: a `Dying` handed out may be drained at once.
                drop(r);
                removed(dying);
            }
        }
    }

    /// `Owner::detach`: leaves the owner's node with the table. If the table is gone,
    /// nobody could remove the object any more, so the detaching thread destroys it
    /// (unless the table's drop claimed it first). A `SeqCst` fence on both sides (here
    /// after setting `DETACHED`, in `close` after setting `closed`) makes at least one of
    /// them see the other's write, so the object is never stranded.
    ///
    /// Its handle goes to the table with the node. A second, temporary handle keeps the
    /// registry allocated until this returns: from the detach on, a closing table may
    /// claim the object and let its handle go.
    ///
    /// # Safety
    /// The caller owns the live `node` (its `Owner`, a handle on `this`) and gives that
    /// up here.
    pub(crate) unsafe fn adopt(this: NonNull<Self>, node: NonNull<Node<K, T>>) {
        // SAFETY: the owner's handle keeps the registry allocated until the detach.
        let registry = unsafe { this.as_ref() };
        // SAFETY: we own the node until `detach` hands it to the table.
        let home = unsafe { node.as_ref() }.home();
        // Not a count's first handle (the owner's is there), so allowed after the table's
        // drop too.
        registry.acquire(home);
        // Pinned before the node can be claimed: a closing table that claims and destroys
        // it cannot free it before we are done reading its state word.
        let guard = sync::pin();
        if !registry.detached() {
            registry.detached.store(true, Ordering::Relaxed);
        }
        // SAFETY: we own the node until `detach` hands it to the table.
        unsafe { node.as_ref() }.detach();
        sync::fence(Ordering::SeqCst);
        if registry.closed.load(Ordering::Relaxed) {
            // SAFETY: pinned since before the node could be claimed; found in our index
            // (detached nodes are linked); our temporary handle keeps the registry.
            // No borrowed reader can be out: a table guard borrows the table, whose drop
            // has begun.
            drop(unsafe { Self::claim(this, node.as_ptr(), Readers::None) });
        }
        drop(guard);
        // SAFETY: the temporary handle taken above, given back once.
        unsafe { Self::release(this, home) };
    }

    /// Counts a new handle on the registry in the shard of `home` (its node's first key's
    /// hash). `Relaxed`, as `Arc::clone`: the caller holds a handle already (the table's,
    /// in an insert; the owner's, in a detach), so nothing can free the registry
    /// meanwhile — and only an insert, with the table alive, ever brings a shard's count
    /// from zero to one.
    pub(crate) fn acquire(&self, home: u64) {
        if self.index.handles(home).fetch_add(1, Ordering::Relaxed) == 0 {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives up a handle counted in the shard of `home`; frees the registry if it was the
    /// last. `AcqRel` on both counts, as `Arc::drop`: whoever frees has seen every other
    /// holder's writes (through the shard's count, then `users`).
    ///
    /// # Safety
    /// The caller holds a handle counted at `home`, gives it up here, and touches the
    /// registry no more (it may be freed by the time this returns).
    pub(crate) unsafe fn release(this: NonNull<Self>, home: u64) {
        // SAFETY: our handle keeps the registry allocated until this decrement.
        let handles = unsafe { this.as_ref() }.index.handles(home);
        if handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the shard's unit of `users` was ours to give up.
            unsafe { Self::release_user(this) };
        }
    }

    /// Gives up one unit of `users` (the table's, or a shard's whose count fell to zero),
    /// freeing the registry with the last.
    ///
    /// # Safety
    /// The caller holds that unit and touches the registry no more.
    unsafe fn release_user(this: NonNull<Self>) {
        // SAFETY: our unit keeps the registry allocated until this decrement.
        if unsafe { this.as_ref() }
            .users
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            // SAFETY: no handle is left, so nothing can reach the registry; it came from
            // `Box::into_raw` (the table's pointer, which every handle copied).
            drop(unsafe { Box::from_raw(this.as_ptr()) });
        }
    }

    /// The table's drop: destroys the detached objects it owns — every one of them, even
    /// if a `T::drop` panics: nobody could remove the rest afterwards, so they would leak.
    /// Each panic is caught, the next object destroyed, and the first panic resumed once
    /// all are gone.
    ///
    /// Returns the first panic, for the caller to resume once it has let its handle go.
    ///
    /// # Safety
    /// The caller is the table's drop, whose handle keeps `this` allocated meanwhile.
    unsafe fn close(this: NonNull<Self>) -> Option<Box<dyn std::any::Any + Send>> {
        // SAFETY: the caller's contract.
        let registry = unsafe { this.as_ref() };
        registry.closed.store(true, Ordering::Relaxed);
        sync::fence(Ordering::SeqCst);
        let mut objects = Iter::new(registry);
        let mut first_panic = None;
        loop {
            // The iterator is only advanced inside: a panic from a value's drop (in
            // `visit`, which drops the claimed `Dying` last) leaves it between two objects.
            let step = panic::catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: found by our iterator; the caller keeps the registry.
                objects.next().map(|r| unsafe {
                    Self::visit(this, r, Readers::None, &mut |_, _| false, &mut drop)
                })
            }));
            match step {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(payload) => {
                    first_panic.get_or_insert(payload);
                }
            }
        }
        first_panic
    }

    /// Kill: makes the node unreachable under all its keys at once (clearing `LIVE`),
    /// then unlinks its slots so the keys can be reused. A slot a newer insert has
    /// already evicted is simply not found.
    ///
    /// A node that was read borrowed gets a grace period first (see [`crate::grace`]),
    /// handed to the epoch once the shard locks are released.
    pub(crate) fn kill(&self, node: NonNull<Node<K, T>>) {
        // SAFETY: the caller owns the node, so it stays allocated.
        let this = unsafe { node.as_ref() };
        let old = this.kill();
        debug_assert!(old & node::LIVE != 0, "kill of a node that was not live");
        // SAFETY: ours, and `node` is the owner's pointer, the allocation's.
        let grace = unsafe { grace::begin(node.as_ptr(), old) };
        self.unlink_all(this);
        if let Some(grace) = grace {
            grace.defer();
        }
    }

    /// The second half of a kill or a remove: unlinks the (no longer live) node's
    /// slots, so that its keys can be inserted again.
    fn unlink_all(&self, node: &Node<K, T>) {
        let hashes = node.hashes();
        let mut locked = LockedShards::new(&self.index, hashes.iter().copied());
        for (idx, &hash) in hashes.iter().enumerate() {
            locked.writer(hash).unlink(hash, Slot::new(node, idx));
        }
        let mut home = locked.writer(node.home());
        home.add_objects(-1);
        home.absorb_recycled();
    }

    /// Gives a dead node's block back to its home shard (its first key's) for reuse.
    ///
    /// # Safety
    /// As for [`Node::dispose`]; the node's grace period is over.
    /// Then gives up the handle the node's owner passed on to its disposal.
    unsafe fn recycle(this: NonNull<Self>, node: *mut Node<K, T>) {
        // SAFETY: the caller's contract: the node is intact until `dispose`, and the
        // handle keeps the registry allocated until `release`.
        unsafe {
            let home = (*node).home();
            this.as_ref().index.recycle(home, Node::dispose(node));
            Self::release(this, home);
        }
    }
}

/// Drops the value of a dead node that nobody holds any more and retires the node. The
/// node is retired even if `T::drop` panics (the panic then goes on to the caller).
///
/// # Safety
/// The caller got [`Release::Last`](crate::node::Release::Last) for `node`.
pub(crate) unsafe fn drop_and_retire<K, T>(
    node: *const Node<K, T>,
    registry: Option<NonNull<Registry<K, T>>>,
) {
    struct RetireOnExit<K, T> {
        node: *const Node<K, T>,
        registry: Option<NonNull<Registry<K, T>>>,
    }
    impl<K, T> Drop for RetireOnExit<K, T> {
        fn drop(&mut self) {
            // SAFETY: the value is gone (dropped, or its drop panicked), the node is
            // unlinked, and nothing touches it after this; the handle, if any, goes on.
            unsafe { retire(self.node, self.registry) }
        }
    }
    let _retire = RetireOnExit { node, registry };
    // SAFETY: `Last`: nobody else holds the node or reads its value.
    unsafe { node::drop_value(node) }
}

/// Retires a dead node: once no pinned reader can still be looking at it, its block goes
/// back to the table for reuse (with `registry`, whose handle the disposal then gives
/// up) or to the allocator (without: the last holder after the owner let go has no
/// registry at hand, and that path is rare).
///
/// # Safety
/// The node is unreachable from the index (all its slots cleared), nothing will touch
/// it again, and its value has been moved out or dropped; with `registry`, the caller
/// hands over a handle on it counted at the node's home.
pub(crate) unsafe fn retire<K, T>(
    node: *const Node<K, T>,
    registry: Option<NonNull<Registry<K, T>>>,
) {
    let guard = sync::pin();
    let node = node.cast_mut();
    // SAFETY: only epoch-pinned readers that loaded a pointer to one of the node's
    // slots before they were cleared can still see the block; the epoch runs this after
    // they have all unpinned. The closure is two words, so deferring it allocates nothing.
    unsafe {
        guard.defer_unchecked(move || match registry {
            Some(registry) => Registry::recycle(registry, node),
            None => Node::free(node),
        })
    }
}

/// Iterator over the live objects of a table; see [`ResTable::iter`].
pub struct Iter<'a, K, T> {
    registry: &'a Registry<K, T>,
    cursor: crate::index::Cursor<K, Node<K, T>>,
    guard: Guard,
}

impl<'a, K, T> Iter<'a, K, T> {
    fn new(registry: &'a Registry<K, T>) -> Self {
        Iter {
            registry,
            cursor: crate::index::Cursor::default(),
            guard: sync::pin(),
        }
    }
}

impl<'a, K, T> Iterator for Iter<'a, K, T> {
    type Item = Ref<'a, K, T>;

    #[cfg_attr(feature = "track-refs", track_caller)]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // SAFETY: the cursor has only ever been advanced under `self.guard`, which
            // is still pinned.
            let slot = unsafe { self.cursor.next(&self.registry.index, &self.guard) }?;
            let node = slot.node();
            // One slot per object yields it: its first key's.
            // SAFETY: pinned, so the node is not freed yet.
            if slot.idx() == 0 && unsafe { Node::try_get(node, self.registry.detached()) } {
                // SAFETY: `try_get` took the reference; the `Ref` borrows the table.
                return Some(unsafe { Ref::new(node) });
            }
        }
    }
}

impl<K, T, S> ResTable<K, T, S> {
    #[inline]
    pub(crate) fn registry(&self) -> &Registry<K, T> {
        // SAFETY: the table's own handle keeps the registry allocated while it lives.
        unsafe { self.registry.as_ref() }
    }
}

impl<K, T, S> Drop for ResTable<K, T, S> {
    /// Destroys the detached objects (see [`Owner::detach`]), which only the table owned:
    /// each is killed and its value dropped by the last reference to go. Objects that
    /// still have their [`Owner`] stay, until it lets go. If a value's drop panics, the
    /// other detached objects are still destroyed, and then the first panic goes on.
    fn drop(&mut self) {
        // SAFETY: our handle keeps the registry allocated through `close`, and is given up
        // once, after it; the table touches the registry no more.
        let panicked = unsafe {
            let panicked = Registry::close(self.registry);
            Registry::release_user(self.registry);
            panicked
        };
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }
}

impl<K, T, S> fmt::Debug for ResTable<K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResTable")
            .field("len", &self.registry().index.objects())
            .finish_non_exhaustive()
    }
}

impl<K, T> fmt::Debug for Iter<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}
