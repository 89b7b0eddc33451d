//! The command line: clap's definitions, and the words `--adb` must not
//! take for a serial (the subcommands, from clap itself).
use std::{path::PathBuf, time::Duration};

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use rmapwatch_engine::{hooks::ProbeMode, snapshot::PagemapRead};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// `--probe-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeModeArg {
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
pub enum SlabPathArg {
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
pub struct GlobalArgs {
    /// How to attach function hooks: auto probes fentry, then kprobe, then
    /// falls back to the tracepoint-only path.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub probe_mode: ProbeModeArg,
    /// Where the slab (kmem) events come from; the report and the dashboard
    /// say which was used and why.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub slab_path: SlabPathArg,
    /// Kernel BTF to read struct layouts from [default:
    /// /sys/kernel/btf/vmlinux]. With --adb, a file here that is pushed to
    /// the device (for kernels without BTF of their own).
    #[arg(long, value_name = "PATH", global = true)]
    pub btf: Option<PathBuf>,
    /// Ring buffer size in KiB (power of two, at least the page size).
    #[arg(long, value_name = "KIB", global = true, value_parser = parse_ring_kb)]
    pub ring_buffer_kb: Option<u32>,
    /// How long each walk may spend reading /proc/PID/pagemap: for every
    /// VMA with an anon_vma, its present anonymous pages and how many of
    /// them another process maps too (which VMAs need reverse mapping at
    /// all). MS milliseconds per walk, the VMAs after that left unread
    /// (counted as skipped in the walk's counts); `none` reads them all,
    /// however long it takes. Default: 200 for the live view, serve and
    /// agent (a walk every refresh), none for report, record and inspect.
    #[arg(long, value_name = "MS|none", global = true, value_parser = parse_pagemap_budget)]
    pub pagemap_budget: Option<PagemapRead>,
    /// Read no pagemap at all (walks carry no anonymous page counts).
    #[arg(long, global = true, conflicts_with = "pagemap_budget")]
    pub no_pagemap: bool,
    /// Attach the nest watch: a second program on each slab tracepoint that
    /// sees the runs the kernel skips for rmapwatch's own (recursion misses:
    /// ours was interrupted, or preempted, inside), counts them per CPU,
    /// and streams those at rmap call sites so that none is lost. Costs one
    /// more program run per slab event; the report says what it saw.
    #[arg(long, global = true)]
    pub watch_nesting: bool,
    /// Lazy model: assume fork children created as tree-parents keep no AVC
    /// links (the series does not say; by default they keep their chain).
    /// The report shows the other value alongside either way; a replay
    /// re-runs the model on the recorded walks.
    #[arg(long, global = true)]
    pub tree_parent_drops_chain: bool,
    /// Set one of the designs' named options, NAME=VALUE (repeat for more):
    /// the rules their sources do not settle, each with an inferred
    /// default that every report lists beside the numbers resting on it.
    /// Names: lazy_sticky_upgrades, cow_context_bytes,
    /// maple_entries_per_node, fork_readd_arrays, infer_dead_at_seed,
    /// ideal_object_bytes (docs/designs.md). A replay re-runs the designs
    /// with them.
    #[arg(long, value_name = "NAME=VALUE", global = true)]
    pub design_option: Vec<String>,
    /// Live view: refresh interval in seconds (each refresh re-walks the VMAs).
    #[arg(short = 'd', long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true, global = true)]
    pub delay: Duration,
    /// Live view: where warnings go (the screen belongs to the dashboard).
    #[arg(
        long,
        value_name = "PATH",
        env = "RMAPWATCH_LOG_FILE",
        default_value = "/tmp/rmapwatch.log",
        global = true
    )]
    pub log_file: String,
    /// Watch another machine: run CMD, a remote `rmapwatch agent` (e.g.
    /// "ssh host sudo rmapwatch agent"), and read its stream; requests go to
    /// its stdin. For the live view and `report`.
    #[arg(long, value_name = "CMD", global = true, conflicts_with = "adb")]
    pub remote: Option<String>,
    /// Watch an Android device over adb (SERIAL, else $ANDROID_SERIAL, else
    /// the only one): rmapwatch gets root there (adb root, or su), pushes
    /// its static agent to /data/local/tmp, streams from it, and removes it
    /// at the end. For the live view, report, record and inspect.
    #[arg(long, value_name = "SERIAL", num_args = 0..=1, default_missing_value = "", global = true)]
    pub adb: Option<String>,
    /// With --adb: the static rmapwatch to push (default: found next to
    /// this binary or in the build tree; `cargo xtask build --target
    /// aarch64-unknown-linux-gnu` makes one).
    #[arg(long, value_name = "PATH", global = true)]
    pub agent: Option<PathBuf>,
    /// With --adb: leave the pushed agent on the device (the next run
    /// then pushes nothing).
    #[arg(long, global = true)]
    pub keep_agent: bool,
    /// Files this process removes when it exits, on every path (set by
    /// --adb hosts for the agent they pushed).
    #[arg(long, value_name = "PATH", global = true, hide = true)]
    pub cleanup: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub struct ExportArgs {
    /// The Perfetto trace to write (created with mode 0600).
    #[arg(long, value_name = "OUT")]
    pub perfetto: PathBuf,
    /// The recording (- reads standard input).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Processes with counter tracks of their own: the largest peak
    /// footprints (live bytes) of the run.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A pid, or a process name (comm) that matches exactly one process.
    #[arg(value_name = "PID|COMM")]
    pub target: String,
    /// Print JSON (schema rmapwatch.inspect/1, see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Also list VMAs without an anon_vma.
    #[arg(long)]
    pub all: bool,
    /// Inspect the last walk of a recording instead of the running system.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Seconds to count; without it, count until Ctrl-C / SIGTERM.
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Print the report as JSON (schema rmapwatch.report/1, see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Also print an interim report every SECS (one JSON object per line with --json);
    /// with --from, at recorded time (at the first frame at or after each SECS; 0.001
    /// gives every frame, each with its `t_ns`).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub interval: Option<Duration>,
    /// Processes listed in the text report.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Report on a recording (- reads standard input) instead of the
    /// running system.
    #[arg(long, value_name = "FILE", conflicts_with = "duration")]
    pub from: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The file to write (created with mode 0600).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
    /// Seconds to record; without it, record until Ctrl-C / SIGTERM.
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Walk (and tick) every SECS: the recording's time resolution for the
    /// model (walks take at most 5 % of the time).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    pub interval: Duration,
    /// Overwrite FILE (and OUT) if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also write the run's Perfetto trace to OUT, built during the run
    /// (tracks as `export --help` says), for the --top processes.
    #[arg(long, value_name = "OUT")]
    pub perfetto: Option<PathBuf>,
    /// At the end, print the report (the one `report --from FILE` gives)
    /// as JSON.
    #[arg(long)]
    pub json: bool,
    /// Processes listed in the text report (and with tracks in the
    /// Perfetto trace).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

const SERVE_HELP: &str = "Series (all prefixed rmapwatch_): objects and objects_bytes by type \
(anon_vma, anon_vma_chain) and basis (live, lazy, snapshot); allocations_total and frees_total by \
type and call site; dropped_events_total, fork_windows_dropped_total, reseeds_total, degraded, drift_objects, walks_total; \
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
pub struct ServeArgs {
    /// Address and port to listen on. Loopback by default; another address
    /// is allowed (and said at start): the metrics name processes.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Per-process series only for this many processes (by footprint):
    /// keeps the series count bounded.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Walk and refresh the metrics every SECS.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    pub interval: Duration,
    /// When the source goes away (a phone unplugged), start it again every
    /// SECS; its last state is served meanwhile, marked stale.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs, allow_negative_numbers = true)]
    pub retry: Duration,
    /// Stop after SECS (default: until Ctrl-C / SIGTERM).
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The recording (- reads standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// As fast as it decodes, not at the recorded pace.
    #[arg(long)]
    pub fast: bool,
    /// Pace: 2 plays twice as fast as recorded.
    #[arg(long, value_name = "FACTOR", default_value = "1", value_parser = parse_factor)]
    pub speed: f64,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Tick (counters, names) every SECS.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    pub interval: Duration,
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

/// `--pagemap-budget`'s default for the live view, serve and agent.
pub const PAGEMAP_BUDGET: Duration = Duration::from_millis(200);

fn parse_pagemap_budget(s: &str) -> Result<PagemapRead, String> {
    if s == "none" {
        return Ok(PagemapRead::Whole);
    }
    match s.parse::<u64>() {
        Ok(ms) if (1..=3_600_000).contains(&ms) => {
            Ok(PagemapRead::Within(Duration::from_millis(ms)))
        }
        _ => Err(format!(
            "'{s}': expected whole milliseconds from 1 to 3600000, or none (no budget); \
             --no-pagemap reads no pagemap"
        )),
    }
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

/// `--adb` takes an optional value: `--adb report` means the default
/// device and the command `report`, not a device named "report".
fn args() -> Vec<std::ffi::OsString> {
    let words = command_words();
    let mut v: Vec<std::ffi::OsString> = std::env::args_os().collect();
    for i in 1..v.len() {
        if v[i] == "--adb"
            && v.get(i + 1)
                .and_then(|n| n.to_str())
                .is_some_and(|n| words.iter().any(|w| w == n) || n.starts_with('-'))
        {
            v[i] = "--adb=".into();
        }
    }
    v
}

/// The words that name a command where `--adb`'s serial could stand:
/// every subcommand and alias clap knows, its `help`, and `--`.
fn command_words() -> Vec<String> {
    let cmd = Cli::command();
    let mut words: Vec<String> = cmd
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
        .map(str::to_owned)
        .collect();
    words.extend(["help".to_owned(), "--".to_owned()]);
    words
}

/// The command line of this process.
#[must_use]
pub fn parse() -> Cli {
    Cli::parse_from(args())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adb_never_takes_a_command_for_a_serial() {
        let words = command_words();
        for c in [
            "report", "inspect", "record", "replay", "agent", "serve", "export", "help", "--",
        ] {
            assert!(words.iter().any(|w| w == c), "{c} missing from {words:?}");
        }
        // Every subcommand clap has, whatever is added later.
        assert_eq!(words.len(), Cli::command().get_subcommands().count() + 2);
    }

    #[test]
    fn the_pagemap_budget_is_milliseconds_or_none() {
        assert_eq!(parse_pagemap_budget("none"), Ok(PagemapRead::Whole));
        assert_eq!(
            parse_pagemap_budget("200"),
            Ok(PagemapRead::Within(Duration::from_millis(200)))
        );
        for bad in ["0", "-5", "1.5", "200ms", "", "None", "3600001"] {
            assert!(parse_pagemap_budget(bad).is_err(), "{bad}");
        }
        let cli = Cli::try_parse_from(["rmapwatch", "report", "--no-pagemap"]).unwrap();
        assert!(cli.global.no_pagemap);
        assert!(
            Cli::try_parse_from(["rmapwatch", "--no-pagemap", "--pagemap-budget", "5"]).is_err()
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
