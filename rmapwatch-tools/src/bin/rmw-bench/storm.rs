//! Fork and fault storms (root): wall time untraced, with rmapwatch
//! attached (report mode, default buffer sizes) and with a bpftrace peer
//! doing the same call-site counting, in alternated rounds; plus each
//! tracer's per-event cost from the kernel's `bpf_stats`.
use std::{
    collections::BTreeSet,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rmapwatch_common::site;
use rmapwatch_live::kernel::kallsyms;

use crate::{
    child::lines_of,
    stats::{line, stats},
};

/// What runs alongside the storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    None,
    Rmapwatch,
    Bpftrace,
    /// bpftrace with empty programs on the same tracepoints: the floor.
    Empty,
}

impl Tracer {
    const fn name(self) -> &'static str {
        match self {
            Self::None => "untraced",
            Self::Rmapwatch => "rmapwatch",
            Self::Bpftrace => "bpftrace peer",
            Self::Empty => "empty program",
        }
    }
}

/// A running tracer.
struct Attached {
    tracer: Tracer,
    child: crate::child::Stop,
    lines: mpsc::Receiver<String>,
    before: BTreeSet<u32>,
}

/// What a tracer reported when stopped.
#[derive(Default)]
struct Outcome {
    /// Runs and run time of the programs it loaded (bpf_stats).
    runs: u64,
    run_ns: u64,
    recursion_misses: u64,
    /// rmapwatch only: events decoded and dropped.
    events: u64,
    dropped: u64,
}

fn program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return Ok(()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    bail!("the tracer never printed {what:?}")
}

/// The bpftrace peer: kmem_cache_alloc/free counted by call site, for the
/// call sites rmapwatch classifies (the rmap functions' text ranges).
pub(crate) fn peer_script(k: &kallsyms::Kallsyms) -> String {
    let conds: Vec<String> = site::NAMES
        .iter()
        .flat_map(|name| k.ranges(name))
        .map(|(a, b)| format!("(args->call_site >= {a:#x} && args->call_site < {b:#x})"))
        .collect();
    let filter = conds.join(" || ");
    format!(
        "tracepoint:kmem:kmem_cache_alloc /args->ptr != 0 && ({filter})/ {{ @alloc[args->call_site] = count(); }} \
         tracepoint:kmem:kmem_cache_free /{filter}/ {{ @free[args->call_site] = count(); }}"
    )
}

const EMPTY_SCRIPT: &str = "tracepoint:kmem:kmem_cache_alloc {} tracepoint:kmem:kmem_cache_free {}";

fn start(tracer: Tracer, rmapwatch: &Path, peer: &str) -> anyhow::Result<Option<Attached>> {
    let before = program_ids();
    let (child, lines) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Rmapwatch => {
            let mut child = Command::new(rmapwatch)
                .args(["report", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", rmapwatch.display()))?;
            let err = child.stderr.take().context("no stderr")?;
            let lines = lines_of(err);
            let child = crate::child::Stop(child);
            wait_for(&lines, "attached")?;
            (child, lines)
        }
        Tracer::Bpftrace | Tracer::Empty => {
            let script = if tracer == Tracer::Empty {
                EMPTY_SCRIPT
            } else {
                peer
            };
            crate::child::bpftrace(script)?
        }
    };
    Ok(Some(Attached {
        tracer,
        child,
        lines,
        before,
    }))
}

fn stop(a: Attached) -> anyhow::Result<Outcome> {
    let mut o = Outcome::default();
    if a.tracer != Tracer::Rmapwatch {
        // Its programs' statistics, read while they are still loaded.
        for p in aya::programs::loaded_programs().filter_map(Result::ok) {
            if !a.before.contains(&p.id()) {
                o.runs += p.run_count();
                o.run_ns += u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
            }
        }
    }
    let mut child = a.child;
    let mut stdout = String::new();
    if a.tracer == Tracer::Rmapwatch {
        // SAFETY: plain kill(2) on our child; rmapwatch prints its report
        // and closes stdout at the exit.
        unsafe { libc::kill(i32::try_from(child.0.id())?, libc::SIGINT) };
        child
            .0
            .stdout
            .take()
            .context("no stdout")?
            .read_to_string(&mut stdout)?;
    }
    // bpftrace can lose a SIGINT: said again until it exits.
    let st = child.stop()?;
    if !st.success() && a.tracer == Tracer::Rmapwatch {
        let err: Vec<String> = a.lines.try_iter().collect();
        bail!("rmapwatch exited {st}: {}", err.join(" | "));
    }
    if a.tracer == Tracer::Rmapwatch {
        let r: rmapwatch_engine::report::Report = serde_json::from_str(
            stdout
                .lines()
                .last()
                .context("rmapwatch printed no report")?,
        )?;
        o.events = r.events;
        o.dropped = r
            .dropped_events
            .context("rmapwatch could not read its counters")?;
        let c = r.cost.context("no bpf_stats on this kernel")?;
        o.recursion_misses = c.recursion_misses;
        o.runs = c.event_runs;
        o.run_ns = c
            .programs
            .iter()
            .filter(|(name, _)| *name != rmapwatch_engine::report::ITERATOR_PROGRAM)
            .map(|(_, p)| p.run_time_ns)
            .sum();
    }
    Ok(o)
}

const PAGE: usize = 4096;

/// `n` times fork + exit of a process holding 64 MiB of touched anonymous
/// memory in 50 VMAs: `rmw-workload --storm` (the same storm the VM matrix
/// times), which reports the time of its fork loop alone.
pub(crate) fn fork_storm(n: usize) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?.with_file_name("rmw-workload");
    let pages = (64 << 20) / PAGE / 50;
    let out = Command::new(&exe)
        .args(["--regions", "50", "--noise", "0"])
        .args(["--pages", &pages.to_string(), "--storm", &n.to_string()])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "storm <n> forks <seconds> s"
    text.lines()
        .find_map(|l| l.strip_prefix("storm "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .with_context(|| {
            format!(
                "rmw-workload --storm printed no time: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Touches `mib` MiB of fresh anonymous memory page by page (4 KiB pages,
/// or transparent huge pages).
pub(crate) fn fault_storm(mib: usize, thp: bool) -> anyhow::Result<f64> {
    let len = mib << 20;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        bail!("mmap {mib} MiB: {}", std::io::Error::last_os_error());
    }
    let advice = if thp {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: our mapping.
    unsafe { libc::madvise(base, len, advice) };
    let t = Instant::now();
    for off in (0..len).step_by(PAGE) {
        // SAFETY: inside our writable mapping.
        unsafe { base.cast::<u8>().add(off).write_volatile(1) };
    }
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: our mapping, no references left.
    unsafe { libc::munmap(base, len) };
    Ok(secs)
}

/// Options of the storm benchmarks.
pub struct Opts {
    /// Alternated rounds (each: untraced, rmapwatch, bpftrace, rotated).
    pub rounds: usize,
    /// Forks per fork storm.
    pub forks: usize,
    /// MiB per fault storm.
    pub fault_mib: usize,
}

pub(crate) fn rmapwatch_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("rmapwatch");
    if !bin.exists() {
        bail!("{} not found next to rmw-bench", bin.display());
    }
    Ok(bin)
}

struct Series {
    secs: Vec<Vec<f64>>,
    outcomes: Vec<Vec<Outcome>>,
}

/// Time from the start of a tracer (or of nothing) to the run.
const SETTLE: Duration = Duration::from_secs(5);

const TRACERS: [Tracer; 3] = [Tracer::None, Tracer::Rmapwatch, Tracer::Bpftrace];

fn run_series(
    name: &str,
    rounds: usize,
    bin: &Path,
    peer: &str,
    mut work: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Series> {
    let mut s = Series {
        secs: vec![Vec::new(); TRACERS.len()],
        outcomes: (0..TRACERS.len()).map(|_| Vec::new()).collect(),
    };
    // One discarded run first: page cache, THP pools and the allocator
    // settle (the first THP run was 20x slower than the rest).
    work()?;
    for round in 0..rounds {
        eprint!("\rrmw-bench: {name}: round {}/{rounds} ", round + 1);
        for k in 0..TRACERS.len() {
            let i = (k + round) % TRACERS.len();
            // The same gap before every run, traced or not: tracers take
            // 1-3 s to start, and on this VM memory freed by the previous
            // run goes back to the host after a while (free page
            // reporting), so a run right after another faults cheaper.
            let t0 = Instant::now();
            let attached = start(TRACERS[i], bin, peer)?;
            if let Some(left) = SETTLE.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            let secs = work();
            let outcome = attached.map(stop).transpose()?;
            s.secs[i].push(secs?);
            s.outcomes[i].push(outcome.unwrap_or_default());
        }
    }
    eprintln!();
    Ok(s)
}

fn report(name: &str, s: &Series, unit_work: f64) {
    let base = stats(s.secs[0].clone());
    line(&format!("{name}: untraced"), "s", base);
    for (i, t) in TRACERS.iter().enumerate().skip(1) {
        line(
            &format!("{name}: {}", t.name()),
            "s",
            stats(s.secs[i].clone()),
        );
        // Overhead per round (each traced run against the untraced run of the
        // same round), so that drifts of the machine cancel.
        let over: Vec<f64> = s.secs[i]
            .iter()
            .zip(&s.secs[0])
            .map(|(t, b)| (t / b - 1.0) * 100.0)
            .collect();
        line(&format!("{name}: {} overhead", t.name()), "%", stats(over));
        let o = &s.outcomes[i];
        let runs: u64 = o.iter().map(|o| o.runs).sum();
        let ns: u64 = o.iter().map(|o| o.run_ns).sum();
        if runs > 0 {
            println!(
                "{:<44} {:>10.1} ns/run over {runs} runs (bpf_stats)",
                format!("{name}: {} programs", t.name()),
                ns as f64 / runs as f64
            );
            // Wall time varies more than the tracer costs: the programs'
            // own run time per storm, against the untraced median, is the
            // steadier estimate of the overhead.
            println!(
                "{:<44} {:>10.2} % of the untraced median (bpf_stats run time per storm)",
                format!("{name}: {} in-kernel time", t.name()),
                ns as f64 / 1e9 / o.len() as f64 / base.0 * 100.0
            );
        }
        if *t == Tracer::Rmapwatch {
            let events: Vec<f64> = o
                .iter()
                .zip(&s.secs[i])
                .map(|(o, secs)| o.events as f64 / secs)
                .collect();
            line(
                &format!("{name}: rmapwatch events/s"),
                "ev/s",
                stats(events),
            );
            println!(
                "{:<44} dropped {} events, {} recursion misses over {} runs ({unit_work} per run)",
                format!("{name}: rmapwatch"),
                o.iter().map(|o| o.dropped).sum::<u64>(),
                o.iter().map(|o| o.recursion_misses).sum::<u64>(),
                o.len()
            );
        }
    }
}

/// The floor: bpftrace's empty programs on the same tracepoints, one storm.
fn empty_floor(bin: &Path, forks: usize) -> anyhow::Result<()> {
    let a = start(Tracer::Empty, bin, "")?.context("empty tracer")?;
    fork_storm(forks)?;
    let o = stop(a)?;
    if o.runs > 0 {
        println!(
            "{:<44} {:>10.1} ns/run over {} runs (bpf_stats)",
            "fork storm: empty program (bpftrace {})",
            o.run_ns as f64 / o.runs as f64,
            o.runs
        );
    }
    Ok(())
}

/// Both storms.
///
/// # Errors
/// Not root, tracers missing, or a storm fails.
pub fn run(o: &Opts) -> anyhow::Result<()> {
    let bin = rmapwatch_bin()?;
    let k = kallsyms::read().context("reading kallsyms (run as root)")?;
    let peer = peer_script(&k);
    // Statistics on for every program while we measure (the tracers run
    // with it in every traced run alike; rmapwatch turns it on itself).
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (root, kernel 5.8+)")?;
    println!(
        "fork storm: {} x (fork + exit) of a process with 64 MiB touched in 50 VMAs; \
         {} alternated rounds of untraced / rmapwatch report / bpftrace peer",
        o.forks, o.rounds
    );
    let forks = o.forks;
    let s = run_series("fork storm", o.rounds, &bin, &peer, || fork_storm(forks))?;
    report("fork storm", &s, forks as f64);
    empty_floor(&bin, forks)?;
    for thp in [false, true] {
        let name = if thp {
            "fault storm (THP)"
        } else {
            "fault storm (4K)"
        };
        println!(
            "{name}: touch {} MiB of fresh anonymous memory page by page",
            o.fault_mib
        );
        let mib = o.fault_mib;
        let s = run_series(name, o.rounds, &bin, &peer, || fault_storm(mib, thp))?;
        report(name, &s, mib as f64);
    }
    Ok(())
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| -> anyhow::Result<u64> { Ok(f.get(i - 3).context("short stat")?.parse()?) };
    Ok(n(14)? + n(15)?)
}

/// rmapwatch at idle: the daemon's CPU and RSS over `secs` with the live
/// view's default refresh (a snapshot and a report every second), measured
/// on `rmapwatch report --interval 1` (the same work without a terminal).
///
/// # Errors
/// rmapwatch cannot be started.
pub fn idle(secs: u64) -> anyhow::Result<()> {
    let bin = rmapwatch_bin()?;
    let mut child = Command::new(&bin)
        .args(["report", "--json", "--interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = lines_of(child.stderr.take().context("no stderr")?);
    wait_for(&lines, "attached")?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let t0 = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let t1 = cpu_ticks(pid)?;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(i32::try_from(pid)?, libc::SIGINT) };
    child.wait()?;
    println!(
        "{:<44} {:>10.2} % of one core over {secs} s (refresh 1 s), RSS {rss}",
        "idle: rmapwatch daemon",
        (t1 - t0) as f64 / hz as f64 / secs as f64 * 100.0
    );
    Ok(())
}
