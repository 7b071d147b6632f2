//! The implementations the benchmarks compare, behind one trait. Each baseline is what a
//! careful driver author would write with that tool, not a strawman; every hash map uses
//! the same hasher as restable (foldhash).

use parking_lot::{Condvar, Mutex, RwLock};
use restable::{Builder, Owner, ReadSection, ResTable};
use std::collections::HashMap;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub type Key = u64;
pub type Value = u64;
type Hasher = foldhash::fast::RandomState;

/// One way to keep objects findable under keys, with get-ref/put-ref and
/// kill-and-drain.
pub trait Impl: Sync + Sized {
    /// What the creator keeps to destroy the object later.
    type Owner: Send;
    const NAME: &'static str;
    /// Whether lookup threads run their lookups in restable read sections.
    const IN_SECTION: bool = false;
    fn with_capacity(objects: usize) -> Self;
    /// Stores `value` under `keys` (benchmarks never reuse a live key).
    fn insert(&self, keys: &[Key], value: Value) -> Self::Owner;
    /// The key lookups must use for the object inserted under `requested`: the same key,
    /// except for sharded-slab, which assigns its own.
    fn lookup_key(owner: &Self::Owner, requested: Key) -> Key;
    /// Get-ref, read the value, put-ref.
    fn get_put(&self, key: Key) -> Option<Value>;
    /// Makes the object unreachable, waits for its holders, returns the value.
    fn kill_and_drain(&self, owner: Self::Owner) -> Value;
}

/// Lookups per read section in the `restable-section` rows: about one interrupt's worth
/// of events for an EQ handler, one poll for a CQ poller.
pub const BATCH: u32 = 64;

/// What a lookup thread keeps across its lookups: for `restable-section` a read section,
/// refreshed every `BATCH` lookups; nothing for the others.
pub struct Session {
    section: Option<ReadSection>,
    done: u32,
}

impl Session {
    pub fn new<I: Impl>() -> Self {
        Session {
            section: I::IN_SECTION.then(restable::read_section),
            done: 0,
        }
    }

    /// Called once per lookup.
    #[inline]
    pub fn tick(&mut self) {
        if let Some(section) = &mut self.section {
            self.done += 1;
            if self.done == BATCH {
                self.done = 0;
                section.refresh();
            }
        }
    }
}

// ---- restable ---------------------------------------------------------------------------

/// restable; with `SECTION`, lookup threads hold a read section (see `Session`); with
/// `ALIGNED`, the table is built `cache_aligned` (every object on lines of its own).
pub struct RestableIn<const SECTION: bool, const ALIGNED: bool>(ResTable<Key, Value>);
pub type Restable = RestableIn<false, false>;
pub type RestableSection = RestableIn<true, false>;
pub type RestableAligned = RestableIn<false, true>;

impl<const SECTION: bool, const ALIGNED: bool> Impl for RestableIn<SECTION, ALIGNED> {
    type Owner = Owner<Key, Value>;
    const NAME: &'static str = match (SECTION, ALIGNED) {
        (false, false) => "restable",
        (true, false) => "restable-section",
        (false, true) => "restable-aligned",
        (true, true) => "restable-aligned-section",
    };
    const IN_SECTION: bool = SECTION;

    fn with_capacity(objects: usize) -> Self {
        let builder = Builder::new().capacity(objects);
        RestableIn(if ALIGNED {
            builder.cache_aligned().build()
        } else {
            builder.build()
        })
    }
    fn insert(&self, keys: &[Key], value: Value) -> Self::Owner {
        self.0.insert(keys, value).expect("benchmark keys are free")
    }
    fn lookup_key(_: &Self::Owner, requested: Key) -> Key {
        requested
    }
    #[inline]
    fn get_put(&self, key: Key) -> Option<Value> {
        self.0.get(&key).map(|r| *r)
    }
    fn kill_and_drain(&self, owner: Self::Owner) -> Value {
        owner.kill_and_drain()
    }
}

// ---- a/b. a lock around a HashMap of Arcs ----------------------------------------------

/// Waits until the map's `Arc` was the last one, then takes the value: the drain a
/// `HashMap<K, Arc<T>>` user writes.
fn unwrap_when_unique(mut arc: Arc<Value>) -> Value {
    loop {
        match Arc::try_unwrap(arc) {
            Ok(value) => return value,
            Err(shared) => {
                arc = shared;
                std::thread::yield_now();
            }
        }
    }
}

type ArcMap = HashMap<Key, Arc<Value>, Hasher>;

/// The lock around the map: `parking_lot`'s `Mutex` or `RwLock`.
pub trait MapLock: Sync {
    const NAME: &'static str;
    fn new(map: ArcMap) -> Self;
    fn read<R>(&self, f: impl FnOnce(&ArcMap) -> R) -> R;
    fn write<R>(&self, f: impl FnOnce(&mut ArcMap) -> R) -> R;
}

impl MapLock for Mutex<ArcMap> {
    const NAME: &'static str = "mutex-hashmap";
    fn new(map: ArcMap) -> Self {
        Mutex::new(map)
    }
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&ArcMap) -> R) -> R {
        f(&self.lock())
    }
    fn write<R>(&self, f: impl FnOnce(&mut ArcMap) -> R) -> R {
        f(&mut self.lock())
    }
}

impl MapLock for RwLock<ArcMap> {
    const NAME: &'static str = "rwlock-hashmap";
    fn new(map: ArcMap) -> Self {
        RwLock::new(map)
    }
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&ArcMap) -> R) -> R {
        f(&self.read())
    }
    fn write<R>(&self, f: impl FnOnce(&mut ArcMap) -> R) -> R {
        f(&mut self.write())
    }
}

/// A `HashMap<K, Arc<T>>` behind a lock: get clones the `Arc` under the lock.
pub struct LockedMap<L>(L);

pub type MutexMap = LockedMap<Mutex<ArcMap>>;
pub type RwLockMap = LockedMap<RwLock<ArcMap>>;

impl<L: MapLock> Impl for LockedMap<L> {
    type Owner = (Vec<Key>, Arc<Value>);
    const NAME: &'static str = L::NAME;

    fn with_capacity(objects: usize) -> Self {
        LockedMap(L::new(HashMap::with_capacity_and_hasher(
            objects,
            Hasher::default(),
        )))
    }
    fn insert(&self, keys: &[Key], value: Value) -> Self::Owner {
        let arc = Arc::new(value);
        self.0.write(|map| {
            for key in keys {
                assert!(map.insert(*key, Arc::clone(&arc)).is_none());
            }
        });
        (keys.to_vec(), arc)
    }
    fn lookup_key(_: &Self::Owner, requested: Key) -> Key {
        requested
    }
    #[inline]
    fn get_put(&self, key: Key) -> Option<Value> {
        let arc = self.0.read(|map| map.get(&key).cloned());
        arc.map(|v| *v)
    }
    fn kill_and_drain(&self, (keys, arc): Self::Owner) -> Value {
        self.0.write(|map| {
            for key in &keys {
                map.remove(key);
            }
        });
        unwrap_when_unique(arc)
    }
}

// ---- c. the kernel pattern ----------------------------------------------------------

/// `spinlock_t` as a test-and-test-and-set lock.
struct SpinLock<T> {
    locked: AtomicBool,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: std::cell::UnsafeCell::new(value),
        }
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                spin_loop();
            }
        }
        // SAFETY: we hold the lock until the store below.
        let result = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        result
    }
}

/// A driver object: `refcount_t` + `struct completion` + payload.
struct KernelObject {
    refcount: AtomicUsize,
    done: Mutex<bool>,
    freed: Condvar,
    value: Value,
}

impl KernelObject {
    /// `put`: the last one completes `free`.
    #[inline]
    fn put(&self) {
        if self.refcount.fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            *self.done.lock() = true;
            self.freed.notify_one();
        }
    }
}

/// The pattern mana and mlx5 write: a spinlock around the id map; `get` takes a
/// reference under the lock; destroy erases, puts the birth reference and waits for
/// the completion, then frees.
pub struct KernelPattern(SpinLock<HashMap<Key, *const KernelObject, Hasher>>);

// SAFETY: the map's pointers are to objects shared by refcount; each is freed only by its
// destroyer after the completion, when no reference is left.
unsafe impl Sync for KernelPattern {}

pub struct KernelOwner(Vec<Key>, *const KernelObject);
// SAFETY: the owner is the destroyer's handle; the object is `Sync`.
unsafe impl Send for KernelOwner {}

impl Impl for KernelPattern {
    type Owner = KernelOwner;
    const NAME: &'static str = "kernel-spinlock-refcount";

    fn with_capacity(objects: usize) -> Self {
        KernelPattern(SpinLock::new(HashMap::with_capacity_and_hasher(
            objects,
            Hasher::default(),
        )))
    }
    fn insert(&self, keys: &[Key], value: Value) -> Self::Owner {
        let object = Box::into_raw(Box::new(KernelObject {
            refcount: AtomicUsize::new(1),
            done: Mutex::new(false),
            freed: Condvar::new(),
            value,
        }));
        self.0.with(|map| {
            for key in keys {
                assert!(map.insert(*key, object).is_none());
            }
        });
        KernelOwner(keys.to_vec(), object)
    }
    fn lookup_key(_: &Self::Owner, requested: Key) -> Key {
        requested
    }
    #[inline]
    fn get_put(&self, key: Key) -> Option<Value> {
        let object = self.0.with(|map| {
            let object = *map.get(&key)?;
            // SAFETY: in the map, so not yet destroyed (destroy erases under the lock).
            unsafe { (*object).refcount.fetch_add(1, Ordering::Relaxed) };
            Some(object)
        })?;
        // SAFETY: our reference keeps the destroyer waiting.
        let object = unsafe { &*object };
        let value = object.value;
        object.put();
        Some(value)
    }
    fn kill_and_drain(&self, KernelOwner(keys, object): Self::Owner) -> Value {
        self.0.with(|map| {
            for key in &keys {
                map.remove(key);
            }
        });
        // SAFETY: the birth reference is ours until this put.
        let shared = unsafe { &*object };
        shared.put();
        let mut done = shared.done.lock();
        while !*done {
            shared.freed.wait(&mut done);
        }
        drop(done);
        // SAFETY: erased, and the completion says every reference is gone.
        unsafe { Box::from_raw(object.cast_mut()) }.value
    }
}

// ---- d. the concurrent maps: dashmap, papaya, scc -------------------------------------

/// A concurrent map of `Arc<Value>`s: what dashmap, papaya and scc users keep, with the
/// `Arc` cloned out on a lookup so that nothing of the map is held while the object is
/// used. None of them inserts under several keys atomically.
pub trait ConcurrentArcMap: Sync {
    const NAME: &'static str;
    /// Whether the map drops its `Arc` at removal, so that a drain can wait until ours is
    /// the last one. papaya and scc drop a removed entry later, at their own
    /// reclamation, so their `kill_and_drain` only removes and reads the value (papaya#82
    /// asks for exactly that wait): in workloads 5 and 6 they do less than the others.
    const DROPS_AT_REMOVAL: bool;
    fn with_capacity(objects: usize) -> Self;
    fn insert_all(&self, keys: &[Key], arc: &Arc<Value>);
    fn get_arc(&self, key: Key) -> Option<Arc<Value>>;
    fn remove_all(&self, keys: &[Key]);
}

pub struct ArcMapOf<M>(M);

impl<M: ConcurrentArcMap> Impl for ArcMapOf<M> {
    type Owner = (Vec<Key>, Arc<Value>);
    const NAME: &'static str = M::NAME;

    fn with_capacity(objects: usize) -> Self {
        ArcMapOf(M::with_capacity(objects))
    }
    fn insert(&self, keys: &[Key], value: Value) -> Self::Owner {
        let arc = Arc::new(value);
        self.0.insert_all(keys, &arc);
        (keys.to_vec(), arc)
    }
    fn lookup_key(_: &Self::Owner, requested: Key) -> Key {
        requested
    }
    #[inline]
    fn get_put(&self, key: Key) -> Option<Value> {
        let arc = self.0.get_arc(key)?;
        Some(*arc)
    }
    fn kill_and_drain(&self, (keys, arc): Self::Owner) -> Value {
        self.0.remove_all(&keys);
        if M::DROPS_AT_REMOVAL {
            unwrap_when_unique(arc)
        } else {
            *arc
        }
    }
}

pub type DashMapArc = ArcMapOf<dashmap::DashMap<Key, Arc<Value>, Hasher>>;
pub type PapayaArc = ArcMapOf<papaya::HashMap<Key, Arc<Value>, Hasher>>;
pub type SccArc = ArcMapOf<scc::HashIndex<Key, Arc<Value>, Hasher>>;

impl ConcurrentArcMap for dashmap::DashMap<Key, Arc<Value>, Hasher> {
    const NAME: &'static str = "dashmap";
    const DROPS_AT_REMOVAL: bool = true;
    fn with_capacity(objects: usize) -> Self {
        dashmap::DashMap::with_capacity_and_hasher(objects, Hasher::default())
    }
    fn insert_all(&self, keys: &[Key], arc: &Arc<Value>) {
        for key in keys {
            assert!(self.insert(*key, Arc::clone(arc)).is_none());
        }
    }
    #[inline]
    fn get_arc(&self, key: Key) -> Option<Arc<Value>> {
        self.get(&key).map(|r| Arc::clone(&r))
    }
    fn remove_all(&self, keys: &[Key]) {
        for key in keys {
            self.remove(key);
        }
    }
}

impl ConcurrentArcMap for papaya::HashMap<Key, Arc<Value>, Hasher> {
    const NAME: &'static str = "papaya";
    const DROPS_AT_REMOVAL: bool = false;
    fn with_capacity(objects: usize) -> Self {
        papaya::HashMap::with_capacity_and_hasher(objects, Hasher::default())
    }
    fn insert_all(&self, keys: &[Key], arc: &Arc<Value>) {
        let map = self.pin(); // one pin for all the keys
        for key in keys {
            assert!(map.insert(*key, Arc::clone(arc)).is_none());
        }
    }
    #[inline]
    fn get_arc(&self, key: Key) -> Option<Arc<Value>> {
        self.pin().get(&key).cloned()
    }
    fn remove_all(&self, keys: &[Key]) {
        let map = self.pin();
        for key in keys {
            map.remove(key);
        }
    }
}

impl ConcurrentArcMap for scc::HashIndex<Key, Arc<Value>, Hasher> {
    const NAME: &'static str = "scc";
    const DROPS_AT_REMOVAL: bool = false;
    fn with_capacity(objects: usize) -> Self {
        scc::HashIndex::with_capacity_and_hasher(objects, Hasher::default())
    }
    fn insert_all(&self, keys: &[Key], arc: &Arc<Value>) {
        for key in keys {
            assert!(self.insert_sync(*key, Arc::clone(arc)).is_ok());
        }
    }
    #[inline]
    fn get_arc(&self, key: Key) -> Option<Arc<Value>> {
        self.peek_with(&key, |_, arc| Arc::clone(arc))
    }
    fn remove_all(&self, keys: &[Key]) {
        for key in keys {
            self.remove_sync(key);
        }
    }
}

// ---- e. sharded-slab ------------------------------------------------------------------

pub struct Slab(sharded_slab::Slab<Value>);

impl Impl for Slab {
    /// The slab's own key: sharded-slab has no user keys, so one key per object.
    type Owner = usize;
    const NAME: &'static str = "sharded-slab";

    fn with_capacity(_objects: usize) -> Self {
        Slab(sharded_slab::Slab::new())
    }
    fn insert(&self, _keys: &[Key], value: Value) -> Self::Owner {
        self.0.insert(value).expect("slab full")
    }
    fn lookup_key(owner: &Self::Owner, _requested: Key) -> Key {
        *owner as Key
    }
    #[inline]
    fn get_put(&self, key: Key) -> Option<Value> {
        // sharded-slab 0.1.7 panics here (lib.rs:615, `unwrap` on `None`) when a `get`
        // races a `take` of the same slot, as seen in the churn workload; count that as
        // a miss rather than abort the run. Free when nothing panics.
        std::panic::catch_unwind(|| self.0.get(key as usize).map(|entry| *entry)).unwrap_or(None)
    }
    fn kill_and_drain(&self, owner: Self::Owner) -> Value {
        self.0.take(owner).expect("present")
    }
}

// ---- f. the floor ------------------------------------------------------------------------

/// A refcount per slot in a plain array, indexed directly: what get+put costs with no
/// lookup and no reclamation at all.
pub struct Floor(Vec<Padded>);

#[repr(align(64))]
pub struct Padded(AtomicU64, Value);

impl Floor {
    pub fn new(objects: usize) -> Self {
        Floor(
            (0..objects as u64)
                .map(|i| Padded(AtomicU64::new(0), i))
                .collect(),
        )
    }

    #[inline]
    pub fn get_put(&self, key: Key) -> Option<Value> {
        let slot = self.0.get(key as usize)?;
        slot.0.fetch_add(1, Ordering::Acquire);
        let value = slot.1;
        slot.0.fetch_sub(1, Ordering::Release);
        Some(value)
    }
}

/// The key of object `i`'s `k`th key: spread out, so objects do not sit in key order.
#[inline]
pub fn key(i: u64, k: u64) -> Key {
    (i * 8 + k).wrapping_mul(0x9E37_79B9) & 0xFFFF_FFFF
}
