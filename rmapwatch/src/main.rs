//! rmapwatch: what anon_vma and anon_vma_chain cost on this machine, live.
mod account;
mod daemon;
mod decode;
mod hooks;
mod kernel;
mod loader;
mod model;
mod report;
mod snapshot;

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    account::Accounting,
    hooks::ProbeMode,
    kernel::{EnvError, KernelFacts},
    loader::Probes,
    report::{Context, Report},
};

/// Exit codes, documented in the README.
mod exit {
    /// Runtime failure.
    pub const FAILURE: u8 = 1;
    /// This system cannot run rmapwatch (privileges, BTF, kernel symbols).
    pub const ENVIRONMENT: u8 = 3;
}

#[derive(Parser, Debug)]
#[command(
    name = "rmapwatch",
    version,
    about = "Live anon_vma / anon_vma_chain accounting with eBPF",
    long_about = "rmapwatch attaches eBPF programs to the slab, sched and rmap paths of the \
running kernel and counts every anon_vma and anon_vma_chain (AVC) that is allocated and freed, \
system-wide, per call path and per process.\n\n\
Run without a command for the live view; `rmapwatch report` for a headless report \
(text or JSON).\n\n\
Function hooks are attached as fentry, else kprobe, else left to the tracepoint path \
(probed at start-up; --probe-mode forces one). Needs root.",
    after_help = "Examples:\n  sudo rmapwatch                         live view\n  \
sudo rmapwatch report --duration 10    report after 10 s\n  \
sudo rmapwatch report --json           JSON report when you press Ctrl-C\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 bad usage, 3 this system cannot run rmapwatch."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// How to attach function hooks: auto probes fentry, then kprobe, then
    /// falls back to the tracepoint-only path.
    #[arg(long, value_enum, default_value_t, global = true)]
    probe_mode: ProbeMode,
    /// Kernel BTF to read struct layouts from.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/sys/kernel/btf/vmlinux",
        global = true
    )]
    btf: PathBuf,
    /// Ring buffer size in KiB (power of two, at least the page size).
    #[arg(long, value_name = "KIB", global = true, value_parser = parse_ring_kb)]
    ring_buffer_kb: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count until --duration ends or Ctrl-C, then print a report.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Seconds to count; without it, count until Ctrl-C / SIGTERM.
    #[arg(long, short = 'd', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Print the report as JSON (schema rmapwatch.report/1, see README).
    #[arg(long)]
    json: bool,
    /// Also print an interim report every SECS (one JSON object per line with --json).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    interval: Option<Duration>,
    /// Processes listed in the text report.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!("'{s}': expected seconds greater than 0"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_ring_kb(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of KiB"))?;
    if !v.is_power_of_two() || !(4..=1 << 20).contains(&v) {
        return Err(format!("'{s}': expected a power of two from 4 to 1048576"));
    }
    Ok(v)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmapwatch: error: {e:#}");
            let code = if e.downcast_ref::<EnvError>().is_some() {
                exit::ENVIRONMENT
            } else {
                exit::FAILURE
            };
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    kernel::check_privileges()?;
    let facts = KernelFacts::read(&cli.global.btf)?;
    let report_args = match cli.command {
        Some(Command::Report(a)) => a,
        None => ReportArgs {
            duration: None,
            json: false,
            interval: Some(Duration::from_secs(1)),
            top: 20,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(report(&facts, &cli.global, &report_args))
}

async fn report(facts: &KernelFacts, global: &GlobalArgs, args: &ReportArgs) -> anyhow::Result<()> {
    let mut signals = daemon::Signals::install()?;
    let mut probes = Probes::load(
        facts,
        global.probe_mode,
        global.ring_buffer_kb.map(|kb| kb * 1024),
    )?;
    for w in &probes.warnings {
        eprintln!("rmapwatch: warning: {w}");
    }
    for h in &probes.hooks {
        let via = h
            .symbol
            .as_deref()
            .filter(|s| *s != h.name)
            .map(|s| format!(" (as {s})"))
            .unwrap_or_default();
        let why = if h.fallbacks.is_empty() {
            String::new()
        } else {
            format!(" [{}]", h.fallbacks.join("; "))
        };
        eprintln!(
            "rmapwatch: hook {:<26} {}{via}{why}",
            h.name,
            h.mode.as_str()
        );
    }
    eprintln!(
        "rmapwatch: attached; counting {}",
        args.duration.map_or_else(
            || "until Ctrl-C".to_owned(),
            |d| format!("for {:.1} s", d.as_secs_f64())
        )
    );
    let mut acct = Accounting::default();
    let make = |acct: &Accounting, probes: &Probes, elapsed: Duration, done: bool| {
        let stats = probes.stats().unwrap_or_default();
        Report::build(
            acct,
            &Context {
                kernel: &facts.id,
                hooks: &probes.hooks,
                fork_window: probes.fork_window,
                stats: &stats,
                duration_s: elapsed.as_secs_f64(),
                anon_vma_size: facts.layout.anon_vma_size,
                avc_size: facts.layout.avc_size,
                done,
            },
        )
    };
    let print = |r: &Report| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", r.to_text(args.top))?;
        }
        out.flush()?;
        Ok(())
    };
    let start = std::time::Instant::now();
    let stop = daemon::collect(
        &mut probes,
        &mut acct,
        &mut signals,
        args.duration,
        args.interval,
        |a, p, el| {
            if let Err(e) = print(&make(a, p, el, false)) {
                eprintln!("rmapwatch: warning: {e:#}");
            }
        },
    )
    .await?;
    let final_report = make(&acct, &probes, start.elapsed(), true);
    drop(probes); // detach before printing: nothing stays loaded
    eprintln!("rmapwatch: stopped ({stop:?}); programs detached");
    print(&final_report)
}
