//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod colliding;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A value that counts its drops, so tests can check "dropped exactly once".
#[derive(Debug)]
pub struct Counted {
    pub id: u64,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    pub fn new(id: u64, drops: &Arc<AtomicUsize>) -> Self {
        Counted {
            id,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

pub fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// How long a stress test runs: `RESTABLE_STRESS_SECS` (fractions allowed), else
/// `default_secs`.
pub fn stress_duration(default_secs: f64) -> std::time::Duration {
    let secs = std::env::var("RESTABLE_STRESS_SECS")
        .ok()
        .map(|s| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("RESTABLE_STRESS_SECS={s:?} is not a number"))
        })
        .unwrap_or(default_secs);
    std::time::Duration::from_secs_f64(secs)
}

/// The stress schedules' generator (seeded, so a failing schedule can be replayed).
#[allow(unused_imports)] // not every test binary schedules randomly
pub use fastrand::Rng;
