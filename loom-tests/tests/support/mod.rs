//! What every model shares: the value under test and the model runner.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use restable::ResTable;
use std::time::Instant;

/// The table every core model uses. Under loom the default hasher has a fixed seed, so
/// every execution of a model places the keys in the same shards.
pub type Table = ResTable<u32, Qp>;

/// Runs `f` on a new loom thread with its own handle to `table`.
pub fn spawn_with<Tb: Send + Sync + 'static, R: 'static>(
    table: &Arc<Tb>,
    f: impl FnOnce(Arc<Tb>) -> R + 'static,
) -> thread::JoinHandle<R> {
    let table = Arc::clone(table);
    spawn(move || f(table))
}

/// `loom::thread::spawn`, with the new thread registered with the model's epoch
/// collector first (see `restable::loom_register`): every model thread is spawned
/// through this.
pub fn spawn<R: 'static>(f: impl FnOnce() -> R + 'static) -> thread::JoinHandle<R> {
    thread::spawn(move || {
        restable::loom_register();
        f()
    })
}

/// A queue pair stand-in whose payload lives in a loom `UnsafeCell`: loom reports a data
/// race if a holder reads it without happening-after its construction, or if the drop
/// (or a destroyer's `scribble`) is not happening-after every holder's read.
#[derive(Debug)]
pub struct Qp {
    payload: UnsafeCell<u32>,
    drops: Arc<AtomicUsize>,
}

// SAFETY: the payload is read through `&Qp` and written only through `&mut Qp` (in
// `scribble` and `drop`), so sharing `&Qp` is as safe as sharing `&u32`; loom checks the
// ordering of those accesses, which is the point.
unsafe impl Sync for Qp {}

/// How many times a `Qp` was dropped.
#[derive(Debug, Clone)]
pub struct Drops(Arc<AtomicUsize>);

impl Drops {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Qp {
    pub fn new(payload: u32) -> (Qp, Drops) {
        let drops = Arc::new(AtomicUsize::new(0));
        let qp = Qp {
            payload: UnsafeCell::new(payload),
            drops: Arc::clone(&drops),
        };
        (qp, Drops(drops))
    }

    pub fn read(&self) -> u32 {
        // SAFETY: shared read; loom flags it if it races a write.
        self.payload.with(|p| unsafe { *p })
    }

    /// What a destroyer does to an object it owns again (free its hardware resources).
    pub fn scribble(&mut self) {
        // SAFETY: `&mut self`; loom flags it if a holder's read is not ordered before it.
        self.payload.with_mut(|p| unsafe { *p = u32::MAX });
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // While a failing model unwinds, a second loom report from here would abort the
        // whole test binary instead of failing this model.
        if std::thread::panicking() {
            return;
        }
        self.scribble();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The outcomes a model has seen, over all its executions (see [`model_seeing`]).
#[derive(Clone, Default)]
pub struct Seen(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Seen {
    /// Records that this execution ended with `outcome`.
    pub fn saw(&self, outcome: &'static str) {
        let mut seen = self.0.lock().unwrap();
        if !seen.contains(&outcome) {
            seen.push(outcome);
        }
    }
}

/// Runs one model like [`model`], then fails unless its executions, together, ended
/// with every one of `expected`: a model whose race loom never actually ran (both
/// orders of an insert and a lookup, say) passes vacuously otherwise, as
/// `get_vs_insert_publish` once did with one execution.
pub fn model_seeing<F>(name: &str, expected: &[&'static str], f: F)
where
    F: Fn(&Seen) + Sync + Send + 'static,
{
    let seen = Seen::default();
    let recorder = seen.clone();
    model(name, move || f(&recorder));
    let seen = seen.0.lock().unwrap();
    for outcome in expected {
        assert!(
            seen.contains(outcome),
            "model {name}: no execution ended with `{outcome}` (saw {seen:?}): loom did not \
             explore the race"
        );
    }
}

/// Runs one model with the preemption bound from `LOOM_MAX_PREEMPTIONS` (2 if unset)
/// and reports how many executions loom explored.
pub fn model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(2);
    let bound = builder.preemption_bound;
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        restable::loom_register();
        f();
    });
    eprintln!(
        "loom model {name}: {} executions, preemption bound {}, {:.1?}",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        bound.map_or("none".to_string(), |b| b.to_string()),
        start.elapsed()
    );
}
