//! rmapwatch: what anon_vma and anon_vma_chain cost on this machine, live.
//!
//! The binary wires sources (the live kernel, a recording, a remote agent)
//! to the engine and to sinks (the live view, text and JSON reports, a
//! recording, an agent's stdout).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

mod adb;
mod agent;
mod drive;
mod file;
mod inspect;
mod link;
mod live;
mod log;
mod metrics;
mod report;
mod serve;
mod view;

use rmapwatch_engine::{
    hooks::{ProbeMode, SlabPath},
    model,
    stream::StreamError,
};

/// Exit codes, documented in docs/guide.md ("Exit codes"; a short table in the README).
mod exit {
    /// Runtime failure.
    pub const FAILURE: u8 = 1;
    /// Bad usage (clap's own code), the live view without a terminal, an
    /// output file that exists.
    pub const USAGE: u8 = 2;
    /// This system cannot run rmapwatch (privileges, BTF, kernel symbols).
    pub const ENVIRONMENT: u8 = 3;
    /// The process to inspect does not exist, is a kernel thread, exited,
    /// or the name is ambiguous.
    pub const TARGET: u8 = 4;
    /// The input file (a recording, or a remote agent's stream) is not a
    /// rmapwatch stream, of another version, empty, damaged or truncated.
    pub const INPUT: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "rmapwatch",
    version,
    about = "Live anon_vma / anon_vma_chain accounting with eBPF",
    long_about = "rmapwatch attaches eBPF programs to the slab, sched and rmap paths of the \
running kernel and counts every anon_vma and anon_vma_chain (AVC) that is allocated and freed, \
system-wide, per call path and per process, next to what ANON_VMA_LAZY would hold.\n\n\
Run without a command for the live dashboard (htop-like keys, ? for help); \
`rmapwatch report` for a headless report (text or JSON); `rmapwatch inspect PID|COMM` for one \
process; `rmapwatch record -o FILE` to keep a run and `rmapwatch replay FILE` (or `report \
--from FILE`, `inspect --from FILE`) to study it anywhere, on any architecture.\n\n\
Function hooks are attached as fentry, else kprobe, else left to the tracepoint path \
(probed at start-up; --probe-mode forces one). The live kernel needs root.",
    after_help = "Examples:\n  sudo rmapwatch                         live dashboard\n  \
sudo rmapwatch -d 2                    live dashboard, refresh every 2 s\n  \
sudo rmapwatch inspect 1234            one process's VMAs and lazy verdicts\n  \
sudo rmapwatch report --duration 10    report after 10 s\n  \
sudo rmapwatch report --json           JSON report when you press Ctrl-C\n  \
sudo rmapwatch record -o run.rmw -t 60 record a minute\n  \
rmapwatch replay run.rmw               the dashboard of the recording (no root)\n  \
rmapwatch report --from run.rmw --json the recording's report\n  \
rmapwatch export --perfetto run.pftrace --from run.rmw   its trace for ui.perfetto.dev\n  \
rmapwatch --remote 'ssh host sudo rmapwatch agent'   another machine's dashboard\n  \
rmapwatch --adb                        the Android device's dashboard (root: adb root or su)\n  \
rmapwatch --adb SERIAL report -t 10    a report from that device\n  \
rmapwatch --adb inspect surfaceflinger one process on the device\n  \
sudo rmapwatch serve                   a Prometheus exporter on 127.0.0.1:9464\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 bad usage (or no terminal for the live view, or an \
output file that exists), 3 this system cannot run rmapwatch, 4 no such process to inspect, \
5 the input file or stream is not a rmapwatch recording, of another version, empty, damaged or \
truncated (what came before the damage is still reported). With --adb: 3 also for every device \
problem (adb missing, no device, several, unauthorized, offline, no root), each said in one line \
with its remedy; a command on the device passes its own exit code on; a dropped link is 1."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    global: GlobalArgs,
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

/// `--slab-path`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum SlabPathArg {
    /// Raw tracepoints, unless this kernel runs them preemptible (7.0+ with
    /// PREEMPT_RCU, where they miss events): then classic tracepoints.
    #[default]
    Auto,
    /// Raw tracepoints (arguments by position).
    Raw,
    /// Classic (perf) tracepoints (fields at the tracefs format's offsets).
    Perf,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// How to attach function hooks: auto probes fentry, then kprobe, then
    /// falls back to the tracepoint-only path.
    #[arg(long, value_enum, default_value_t, global = true)]
    probe_mode: ProbeModeArg,
    /// Where the slab (kmem) events come from; the report and the dashboard
    /// say which was used and why.
    #[arg(long, value_enum, default_value_t, global = true)]
    slab_path: SlabPathArg,
    /// Kernel BTF to read struct layouts from [default:
    /// /sys/kernel/btf/vmlinux]. With --adb, a file here that is pushed to
    /// the device (for kernels without BTF of their own).
    #[arg(long, value_name = "PATH", global = true)]
    btf: Option<PathBuf>,
    /// Ring buffer size in KiB (power of two, at least the page size).
    #[arg(long, value_name = "KIB", global = true, value_parser = parse_ring_kb)]
    ring_buffer_kb: Option<u32>,
    /// Lazy model: assume fork children created as tree-parents keep no AVC
    /// links (the series does not say; by default they keep their chain).
    /// The report shows the other value alongside either way; a replay
    /// re-runs the model on the recorded walks.
    #[arg(long, global = true)]
    tree_parent_drops_chain: bool,
    /// Live view: refresh interval in seconds (each refresh re-walks the VMAs).
    #[arg(short = 'd', long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true, global = true)]
    delay: Duration,
    /// Live view: where warnings go (the screen belongs to the dashboard).
    #[arg(
        long,
        value_name = "PATH",
        env = "RMAPWATCH_LOG_FILE",
        default_value = "/tmp/rmapwatch.log",
        global = true
    )]
    log_file: String,
    /// Watch another machine: run CMD, a remote `rmapwatch agent` (e.g.
    /// "ssh host sudo rmapwatch agent"), and read its stream; requests go to
    /// its stdin. For the live view and `report`.
    #[arg(long, value_name = "CMD", global = true, conflicts_with = "adb")]
    remote: Option<String>,
    /// Watch an Android device over adb (SERIAL, else $ANDROID_SERIAL, else
    /// the only one): rmapwatch gets root there (adb root, or su), pushes
    /// its static agent to /data/local/tmp, streams from it, and removes it
    /// at the end. For the live view, report, record and inspect.
    #[arg(long, value_name = "SERIAL", num_args = 0..=1, default_missing_value = "", global = true)]
    adb: Option<String>,
    /// With --adb: the static rmapwatch to push (default: found next to
    /// this binary or in the build tree; `cargo xtask build --target
    /// aarch64-unknown-linux-gnu` makes one).
    #[arg(long, value_name = "PATH", global = true)]
    agent: Option<PathBuf>,
    /// With --adb: leave the pushed agent on the device (the next run
    /// then pushes nothing).
    #[arg(long, global = true)]
    keep_agent: bool,
    /// Files this process removes when it exits, on every path (set by
    /// --adb hosts for the agent they pushed).
    #[arg(long, value_name = "PATH", global = true, hide = true)]
    cleanup: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count until --duration ends or Ctrl-C, then print a report.
    Report(ReportArgs),
    /// One process: its VMAs with anon_vma, AVCs and lazy verdict, its
    /// anon_vma family, and what lazy would save.
    Inspect(InspectArgs),
    /// Record the run to a file (rmapwatch.stream/1): everything the live
    /// view and the reports need, to replay later on any machine.
    Record(RecordArgs),
    /// The live view of a recording: at the recorded pace (--fast: as fast
    /// as it decodes), pause with p.
    Replay(ReplayArgs),
    /// A Prometheus / OpenMetrics exporter on --listen (loopback by
    /// default): the report's figures as metrics at /metrics, refreshed
    /// every --interval; with --adb, a phone's.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Headless: the stream (rmapwatch.stream/1) on stdout, requests
    /// (walks, names) on stdin; detaches and exits on stdin EOF, SIGHUP,
    /// SIGTERM or a closed stdout. Run by `--remote` (and `--adb`) hosts.
    Agent(AgentArgs),
    /// Turn a recording into a Perfetto trace (open it in ui.perfetto.dev).
    Export(ExportArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "The trace (Perfetto's protobuf format) has counter tracks of live and \
lazy anon_vma and anon_vma_chain objects system-wide and for the --top processes of largest peak \
footprint (under their process tracks), and instants on a \"rmapwatch\" track for every walk, \
re-seed and growth of the dropped events; timestamps are the recording's.\n\n\
Examples:\n  rmapwatch export --perfetto run.pftrace --from run.rmw\n  \
ssh host cat run.rmw | rmapwatch export --perfetto run.pftrace --from -\n  \
rmapwatch export --perfetto top5.pftrace --from run.rmw --top 5 --force\n\n\
Then open run.pftrace at https://ui.perfetto.dev (Open trace file). A damaged or truncated \
recording exits 5 with the trace of what came before the damage written."
)]
struct ExportArgs {
    /// The Perfetto trace to write (created with mode 0600).
    #[arg(long, value_name = "OUT")]
    perfetto: PathBuf,
    /// The recording (- reads standard input).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Processes with counter tracks of their own: the largest peak
    /// footprints (live bytes) of the run.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A pid, or a process name (comm) that matches exactly one process.
    #[arg(value_name = "PID|COMM")]
    target: String,
    /// Print JSON (schema rmapwatch.inspect/1, see docs/json.md).
    #[arg(long)]
    json: bool,
    /// Also list VMAs without an anon_vma.
    #[arg(long)]
    all: bool,
    /// Inspect the last walk of a recording instead of the running system.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Seconds to count; without it, count until Ctrl-C / SIGTERM.
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Print the report as JSON (schema rmapwatch.report/1, see docs/json.md).
    #[arg(long)]
    json: bool,
    /// Also print an interim report every SECS (one JSON object per line with --json);
    /// with --from, at recorded time (at the first frame at or after each SECS; 0.001
    /// gives every frame, each with its `t_ns`).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    interval: Option<Duration>,
    /// Processes listed in the text report.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Report on a recording (- reads standard input) instead of the
    /// running system.
    #[arg(long, value_name = "FILE", conflicts_with = "duration")]
    from: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// The file to write (created with mode 0600).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
    /// Seconds to record; without it, record until Ctrl-C / SIGTERM.
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Walk (and tick) every SECS: the recording's time resolution for the
    /// model (walks take at most 5 % of the time).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    interval: Duration,
    /// Overwrite FILE (and OUT) if it exists.
    #[arg(long)]
    force: bool,
    /// Also write the run's Perfetto trace to OUT, built during the run
    /// (tracks as `export --help` says), for the --top processes.
    #[arg(long, value_name = "OUT")]
    perfetto: Option<PathBuf>,
    /// At the end, print the report (the one `report --from FILE` gives)
    /// as JSON.
    #[arg(long)]
    json: bool,
    /// Processes listed in the text report (and with tracks in the
    /// Perfetto trace).
    #[arg(long, default_value_t = 20)]
    top: usize,
}

const SERVE_HELP: &str = "Series (all prefixed rmapwatch_): objects and objects_bytes by type \
(anon_vma, anon_vma_chain) and basis (live, lazy, snapshot); allocations_total and frees_total by \
type and call site; dropped_events_total, reseeds_total, degraded, drift_objects, walks_total; \
recursion_misses_total, bpf_run_seconds_total and bpf_runs_total by program (the cost in the \
kernel) and process_cpu_seconds_total, process_resident_memory_bytes (the exporter's); \
build_info (kernel, arch, hooks and their modes), hook by hook and mode; process_objects by pid and \
comm for the top --top processes only; source_up (0 once the source went away: the last state is \
kept, stale, and the source retried every --retry seconds).\n\n\
Examples:\n  sudo rmapwatch serve                          http://127.0.0.1:9464/metrics\n  \
sudo rmapwatch serve --listen 0.0.0.0:9464    reachable from other hosts (said at start)\n  \
rmapwatch --adb SERIAL serve --listen 127.0.0.1:9465   one exporter per phone\n\n\
Prometheus scrape config:\n  scrape_configs:\n    - job_name: rmapwatch\n      \
static_configs:\n        - targets: ['127.0.0.1:9464']";

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on. Loopback by default; another address
    /// is allowed (and said at start): the metrics name processes.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    listen: std::net::SocketAddr,
    /// Per-process series only for this many processes (by footprint):
    /// keeps the series count bounded.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Walk and refresh the metrics every SECS.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    interval: Duration,
    /// When the source goes away (a phone unplugged), start it again every
    /// SECS; its last state is served meanwhile, marked stale.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs, allow_negative_numbers = true)]
    retry: Duration,
    /// Stop after SECS (default: until Ctrl-C / SIGTERM).
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The recording (- reads standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// As fast as it decodes, not at the recorded pace.
    #[arg(long)]
    fast: bool,
    /// Pace: 2 plays twice as fast as recorded.
    #[arg(long, value_name = "FACTOR", default_value = "1", value_parser = parse_factor)]
    speed: f64,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Tick (counters, names) every SECS.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    interval: Duration,
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

fn parse_factor(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1e6) {
        return Err(format!("'{s}': expected a factor greater than 0"));
    }
    Ok(v)
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

/// An output file that exists (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0} exists: pass --force to overwrite it")]
pub struct OutputExists(pub String);

/// A combination of flags that makes no sense (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An input file that cannot be read as a stream (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BadInput {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: StreamError,
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let agent_code = e
        .downcast_ref::<adb::DeviceExit>()
        .map(|d| d.code)
        .or_else(|| e.downcast_ref::<file::AgentExited>().and_then(|a| a.code));
    if let Some(code) = agent_code {
        // The agent's own code, where it is one of ours.
        return u8::try_from(code)
            .ok()
            .filter(|c| (1..=5).contains(c))
            .unwrap_or(exit::FAILURE);
    }
    if live::is_environment_error(e) || e.downcast_ref::<adb::AdbError>().is_some() {
        exit::ENVIRONMENT
    } else if e
        .downcast_ref::<rmapwatch_engine::inspect::TargetError>()
        .is_some()
    {
        exit::TARGET
    } else if e.downcast_ref::<rmapwatch_tui::NotATerminal>().is_some()
        || e.downcast_ref::<OutputExists>().is_some()
        || e.downcast_ref::<UsageError>().is_some()
    {
        exit::USAGE
    } else if e.downcast_ref::<BadInput>().is_some() || e.downcast_ref::<StreamError>().is_some() {
        exit::INPUT
    } else {
        exit::FAILURE
    }
}

fn main() -> ExitCode {
    live::tune_process();
    let cli = Cli::parse_from(args());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to say.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// What every command shares.
pub struct Common {
    /// How to attach, for the live kernel.
    pub live: live::LiveArgs,
    /// The lazy model's options.
    pub model: model::Options,
    /// A remote agent's command, if any.
    pub remote: Option<String>,
    /// An Android device over adb, if any.
    pub adb: Option<adb::AdbArgs>,
}

/// Removes its files when dropped (`--cleanup`): the agent's own binary
/// on a device, whatever way the agent ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `--adb` takes an optional value: `--adb report` means the default
/// device and the command `report`, not a device named "report".
fn args() -> Vec<std::ffi::OsString> {
    const COMMANDS: [&str; 9] = [
        "report", "inspect", "record", "replay", "agent", "serve", "export", "help", "--",
    ];
    let mut v: Vec<std::ffi::OsString> = std::env::args_os().collect();
    for i in 1..v.len() {
        if v[i] == "--adb"
            && v.get(i + 1)
                .and_then(|n| n.to_str())
                .is_some_and(|n| COMMANDS.contains(&n) || n.starts_with('-'))
        {
            v[i] = "--adb=".into();
        }
    }
    v
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    let _cleanup = Cleanup(g.cleanup.clone());
    let common = Common {
        live: live::LiveArgs {
            btf: g
                .btf
                .clone()
                .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux")),
            probe_mode: g.probe_mode.into(),
            slab_path: match g.slab_path {
                SlabPathArg::Auto => SlabPath::Auto,
                SlabPathArg::Raw => SlabPath::Raw,
                SlabPathArg::Perf => SlabPath::Perf,
            },
            ring_bytes: g.ring_buffer_kb.map(|kb| kb * 1024),
        },
        model: model::Options {
            tree_parent_keeps_chain: !g.tree_parent_drops_chain,
        },
        remote: g.remote.clone(),
        adb: g.adb.clone().map(|serial| adb::AdbArgs {
            serial: Some(serial).filter(|s| !s.is_empty()),
            agent: g.agent.clone(),
            keep_agent: g.keep_agent,
            btf: g.btf.clone(),
        }),
    };
    if common.adb.is_some()
        && matches!(
            cli.command,
            Some(Command::Replay(_) | Command::Agent(_) | Command::Export(_))
        )
    {
        anyhow::bail!(UsageError(
            "--adb is for the live view, report, record, inspect and serve".into()
        ));
    }
    match cli.command {
        None => view::live(&common, g.delay, &g.log_file),
        Some(Command::Replay(a)) => {
            let pace = if a.fast {
                file::Pace::Fast
            } else {
                file::Pace::Recorded(a.speed)
            };
            view::replay(&common, &a.file, pace, g.delay, &g.log_file)
        }
        Some(Command::Report(a)) => report::report(
            &common,
            &report::Opts {
                duration: a.duration,
                interval: a.interval,
                json: a.json,
                top: a.top,
                from: a.from,
            },
        ),
        Some(Command::Record(a)) => report::record(
            &common,
            &report::RecordOpts {
                path: a.output,
                duration: a.duration,
                interval: a.interval,
                force: a.force,
                json: a.json,
                top: a.top,
                perfetto: a.perfetto,
            },
        ),
        Some(Command::Export(a)) => report::export(
            &common,
            &report::ExportOpts {
                perfetto: a.perfetto,
                from: a.from,
                top: a.top,
                force: a.force,
            },
        ),
        Some(Command::Inspect(a)) => {
            inspect::inspect(&common, &a.target, a.json, a.all, a.from.as_deref())
        }
        Some(Command::Agent(a)) => agent::agent(&common, a.interval),
        Some(Command::Serve(a)) => serve::serve(
            &common,
            &serve::Opts {
                listen: a.listen,
                top: a.top,
                interval: a.interval,
                retry: a.retry,
                duration: a.duration,
            },
        ),
    }
}
