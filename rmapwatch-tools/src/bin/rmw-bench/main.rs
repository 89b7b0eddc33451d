//! rmw-bench: rmapwatch's benchmarks (run by `cargo xtask bench`). Each one
//! measures a baseline in the same invocation and prints medians, min/max
//! and ratios; nothing here asserts a time.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

mod adb;
mod child;
mod cost;
mod designs;
mod locks;
mod record;
mod soak;
mod stats;
mod storm;
mod synth;

use ratatui::{Terminal, backend::TestBackend};
use rmapwatch_engine::{
    account::Accounting,
    engine::{self, Engine},
    event::{Event, decode, encode},
    hooks::ProbeMode,
    input::Input,
    model::Options,
    snapshot, walk,
};
use rmapwatch_live::{
    kernel::{self, KernelFacts},
    loader::{Attach, Probes},
};
use rmapwatch_tui::state::{Action, App, Update};
use stats::{line, ratio, stats};
use synth::{Synth, facts, fork_storm_events, seeded, synthetic};

fn rss_kib() -> u64 {
    vm_kib("VmRSS:")
}

/// Render time with 10k processes against an empty dashboard.
fn bench_render(procs: u32, repeat: usize) {
    let snap = synthetic(procs, 4);
    let mut app = App::new(Duration::from_secs(1), None);
    for t in 0..3 {
        let e = seeded(&snap, t);
        app.update(Action::Update(Update::Frame(Box::new(e.frame()))));
    }
    let empty = App::new(Duration::from_secs(1), None);
    let mut term = Terminal::new(TestBackend::new(160, 48)).expect("test backend");
    let mut time = |a: &App| {
        (0..repeat)
            .map(|_| {
                let t = Instant::now();
                let _ = term.draw(|f| f.render_widget(a, f.area()));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect::<Vec<f64>>()
    };
    let base = stats(time(&empty));
    let full = stats(time(&app));
    line("render: empty dashboard, 160x48 (baseline)", "ms", base);
    line(&format!("render: {procs} processes, 160x48"), "ms", full);
    ratio("render: 10k processes vs empty", full.0, base.0);
}

/// A stream of events like a fork storm's: per fork, K clone + K fork AVC
/// and anon_vma allocations in the parent, a fork event, then the child's
/// frees.
fn event_stream(n: usize) -> Vec<Vec<u8>> {
    fork_storm_events(n).iter().map(encode).collect()
}

/// decode + accounting, per core, against decode alone.
fn bench_pipeline(n: usize, repeat: usize) {
    let events = event_stream(n);
    let mut decode_only = Vec::new();
    let mut full = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let mut sum = 0u64;
        for e in &events {
            if let Ok(Event::Alloc(s) | Event::Free(s)) = decode(e) {
                sum = sum.wrapping_add(s.ptr);
            }
        }
        std::hint::black_box(sum);
        decode_only.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        let mut acct = Accounting::default();
        let t = Instant::now();
        for e in &events {
            if let Ok(ev) = decode(e) {
                acct.apply(&ev);
            }
        }
        full.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(acct.events);
    }
    let (d, f) = (stats(decode_only), stats(full));
    line("pipeline: decode only (baseline)", "M events/s", d);
    line("pipeline: decode + accounting, one core", "M events/s", f);
    ratio("pipeline: full vs decode only", f.0, d.0);
}

/// UI loop latency (a key, then a render) while a collector thread ingests
/// at least 1M events/s and sends frames, against no ingest.
fn bench_ingest(keys: usize) {
    let snap = synthetic(2000, 4);
    let run = |ingest: bool| -> (Vec<f64>, f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let ingested = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Update>();
        let collector = ingest.then(|| {
            let (stop, ingested) = (stop.clone(), ingested.clone());
            let snap = snap.clone();
            std::thread::spawn(move || {
                let events = event_stream(1_000_000);
                let mut engine = seeded(&snap, 1);
                let mut last = Instant::now();
                let mut t = 3_000_000_000;
                'outer: loop {
                    for chunk in events.chunks(4096) {
                        let batch: Vec<Event> =
                            chunk.iter().filter_map(|e| decode(e).ok()).collect();
                        t += 1000;
                        let _ = engine.apply(Input::Events { t, events: batch });
                        ingested.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                    }
                    if last.elapsed() > Duration::from_millis(200) {
                        last = Instant::now();
                        let _ = tx.send(Update::Frame(Box::new(engine.frame())));
                    }
                }
            })
        });
        let mut app = App::new(Duration::from_secs(1), None);
        app.update(Action::Update(Update::Frame(Box::new(
            seeded(&snap, 1).frame(),
        ))));
        let mut term = Terminal::new(TestBackend::new(160, 48)).expect("test backend");
        let t0 = Instant::now();
        let lat = (0..keys)
            .map(|i| {
                let t = Instant::now();
                app.update(if i % 2 == 0 {
                    Action::Down(1)
                } else {
                    Action::Up(1)
                });
                while let Ok(u) = rx.try_recv() {
                    app.update(Action::Update(u));
                }
                let _ = term.draw(|f| f.render_widget(&app, f.area()));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        if let Some(c) = collector {
            let _ = c.join();
        }
        (lat, ingested.load(Ordering::Relaxed) as f64 / secs / 1e6)
    };
    let (base, _) = run(false);
    let (loaded, rate) = run(true);
    let p99 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() * 99 / 100]
    };
    line(
        "ingest: key + render, no ingest (baseline)",
        "ms",
        stats(base.clone()),
    );
    line(
        "ingest: key + render while ingesting",
        "ms",
        stats(loaded.clone()),
    );
    println!(
        "{:<44} p99    {:>10.3} ms vs {:.3} ms baseline",
        "ingest: UI latency",
        p99(loaded),
        p99(base)
    );
    println!(
        "{:<44}        {:>10.2} M events/s",
        "ingest: collector rate meanwhile", rate
    );
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Memory and time for 1M VMAs of state in 10k processes, through the
/// daemon's own path: the iterator's records (generated as they are read,
/// as the kernel produces them) streamed through decoding, the model and
/// the seeding of the accounting, then a second walk as each refresh does.
fn bench_footprint() {
    rmapwatch_live::source::tune_allocator();
    let (procs, per) = (10_000, 100);
    let before = rss_kib();
    let mut engine = Engine::new(engine::Options::default());
    engine
        .apply(Input::Facts(Box::new(facts())))
        .expect("facts");
    // As the live source does before the seeding walk.
    engine
        .apply(Input::Slab(rmapwatch_engine::input::SlabCounts {
            anon_vma: Some(1_000_000),
            anon_vma_chain: Some(1_250_000),
            shrunk: true,
        }))
        .expect("slab");
    let t = Instant::now();
    let mut clock = 1_000_000;
    walk_through(&mut engine, Synth::new(procs, per), &mut clock);
    let seed_s = t.elapsed().as_secs_f64();
    let r = engine.report(false);
    let vmas = r.model.as_ref().map_or(0, |m| m.snapshot.stats.vmas);
    let after_seed = rss_kib();
    let peak_seed = vm_kib("VmHWM:");
    let mut refresh = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        walk_through(&mut engine, Synth::new(procs, per), &mut clock);
        refresh.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let after = rss_kib();
    let peak = vm_kib("VmHWM:");
    let pass = stats(refresh).0;
    println!(
        "footprint: {vmas} VMAs / {procs} processes, {} anon_vma + {} AVC owned",
        r.live.anon_vma.objects, r.live.anon_vma_chain.objects
    );
    println!(
        "{:<44}        {:>10} MiB (owner table {} MiB; peak RSS while seeding {} MiB)",
        "footprint: state after seeding",
        (after_seed - before) / 1024,
        engine.accounting().owner_table_bytes() >> 20,
        peak_seed / 1024
    );
    println!(
        "{:<44}        {:>10} MiB (baseline process {} MiB, peak {} MiB)",
        "footprint: RSS after 3 refresh walks",
        after / 1024,
        before / 1024,
        peak / 1024
    );
    println!(
        "{:<44}        {:>10.1} ms seed walk, refresh walk {:.1} ms median (user space: generating \
         the records, decode + engine)",
        "footprint: time",
        seed_s * 1e3,
        pass
    );
    println!(
        "{:<44}        {:>10.1} %  of a core per refresh walk at 1 s (user space); the live view \
         caps walks at 5 % of wall time: model refreshed every {:.1} s at this size",
        "footprint: CPU",
        pass / 10.0,
        (pass / 1e3 / 0.05).max(1.0)
    );
    std::hint::black_box(engine.walks());
}

/// One walk of the iterator's records, decoded and batched as the live
/// source does, into the engine.
fn walk_through(engine: &mut Engine, mut records: impl std::io::Read, clock: &mut u64) {
    *clock += 1_000_000;
    engine
        .apply(Input::WalkBegin { t: *clock })
        .expect("walk begins");
    let mut decoder = snapshot::Decoder::new();
    let mut buf = vec![0u8; snapshot::CHUNK];
    let mut vmas = Vec::new();
    let mut comms = Vec::new();
    let mut named = std::collections::HashSet::new();
    loop {
        let n = records.read(&mut buf).expect("synthetic records");
        if n == 0 {
            break;
        }
        decoder
            .feed(&buf[..n], |v, comm| {
                if named.insert(v.tgid) {
                    comms.push((v.tgid, rmapwatch_engine::event::Comm(*comm).text()));
                }
                vmas.push(v.clone());
            })
            .expect("synthetic records decode");
        if vmas.len() >= 1024 {
            engine
                .apply(Input::WalkVmas {
                    comms: std::mem::take(&mut comms),
                    parents: Vec::new(),
                    vmas: std::mem::take(&mut vmas),
                })
                .expect("vmas");
        }
    }
    engine
        .apply(Input::WalkVmas {
            comms,
            parents: Vec::new(),
            vmas,
        })
        .expect("vmas");
    let counts = decoder.finish().expect("synthetic records end well");
    *clock += 1_000_000;
    engine
        .apply(Input::WalkEnd {
            t: *clock,
            counts,
            error: None,
        })
        .expect("walk ends");
}

fn spawn_workload(exe: &PathBuf, regions: u32) -> (Child, u32) {
    let mut c = Command::new(exe)
        .args([
            "--regions",
            &regions.to_string(),
            "--children",
            "0",
            "--noise",
            "0",
            "--hold",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("rmw-workload next to rmw-bench");
    let mut out = BufReader::new(c.stdout.take().expect("stdout"));
    let mut l = String::new();
    while out.read_line(&mut l).unwrap_or(0) > 0 && !l.starts_with("ready") {
        l.clear();
    }
    let pid = l
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (c, pid)
}

/// The snapshot with 100k+ VMAs spread over processes, against reading the
/// same processes' /proc/PID/maps.
fn bench_snapshot(procs: u32, regions: u32, repeat: usize) -> anyhow::Result<()> {
    kernel::check_privileges()?;
    let facts = KernelFacts::read(
        std::path::Path::new("/sys/kernel/btf/vmlinux"),
        rmapwatch_engine::hooks::SlabPath::Auto,
    )?;
    let exe = std::env::current_exe()?.with_file_name("rmw-workload");
    let workloads: Vec<(Child, u32)> = (0..procs).map(|_| spawn_workload(&exe, regions)).collect();
    let mut probes = Probes::load(&facts, ProbeMode::Tracepoint, None, Attach::SnapshotOnly)?;
    let mut walk = Vec::new();
    let mut read = Vec::new();
    let mut vmas = 0;
    for i in 0..repeat {
        let t = Instant::now();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut probes.snapshot_reader()?, &mut raw)?;
        read.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(raw);
        let t = Instant::now();
        let _ = i;
        let w = walk::stream(
            probes.snapshot_reader()?,
            Options::default(),
            0,
            None,
            |_, _, _| {},
        )?;
        walk.push(t.elapsed().as_secs_f64() * 1e3);
        vmas = w.counts.vmas;
    }
    let mut maps = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let mut lines = 0;
        for (_, pid) in &workloads {
            lines += std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .map_or(0, |s| s.lines().count());
        }
        std::hint::black_box(lines);
        maps.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(probes);
    for (mut c, _) in workloads {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let (w, b, r) = (stats(walk), stats(maps), stats(read));
    println!("snapshot: {vmas} VMAs in {procs} workload processes plus the rest of the system");
    line(
        "snapshot: /proc/PID/maps of the workloads (baseline)",
        "ms",
        b,
    );
    line("snapshot: iter/task_vma walk (kernel) only", "ms", r);
    line("snapshot: walk streamed through decode + model", "ms", w);
    ratio("snapshot: walk vs /proc maps", w.0, b.0);
    Ok(())
}

/// rmapwatch's benchmarks. Each measures its baseline in the same
/// invocation and prints medians, min/max and ratios; none asserts a time.
/// The kernel ones (idle, locks, cost, storms, adb, record, soak, snapshot,
/// pagemap)
/// need root and a machine where nothing else runs.
#[derive(clap::Parser)]
#[command(
    name = "rmw-bench",
    version,
    after_help = "Without a benchmark: all of them but adb and soak.\n\
                  `cargo xtask bench NAME [OPTIONS]` builds them in release mode and runs one.\n\
                  Exit status: 0 done, 1 a benchmark failed (said on stderr), 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    bench: Option<Bench>,
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Minutes: a positive, finite number.
fn minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        Ok(_) => Err("must be a positive number of minutes".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::Subcommand)]
enum Bench {
    /// The dashboard's render with 10,000 processes against an empty one.
    Render,
    /// Events per second through decode and the engine, one core.
    Pipeline,
    /// The UI thread's latency while events are ingested.
    Ingest,
    /// The state's memory with 1M VMAs (through the daemon's own code).
    Footprint,
    /// The iterator walk of 10,000 VMAs against reading /proc/PID/maps (root).
    Snapshot,
    /// The designs' model over a synthetic walk.
    Designs {
        /// VMAs of the synthetic system.
        #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
        vmas: usize,
        /// Rounds (the median is printed).
        #[arg(long, default_value_t = 9, value_parser = at_least_one)]
        rounds: usize,
    },
    /// Reading pagemap for the designs' page counts (root).
    Pagemap {
        /// GiB mapped.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        gib: usize,
        /// VMAs they are mapped in.
        #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
        vmas: usize,
        /// Rounds.
        #[arg(long, default_value_t = 9, value_parser = at_least_one)]
        rounds: usize,
    },
    /// The designs' view rendered.
    DesignsRender {
        /// Rounds.
        #[arg(long, default_value_t = 9, value_parser = at_least_one)]
        rounds: usize,
    },
    /// Replaying a recording of 5M events.
    Replay,
    /// Recording during fork storms against not recording (root).
    Record {
        /// Rounds.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        rounds: usize,
        /// Forks per storm.
        #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
        forks: usize,
    },
    /// rmapwatch's CPU at idle, 20 s (root).
    Idle,
    /// contention_begin/end against empty programs on the same tracepoints
    /// while siblings fork from a shared parent (root).
    Locks {
        /// Rounds.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        rounds: usize,
        /// Forks of each of the 8 siblings.
        #[arg(long, default_value_t = 200, value_parser = at_least_one)]
        forks: usize,
        /// Written VMAs the siblings share with their parent.
        #[arg(long, default_value_t = 128, value_parser = at_least_one)]
        regions: usize,
    },
    /// The slab programs' ns/run against the empty program and a bpftrace
    /// peer in fork and fault storms, and the cost split's stage table
    /// (root; issue 24's ratios). Keeps the floor for rmapwatch's live ratio.
    Cost {
        /// Ratio rounds: rmapwatch as a user runs it (the ratios).
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        rounds: usize,
        /// Split rounds: with the cost split's variants (the stage table); 0: none.
        #[arg(long, default_value_t = 3)]
        split_rounds: usize,
        /// Forks per fork storm.
        #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
        forks: usize,
        /// MiB per fault storm.
        #[arg(long, default_value_t = 512, value_parser = at_least_one)]
        fault_mib: usize,
        /// rmapwatch's ring buffer in KiB (default: rmapwatch's own).
        #[arg(long, value_parser = at_least_one)]
        ring_kb: Option<usize>,
    },
    /// The cost of --adb, through the adb stand-in on this host (root).
    Adb {
        /// Seconds of the idle phase.
        #[arg(long, default_value_t = 20, value_parser = at_least_one)]
        secs: usize,
        /// Forks of the storm phase.
        #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
        forks: usize,
    },
    /// Fork and fault storms: untraced, rmapwatch and bpftrace, rotated (root).
    Storms {
        /// Rounds.
        #[arg(long, default_value_t = 9, value_parser = at_least_one)]
        rounds: usize,
        /// Forks per fork storm.
        #[arg(long, default_value_t = 5000, value_parser = at_least_one)]
        forks: usize,
        /// MiB per fault storm.
        #[arg(long, default_value_t = 2048, value_parser = at_least_one)]
        fault_mib: usize,
    },
    /// Churn for minutes against 1M VMAs: RSS, drift and lag over time (root).
    Soak {
        /// How long to churn.
        #[arg(long, default_value_t = 10.0, value_parser = minutes)]
        minutes: f64,
        /// VMAs the holder maps.
        #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one)]
        vmas: usize,
        /// Through the adb stand-in (`rmapwatch --adb SERIAL serve`).
        #[arg(long)]
        adb: bool,
    },
    /// All of them but adb and soak, with their defaults.
    All,
}

fn main() -> ExitCode {
    // Bad usage: clap's message and exit status 2, before anything runs.
    let cli = <Cli as clap::Parser>::parse();
    let _ = std::io::stdout().flush();
    let result = (|| -> anyhow::Result<()> {
        match cli.bench.unwrap_or(Bench::All) {
            Bench::Render => bench_render(10_000, 50),
            Bench::Pipeline => bench_pipeline(5_000_000, 5),
            Bench::Ingest => bench_ingest(400),
            Bench::Footprint => bench_footprint(),
            Bench::Snapshot => bench_snapshot(5, 10_000, 9)?,
            Bench::Designs { vmas, rounds } => designs::walk_cost(vmas as u64, rounds),
            Bench::Pagemap { gib, vmas, rounds } => {
                designs::pagemap_cost(gib as u64, vmas as u64, rounds)?;
            }
            Bench::DesignsRender { rounds } => designs::render_cost(10_000, 50, rounds),
            Bench::Idle => storm::idle(20)?,
            Bench::Locks {
                rounds,
                forks,
                regions,
            } => locks::run(rounds, forks, regions)?,
            Bench::Cost {
                rounds,
                split_rounds,
                forks,
                fault_mib,
                ring_kb,
            } => cost::run(rounds, split_rounds, forks, fault_mib, ring_kb)?,
            Bench::Adb { secs, forks } => adb::run(secs, forks)?,
            Bench::Replay => record::replay(5_000_000, 5)?,
            Bench::Soak { minutes, vmas, adb } => soak::run(&soak::Opts { minutes, vmas, adb })?,
            Bench::Record { rounds, forks } => record::record(rounds, forks)?,
            Bench::Storms {
                rounds,
                forks,
                fault_mib,
            } => storm::run(&storm::Opts {
                rounds,
                forks,
                fault_mib,
            })?,
            Bench::All => {
                bench_pipeline(5_000_000, 5);
                bench_render(10_000, 50);
                bench_ingest(400);
                bench_snapshot(5, 10_000, 9)?;
                bench_footprint();
                designs::walk_cost(100_000, 9);
                designs::pagemap_cost(1, 1024, 9)?;
                designs::render_cost(10_000, 50, 9);
                record::replay(5_000_000, 5)?;
                record::record(5, 2000)?;
                storm::idle(20)?;
                locks::run(5, 200, 128)?;
                cost::run(5, 3, 1000, 512, None)?;
                storm::run(&storm::Opts {
                    rounds: 9,
                    forks: 5000,
                    fault_mib: 2048,
                })?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmw-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
