//! A concurrent table of reference-counted objects, each findable under several keys:
//! lock-free get-ref for interrupt handlers and completion pollers, and a destroy that
//! makes the object unreachable first, waits for every holder, and hands it back.
//!
//! # The problem
//!
//! An RDMA driver keeps its queue pairs in a table. The interrupt handler gets an event
//! naming a QPN and must find the QP without blocking; a completion poller finds it by
//! one of its work-queue ids. Meanwhile the control path destroys QPs. Destroy must, in
//! this order:
//!
//! 1. make the QP unreachable under *all* its ids at once, so no new lookup finds it;
//! 2. wait until every lookup that already found it has let go;
//! 3. only then let the hardware free the ids — hardware such as mana's hands a
//!    just-freed QPN to the very next create, so the ids must be free in the table by
//!    then too.
//!
//! mlx5 (`get_rsc`/`put_rsc`), mana_ib (`mana_get_qp_ref`/`mana_put_qp_ref`) and the
//! RDMA core's `restrack` each open-code this with a lock, a refcount and a completion,
//! and each has shipped races in it. `restable` is that pattern once, with the lookup
//! lock-free and the races model-checked under loom (every interleaving up to
//! preemption bound 2, and 3 in the heavier run).
//!
//! ```
//! use restable::ResTable;
//!
//! let qps = ResTable::new();
//! // A QP answers to its QPN and to its send/receive queue ids (kept apart by a tag).
//! let qp = qps.insert(&[("qpn", 0x51), ("sq", 3), ("rq", 3)], "qp 0x51").unwrap();
//!
//! // Event path: get-ref by any key; put-ref when the `Ref` drops.
//! if let Some(qp) = qps.get(&("qpn", 0x51)) {
//!     assert_eq!(*qp, "qp 0x51");
//! }
//!
//! // Destroy: kill (unreachable, ids free), drain (wait for holders), get the QP back.
//! let value = qp.kill_and_drain();
//! assert!(qps.get(&("sq", 3)).is_none());
//! assert_eq!(value, "qp 0x51");
//! ```
//!
//! # The algorithm
//!
//! Two structures: an **index** from key to node, and per object a **node** holding one
//! atomic **state word**, its keys and their hashes, and the value — all in one block,
//! so an insert allocates once and a lookup finds the state word and the key it compares
//! at the node's start. A block is an allocation of its own or, in a table built
//! [`cache_aligned`](Builder::cache_aligned), whole cache lines carved from the table's
//! pages (see the `block` module), so that a small node's state word, first key and value
//! share one line no other node touches. The index holds only values — per key, a
//! tag of its hash and the node's address with the key's position — in one-cache-line
//! buckets (see the `index` module): a miss reads one line, a hit two.
//!
//! ## The state word
//!
//! ```text
//!  63     62      61       60         59 ........................... 0
//! +------+-------+--------+----------+-------------------------------+
//! | LIVE | OWNED | PARKED | DETACHED |             refs              |
//! +------+-------+--------+----------+-------------------------------+
//! ```
//!
//! - `LIVE`: get-ref may succeed. Set when the insert publishes, cleared by kill or
//!   remove; set again only by revive, once every key is linked again. A node whose
//!   insert failed is never live.
//! - `OWNED`: an [`Owner`] or [`Dying`] exists (or, with `DETACHED`, the table owns the
//!   node) and will take or drop the value. Cleared when it is dropped without draining;
//!   then the last reference drops the value.
//! - `PARKED`: a drainer — a parked thread, or an async task through its waker — waits
//!   (or is about to) until `refs` reaches zero, so the last put must wake drainers.
//!   Never cleared: a waiter that times out cannot know whether another still sleeps.
//!   Only meaningful while `OWNED` is set.
//! - `DETACHED`: the owner was detached; `remove` by any key may claim the node.
//! - `refs`: the number of references ([`Ref`], [`OwnedRef`]) out.
//!
//! Every transition is one read-modify-write of this word, so "may it be found", "who
//! holds it", "must somebody be woken" and "who drops the value" are decided by one
//! value that all threads agree on.
//!
//! ## Operations and their linearization points
//!
//! - **insert**: lock the index shards of all keys (one lock word per shard, in the
//!   shard's own cache lines, taken in ascending shard order so that writers cannot
//!   deadlock: see the `lock` module), check that no key names a live node (a
//!   killed node's leftover slot is unlinked), link one slot per key, then *store*
//!   `OWNED | LIVE` — the linearization point — and unlock. Nothing is linked before
//!   every check passed, so a failed insert was never visible and hands the value back;
//!   and since the node is not live until every key is linked, a `get` that succeeds on
//!   one key implies all keys resolve.
//! - **get**: pin the epoch (inside a [`ReadSection`] a nested pin, which only bumps a
//!   counter), hash, probe one shard's buckets (the home bucket, and further only while
//!   its overflow bit for the hash is set), and on a key match CAS `refs + 1` into the
//!   word if `LIVE` is set — the successful CAS is the linearization point. The first
//!   CAS expects the usual word of a live node nobody holds instead of loading the word
//!   first, so a node's cache line is taken for writing once, not fetched and then taken
//!   again; a wrong guess only returns the word for the next CAS. No lock, no wait on a
//!   writer (a CAS retries only because another thread changed the word), no
//!   allocation.
//! - **put** (dropping a [`Ref`]): `fetch_sub`. If that was the last reference and
//!   `PARKED` is set, wake the drainer; if `OWNED` is clear, drop the value and free the
//!   node.
//! - **kill**: `fetch_and(!LIVE)` — the linearization point: from here no `get` on any key
//!   succeeds. Then lock the shards of its keys as insert does and unlink the node's
//!   slots, so every key can be inserted again before the drain.
//! - **remove** (of a detached node): one CAS that requires `LIVE | DETACHED` and clears
//!   both — the linearization point, so of two racing removes exactly one succeeds and
//!   the other sees no live detached node; then unlink as kill does.
//! - **revive** (of a killed node): lock its keys' shards, check and link them as insert
//!   does, then `fetch_or(LIVE)` with `Release` (an RMW, since references taken before
//!   the kill may still be out) — the linearization point; a failed check links nothing.
//! - **drain**: wait until `refs` is zero — spin briefly, then park on the node's address
//!   in the parking lot after setting `PARKED` inside the lot's `validate` — and move the
//!   value out. Its linearization point is the load that sees zero; zero is final, since
//!   the node is not live and only a holder can make a new reference.
//!
//! ## Memory orderings, and why each is enough
//!
//! - Index: writers store a slot (a fully built node's address), then its tag, each with
//!   `Release`; readers load the tags, then the slot, with `Acquire`. A reader that finds
//!   a slot sees its node's keys and fields. A grown array is published with one
//!   `Release` store after every slot was copied into it.
//! - Publish (`Release` store of `LIVE`) pairs with get's `Acquire` CAS: a reader that
//!   takes a reference sees the value and every key's slot as the inserter left them.
//! - Get's CAS failure path is `Relaxed`: a failed get reads nothing else.
//! - Ref clone: `Relaxed` `fetch_add`, as `Arc::clone` — the clone's caller already
//!   holds a reference, so the count cannot reach zero meanwhile.
//! - Put: `Release` `fetch_sub`, so a holder's reads of the value happen before the drain
//!   takes it; the drainer's `Acquire` load of zero synchronizes with every put (they
//!   form one release sequence on the word). The last holder that drops the value first
//!   loads the word with `Acquire` — it reads its own decrement, the end of that release
//!   sequence — where `Arc::drop` has a fence: the same guarantee, and ThreadSanitizer
//!   (which does not model fences) can follow it, so code using restable runs clean
//!   under TSan.
//! - Detach: `Release` `fetch_or`. From then on another thread's `remove` (or the
//!   table's drop) may claim the node and drain or drop `T`; its claim is an `AcqRel`
//!   CAS that reads the detach's write (or a later RMW of its release sequence), so the
//!   owner's reads of `T` happen before the remover's. The table's drop claims with the
//!   same CAS, after a `SeqCst` fence that pairs with one after the detach (see
//!   `Registry::adopt`), so of a detach racing the drop, at least one sees the other and
//!   the object is destroyed exactly once.
//! - Remove's claim: `AcqRel` CAS, clearing `LIVE | DETACHED`: acquires the owner's
//!   writes (above), and releases the claimer's earlier writes as kill does.
//! - Kill: `AcqRel` `fetch_and`. What the guarantee needs is only that kill's write
//!   precedes the unlinking in program order: a reader that observes an unlink (or a newer
//!   slot linked after it) through `Acquire` also observes `LIVE` cleared, and any get's
//!   CAS reads the latest value of the word anyway. The stronger ordering is free on the
//!   control path.
//! - Parking: `PARKED` is set with a `Relaxed` `fetch_or` inside the lot's `validate`
//!   (under the lot's bucket lock); the last put's `fetch_sub` is an RMW on the same word,
//!   so either it comes first (the drainer sees zero and does not sleep) or it sees
//!   `PARKED` and calls `unpark_all`, which takes the same lock and so finds the drainer
//!   queued. No lost wake-up. A drainer whose deadline passes leaves `PARKED` set:
//!   other threads may be parked on the same node (`wait` beside another thread's
//!   `wait_timeout`), and clearing it would let the last put skip their wake-up; left
//!   set, it costs one wake of nobody. The wake touches only the lot, keyed by the node's address,
//!   because the woken drainer may free the node at once. An async drain ([`Drain`])
//!   does the same with its task's waker in a registry keyed and locked the same way:
//!   it sets `PARKED` under the registry's lock, and the last put takes that lock to
//!   wake it. A wake that comes late, when the address already names another node, is
//!   only spurious: every drainer checks the word again.
//!
//! ## Reclamation
//!
//! Readers dereference bucket arrays and nodes only while pinned to a
//! crossbeam-epoch epoch. Writers need no pin: under a shard's lock, its array and
//! the nodes its slots point to cannot be retired, since only that lock's holders
//! retire them (a rebuild pins to retire the array it replaced). A node is allocated
//! together with its keys and retired as one block, only after all its slots are
//! cleared, by whoever finishes with it last: the drain (after moving the value
//! out), or — if the owner was dropped — the last put or the owner's drop. Retired
//! nodes and replaced bucket arrays are handed to the collector, which runs their
//! disposal once every thread pinned at that time has unpinned (the collector
//! advances when some thread collects: on every 128th outermost pin of a thread, and
//! on every fourth [`ReadSection::refresh`]). A node's block then goes back to the
//! index shard of its first key, and that shard's next insert builds its node in it
//! (see `recycle`; a page goes back to the allocator with the last of its blocks): the
//! collector usually runs on a reader, and handing it a lock-free push instead of a
//! cross-thread `free` keeps readers clear of the allocator's locks. Growing a shard
//! copies its slots into a new array, publishes it and retires the old one: it waits
//! for nothing, and readers still on the old array see a frozen copy, which liveness
//! in the nodes makes harmless. A reader that reaches a killed node only reads its
//! state word (its CAS fails), never the value, and holds nothing that delays the
//! drain.
//!
//! **The last user holds no reference into the node.** A put or an abandon may, with its
//! read-modify-write, make another thread the node's last user, which may then drop the
//! value and recycle or free the block at once. So every function that may give a node
//! away (put, abandon, and the stale reader's `try_get`) works from a raw pointer and
//! touches only `&AtomicUsize` — never a `&Node`, which as a function argument would
//! assert that the whole block stays untouched until it returns (rust-lang/rust#55005;
//! `tests/last_user.rs` shows the difference under Miri's Tree Borrows).
//!
//! # User code: what runs where, and what a panic in it does
//!
//! | user code | runs | if it panics |
//! | --- | --- | --- |
//! | `K: Hash` | in `insert`/`get`, before any lock | the call unwinds; nothing changed |
//! | `K: Clone` | in `insert`, before any lock (the table keeps clones of the keys) | the clones so far and the value are dropped; nothing changed |
//! | `K: Eq` | in `get`; in `insert` before any lock (between keys of the insert whose hashes are equal, to refuse a key given twice) and **under its shard locks** | before the locks, as for `K: Clone`; under them, the locks are released, then the clones and the value dropped |
//! | `T: Drop` | where the last of `Owner`/`Dying`/`Ref` goes, never under a lock; for detached objects, in `remove`'s or `retain`'s caller, or in the table's drop | the node is still retired (nothing leaks); the panic goes on. The table's drop destroys every other detached object first, then resumes the first panic |
//! | the `retain` predicate | in `retain`, under no lock, with a reference to the object it is given | `retain` unwinds; the objects not yet visited stay. An untimed drain of the object it is given, from inside it, panics (it would wait for `retain`'s own reference forever) |
//! | wakers of async drains | in the last put, under no lock (taken out of the registry first) | unwinds from the put; the reference is already put |
//! | `K: Drop`, and any deferred function of other crossbeam-epoch users | in the epoch's collector: on whichever thread collects — on every 128th outermost pin of a thread (a `get`, an insert, a `read_section`), on every fourth [`ReadSection::refresh`], and after an insert or revive that grew the index has released its shard locks and made its `Owner` — never under a shard lock | `K::drop`: contained: reported by the panic hook, the rest of that key array and of the collector's garbage is still freed, and the unrelated call that happened to collect goes on. Another user's deferred function: crossbeam's behaviour (the call that collected unwinds; after an insert, its `Owner` is dropped on the way, killing the new object) |
//!
//! So `K::eq` is the only user code that runs under a shard lock: a key's `Eq` must not
//! use the table it is a key of. Nothing that runs under a shard lock pins the epoch,
//! flushes or collects (a growth's replaced array is handed to the epoch after the
//! unlock), so `T::drop`, `K::drop` and deferred functions may use the table freely —
//! even drop an `Owner` of it. A panic while already panicking aborts, as everywhere in
//! Rust. As in a `HashMap`, keys that are
//! equal must hash equally; if they do not, lookups may miss and a key given twice to one
//! insert may go unnoticed — wrong answers, never undefined behaviour. The hash need not
//! be well mixed: the table folds it through a multiply before slicing it into shard,
//! bucket and tag, so an identity hasher on integer IDs spreads keys as well as the
//! default one.
//!
//! # Modules
//!
//! | module | job |
//! | --- | --- |
//! | `table` | [`ResTable`]: insert, get, kill's index part, iteration |
//! | `index` | sharded, epoch-protected open-addressed index of one-line buckets: lock-free find, locked link/unlink, growth by copy |
//! | `node` | the node (one block: header, keys, hashes, value) and its state word; every transition of it |
//! | `lock` | one shard's lock: a word in the shard's own lines, parking when contended |
//! | `recycle` | retired node blocks going back to their shard for reuse |
//! | `visit` | the object a `retain` predicate is looking at, so that draining it from inside panics instead of hanging |
//! | `section` | [`ReadSection`]: one epoch pin for a batch of lookups |
//! | `guard` | [`Owner`], [`Ref`] and [`OwnedRef`], the handles to an object |
//! | `drain` | [`Dying`] and [`Drain`]: waiting for holders (blocking or async), taking the value back, or reviving |
//! | `error` | [`InsertError`] and [`ReviveError`], which always hand the value back |
//! | `sync` | the only door to atomics, locks, parking and epoch pinning (loom swaps it) |
//! | `mana` | a mana_ib adapter (feature `mana`, off by default): QP table, EQ and CQ paths, simulated device |

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
// docs.rs (nightly, `--cfg docsrs`) badges items that need a feature (`mana`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

mod block;
mod builder;
mod drain;
mod error;
mod guard;
mod index;
mod lock;
#[cfg(feature = "mana")]
#[cfg_attr(docsrs, doc(cfg(feature = "mana")))]
pub mod mana;
mod node;
mod recycle;
mod section;
mod sync;
mod table;
mod visit;

/// Loom models call this from the killing thread to run reclamation inside the model.
#[cfg(loom)]
#[doc(hidden)]
pub use sync::collect as loom_collect;

/// Loom models call this first thing on every model thread (see `sync::register`).
#[cfg(loom)]
#[doc(hidden)]
pub use sync::register as loom_register;

pub use builder::Builder;
pub use drain::{Drain, Dying};
pub use equivalent::Equivalent;
pub use error::{InsertError, InsertErrorKind, RemoveError, ReviveError};
pub use guard::{OwnedRef, Owner, Ref};
#[doc(hidden)]
pub use index::IndexStats;
pub use section::{read_section, ReadSection};
pub use table::{DefaultHashBuilder, Iter, ResTable, MAX_KEYS};

/// The README's examples, compiled and run as doc tests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
