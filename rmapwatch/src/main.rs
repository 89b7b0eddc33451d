//! rmapwatch: what anon_vma and anon_vma_chain cost on this machine, live.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

mod app;
mod log;

use rmapwatch_engine::{hooks::ProbeMode, inspect, model};
use rmapwatch_live::{
    kernel::{self, EnvError, KernelFacts},
    loader, procfs,
};
use rmapwatch_tui as tui;

/// Exit codes, documented in the README.
mod exit {
    /// Runtime failure.
    pub const FAILURE: u8 = 1;
    /// Bad usage (clap's own code), or the live view without a terminal.
    pub const USAGE: u8 = 2;
    /// This system cannot run rmapwatch (privileges, BTF, kernel symbols).
    pub const ENVIRONMENT: u8 = 3;
    /// The process to inspect does not exist, is a kernel thread, exited,
    /// or the name is ambiguous.
    pub const TARGET: u8 = 4;
}

#[derive(Parser, Debug)]
#[command(
    name = "rmapwatch",
    version,
    about = "Live anon_vma / anon_vma_chain accounting with eBPF",
    long_about = "rmapwatch attaches eBPF programs to the slab, sched and rmap paths of the \
running kernel and counts every anon_vma and anon_vma_chain (AVC) that is allocated and freed, \
system-wide, per call path and per process.\n\n\
Run without a command for the live dashboard (htop-like keys, ? for help); \
`rmapwatch report` for a headless report (text or JSON); `rmapwatch inspect PID|COMM` for one \
process.\n\n\
Function hooks are attached as fentry, else kprobe, else left to the tracepoint path \
(probed at start-up; --probe-mode forces one). Needs root.",
    after_help = "Examples:\n  sudo rmapwatch                         live dashboard\n  \
sudo rmapwatch -d 2                    live dashboard, refresh every 2 s\n  \
sudo rmapwatch inspect 1234            one process's VMAs and lazy verdicts\n  \
sudo rmapwatch report --duration 10    report after 10 s\n  \
sudo rmapwatch report --json           JSON report when you press Ctrl-C\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 bad usage (or no terminal for the live view), \
3 this system cannot run rmapwatch, 4 no such process to inspect."
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
    probe_mode: ProbeModeArg,
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
    /// Lazy model: assume fork children created as tree-parents keep no AVC
    /// links (the series does not say; by default they keep their chain).
    /// The report shows the other value alongside either way.
    #[arg(long, global = true)]
    tree_parent_drops_chain: bool,
    /// Live view: refresh interval in seconds (each refresh re-walks the VMAs).
    #[arg(short = 'd', long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    delay: Duration,
    /// Live view: where warnings go (the screen belongs to the dashboard).
    #[arg(
        long,
        value_name = "PATH",
        env = "RMAPWATCH_LOG_FILE",
        default_value = "/tmp/rmapwatch.log"
    )]
    log_file: String,
}

/// `--probe-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum ProbeModeArg {
    /// Probe at start-up: fentry, else kprobe, else tracepoint-only, per hook.
    #[default]
    Auto,
    /// Only fentry for function hooks (for testing a kernel's fentry support).
    Fentry,
    /// Only kprobes for function hooks.
    Kprobe,
    /// No function hooks: slab and sched tracepoints only.
    Tracepoint,
}

impl From<ProbeModeArg> for ProbeMode {
    fn from(m: ProbeModeArg) -> Self {
        match m {
            ProbeModeArg::Auto => Self::Auto,
            ProbeModeArg::Fentry => Self::Fentry,
            ProbeModeArg::Kprobe => Self::Kprobe,
            ProbeModeArg::Tracepoint => Self::Tracepoint,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count until --duration ends or Ctrl-C, then print a report.
    Report(ReportArgs),
    /// One process: its VMAs with anon_vma, AVCs and lazy verdict, its
    /// anon_vma family, and what lazy would save.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A pid, or a process name (comm) that matches exactly one process.
    #[arg(value_name = "PID|COMM")]
    target: String,
    /// Print JSON (schema rmapwatch.inspect/1, see README).
    #[arg(long)]
    json: bool,
    /// Also list VMAs without an anon_vma.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Seconds to count; without it, count until Ctrl-C / SIGTERM.
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
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
    rmapwatch_live::daemon::tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmapwatch: error: {e:#}");
            let code = if e.downcast_ref::<EnvError>().is_some() {
                exit::ENVIRONMENT
            } else if e.downcast_ref::<inspect::TargetError>().is_some() {
                exit::TARGET
            } else if e.downcast_ref::<tui::NotATerminal>().is_some() {
                exit::USAGE
            } else {
                exit::FAILURE
            };
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.command.is_none() {
        // The live view's own precondition, before anything is set up.
        tui::check_terminal()?;
    }
    kernel::check_privileges()?;
    let facts = KernelFacts::read(&cli.global.btf)?;
    let model_opts = model::Options {
        tree_parent_keeps_chain: !cli.global.tree_parent_drops_chain,
    };
    let mut run = app::RunOptions {
        duration: None,
        interval: Some(cli.global.delay),
        json: false,
        top: 20,
        model: model_opts,
        probe_mode: cli.global.probe_mode.into(),
        ring_bytes: cli.global.ring_buffer_kb.map(|kb| kb * 1024),
    };
    match cli.command {
        Some(Command::Inspect(a)) => run_inspect(&facts, &a, model_opts),
        None => app::live(&facts, &run, &cli.global.log_file),
        Some(Command::Report(a)) => {
            run.duration = a.duration;
            run.interval = a.interval;
            run.json = a.json;
            run.top = a.top;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(app::report(&facts, &run))
        }
    }
}

fn run_inspect(
    facts: &KernelFacts,
    args: &InspectArgs,
    opts: model::Options,
) -> anyhow::Result<()> {
    use inspect::{PidStatus, Target};
    let target = Target::parse(&args.target);
    let before = match target {
        Target::Pid(pid) => procfs::pid_status(pid),
        Target::Comm(_) => PidStatus::User,
    };
    // Fail before loading anything when the answer is already known.
    if let Target::Pid(pid) = target {
        match &before {
            PidStatus::Absent => return Err(inspect::TargetError::NoSuchProcess(pid).into()),
            PidStatus::KernelThread(name) => {
                return Err(inspect::TargetError::KernelThread(pid, name.clone()).into());
            }
            PidStatus::User => {}
        }
    }
    let mut probes = loader::Probes::load(
        facts,
        ProbeMode::Tracepoint,
        None,
        loader::Attach::SnapshotOnly,
    )?;
    let snap = app::take_snapshot(&mut probes)?;
    drop(probes);
    let after = match target {
        Target::Pid(pid) => procfs::pid_status(pid),
        Target::Comm(_) => PidStatus::User,
    };
    let pid = inspect::resolve(&target, &snap, &before, &after)?;
    let est = model::estimate(&snap, opts);
    let paths = procfs::map_paths(pid);
    let i = inspect::of_snapshot(&snap, &est, pid, &paths, facts.sizes);
    if args.json {
        println!("{}", serde_json::to_string(&i)?);
    } else {
        print!("{}", i.to_text(args.all));
    }
    Ok(())
}
