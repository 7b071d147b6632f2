//! Where each outstanding reference was taken (feature `track-refs`, off by default): so
//! that a drain that does not end explains itself — which lookup, on which thread, still
//! holds the object.
//!
//! Every `Ref`/`OwnedRef` records, when it is made, its caller's location (through
//! `#[track_caller]` on `get`, `get_owned` and `clone`) and thread in one global map keyed
//! by node, and removes that record when it is put. A `Dying` reads its node's records:
//! [`Dying::holders`](crate::Dying::holders), its `Debug`, and the panic of a drain stuck
//! past [`set_stuck_drain_limit`]. A mutex around a map on every reference: for finding a
//! leak, not for production. With the feature off, none of this is built and the handles
//! are as small and fast as without it.

use crate::sync::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, ThreadId};
use std::time::Duration;

/// One outstanding reference: where it was taken, and on which thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The call (`get`, `get_owned`, `clone`, an iteration) that took the reference.
    pub location: &'static Location<'static>,
    /// The thread that took it (it may have moved since: an `OwnedRef` is `Send`).
    pub thread: ThreadId,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (taken on {:?})", self.location, self.thread)
    }
}

/// A record's key in its node's list.
pub(crate) type Ticket = u64;

#[derive(Default)]
struct Records {
    next: Ticket,
    by_node: HashMap<usize, Vec<(Ticket, Holder)>>,
}

fn records() -> &'static Mutex<Records> {
    static RECORDS: std::sync::OnceLock<Mutex<Records>> = std::sync::OnceLock::new();
    RECORDS.get_or_init(|| Mutex::new(Records::default()))
}

/// Records a reference to the node at `node` taken at `location` on this thread.
pub(crate) fn record(node: usize, location: &'static Location<'static>) -> Ticket {
    let holder = Holder {
        location,
        thread: thread::current().id(),
    };
    let mut records = records().lock();
    records.next += 1;
    let ticket = records.next;
    records
        .by_node
        .entry(node)
        .or_default()
        .push((ticket, holder));
    ticket
}

/// Forgets the record `ticket` of the node at `node` (its reference is being put).
pub(crate) fn forget(node: usize, ticket: Ticket) {
    let mut records = records().lock();
    if let Some(list) = records.by_node.get_mut(&node) {
        list.retain(|&(t, _)| t != ticket);
        if list.is_empty() {
            records.by_node.remove(&node);
        }
    }
}

/// The references to the node at `node` still out, oldest first.
pub(crate) fn holders(node: usize) -> Vec<Holder> {
    let records = records().lock();
    records
        .by_node
        .get(&node)
        .map(|list| list.iter().map(|&(_, holder)| holder).collect())
        .unwrap_or_default()
}

/// Milliseconds an untimed drain may wait before it panics with its holders (0: never).
static STUCK_AFTER_MS: AtomicU64 = AtomicU64::new(0);

/// Makes every untimed drain ([`Dying::drain`](crate::Dying::drain),
/// [`Dying::wait`](crate::Dying::wait), [`Owner::kill_and_drain`](crate::Owner::kill_and_drain))
/// that waits longer than `limit` panic, naming where each reference still out was
/// taken; `None` (the default) waits forever, as without the feature. For tests and
/// debugging sessions that would rather fail loudly than hang.
///
/// ```
/// # #[cfg(feature = "track-refs")] {
/// use std::time::Duration;
/// restable::set_stuck_drain_limit(Some(Duration::from_secs(30)));
/// # restable::set_stuck_drain_limit(None);
/// # }
/// ```
pub fn set_stuck_drain_limit(limit: Option<Duration>) {
    let ms = limit.map_or(0, |limit| {
        u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1)
    });
    STUCK_AFTER_MS.store(ms, Ordering::Relaxed);
}

/// The limit set by [`set_stuck_drain_limit`].
pub(crate) fn stuck_drain_limit() -> Option<Duration> {
    match STUCK_AFTER_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// The panic of a drain stuck past the limit.
#[cold]
pub(crate) fn stuck(node: usize, limit: Duration) -> ! {
    let holders = holders(node);
    let list: Vec<String> = holders.iter().map(|h| format!("  - {h}")).collect();
    panic!(
        "restable: a drain waited more than {limit:?} for {} reference(s), taken at:\n{}",
        holders.len(),
        list.join("\n")
    );
}
