//! The handles to an object: [`Owner`] (one per object, the right to destroy it) and
//! [`Ref`] (a counted reference from get-ref, put when it drops).

use crate::drain::Dying;
use crate::node::{Node, Release};
use crate::table::{self, Registry};
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;

/// The owner of one object in a [`ResTable`](crate::ResTable): dereferences to it, and
/// is the only way to destroy it.
///
/// An `Owner` does not borrow the table (it is `'static`), so a driver can keep it in its
/// own QP structure.
///
/// **Dropping it destroys the object**: the object is killed at once (no key finds it
/// any more) without waiting, and the value is dropped by whoever lets go last, this
/// drop or the last [`Ref`]. So `table.insert(&keys, value).unwrap();` — the habit of a
/// `HashMap` user — inserts and removes at once (the compiler warns). Keep the `Owner`,
/// or call [`detach`](Owner::detach) to leave the object with the table until
/// [`ResTable::remove`](crate::ResTable::remove).
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let table = restable::ResTable::new();
/// table.insert(&[1u32], "qp").unwrap(); // error: unused `Owner` that must be used
/// ```
///
/// ```
/// use restable::ResTable;
///
/// let table = ResTable::new();
/// let owner = table.insert(&[1u32], vec![1, 2, 3]).unwrap();
/// assert_eq!(owner.len(), 3); // Deref to the value
/// assert_eq!(owner.kill_and_drain(), vec![1, 2, 3]);
/// ```
///
/// Moved to another thread:
///
/// ```
/// let table = restable::ResTable::new();
/// let owner = table.insert(&[1u32], 5u64).unwrap();
/// let value = std::thread::spawn(move || owner.kill_and_drain()).join().unwrap();
/// assert_eq!(value, 5);
/// assert!(table.is_empty());
/// ```
#[must_use = "dropping the `Owner` kills the object at once: keep it to keep the object in \
              the table, or `detach` it to leave it there until `remove`"]
pub struct Owner<K, T> {
    /// A handle on the table's shared part (see `table::Registry`), passed on by `kill`,
    /// `detach` or `drop` to the `Dying`, the table or the node's retirement.
    registry: NonNull<Registry<K, T>>,
    node: NonNull<Node<K, T>>,
}

// SAFETY: an `Owner` hands out `&T` (needs `T: Sync` to cross threads), can move `T` out
// or drop it on its thread (needs `T: Send`), and touches the shared index and keys the
// same way (`K: Send + Sync`).
unsafe impl<K: Send + Sync, T: Send + Sync> Send for Owner<K, T> {}
// SAFETY: `&Owner` only gives `&T` and `&[K]`.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for Owner<K, T> {}

impl<K, T> Owner<K, T> {
    /// # Safety
    /// `node` is linked and published in `registry`'s index, and its ownership, with a
    /// handle on the registry counted at its home, moves to the `Owner`.
    pub(crate) unsafe fn new(registry: NonNull<Registry<K, T>>, node: NonNull<Node<K, T>>) -> Self {
        Owner { registry, node }
    }

    fn registry(&self) -> &Registry<K, T> {
        // SAFETY: our handle keeps the registry allocated.
        unsafe { self.registry.as_ref() }
    }

    fn node(&self) -> &Node<K, T> {
        // SAFETY: the owner keeps the node alive (`OWNED` is set until it lets go).
        unsafe { self.node.as_ref() }
    }

    /// The keys the object was inserted under, in the order given.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[3u32, 1, 2], ()).unwrap();
    /// assert_eq!(owner.keys(), &[3, 1, 2]);
    /// ```
    pub fn keys(&self) -> &[K] {
        self.node().keys()
    }

    /// Kills the object: from the return on, no `get` on any of its keys finds it, and
    /// every key can be inserted again. References already out stay valid; the returned
    /// [`Dying`] waits for them. Never blocks on a reader.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32, 2], "qp").unwrap();
    /// let held = table.get(&1).unwrap();
    /// let dying = owner.kill();
    /// assert!(table.get(&2).is_none());
    /// let _new = table.insert(&[1, 2], "new qp").unwrap(); // keys reusable at once
    /// assert_eq!(dying.refs(), 1);
    /// drop(held);
    /// assert_eq!(dying.drain(), "qp");
    /// ```
    pub fn kill(self) -> Dying<K, T> {
        let this = ManuallyDrop::new(self);
        this.registry().kill(this.node);
        // SAFETY: `this` is never used or dropped again, so the registry handle and the
        // killed node's ownership move from it to the `Dying`, once.
        unsafe { Dying::new(this.node, this.registry) }
    }

    /// Leaves the object with the table: it stays live under its keys without an owner
    /// handle, until [`ResTable::remove`](crate::ResTable::remove) (or
    /// [`retain`](crate::ResTable::retain)) claims it, or the table is dropped (which
    /// destroys it). The way to use the table like a map, with no owner kept beside it.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// table.insert(&[1u32], "conn").unwrap().detach();
    /// assert_eq!(*table.get(&1).unwrap(), "conn");
    /// assert_eq!(table.remove(&1).unwrap().drain(), "conn");
    /// ```
    pub fn detach(self) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the registry handle and the
        // node's ownership go to the table, once.
        unsafe { Registry::adopt(this.registry, this.node) }
    }

    /// Kills the object, waits for every reference to be put and returns the value: the
    /// destroy path of a driver, before it frees the hardware IDs.
    ///
    /// Never returns while the calling thread holds a [`Ref`] to the object: see
    /// [`Dying::drain`]'s "Deadlock".
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[9u32], String::from("cq")).unwrap();
    /// assert_eq!(owner.kill_and_drain(), "cq");
    /// assert!(!table.contains_key(&9));
    /// ```
    pub fn kill_and_drain(self) -> T {
        self.kill().drain()
    }
}

impl<K, T> Deref for Owner<K, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.node().value()
    }
}

impl<K, T> Drop for Owner<K, T> {
    fn drop(&mut self) {
        self.registry().kill(self.node);
        // SAFETY: the owner's right to the node and its handle are given up here, exactly
        // once, and neither is used after this.
        unsafe { abandon(self.node, self.registry) }
    }
}

/// The owner (an `Owner` or `Dying`) lets go without draining; if no reference is out,
/// the value is dropped and the node retired now, otherwise by the last put.
///
/// # Safety
/// `node` is killed and unlinked from `registry`'s index, and the caller holds its owner
/// (with a handle on `registry` counted at the node's home) and never touches either
/// again.
pub(crate) unsafe fn abandon<K, T>(node: NonNull<Node<K, T>>, registry: NonNull<Registry<K, T>>) {
    // Read before the abandon's RMW: after it, the last put may free the node.
    // SAFETY: the caller's owner keeps the node alive until then.
    let home = unsafe { node.as_ref() }.home();
    // SAFETY: the caller's owner keeps the node alive until this call, and gives it up.
    match unsafe { Node::abandon(node.as_ptr()) } {
        // SAFETY: `Last`: no reference is out and the owner is gone; the handle goes on
        // to the node's disposal, which recycles its block into the registry.
        Release::Last => unsafe { table::drop_and_retire(node.as_ptr(), Some(registry)) },
        // The last put frees the node without the registry: the handle goes now.
        // SAFETY: ours, given up once.
        Release::Held => unsafe { Registry::release(registry, home) },
    }
}

impl<K: fmt::Debug, T: fmt::Debug> fmt::Debug for Owner<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner")
            .field("keys", &self.keys())
            .field("value", &**self)
            .finish()
    }
}

/// A counted reference to a live object, from [`ResTable::get`](crate::ResTable::get):
/// get-ref when made, put-ref when dropped (also when its holder unwinds).
///
/// While any `Ref` is out, the object's drain waits. Cloning takes another reference.
/// A `Ref` borrows the table it came from; [`into_owned`](Ref::into_owned) (or
/// [`ResTable::get_owned`](crate::ResTable::get_owned)) gives an [`OwnedRef`] that does
/// not, for a thread or a task that outlives the borrow.
///
/// ```
/// let table = restable::ResTable::new();
/// let _qp = table.insert(&[1u32], "qp").unwrap();
/// let r = table.get(&1).unwrap();
/// let r2 = r.clone();
/// assert_eq!((*r, *r2), ("qp", "qp"));
/// ```
///
/// Sent to another thread:
///
/// ```
/// let table = restable::ResTable::new();
/// let _qp = table.insert(&[1u32], 10u32).unwrap();
/// std::thread::scope(|s| {
///     let r = table.get(&1).unwrap();
///     s.spawn(move || assert_eq!(*r, 10));
/// });
/// ```
#[must_use = "a `Ref` is put as soon as it is dropped; to test for a key, use `contains_key`"]
pub struct Ref<'a, K, T> {
    owned: OwnedRef<K, T>,
    _table: PhantomData<&'a Registry<K, T>>,
}

impl<K, T> Ref<'_, K, T> {
    /// Wraps a reference already taken.
    ///
    /// # Safety
    /// As for [`OwnedRef::new`].
    #[cfg_attr(feature = "track-refs", track_caller)]
    pub(crate) unsafe fn new(node: *const Node<K, T>) -> Self {
        Ref {
            // SAFETY: the caller's contract.
            owned: unsafe { OwnedRef::new(node) },
            _table: PhantomData,
        }
    }

    /// All keys of the object, not just the one it was looked up by.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[0x10u32, 0x8000_0003, 0x3], ()).unwrap();
    /// assert_eq!(table.get(&3).unwrap().keys(), &[0x10, 0x8000_0003, 0x3]);
    /// ```
    pub fn keys(&self) -> &[K] {
        self.owned.keys()
    }

    /// Whether two references point at the same object (not merely equal values).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[1u32, 2], 0).unwrap();
    /// assert!(restable::Ref::ptr_eq(&table.get(&1).unwrap(), &table.get(&2).unwrap()));
    /// ```
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        OwnedRef::ptr_eq(&this.owned, &other.owned)
    }

    /// The same reference, no longer tied to the table's borrow (no atomic operation).
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let owner = table.insert(&[1u32], String::from("conn")).unwrap();
    /// let r = table.get(&1).unwrap().into_owned();
    /// let worker = std::thread::spawn(move || r.len());
    /// assert_eq!(worker.join().unwrap(), 4);
    /// assert_eq!(owner.kill_and_drain(), "conn");
    /// ```
    pub fn into_owned(self) -> OwnedRef<K, T> {
        self.owned
    }

    pub(crate) fn node_ptr(&self) -> *const Node<K, T> {
        self.owned.node.as_ptr()
    }
}

impl<K, T> Deref for Ref<'_, K, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.owned
    }
}

impl<K, T> Clone for Ref<'_, K, T> {
    fn clone(&self) -> Self {
        Ref {
            owned: self.owned.clone(),
            _table: PhantomData,
        }
    }
}

impl<K: fmt::Debug, T: fmt::Debug> fmt::Debug for Ref<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ref")
            .field("keys", &self.keys())
            .field("value", &**self)
            .finish()
    }
}

/// A counted reference that does not borrow its table: `'static` whenever `K` and `T`
/// are, so it can move into a spawned thread or an async task. Otherwise it is a
/// [`Ref`]: it puts when it drops, and the object's drain waits for it like for any
/// `Ref`. It keeps the object's memory, not the table, alive.
///
/// ```
/// use std::sync::Arc;
///
/// let table = Arc::new(restable::ResTable::new());
/// let owner = table.insert(&[7u64], vec![1, 2, 3]).unwrap();
/// let r = table.get_owned(&7).unwrap();
/// let dying = owner.kill();
/// let worker = std::thread::spawn(move || r.iter().sum::<i32>()); // `r` goes along
/// assert_eq!(worker.join().unwrap(), 6);
/// assert_eq!(dying.drain(), vec![1, 2, 3]); // the worker's put let the drain finish
/// ```
#[must_use = "an `OwnedRef` is put as soon as it is dropped"]
pub struct OwnedRef<K, T> {
    node: NonNull<Node<K, T>>,
    /// Where this reference was taken (feature `track-refs`).
    #[cfg(feature = "track-refs")]
    ticket: crate::track::Ticket,
}

// SAFETY: an `OwnedRef` gives `&T` and `&[K]`, and its drop may drop `T` (if the owner
// let go), on whichever thread holds it.
unsafe impl<K: Send + Sync, T: Send + Sync> Send for OwnedRef<K, T> {}
// SAFETY: `&OwnedRef` only gives `&T` and `&[K]`.
unsafe impl<K: Send + Sync, T: Send + Sync> Sync for OwnedRef<K, T> {}

impl<K, T> OwnedRef<K, T> {
    /// Wraps a reference already taken.
    ///
    /// # Safety
    /// The caller took a reference on `node` (`Node::try_get` succeeded) that this now
    /// owns, and `node` is the pointer from its index slot (it covers the whole block,
    /// which the last holder frees).
    #[cfg_attr(feature = "track-refs", track_caller)]
    pub(crate) unsafe fn new(node: *const Node<K, T>) -> Self {
        OwnedRef {
            // SAFETY: a node pointer from an index slot is never null.
            node: unsafe { NonNull::new_unchecked(node.cast_mut()) },
            #[cfg(feature = "track-refs")]
            ticket: crate::track::record(node as usize, std::panic::Location::caller()),
        }
    }

    fn node(&self) -> &Node<K, T> {
        // SAFETY: our reference keeps the node alive (its count is at least one).
        unsafe { self.node.as_ref() }
    }

    /// All keys of the object.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[1u32, 2], ()).unwrap();
    /// assert_eq!(table.get_owned(&2).unwrap().keys(), &[1, 2]);
    /// ```
    pub fn keys(&self) -> &[K] {
        self.node().keys()
    }

    /// Whether two references point at the same object (not merely equal values).
    ///
    /// ```
    /// use restable::OwnedRef;
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[1u32, 2], 0).unwrap();
    /// let (a, b) = (table.get_owned(&1).unwrap(), table.get_owned(&2).unwrap());
    /// assert!(OwnedRef::ptr_eq(&a, &b));
    /// ```
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        this.node == other.node
    }
}

impl<K, T> Deref for OwnedRef<K, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.node().value()
    }
}

impl<K, T> Clone for OwnedRef<K, T> {
    #[cfg_attr(feature = "track-refs", track_caller)]
    fn clone(&self) -> Self {
        self.node().clone_ref();
        OwnedRef {
            node: self.node,
            #[cfg(feature = "track-refs")]
            ticket: crate::track::record(
                self.node.as_ptr() as usize,
                std::panic::Location::caller(),
            ),
        }
    }
}

impl<K, T> Drop for OwnedRef<K, T> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "track-refs")]
        crate::track::forget(self.node.as_ptr() as usize, self.ticket);
        // SAFETY: we hold a reference, given up here, once.
        if let Release::Last = unsafe { Node::put(self.node.as_ptr()) } {
            // SAFETY: `Last`: the owner let go and ours was the last reference.
            unsafe { table::drop_and_retire(self.node.as_ptr(), None) }
        }
    }
}

impl<K: fmt::Debug, T: fmt::Debug> fmt::Debug for OwnedRef<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRef")
            .field("keys", &self.keys())
            .field("value", &**self)
            .finish()
    }
}
