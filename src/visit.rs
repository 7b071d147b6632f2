//! The object a `retain` predicate is looking at, on this thread: what lets a drain of
//! that very object, from inside the predicate, panic instead of hanging.
//!
//! `retain` holds a reference to each object while its predicate runs, so an untimed
//! drain of that object from inside the predicate (`remove` + `drain`, or the owner's
//! `kill_and_drain`) waits for a reference that is only put once the wait returns. The
//! reference is `retain`'s own and never leaves its thread, so unlike a user's `Ref`
//! (which is `Send`, see `Dying::drain`) the case is recognized exactly: a thread that
//! is inside the predicate for object X and starts an untimed drain of X would wait
//! forever, whatever other threads do. Nothing else is recognized, so the check never
//! fires on code that could have completed.
//!
//! The mark is one word per thread (in `sync`, so that loom gives each model thread its
//! own): the wait key (node address) of the object this thread's innermost predicate
//! looks at, 0 outside any.

use crate::sync;

/// Marks `key` as the object this thread's predicate looks at until the returned guard
/// drops (also when the predicate panics); nested `retain`s restore the outer mark.
pub(crate) fn enter(key: usize) -> Visit {
    Visit(sync::visiting(|visiting| visiting.replace(key)))
}

/// Whether this thread is inside a `retain` predicate looking at the object `key`.
pub(crate) fn is_visiting(key: usize) -> bool {
    sync::visiting(|visiting| visiting.get() == key)
}

/// Restores the mark that was current before [`enter`].
pub(crate) struct Visit(usize);

impl Drop for Visit {
    fn drop(&mut self) {
        sync::visiting(|visiting| visiting.set(self.0));
    }
}
