//! The one door to atomics, locks, parking and epoch pinning.
//!
//! Production code reaches every synchronization primitive through this module, so that
//! `--cfg loom --cfg crossbeam_loom` can swap in [loom]'s model-checked versions in one
//! place (the approach of tokio's `loom` module and sharded-slab's `sync.rs`).
//!
//! Under loom:
//! - atomics and the waker registry's lock come from `loom::sync`, and the state the
//!   shard locks guard lives in loom's `UnsafeCell`, so loom checks the locks' orderings;
//! - epoch pinning uses a [`crossbeam_epoch::Collector`] created per model execution
//!   (one handle per loom thread), so that reclamation runs inside the model and a
//!   use-after-free shows up as a loom failure rather than an abort;
//! - parking is a small "parking lot" built from a loom `Mutex` and `Condvar` with the
//!   same contract as `parking_lot_core::park`/`unpark_all`: `validate` runs under the
//!   lot's lock, and `unpark_all` takes that lock too, so a wake-up issued after the
//!   validated state change can never be lost. A timed park does not sleep under loom
//!   (loom has no clock): it validates and reports a time-out at once.
//!
//! [loom]: https://docs.rs/loom

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "restable: `--cfg loom` needs `--cfg crossbeam_loom` too (and crossbeam-epoch's `loom` \
     feature); otherwise crossbeam-epoch silently stays unmodelled"
);

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};

pub(crate) use crossbeam_epoch::Guard;

/// A flag that steers a guess and never an outcome (`Registry::detached`, read by
/// `get` to pick its first CAS). The standard atomic under loom too: no result depends
/// on which value a thread reads, so the models need not explore its interleavings.
pub(crate) type HintFlag = std::sync::atomic::AtomicBool;

#[cfg(not(loom))]
std::thread_local! {
    static VISITING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// Loom runs every model thread on one OS thread: its thread-locals give each its own.
#[cfg(loom)]
loom::thread_local! {
    static VISITING: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// This thread's word for [`crate::visit`]: the object its `retain` predicate is
/// looking at (0: none).
pub(crate) fn visiting<R>(f: impl FnOnce(&std::cell::Cell<usize>) -> R) -> R {
    VISITING.with(f)
}

use std::task::Waker;
use std::time::Instant;

/// How many times a drainer re-checks the state word before it parks. Holders keep their
/// references for short critical sections, so a brief spin often saves a sleep; under
/// loom the spin only multiplies interleavings, so it is off.
#[cfg(not(loom))]
pub(crate) const DRAIN_SPINS: u32 = 64;
#[cfg(loom)]
pub(crate) const DRAIN_SPINS: u32 = 0;

/// One step of a bounded spin.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Asks the CPU to start loading the cache line at `line` without waiting for it: a hint
/// with no effect on what any thread observes. A no-op where there is no prefetch
/// instruction. Not built under loom, which models memory accesses, not caches: the
/// index's prefetch does nothing there.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn prefetch<T>(line: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory, whatever the address; SSE
    // is part of every x86_64 target.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(line.cast::<i8>())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}

/// Lets other threads run (the simulated device's command latency).
#[cfg(feature = "mana")]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Called right after every read-modify-write that made another thread the last user of
/// a node (a put or an abandon that returns `Held`). Does nothing, unless the crate is built with
/// `--cfg restable_delay`: then it sleeps, so the other thread's drain, recycle or free
/// lands while this thread is still inside the releasing function. A sleep only selects
/// an interleaving that can already happen; `tests/last_user.rs` uses it under Miri to
/// show that the releasing function holds no reference into the node by then.
#[inline(always)]
pub(crate) fn after_release() {
    #[cfg(restable_delay)]
    std::thread::sleep(std::time::Duration::from_millis(100));
}

// The allocator for node pages (`crate::block`). Under loom, loom's, whose leak tracking
// fails a model in which a page is never freed (a count that never reaches zero).
#[cfg(loom)]
pub(crate) use loom::alloc::{alloc, dealloc};
#[cfg(not(loom))]
pub(crate) use std::alloc::{alloc, dealloc};

/// Pins the current thread to the epoch used by every table.
#[cfg(not(loom))]
#[inline]
pub(crate) fn pin() -> Guard {
    crossbeam_epoch::pin()
}

#[cfg(loom)]
loom::lazy_static! {
    static ref COLLECTOR: crossbeam_epoch::Collector = crossbeam_epoch::Collector::new();
}

#[cfg(loom)]
loom::thread_local! {
    static HANDLE: crossbeam_epoch::LocalHandle = COLLECTOR.register();
}

#[cfg(loom)]
pub(crate) fn pin() -> Guard {
    HANDLE.with(|handle| handle.pin())
}

/// Whether the calling thread is pinned right now (by a table guard, a read section, an
/// iterator, or any other user of the epoch).
#[cfg(not(loom))]
pub(crate) fn is_pinned() -> bool {
    crossbeam_epoch::is_pinned()
}

#[cfg(loom)]
pub(crate) fn is_pinned() -> bool {
    HANDLE.with(|handle| handle.is_pinned())
}

/// Pushes the epoch from the calling thread: hands its deferred functions to the global
/// queue, tries to advance the global epoch, and runs what has expired. Runs other
/// users' deferred functions (user code): never call it under a shard lock.
pub(crate) fn flush() {
    pin().flush();
}

/// Registers the calling model thread with the model's collector (what its first pin
/// would do). Loom models call it first thing on every thread: a thread that starts
/// with an insert otherwise meets the other threads only on the index's atomics, and
/// loom's preemption-bounded search, starting from a schedule that runs the other
/// thread first, may explore a single execution of the race (it did for
/// `get_vs_insert_publish`, and reported success). The registration's accesses to the
/// collector's shared list give the search a point to branch from, in test code only:
/// no production path pins for the models' sake.
#[cfg(loom)]
#[doc(hidden)]
pub fn register() {
    HANDLE.with(|_| ());
}

/// Drives reclamation from the calling thread: flushes its deferred work and re-pins a
/// few times so the global epoch can advance and garbage can be freed. Loom models call
/// it from the killing thread; without it a model never frees anything and so never sees
/// a use-after-free.
#[cfg(loom)]
#[doc(hidden)]
pub fn collect() {
    for _ in 0..3 {
        let guard = pin();
        guard.flush();
    }
}

/// The epoch's driver for async drains (see `crate::grace`): a helper thread,
/// `restable-grace`, spawned on first need, that flushes the epoch with backoff while
/// any async drain waits for a grace period. Under loom there is no such thread (a
/// model's own threads collect), and these do nothing.
#[cfg(not(loom))]
mod epoch_driver {
    static WANTED: parking_lot::Mutex<usize> = parking_lot::const_mutex(0);
    static WANTED_CHANGED: parking_lot::Condvar = parking_lot::Condvar::new();

    /// Whether the helper thread runs (false if it could not be spawned).
    fn helper() -> bool {
        static SPAWNED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SPAWNED.get_or_init(|| {
            std::thread::Builder::new()
                .name("restable-grace".into())
                .spawn(run)
                .is_ok()
        })
    }

    fn run() {
        loop {
            let mut wanted = WANTED.lock();
            while *wanted == 0 {
                WANTED_CHANGED.wait(&mut wanted);
            }
            drop(wanted);
            let mut backoff = super::GRACE_BACKOFF_MIN;
            while *WANTED.lock() != 0 {
                super::flush();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(super::GRACE_BACKOFF_MAX);
            }
        }
    }

    /// One more async drain waits for a grace period. Returns false if the helper
    /// thread could not be spawned: the caller must then drive the epoch itself.
    pub(crate) fn want() -> bool {
        if !helper() {
            return false;
        }
        *WANTED.lock() += 1;
        WANTED_CHANGED.notify_one();
        true
    }

    /// An async drain that called `want` (and got true) no longer waits.
    pub(crate) fn unwant() {
        let mut wanted = WANTED.lock();
        debug_assert!(*wanted > 0);
        *wanted -= 1;
    }
}

#[cfg(loom)]
mod epoch_driver {
    pub(crate) fn want() -> bool {
        true
    }

    pub(crate) fn unwant() {}
}

pub(crate) use epoch_driver::{unwant as release_epoch_driver, want as want_epoch_driver};

/// The first and the longest pause between two pushes of the epoch by a drainer that
/// waits for a grace period (doubling in between): short enough that a grace period
/// ends within a few of its readers' sections, long enough that a wait on a reader
/// that stays pinned costs a few thousand flushes a second at most.
pub(crate) const GRACE_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_micros(20);
pub(crate) const GRACE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// The lock of the async drains' waker registry.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(not(loom))]
impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }
}

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while the registry's lock is held leaves it consistent (one push or
        // one removal), so poisoning carries no information here.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// State that a lock outside the type guards (a shard's, see `lock`): a plain
/// `UnsafeCell`, or loom's, which checks that the lock really orders every access.
#[derive(Debug)]
pub(crate) struct LockedCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

// SAFETY: the value is reached only through `get_mut`, whose callers hold the lock that
// guards the cell (one thread at a time, like a `Mutex`), so sending the value between
// threads is all that sharing the cell does.
unsafe impl<T: Send> Sync for LockedCell<T> {}

/// Exclusive access to a [`LockedCell`]'s value.
pub(crate) struct CellMut<'a, T>(
    #[cfg(not(loom))] &'a mut T,
    #[cfg(loom)] loom::cell::MutPtr<T>,
    #[cfg(loom)] std::marker::PhantomData<&'a mut T>,
);

impl<T> LockedCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Self(std::cell::UnsafeCell::new(value));
        #[cfg(loom)]
        return Self(loom::cell::UnsafeCell::new(value));
    }

    /// # Safety
    /// The caller holds the lock that guards this cell, for as long as the result lives,
    /// and makes no other `CellMut` of it meanwhile.
    pub(crate) unsafe fn get_mut(&self) -> CellMut<'_, T> {
        #[cfg(not(loom))]
        // SAFETY: the caller's contract makes this the only access.
        return CellMut(unsafe { &mut *self.0.get() });
        #[cfg(loom)]
        return CellMut(self.0.get_mut(), std::marker::PhantomData);
    }
}

impl<T> std::ops::Deref for CellMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        return self.0;
        // SAFETY: `get_mut`'s contract; loom tracks the access while the `MutPtr` lives.
        #[cfg(loom)]
        return unsafe { self.0.deref() };
    }
}

impl<T> std::ops::DerefMut for CellMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        return self.0;
        // SAFETY: as above.
        #[cfg(loom)]
        return unsafe { self.0.deref() };
    }
}

/// What a [`park`] call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// `validate` said not to sleep.
    Invalid,
    /// Woken by [`unpark_all`] (or spuriously: callers re-check their condition).
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Parks the thread on `key` if `validate` (run under the lot's lock) returns true, until
/// [`unpark_all`] on the same key or the deadline.
///
/// A waiter that times out changes nothing on its way out: other threads may still be
/// parked on the same key, and the flag their `validate` set is what tells the waker to
/// wake them (a timed-out waiter that cleared it stranded them: issue 22).
pub(crate) fn park(
    key: usize,
    validate: impl FnOnce() -> bool,
    deadline: Option<Instant>,
) -> Parked {
    #[cfg(not(loom))]
    {
        use parking_lot_core::{ParkResult, DEFAULT_PARK_TOKEN};
        // SAFETY: `validate` only touches an atomic and never calls into the parking lot; `key` is the address of a live node (a drainer) or of a table's
        // shard's lock word (a writer), used only as a wait queue id.
        let result = unsafe {
            parking_lot_core::park(
                key,
                validate,
                || {},
                |_, _| {},
                DEFAULT_PARK_TOKEN,
                deadline,
            )
        };
        match result {
            ParkResult::Invalid => Parked::Invalid,
            ParkResult::Unparked(_) => Parked::Woken,
            ParkResult::TimedOut => Parked::TimedOut,
        }
    }
    #[cfg(loom)]
    {
        loom_lot::park(key, validate, deadline.is_some())
    }
}

/// Wakes every drainer waiting on `key`: threads parked with [`park`] and async tasks
/// registered with [`register_waker`]. Touches no memory at `key`: a node may already be
/// freed when its last holder wakes the drainer. A wake that arrives late, for a key
/// that by then names another node, is only a spurious wake-up: every drainer checks
/// its condition again.
pub(crate) fn wake_drainers(key: usize) {
    unpark_all(key);
    wakers::wake(key);
}

/// Registers `waker` to be woken by [`wake_drainers`] on `key` (replacing one registered
/// before under that key), if `validate`, run under the registry's lock, says to wait.
/// Returns whether it registered. As with [`park`], a wake issued after the validated
/// state change takes the same lock, so it cannot be lost.
pub(crate) fn register_waker(key: usize, waker: &Waker, validate: impl FnOnce() -> bool) -> bool {
    wakers::register(key, waker, validate)
}

/// Drops the waker registered under `key`, if any (a drain future that completes or is
/// dropped).
pub(crate) fn forget_waker(key: usize) {
    wakers::forget(key);
}

/// The wakers of async drains, by key: a few mutex-protected lists, so that registering
/// and waking are ordered by a lock, like the parking lot's queues.
mod wakers {
    use std::task::Waker;

    #[cfg(not(loom))]
    fn shard(key: usize) -> &'static super::Mutex<Vec<(usize, Waker)>> {
        const SHARDS: usize = 16;
        static LISTS: [super::Mutex<Vec<(usize, Waker)>>; SHARDS] =
            [const { super::Mutex::new(Vec::new()) }; SHARDS];
        // Node addresses are at least 8-aligned; mix the bits above that.
        &LISTS[(key >> 4 ^ key >> 10) % SHARDS]
    }

    #[cfg(loom)]
    fn shard(_key: usize) -> &'static super::Mutex<Vec<(usize, Waker)>> {
        loom::lazy_static! {
            static ref LIST: super::Mutex<Vec<(usize, Waker)>> = super::Mutex::new(Vec::new());
        }
        &LIST
    }

    pub(super) fn register(key: usize, waker: &Waker, validate: impl FnOnce() -> bool) -> bool {
        let mut list = shard(key).lock();
        if !validate() {
            return false;
        }
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some((_, registered)) => registered.clone_from(waker),
            None => list.push((key, waker.clone())),
        }
        true
    }

    /// Takes the waker registered under `key` out of the registry. The caller wakes or
    /// drops it after the lock is released: a waker may run arbitrary code.
    fn take(key: usize) -> Option<Waker> {
        let mut list = shard(key).lock();
        let at = list.iter().position(|(k, _)| *k == key)?;
        Some(list.swap_remove(at).1)
    }

    pub(super) fn wake(key: usize) {
        if let Some(waker) = take(key) {
            waker.wake();
        }
    }

    pub(super) fn forget(key: usize) {
        drop(take(key));
    }
}

/// Wakes every thread parked on `key`. Touches no memory at `key`: a node may already be
/// freed when its last holder wakes the drainer.
pub(crate) fn unpark_all(key: usize) {
    #[cfg(not(loom))]
    // SAFETY: no callback; `key` is only compared, never dereferenced.
    unsafe {
        parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN);
    }
    #[cfg(loom)]
    loom_lot::unpark_all(key);
}

#[cfg(loom)]
mod loom_lot {
    use super::Parked;
    use loom::sync::{Condvar, Mutex};

    struct Lot {
        /// Keys of the threads parked right now, one entry each.
        parked: Mutex<Vec<(usize, usize)>>,
        woken: Condvar,
        next_ticket: loom::sync::atomic::AtomicUsize,
    }

    loom::lazy_static! {
        static ref LOT: Lot = Lot {
            parked: Mutex::new(Vec::new()),
            woken: Condvar::new(),
            next_ticket: loom::sync::atomic::AtomicUsize::new(0),
        };
    }

    pub(super) fn park(key: usize, validate: impl FnOnce() -> bool, timed: bool) -> Parked {
        let ticket = LOT
            .next_ticket
            .fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
        let mut parked = LOT.parked.lock().unwrap();
        if !validate() {
            return Parked::Invalid;
        }
        if timed {
            return Parked::TimedOut;
        }
        parked.push((key, ticket));
        while parked.iter().any(|&entry| entry == (key, ticket)) {
            parked = LOT.woken.wait(parked).unwrap();
        }
        Parked::Woken
    }

    pub(super) fn unpark_all(key: usize) {
        let mut parked = LOT.parked.lock().unwrap();
        parked.retain(|&(k, _)| k != key);
        LOT.woken.notify_all();
    }
}
