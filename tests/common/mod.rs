//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

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

/// A small xorshift generator: enough randomness for stress schedules, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
