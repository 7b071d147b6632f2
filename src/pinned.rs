//! Borrowed reads: a table guard ([`Pinned`]) under which lookups take no reference
//! count and write nothing, as a kernel handler reads under `rcu_read_lock()`.
//!
//! The drain waits for borrowed readers as it waits for `Ref`s: a kill of an object that
//! was read borrowed gives it a grace period (see `crate::grace`), which ends once every
//! guard that could have seen it is gone.

use crate::guard::OwnedRef;
use crate::node::Node;
use crate::section::{read_section, ReadSection};
use crate::table::{DefaultHashBuilder, ResTable};
use equivalent::Equivalent;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::ops::Deref;

/// A guard on one table for borrowed reads, from [`ResTable::pin`]: lookups under it
/// return `&T` for as long as the guard lives, without taking a reference count.
///
/// The guard is one epoch pin (a nested, cheap one inside a
/// [`read_section`](crate::read_section) or another guard). A borrowed lookup costs a
/// hash, an index probe and one load of the object's state word — nothing is written,
/// so readers on many cores never bounce each other's cache lines (the first borrowed
/// read of an object writes it once, to mark it). A counted [`get`](ResTable::get) is
/// two atomic read-modify-writes more.
///
/// What it costs the writers: a kill or remove of an object that was ever read borrowed
/// waits for a grace period before its drain (or its last holder) may take or drop the
/// value — until every guard open at the kill has been dropped or
/// [refreshed](Pinned::refresh). So, as with a read section, hold a guard for a batch
/// of lookups (one interrupt's events, one poll), not for the life of a thread. Objects
/// never read borrowed drain exactly as before, whatever guards are open.
///
/// Never drain a borrowed object on a thread that holds a guard (or a read section): the
/// drain would wait for the thread's own pin. It panics instead; see [`Dying::drain`].
///
/// Not `Send`: the pin belongs to the thread that took it.
///
/// ```
/// use restable::ResTable;
///
/// let qps = ResTable::new();
/// let _qp = qps.insert(&[0x51u32], "qp 0x51").unwrap();
///
/// // An event handler: one guard for the batch, borrowed lookups under it.
/// let guard = qps.pin();
/// for qpn in [0x51, 0x52, 0x51] {
///     if let Some(qp) = guard.get(&qpn) {
///         assert_eq!(*qp, "qp 0x51");
///     }
/// }
/// drop(guard);
/// ```
///
/// [`Dying::drain`]: crate::Dying::drain
pub struct Pinned<'t, K, T, S = DefaultHashBuilder> {
    table: &'t ResTable<K, T, S>,
    section: ReadSection,
}

impl<K, T, S: BuildHasher> ResTable<K, T, S> {
    /// Opens a guard for borrowed reads on this thread: see [`Pinned`]. `guard.get(&key)`
    /// returns `&T` valid until the guard drops, taking no reference.
    ///
    /// `T: Send + 'static` because the value of a borrowed object may be dropped by the
    /// epoch's collector, on whichever thread collects, after the grace period of its
    /// kill.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _cq = table.insert(&[3u32], String::from("cq 3")).unwrap();
    /// assert_eq!(table.pin().get(&3).map(String::as_str), Some("cq 3"));
    /// ```
    #[inline]
    pub fn pin(&self) -> Pinned<'_, K, T, S>
    where
        T: Send + 'static,
    {
        Pinned {
            table: self,
            section: read_section(),
        }
    }
}

impl<'t, K, T, S: BuildHasher> Pinned<'t, K, T, S> {
    /// The live object `key` names, borrowed for as long as the guard lives; no reference
    /// is taken, and nothing is written (but the first borrowed read of an object marks
    /// it, once). Lock-free; never blocks.
    ///
    /// The object may be killed meanwhile: the reference stays valid — its drain waits for
    /// this guard — but it is then unreachable by key, as after any kill.
    ///
    /// Any `Q` that hashes like the key and implements [`Equivalent`] finds it, as for
    /// [`ResTable::get`].
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _a = table.insert(&[1u32, 10], 'a').unwrap();
    /// let guard = table.pin();
    /// assert_eq!(guard.get(&10), Some(&'a'));
    /// assert_eq!(guard.get(&2), None);
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&T>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.find_node(key).map(|node| {
            // SAFETY: `find_node` checked the node live and marked with our pin held; the
            // value stays in place until the grace period of its kill, which waits for
            // this guard, whose borrow the reference keeps.
            unsafe { (*node).value() }
        })
    }

    /// Like [`get`](Self::get), but returns a handle that also gives the object's keys and
    /// can take a counted reference ([`Borrowed::to_owned_ref`]) for use beyond the
    /// guard: a handler looks up borrowed and keeps only what it must.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[7u32, 70], "qp 7").unwrap();
    /// let kept = {
    ///     let guard = table.pin();
    ///     let qp = guard.find(&70).unwrap();
    ///     assert_eq!(qp.keys(), &[7, 70]);
    ///     qp.to_owned_ref() // outlives the guard
    /// };
    /// assert_eq!(*kept, "qp 7");
    /// ```
    #[inline]
    pub fn find<Q>(&self, key: &Q) -> Option<Borrowed<'_, K, T>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.find_node(key).map(|node| Borrowed {
            node,
            _guard: PhantomData,
        })
    }

    /// Whether a live object answers to `key` right now. Writes nothing (and does not
    /// mark the object borrowed: no value is read).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let qp = table.insert(&[1u32], ()).unwrap();
    /// let guard = table.pin();
    /// assert!(guard.contains_key(&1));
    /// drop(qp);
    /// assert!(!guard.contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.table.hash(key);
        self.table
            .registry()
            .find(hash, key, self.section.guard())
            // SAFETY: pinned, so the node is not freed yet.
            .is_some_and(|node| unsafe { Node::is_live(node) })
    }

    /// Moves the guard to the current epoch, ending this thread's part in the grace
    /// periods of objects killed since it was opened (and letting memory retired
    /// meanwhile be reclaimed), as [`ReadSection::refresh`] does. Takes `&mut self`, so
    /// no borrowed reference from before survives it. A poller that keeps a guard open
    /// refreshes it between batches.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _cq = table.insert(&[1u32], 5u8).unwrap();
    /// let mut guard = table.pin();
    /// for _batch in 0..3 {
    ///     assert_eq!(guard.get(&1), Some(&5));
    ///     guard.refresh();
    /// }
    /// ```
    pub fn refresh(&mut self) {
        self.section.refresh();
    }

    /// The table this guard reads.
    ///
    /// ```
    /// let table = restable::ResTable::<u32, ()>::new();
    /// assert!(std::ptr::eq(table.pin().table(), &table));
    /// ```
    pub fn table(&self) -> &'t ResTable<K, T, S> {
        self.table
    }

    /// The node `key` names, if it is live, marked `BORROWED` (if it was not yet) under
    /// our pin.
    #[inline]
    fn find_node<Q>(&self, key: &Q) -> Option<*const Node<K, T>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hash = self.table.hash(key);
        let node = self
            .table
            .registry()
            .find(hash, key, self.section.guard())?;
        // SAFETY: pinned (our section), so the node is not freed yet, and we stay pinned
        // for as long as the value is borrowed.
        unsafe { Node::try_borrow(node) }.then_some(node)
    }
}

impl<K, T, S> fmt::Debug for Pinned<'_, K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// An object borrowed under a table guard, from [`Pinned::find`]: dereferences to the
/// value, gives its keys, and can take a counted reference that outlives the guard.
pub struct Borrowed<'g, K, T> {
    node: *const Node<K, T>,
    _guard: PhantomData<&'g T>,
}

impl<'g, K, T> Borrowed<'g, K, T> {
    /// All keys of the object, not just the one it was found by.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[1u32, 2], ()).unwrap();
    /// assert_eq!(table.pin().find(&2).unwrap().keys(), &[1, 2]);
    /// ```
    pub fn keys(&self) -> &'g [K] {
        // SAFETY: the guard keeps the node allocated, and the keys live as long as it.
        unsafe { (*self.node).keys() }
    }

    /// A counted reference to the object, for use beyond the guard (another thread, a
    /// later batch): one atomic increment, as a `Ref` clone. The drain waits for it like
    /// for any `Ref`. If the object was killed since the lookup, the reference holds it
    /// anyway — like a `Ref` taken before the kill — though no key finds it any more.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], String::from("conn")).unwrap();
    /// let r = table.pin().find(&1).unwrap().to_owned_ref();
    /// let dying = owner.kill();
    /// assert_eq!(dying.refs(), 1 + 1); // `r`, and the grace period of the borrowed read
    /// assert_eq!(r.len(), 4);
    /// drop(r);
    /// assert_eq!(dying.drain(), "conn");
    /// ```
    #[cfg_attr(feature = "track-refs", track_caller)]
    pub fn to_owned_ref(&self) -> OwnedRef<K, T> {
        // SAFETY: the guard keeps the node allocated; a reference can be added without a
        // liveness check because the count cannot be zero with a drain past it: either
        // the node is live (its owner drains only after a kill), or it was killed after
        // our read, and that kill's grace reference stays until our guard is gone.
        unsafe {
            (*self.node).clone_ref();
            OwnedRef::new(self.node)
        }
    }
}

impl<'g, K, T> Deref for Borrowed<'g, K, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: as for `Pinned::get`: the guard this borrows keeps the value in place.
        unsafe { (*self.node).value() }
    }
}

impl<K: fmt::Debug, T: fmt::Debug> fmt::Debug for Borrowed<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Borrowed")
            .field("keys", &self.keys())
            .field("value", &**self)
            .finish()
    }
}
