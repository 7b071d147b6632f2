//! Why an insert failed — with the caller's value handed back.

use std::fmt;

/// Why [`ResTable::insert`](crate::ResTable::insert) refused an object.
///
/// ```
/// use restable::{InsertErrorKind, ResTable};
///
/// let table = ResTable::new();
/// let _qp = table.insert(&[7u32], "qp").unwrap();
/// let err = table.insert(&[7], "other").unwrap_err();
/// assert_eq!(err.kind(), InsertErrorKind::KeyInUse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InsertErrorKind {
    /// A key already names a live object (or one whose insert is under way).
    KeyInUse,
    /// The same key appears twice in one call.
    DuplicateKey,
    /// The key list is empty: nothing could ever find the object.
    NoKeys,
    /// More than [`MAX_KEYS`](crate::MAX_KEYS) keys.
    TooManyKeys,
}

/// A refused insert: says why, names the key at fault, and gives the value back.
///
/// ```
/// use restable::{InsertErrorKind, ResTable};
///
/// let table = ResTable::new();
/// let err = table.insert(&[1u32, 2, 1], String::from("qp")).unwrap_err();
/// assert_eq!(err.kind(), InsertErrorKind::DuplicateKey);
/// assert_eq!(err.key(), Some(&1));
/// assert_eq!(err.into_value(), "qp"); // nothing is lost
/// ```
pub struct InsertError<K, T> {
    kind: InsertErrorKind,
    key: Option<K>,
    value: T,
}

impl<K, T> InsertError<K, T> {
    pub(crate) fn new(kind: InsertErrorKind, key: Option<K>, value: T) -> Self {
        InsertError { kind, key, value }
    }

    /// Why the insert failed.
    ///
    /// ```
    /// # use restable::{InsertErrorKind, ResTable};
    /// let table = ResTable::<u32, ()>::new();
    /// assert_eq!(table.insert(&[], ()).unwrap_err().kind(), InsertErrorKind::NoKeys);
    /// ```
    pub fn kind(&self) -> InsertErrorKind {
        self.kind
    }

    /// The key that conflicted (for [`KeyInUse`](InsertErrorKind::KeyInUse) and
    /// [`DuplicateKey`](InsertErrorKind::DuplicateKey)); `None` otherwise.
    ///
    /// ```
    /// # use restable::ResTable;
    /// let table = ResTable::new();
    /// let _a = table.insert(&[5u32], 'a').unwrap();
    /// assert_eq!(table.insert(&[4, 5], 'b').unwrap_err().key(), Some(&5));
    /// ```
    pub fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }

    /// The value the caller tried to insert, unharmed.
    ///
    /// ```
    /// # use restable::ResTable;
    /// let table = ResTable::new();
    /// let _a = table.insert(&[5u32], vec![1]).unwrap();
    /// assert_eq!(table.insert(&[5], vec![2]).unwrap_err().into_value(), vec![2]);
    /// ```
    pub fn into_value(self) -> T {
        self.into_parts().1
    }

    /// The key at fault (if the error names one) and the value, both handed back.
    ///
    /// ```
    /// let table = restable::ResTable::new();
    /// let _qp = table.insert(&[String::from("qp:7")], 1).unwrap();
    /// let err = table.insert(&[String::from("qp:7")], 2).unwrap_err();
    /// let (key, value) = err.into_parts();
    /// assert_eq!((key.as_deref(), value), (Some("qp:7"), 2));
    /// ```
    pub fn into_parts(self) -> (Option<K>, T) {
        (self.key, self.value)
    }
}

impl<K: fmt::Debug, T> fmt::Debug for InsertError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, T> fmt::Display for InsertError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.key) {
            (InsertErrorKind::KeyInUse, Some(key)) => {
                write!(f, "key {key:?} already names a live object")
            }
            (InsertErrorKind::DuplicateKey, Some(key)) => {
                write!(f, "key {key:?} appears more than once in one insert")
            }
            (InsertErrorKind::NoKeys, _) => f.write_str("an object needs at least one key"),
            (InsertErrorKind::TooManyKeys, _) => {
                write!(f, "an object may have at most {} keys", crate::MAX_KEYS)
            }
            (kind, _) => write!(f, "insert failed: {kind:?}"),
        }
    }
}

impl<K: fmt::Debug, T> std::error::Error for InsertError<K, T> {}

/// A refused [`Dying::revive`](crate::Dying::revive): a key of the object was taken by
/// another object after the kill. Nothing was linked; the `Dying` comes back.
///
/// ```
/// let table = restable::ResTable::new();
/// let dying = table.insert(&[1u32, 2], "old").unwrap().kill();
/// let _new = table.insert(&[1], "new").unwrap();
/// let err = dying.revive().unwrap_err();
/// assert_eq!(err.key(), &1);
/// assert_eq!(err.to_string(), "key 1 already names a live object");
/// assert_eq!(err.into_dying().drain(), "old");
/// ```
pub struct ReviveError<K, T> {
    dying: crate::Dying<K, T>,
    /// Which of the object's keys is taken.
    at: usize,
}

impl<K, T> ReviveError<K, T> {
    pub(crate) fn new(dying: crate::Dying<K, T>, at: usize) -> Self {
        ReviveError { dying, at }
    }

    /// The key another object holds now.
    pub fn key(&self) -> &K {
        &self.dying.keys()[self.at]
    }

    /// The object, still killed: drain it, drop it, or try again.
    pub fn into_dying(self) -> crate::Dying<K, T> {
        self.dying
    }
}

impl<K: fmt::Debug, T> fmt::Debug for ReviveError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReviveError")
            .field("key", self.key())
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, T> fmt::Display for ReviveError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {:?} already names a live object", self.key())
    }
}

impl<K: fmt::Debug, T> std::error::Error for ReviveError<K, T> {}

/// Why [`ResTable::try_remove`](crate::ResTable::try_remove) removed nothing.
///
/// ```
/// use restable::{RemoveError, ResTable};
///
/// let table = ResTable::new();
/// let owner = table.insert(&[1u32], "owned").unwrap();
/// assert_eq!(table.try_remove(&1).unwrap_err(), RemoveError::Owned);
/// assert_eq!(table.try_remove(&2).unwrap_err(), RemoveError::NotFound);
/// drop(owner);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoveError {
    /// No live object answers to the key (none ever did, or it was killed or removed).
    NotFound,
    /// The object is live but still has its [`Owner`](crate::Owner): only its owner
    /// destroys it (or [`Owner::detach`](crate::Owner::detach) leaves it to `remove`).
    Owned,
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoveError::NotFound => "no live object answers to the key",
            RemoveError::Owned => "the object still has its owner, which alone destroys it",
        })
    }
}

impl std::error::Error for RemoveError {}
