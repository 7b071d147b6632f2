//! The driver under load: an interrupt thread delivering EQEs, CQ pollers delivering
//! completions, and control threads creating and destroying QPs at random — the engine
//! behind the demo (`-p mana-demo`) and the adapter's stress tests.

use super::sim::{Device, Rng};
use super::{DestroyError, DestroyOrder, Driver, QpOwner, QpType};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// EQEs per simulated interrupt, and CQEs per poll, each batch under one table guard.
const BATCH: usize = 64;

/// What to run.
///
/// ```
/// use restable::mana::sim::Workload;
/// use std::time::Duration;
/// let summary = Workload { duration: Duration::from_millis(50), ..Workload::default() }.run();
/// assert!(summary.invariants_hold(), "{summary}");
/// assert!(summary.qps_created > 0);
/// ```
#[derive(Debug, Clone)]
pub struct Workload {
    /// How long the threads run.
    pub duration: Duration,
    /// The most QPs alive at once, split over the control threads: each keeps up to
    /// `qps / control_threads` (rounded up, at least one) alive, so the bound is
    /// [`max_live_qps`](Self::max_live_qps).
    pub qps: usize,
    /// CQ poller threads.
    pub pollers: usize,
    /// Threads creating and destroying QPs. Two or more let a create run while another
    /// thread's destroy is under way, which is when the destroy order matters.
    pub control_threads: usize,
    /// The destroy order under test.
    pub order: DestroyOrder,
    /// One destroy in this many is made to fail in hardware (0: never).
    pub fail_one_destroy_in: u64,
    /// Seed of the simulation's choices.
    pub seed: u64,
}

impl Workload {
    /// The seed of the thread numbered `offset`: wrapping, so any seed works (a seed
    /// near `u64::MAX` overflowed, and panicked in debug builds).
    fn thread_seed(&self, offset: u64) -> u64 {
        self.seed.wrapping_add(offset)
    }

    /// How many QPs each control thread keeps alive at most.
    fn qps_per_thread(&self) -> usize {
        self.qps.div_ceil(self.control_threads.max(1)).max(1)
    }

    /// The most QPs alive at once: `qps` rounded up to a multiple of the control
    /// threads (each keeps at least one).
    ///
    /// ```
    /// let workload = restable::mana::sim::Workload { qps: 1, control_threads: 64, ..Default::default() };
    /// assert_eq!(workload.max_live_qps(), 64);
    /// ```
    pub fn max_live_qps(&self) -> usize {
        self.qps_per_thread() * self.control_threads
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            duration: Duration::from_secs(3),
            qps: 64,
            pollers: 2,
            control_threads: 2,
            order: DestroyOrder::KillDrainThenHw,
            fail_one_destroy_in: 64,
            seed: 1,
        }
    }
}

/// What happened, and whether the driver's invariants held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// QPs created (stored in the table).
    pub qps_created: u64,
    /// QPs destroyed.
    pub qps_destroyed: u64,
    /// QP_FATAL events delivered to a QP.
    pub events_delivered: u64,
    /// QP_FATAL events for QPNs no live QP had.
    pub events_stale: u64,
    /// Events of types the QP table does not handle.
    pub events_unknown: u64,
    /// Completions delivered to a QP.
    pub completions: u64,
    /// Completions for work queues no live QP had.
    pub completions_stale: u64,
    /// Creates that failed because the table still held a reused id.
    pub create_failures: u64,
    /// Destroys that failed in hardware (and were retried).
    pub destroy_failures: u64,
    /// Events or completions that reached a QP after its hardware destroy began.
    pub late_deliveries: u64,
    /// QPs still in the table or the hardware at the end (after the final teardown).
    pub leftover_qps: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Summary {
    /// Whether the driver behaved: no create collided, nothing was delivered to a QP
    /// whose hardware destroy had begun, every QP created was destroyed, and neither the
    /// table nor the hardware has anything left.
    ///
    /// ```
    /// use restable::mana::sim::Summary;
    /// assert!(Summary::default().invariants_hold());
    /// assert!(!Summary { create_failures: 1, ..Summary::default() }.invariants_hold());
    /// ```
    pub fn invariants_hold(&self) -> bool {
        self.create_failures == 0
            && self.late_deliveries == 0
            && self.qps_created == self.qps_destroyed
            && self.leftover_qps == 0
    }

    /// The one-line summary the example ends with.
    ///
    /// ```
    /// let line = restable::mana::sim::Summary::default().line();
    /// assert!(line.starts_with("summary: qps_created=0 qps_destroyed=0 "));
    /// ```
    pub fn line(&self) -> String {
        format!(
            "summary: qps_created={} qps_destroyed={} events_delivered={} events_stale={} \
             completions={} create_failures={} late_deliveries={}",
            self.qps_created,
            self.qps_destroyed,
            self.events_delivered,
            self.events_stale,
            self.completions,
            self.create_failures,
            self.late_deliveries
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rows: [(&str, u64); 11] = [
            ("qps created", self.qps_created),
            ("qps destroyed", self.qps_destroyed),
            ("events delivered", self.events_delivered),
            ("events for no live QP", self.events_stale),
            ("events of other types", self.events_unknown),
            ("completions delivered", self.completions),
            ("completions for no live QP", self.completions_stale),
            ("create failures (id collision)", self.create_failures),
            ("destroy failures (hw, retried)", self.destroy_failures),
            ("late deliveries", self.late_deliveries),
            ("qps left over", self.leftover_qps),
        ];
        writeln!(
            f,
            "| {:<32} | {:>12} | {:>12} |",
            "counter", "total", "per second"
        )?;
        writeln!(f, "|{:-<34}|{:->14}|{:->14}|", "", "", "")?;
        for (name, value) in rows {
            let rate = value as f64 / secs;
            writeln!(f, "| {name:<32} | {value:>12} | {rate:>12.0} |")?;
        }
        write!(f, "ran {:.2?}", self.elapsed)
    }
}

impl Workload {
    /// Runs the workload to the end and returns what happened.
    ///
    /// ```
    /// use restable::mana::{sim::Workload, DestroyOrder};
    /// use std::time::Duration;
    /// let naive = Workload {
    ///     duration: Duration::from_millis(20),
    ///     order: DestroyOrder::HwThenErase,
    ///     ..Workload::default()
    /// };
    /// let summary = naive.run();
    /// assert_eq!(summary.leftover_qps, 0); // collisions are likely, leaks are not
    /// ```
    pub fn run(&self) -> Summary {
        self.run_with_progress(Duration::MAX, |_| {})
    }

    /// Runs the workload, calling `progress` with the counters so far about every
    /// `every` while it runs.
    ///
    /// ```
    /// use restable::mana::sim::Workload;
    /// use std::time::Duration;
    /// let mut reports = 0;
    /// let workload = Workload { duration: Duration::from_millis(60), ..Workload::default() };
    /// workload.run_with_progress(Duration::from_millis(10), |_| reports += 1);
    /// assert!(reports > 0);
    /// ```
    pub fn run_with_progress(
        &self,
        every: Duration,
        mut progress: impl FnMut(&Summary),
    ) -> Summary {
        assert!(
            self.control_threads > 0,
            "a workload needs at least one control thread"
        );
        let driver = Arc::new(Driver::with_order(Device::new(), self.order));
        let stop = AtomicBool::new(false);
        let destroy_failures = AtomicU64::new(0);
        let start = Instant::now();
        let deadline = start + self.duration;
        thread::scope(|s| {
            let (driver, stop) = (&driver, &stop);
            // Stops the interrupt and poller threads however this closure ends, so a
            // panic here fails the run instead of hanging it.
            let _stop = StopOnDrop(stop);
            // One "interrupt" handles a batch of EQEs, and one poll a batch of CQEs, under
            // one table guard, as the kernel runs them under one rcu_read_lock().
            s.spawn(move || {
                let mut rng = Rng::with_seed(self.seed);
                while !stop.load(Ordering::Relaxed) {
                    let events = (0..BATCH).map(|_| driver.device().next_event(&mut rng));
                    driver.table().handle_events(events);
                }
            });
            for poller in 0..self.pollers {
                s.spawn(move || {
                    let mut rng = Rng::with_seed(self.thread_seed(100 + poller as u64));
                    while !stop.load(Ordering::Relaxed) {
                        let mut polled = 0;
                        let cqes = std::iter::from_fn(|| driver.device().next_cqe(&mut rng))
                            .take(BATCH)
                            .inspect(|_| polled += 1);
                        driver.table().poll_cq(cqes);
                        if polled == 0 {
                            thread::yield_now();
                        }
                    }
                });
            }
            let per_thread = self.qps_per_thread();
            let controls: Vec<_> = (0..self.control_threads)
                .map(|i| {
                    let rng = Rng::with_seed(self.thread_seed(1000 + i as u64));
                    let failures = &destroy_failures;
                    s.spawn(move || self.control(driver, rng, per_thread, deadline, failures))
                })
                .collect();
            let mut next_report = start.checked_add(every);
            while Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10).min(self.duration));
                if next_report.is_some_and(|at| Instant::now() >= at) {
                    progress(&summarize(driver, &destroy_failures, start.elapsed()));
                    next_report = next_report.and_then(|at| at.checked_add(every));
                }
            }
            for control in controls {
                control.join().expect("a control thread panicked");
            }
        });
        let mut summary = summarize(&driver, &destroy_failures, start.elapsed());
        summary.leftover_qps = (driver.table().len() + driver.device().live_qps()) as u64;
        summary
    }

    /// One control thread: create and destroy QPs at random until the deadline, then
    /// destroy what is left.
    fn control(
        &self,
        driver: &Driver,
        mut rng: Rng,
        max_live: usize,
        deadline: Instant,
        destroy_failures: &AtomicU64,
    ) {
        let mut live: Vec<QpOwner> = Vec::with_capacity(max_live);
        while Instant::now() < deadline {
            let create = live.is_empty() || (live.len() < max_live && rng.u64(..2) == 0);
            if create {
                let qp_type = if rng.u64(..2) == 0 {
                    QpType::Rc
                } else {
                    QpType::Ud
                };
                // A collision is counted by the driver; the workload carries on.
                if let Ok(owner) = driver.create_qp(qp_type, Some(Box::new(|_qp, _event| {}))) {
                    live.push(owner);
                }
                continue;
            }
            let owner = live.swap_remove(rng.u64(..live.len() as u64) as usize);
            if self.fail_one_destroy_in != 0 && rng.u64(..self.fail_one_destroy_in) == 0 {
                driver.device().fail_next_destroys(1);
            }
            if let Err(DestroyError::Hardware(_, owner)) = driver.destroy_qp(owner) {
                destroy_failures.fetch_add(1, Ordering::Relaxed);
                live.push(owner);
            }
        }
        for mut owner in live {
            loop {
                match driver.destroy_qp(owner) {
                    Ok(()) => break,
                    Err(DestroyError::Hardware(_, again)) => {
                        destroy_failures.fetch_add(1, Ordering::Relaxed);
                        owner = again;
                    }
                }
            }
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn summarize(driver: &Driver, destroy_failures: &AtomicU64, elapsed: Duration) -> Summary {
    let stats = driver.table().stats();
    let (qps_created, qps_destroyed, create_failures) = driver.counts();
    Summary {
        qps_created,
        qps_destroyed,
        events_delivered: stats.events_delivered,
        events_stale: stats.events_stale,
        events_unknown: stats.events_unknown,
        completions: stats.completions,
        completions_stale: stats.completions_stale,
        create_failures,
        destroy_failures: destroy_failures.load(Ordering::Relaxed),
        late_deliveries: stats.late_deliveries,
        leftover_qps: 0,
        elapsed,
    }
}
