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

mod storm;

use ratatui::{Terminal, backend::TestBackend};
use rmapwatch_common::{Event, kind, object, site};
use rmapwatch_engine::{
    account::Accounting,
    decode::{decode, encode},
    facts::Sizes,
    hooks::{HookStatus, ProbeMode},
    model::Options,
    report::Report,
    snapshot::{self, Snapshot, Vma},
    walk,
};
use rmapwatch_live::{
    kernel::{self, KernelFacts},
    loader::{Attach, Probes},
};
use rmapwatch_tui::state::{Action, App, Frame, Update};

const SIZES: Sizes = Sizes {
    anon_vma: 104,
    anon_vma_chain: 64,
};

/// Median, min, max of samples.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn line(name: &str, unit: &str, v: (f64, f64, f64)) {
    println!(
        "{name:<44} median {:>10.3} {unit}  (min {:.3}, max {:.3})",
        v.0, v.1, v.2
    );
}

fn ratio(name: &str, a: f64, b: f64) {
    println!("{name:<44} ratio  {:>10.2}x", a / b);
}

fn rss_kib() -> u64 {
    vm_kib("VmRSS:")
}

/// A synthetic snapshot: `procs` processes with `vmas` VMAs each; every
/// fourth process is a fork child (chains of two) of the one before.
fn synthetic(procs: u32, vmas: u64) -> Snapshot {
    let mut s = Snapshot::default();
    let mut g = Synth::new(procs, vmas);
    while let Some(v) = g.next_vma() {
        s.push(&v, &comm_of(v.tgid));
    }
    s
}

fn comm_of(p: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    let name = format!("proc-{p}");
    c[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    c
}

/// Generates the synthetic system one VMA at a time: every fourth process
/// is a fork child of the one before (its VMAs link the parent's anon_vmas).
struct Synth {
    procs: u32,
    vmas: u64,
    p: u32,
    i: u64,
    next: u64,
    parent_avs: Vec<u64>,
    mine: Vec<u64>,
    /// Encoded records not yet read.
    pending: Vec<u8>,
}

impl Synth {
    fn new(procs: u32, vmas: u64) -> Self {
        Self {
            procs,
            vmas,
            p: 1,
            i: 0,
            next: 0x1000,
            parent_avs: Vec::new(),
            mine: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 0x40;
        0xffff_8000_0000_0000 + self.next
    }

    fn next_vma(&mut self) -> Option<Vma> {
        if self.i == self.vmas {
            self.i = 0;
            self.p += 1;
            self.parent_avs = std::mem::take(&mut self.mine);
        }
        if self.p > self.procs {
            return None;
        }
        let (p, i) = (self.p, self.i);
        self.i += 1;
        let child = p % 4 == 0;
        let av = self.id();
        let mut chain = Vec::new();
        let parent = if child {
            self.parent_avs.get(i as usize).copied()
        } else {
            None
        };
        if let Some(pav) = parent {
            chain.push((self.id(), pav));
        }
        chain.push((self.id(), av));
        self.mine.push(av);
        Some(Vma {
            tgid: p,
            mm: u64::from(p),
            addr: self.id(),
            start: i * 0x1000,
            end: i * 0x1000 + 0x1000,
            anon_vma: av,
            av_root: parent.unwrap_or(av),
            av_parent: parent.unwrap_or(av),
            av_num_children: u64::from(!child),
            chain,
            ..Vma::default()
        })
    }
}

/// The iterator's output for the synthetic system, produced as it is read
/// (as the kernel's is): nothing of it is held.
impl std::io::Read for Synth {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.len() < buf.len() {
            let Some(v) = self.next_vma() else { break };
            snapshot::encode(&v, &comm_of(v.tgid), &mut self.pending);
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

fn hooks() -> Vec<HookStatus> {
    rmapwatch_engine::hooks::tracepoint_only("fentry: refused")
}

fn synthetic_report(snap: &Snapshot, acct: &Accounting, t: f64) -> Report {
    rmapwatch_engine::report::offline(snap, acct, &kernel::current_id(), &hooks(), t, SIZES)
}

fn seeded(snap: &Snapshot) -> Accounting {
    let mut acct = Accounting::default();
    let w = walk::of_snapshot(snap, Options::default(), None, |p, t, k| {
        acct.own_existing(p, t, k);
    });
    acct.name_existing(w.procs.into_iter().map(|(pid, p)| (pid, p.comm)));
    acct
}

/// Render time with 10k processes against an empty dashboard.
fn bench_render(procs: u32, repeat: usize) {
    let snap = synthetic(procs, 4);
    let acct = seeded(&snap);
    let mut app = App::new(Duration::from_secs(1), None);
    for t in 0..3 {
        let report = synthetic_report(&snap, &acct, f64::from(t));
        app.update(Action::Update(Update::Frame(Box::new(Frame {
            report,
            detail: None,
        }))));
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
    let mut out = Vec::with_capacity(n);
    let mut ptr = 0xffff_8880_0000_0000_u64;
    let mut child = 10_000;
    while out.len() < n {
        child += 1;
        let mut ptrs = Vec::new();
        for _ in 0..16 {
            for (obj, s) in [
                (object::AVC, site::CLONE),
                (object::ANON_VMA, site::FORK),
                (object::AVC, site::FORK),
            ] {
                ptr += 64;
                ptrs.push((ptr, obj));
                out.push(encode(&Event {
                    kind: kind::ALLOC,
                    object: obj,
                    site: s,
                    flags: rmapwatch_common::flags::IN_FORK,
                    tid: 100,
                    tgid: 100,
                    ptr,
                    ..Event::default()
                }));
            }
        }
        out.push(encode(&Event {
            kind: kind::FORK,
            tid: 100,
            tgid: 100,
            child_tid: child,
            child_tgid: child,
            ..Event::default()
        }));
        for (p, obj) in ptrs {
            out.push(encode(&Event {
                kind: kind::FREE,
                object: obj,
                site: if obj == object::AVC {
                    site::UNLINK
                } else {
                    site::PUT
                },
                tid: child,
                tgid: child,
                ptr: p,
                ..Event::default()
            }));
        }
    }
    out.truncate(n);
    out
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
            if let Ok(ev) = decode(e) {
                sum = sum.wrapping_add(ev.ptr);
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
    let acct = seeded(&snap);
    let report = synthetic_report(&snap, &acct, 1.0);
    let run = |ingest: bool| -> (Vec<f64>, f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let ingested = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Update>();
        let collector = ingest.then(|| {
            let (stop, ingested) = (stop.clone(), ingested.clone());
            let snap = snap.clone();
            std::thread::spawn(move || {
                let events = event_stream(1_000_000);
                let mut acct = seeded(&snap);
                let mut last = Instant::now();
                'outer: loop {
                    for e in &events {
                        if let Ok(ev) = decode(e) {
                            acct.apply(&ev);
                        }
                        ingested.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                    }
                    if last.elapsed() > Duration::from_millis(200) {
                        last = Instant::now();
                        let r = synthetic_report(&snap, &acct, 2.0);
                        let _ = tx.send(Update::Frame(Box::new(Frame {
                            report: r,
                            detail: None,
                        })));
                    }
                }
            })
        });
        let mut app = App::new(Duration::from_secs(1), None);
        app.update(Action::Update(Update::Frame(Box::new(Frame {
            report: synthetic_report(&snap, &acct, 1.0),
            detail: None,
        }))));
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
    let _ = report;
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
    rmapwatch_live::daemon::tune_allocator();
    let (procs, per) = (10_000, 100);
    let before = rss_kib();
    let mut acct = Accounting::default();
    let t = Instant::now();
    // As the daemon does from the slab's object counts.
    let (avs, avcs) = (1_000_000, 1_250_000);
    acct.reserve_owners(avs + avcs);
    let w = walk::stream(
        Synth::new(procs, per),
        Options::default(),
        avs,
        None,
        |p, t, k| {
            acct.own_existing(p, t, k);
        },
    )
    .expect("synthetic stream decodes");
    let seed_s = t.elapsed().as_secs_f64();
    acct.name_existing(w.procs.iter().map(|(&pid, p)| (pid, p.comm.clone())));
    let vmas = w.counts.vmas;
    let model = w;
    let after_seed = rss_kib();
    let peak_seed = vm_kib("VmHWM:");
    let mut refresh = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let w = walk::stream(
            Synth::new(procs, per),
            Options::default(),
            avs,
            None,
            |_, _, _| {},
        )
        .expect("synthetic stream decodes");
        refresh.push(t.elapsed().as_secs_f64() * 1e3);
        last = Some(w.counts);
    }
    let after = rss_kib();
    let peak = vm_kib("VmHWM:");
    let pass = stats(refresh).0;
    println!(
        "footprint: {vmas} VMAs / {procs} processes, {} anon_vma + {} AVC owned",
        model.estimate.system.actual.anon_vma, model.estimate.system.actual.avc
    );
    println!(
        "{:<44}        {:>10} MiB (owner table {} MiB; peak RSS while seeding {} MiB)",
        "footprint: state after seeding",
        (after_seed - before) / 1024,
        acct.owner_table_bytes() >> 20,
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
         the records, decode + model)",
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
    std::hint::black_box((acct.events, model.estimate.system, last));
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
    let facts = KernelFacts::read(std::path::Path::new("/sys/kernel/btf/vmlinux"))?;
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

/// `--name N` from the command line, else `default`.
fn arg_num(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str);
    let _ = std::io::stdout().flush();
    let result = (|| -> anyhow::Result<()> {
        match which {
            "render" => bench_render(10_000, 50),
            "pipeline" => bench_pipeline(5_000_000, 5),
            "ingest" => bench_ingest(400),
            "footprint" => bench_footprint(),
            "snapshot" => bench_snapshot(5, 10_000, 9)?,
            "idle" => storm::idle(20)?,
            "storms" => storm::run(&storm::Opts {
                rounds: arg_num(&args, "--rounds", 9),
                forks: arg_num(&args, "--forks", 5000),
                fault_mib: arg_num(&args, "--fault-mib", 2048),
            })?,
            "all" => {
                bench_pipeline(5_000_000, 5);
                bench_render(10_000, 50);
                bench_ingest(400);
                bench_snapshot(5, 10_000, 9)?;
                bench_footprint();
                storm::idle(20)?;
                storm::run(&storm::Opts {
                    rounds: 9,
                    forks: 5000,
                    fault_mib: 2048,
                })?;
            }
            other => anyhow::bail!(
                "unknown benchmark {other}: render|pipeline|ingest|footprint|snapshot|idle|storms|all"
            ),
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
