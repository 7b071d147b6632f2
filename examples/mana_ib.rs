//! The main demo: a simulated mana_ib device under load. An interrupt thread delivers
//! EQEs (QP_FATAL by QPN), CQ pollers deliver completions (by work-queue id), and
//! control threads create and destroy RC and UD QPs at random while the hardware hands
//! freed ids straight to the next create.
//!
//! `cargo run --release --example mana_ib` runs it the right way (kill → drain →
//! hardware destroy); `-- --erase-after-hw-destroy` the naive way, which collides.
//! Exits non-zero if an invariant broke.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use restable::mana::sim::Workload;
use restable::mana::DestroyOrder;
use std::process::ExitCode;
use std::time::Duration;

/// A simulated mana_ib device: interrupt, CQ poller and control threads over one QP table.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// The most QPs alive at once.
    #[arg(long, default_value_t = 64)]
    qps: usize,
    /// CQ poller threads.
    #[arg(long, default_value_t = 2)]
    pollers: usize,
    /// Control threads creating and destroying QPs.
    #[arg(long, default_value_t = 2)]
    control_threads: usize,
    /// Destroy in the naive order: hardware destroy first, then erase from the table.
    #[arg(long)]
    erase_after_hw_destroy: bool,
    /// Seed of the simulation's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.seconds.is_finite() && args.seconds > 0.0) || args.control_threads == 0 {
        eprintln!("--seconds must be positive and --control-threads at least 1");
        return ExitCode::from(2);
    }
    let order = if args.erase_after_hw_destroy {
        DestroyOrder::HwThenErase
    } else {
        DestroyOrder::KillDrainThenHw
    };
    let workload = Workload {
        duration: Duration::from_secs_f64(args.seconds),
        qps: args.qps,
        pollers: args.pollers,
        control_threads: args.control_threads,
        order,
        seed: args.seed,
        ..Workload::default()
    };
    println!(
        "mana_ib: {:?} order, {} s, up to {} QPs, 1 interrupt thread, {} pollers, {} control threads",
        order, args.seconds, args.qps, args.pollers, args.control_threads
    );

    let bar = ProgressBar::new((args.seconds * 1000.0) as u64).with_style(
        ProgressStyle::with_template("{bar:24} {elapsed:>3} {msg}").expect("static template"),
    );
    let summary = workload.run_with_progress(Duration::from_millis(250), |now| {
        bar.set_position(now.elapsed.as_millis() as u64);
        bar.set_message(format!(
            "qps {}/{}  events {}  completions {}  collisions {}  late {}",
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
    if !ok {
        println!(
            "INVARIANT BROKEN: {} create collision(s), {} late deliveries, {} QPs left over{}",
            summary.create_failures,
            summary.late_deliveries,
            summary.leftover_qps,
            if args.erase_after_hw_destroy {
                " — this is what erasing after the hardware destroy does when the hardware reuses ids"
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
