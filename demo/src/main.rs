//! The main demo: a simulated mana_ib device under load. An interrupt thread delivers
//! EQEs (QP_FATAL by QPN), CQ pollers deliver completions (by work-queue id), and
//! control threads create and destroy RC and UD QPs at random while the hardware hands
//! freed ids straight to the next create.
//!
//! `cargo run --release -p mana-demo` runs it the right way (kill → drain → hardware
//! destroy); `-- --erase-after-hw-destroy` the naive way, which collides. Exits 1 if an
//! invariant broke, 2 on a bad flag (before any thread starts).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use restable::mana::sim::Workload;
use restable::mana::DestroyOrder;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

const SECONDS: RangeInclusive<f64> = 0.001..=86_400.0;
const QPS: RangeInclusive<u64> = 1..=1_000_000;
const POLLERS: RangeInclusive<u64> = 0..=64;
const CONTROL_THREADS: RangeInclusive<u64> = 1..=64;

/// Runs a simulated mana_ib device under load — an interrupt thread, CQ pollers and
/// control threads over one restable QP table, on hardware that hands a freed QP id to
/// the very next create — and checks that no event or completion reaches a destroyed
/// QP and that no create collides with a QP still in the table.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = AFTER_HELP)]
struct Args {
    /// How long to run, in seconds (0.001 to 86400).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true, value_parser = seconds)]
    seconds: f64,
    /// The most QPs alive at once (1 to 1000000).
    #[arg(long, default_value_t = 64, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(*QPS.start()..=*QPS.end()))]
    qps: u64,
    /// CQ poller threads (0 to 64).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(*POLLERS.start()..=*POLLERS.end()))]
    pollers: u64,
    /// Control threads creating and destroying QPs (1 to 64).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64)
              .range(*CONTROL_THREADS.start()..=*CONTROL_THREADS.end()))]
    control_threads: u64,
    /// Destroy in the naive order: hardware destroy first, then erase from the table.
    #[arg(long)]
    erase_after_hw_destroy: bool,
    /// Seed of the simulation's choices (any 64-bit number, signed or not).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = seed)]
    seed: u64,
}

const AFTER_HELP: &str = "\
What the summary counts:
  qps created / destroyed         QPs the control threads created and destroyed
  events delivered                QP_FATAL events the interrupt thread handed to a live QP
  events for no live QP           events naming a QPN no live QP has (stale: not an error)
  events of other types           events the handler does not act on (counted, ignored)
  completions delivered           completions the CQ pollers handed to a live QP
  completions for no live QP      completions for a work queue no live QP has (stale)
  create failures (id collision)  creates refused because the hardware's new id still
                                  named a QP in the table: the naive destroy order's bug
  destroy failures (hw, retried)  injected hardware destroy failures, revived and retried
  late deliveries                 events or completions that reached a QP after its
                                  destroy returned (an invariant: must be 0)
  qps left over                   QPs still in the table or the hardware at the end (0)

Exit status: 0 if every invariant held, 1 if one broke, 2 on a bad flag (nothing runs).";

/// `--seed`: any 64-bit number; a negative one is taken as its two's complement, so
/// `--seed -1` is the same run as `--seed 18446744073709551615`.
fn seed(arg: &str) -> Result<u64, String> {
    arg.parse::<u64>()
        .or_else(|_| arg.parse::<i64>().map(|seed| seed as u64))
        .map_err(|_| format!("not a 64-bit number: {arg:?}"))
}

/// `--seconds`: a finite number in `SECONDS` (so `Duration::from_secs_f64` cannot panic).
fn seconds(arg: &str) -> Result<f64, String> {
    let range = format!("{} to {}", SECONDS.start(), SECONDS.end());
    match arg.parse::<f64>() {
        Ok(secs) if SECONDS.contains(&secs) => Ok(secs),
        Ok(_) => Err(format!("must be from {range} seconds")),
        Err(_) => Err(format!("not a number; give seconds from {range}")),
    }
}

fn main() -> ExitCode {
    // Every flag is checked here, by clap, before anything starts: a bad value prints
    // which flag, the allowed range, and exits with 2.
    let args = Args::parse();
    let order = if args.erase_after_hw_destroy {
        DestroyOrder::HwThenErase
    } else {
        DestroyOrder::KillDrainThenHw
    };
    let as_usize = |n: u64| usize::try_from(n).expect("the ranges above fit in usize");
    let workload = Workload {
        duration: Duration::from_secs_f64(args.seconds),
        qps: as_usize(args.qps),
        pollers: as_usize(args.pollers),
        control_threads: as_usize(args.control_threads),
        order,
        seed: args.seed,
        ..Workload::default()
    };
    println!(
        "mana_ib demo: destroy order {}; {} s; up to {} QPs; 1 interrupt thread, {} CQ \
         poller(s), {} control thread(s); seed {}",
        match order {
            DestroyOrder::KillDrainThenHw => "kill → drain → hardware destroy (restable)",
            DestroyOrder::HwThenErase => "hardware destroy → erase from table (naive)",
        },
        args.seconds,
        workload.max_live_qps(),
        args.pollers,
        args.control_threads,
        args.seed,
    );

    let bar = ProgressBar::new((args.seconds * 1000.0) as u64).with_style(
        ProgressStyle::with_template("{bar:24} {elapsed:>3} {msg}").expect("static template"),
    );
    let summary = workload.run_with_progress(Duration::from_millis(250), |now| {
        bar.set_position(now.elapsed.as_millis() as u64);
        bar.set_message(format!(
            "QPs created {} destroyed {} · events {} · completions {} · collisions {} · \
             late deliveries {}",
            now.qps_created,
            now.qps_destroyed,
            now.events_delivered,
            now.completions,
            now.create_failures,
            now.late_deliveries
        ));
    });
    bar.finish_and_clear();

    println!("{summary}");
    let ok = summary.invariants_hold();
    if ok {
        println!(
            "OK: no create collided with a QP still in the table, no event or completion \
             reached a QP after its destroy returned, every created QP was destroyed, and \
             nothing was left in the table or the hardware"
        );
    } else {
        println!(
            "INVARIANT BROKEN: {} create collision(s), {} late deliveries, {} QPs left over{}",
            summary.create_failures,
            summary.late_deliveries,
            summary.leftover_qps,
            if args.erase_after_hw_destroy {
                " — this is what erasing after the hardware destroy does when the hardware \
                 reuses ids"
            } else {
                ""
            }
        );
    }
    println!("{}", summary.line());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
