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
//! # Which handle, when
//!
//! | you want to | use | blocks? |
//! | --- | --- | --- |
//! | keep an object in the table until you destroy it (a driver's QP) | [`ResTable::insert`] → [`Owner`] | no |
//! | leave it with the table, like a map (a server's connection) | [`ResTable::insert_detached`], later [`ResTable::remove`] / [`ResTable::try_remove`] | no |
//! | read objects for a moment on this thread, fastest (an event handler, a CQ poller) | [`ResTable::pin`] → [`Pinned`], then [`Pinned::get`] → `&T` | never: lock-free, writes nothing |
//! | use an object for a moment on this thread, counted | [`ResTable::get`] → [`Ref`] | never: lock-free, no allocation |
//! | keep it across threads or `.await`s (a worker task) | [`ResTable::get_owned`] → [`OwnedRef`] | never |
//! | look up a batch at once (one interrupt's events, one poll) | [`read_section`] around the `get`s | never |
//! | destroy it and get the value back | [`Owner::kill`] → [`Dying`], then [`Dying::drain`] | `drain` waits for the references out (`try_drain`, `drain_timeout`, `.await` too) |
//! | destroy it when its users are done, without waiting | drop the [`Owner`] or the [`Dying`] | never: the last reference drops the value |
//! | try a destroy that may fail (hardware), and undo it | [`Dying::wait`], then [`Dying::drain`] or [`Dying::revive`] | `wait` waits as `drain` does |
//! | remove many detached objects | [`ResTable::retain`], [`ResTable::extract_if`], [`ResTable::clear`] | no |
//!
//! **Borrowed or counted?** A borrowed read ([`Pinned::get`]) takes no reference: it
//! writes nothing, so it costs a load where a [`Ref`] costs two atomic read-modify-writes,
//! and readers on many cores share the object's cache line. The value is borrowed for as
//! long as the guard lives, so hold a guard for a batch, not a thread's life; take a
//! counted reference ([`Borrowed::to_owned_ref`], or `get`) for anything that outlives
//! the batch. The drain waits for borrowed readers too: a kill of an object that was ever
//! read borrowed waits a grace period — until every guard open at the kill is gone — which
//! the drain drives itself (microseconds when nobody else is pinned). Objects only ever
//! read counted never wait for one.
//!
//! What never blocks: lookups (`get`, `get_owned`, `contains_key`, `iter`, borrowed
//! reads under [`ResTable::pin`]) and puts
//! (dropping a [`Ref`] or [`OwnedRef`]) — no lock, no wait for anyone. Writers (`insert`,
//! `kill`, `remove`, dropping an [`Owner`]) lock their keys' index shards for a few
//! hundred nanoseconds, never while running user code other than `K::eq`: a writer may
//! wait briefly for another writer on the same shard, never for a reader or a holder.
//! What waits for holders: the drains and `wait`, for references that are out and for
//! borrowed readers — including the draining thread's own reference (which would wait
//! forever) or its own guard (which panics): see [`Dying::drain`].
//!
//! How it works — the state word, each operation's linearization point, every memory
//! ordering and why it is enough, reclamation — is written down for contributors in
//! `docs/implementation.md` in the repository, beside the record of how it is verified
//! (`docs/verification.md`).
//!
//! # User code: what runs where, and what a panic in it does
//!
//! | user code | runs | if it panics |
//! | --- | --- | --- |
//! | `K: Hash` | in `insert`/`get`, before any lock | the call unwinds; nothing changed |
//! | `K: Clone` | in `insert`, before any lock (the table keeps clones of the keys) | the clones so far and the value are dropped; nothing changed |
//! | `K: Eq` | in `get`; in `insert` before any lock (between keys of the insert whose hashes are equal, to refuse a key given twice) and **under its shard locks** | before the locks, as for `K: Clone`; under them, the locks are released, then the clones and the value dropped |
//! | `T: Drop` | where the last of `Owner`/`Dying`/`Ref` goes, never under a lock; for detached objects, in `remove`'s or `retain`'s caller, or in the table's drop; for an object read borrowed whose owner let go, possibly in the epoch's collector (below), when its grace period ends | the node is still retired (nothing leaks); the panic goes on (in the collector it is contained, as `K::drop`'s). The table's drop destroys every other detached object first, then resumes the first panic |
//! | the `retain` predicate | in `retain`, under no lock, with a reference to the object it is given | `retain` unwinds; the objects not yet visited stay. An untimed drain of the object it is given, from inside it, panics (it would wait for `retain`'s own reference forever) |
//! | wakers of async drains | in the last put, under no lock (taken out of the registry first) | unwinds from the put; the reference is already put |
//! | `K: Drop`, and any deferred function of other crossbeam-epoch users | in the epoch's collector: on whichever thread collects — on every 128th outermost pin of a thread (a `get`, an insert, a `read_section`), on every fourth [`ReadSection::refresh`], after an insert or revive that grew the index has released its shard locks and made its `Owner`, after a kill or remove of an object read borrowed (its locks released), and in a drain that waits for a grace period — never under a shard lock | `K::drop`: contained: reported by the panic hook, the rest of that key array and of the collector's garbage is still freed, and the unrelated call that happened to collect goes on. Another user's deferred function: crossbeam's behaviour (the call that collected unwinds; after an insert, its `Owner` is dropped on the way, killing the new object) |
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

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
// docs.rs (nightly, `--cfg docsrs`) badges items that need a feature (`mana`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

mod block;
mod builder;
mod drain;
mod error;
mod grace;
mod guard;
mod index;
mod lock;
#[cfg(feature = "mana")]
#[cfg_attr(docsrs, doc(cfg(feature = "mana")))]
pub mod mana;
mod node;
mod pinned;
mod recycle;
mod section;
mod sync;
mod table;
#[cfg(feature = "track-refs")]
mod track;
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
pub use pinned::{Borrowed, Pinned};
pub use section::{read_section, ReadSection};
pub use table::{DefaultHashBuilder, Iter, ResTable, MAX_KEYS};
#[cfg(feature = "track-refs")]
#[cfg_attr(docsrs, doc(cfg(feature = "track-refs")))]
pub use track::{set_stuck_drain_limit, Holder};

/// The README's examples, compiled and run as doc tests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
