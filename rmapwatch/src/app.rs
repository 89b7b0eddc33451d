//! The flows: `report` (attach, seed from a snapshot, collect, re-snapshot
//! for the model and drift, detach, print) and the live view (the same
//! collector on a background thread, feeding the TUI over a channel).
use std::{
    collections::BTreeMap,
    io::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rmapwatch_common::{hook, object, stat};

use crate::{
    account::{Accounting, RmapVmas},
    daemon,
    hooks::HookMode,
    inspect::{self, Inspection},
    kernel::KernelFacts,
    loader::{Attach, Probes},
    log,
    model::{self, Estimate, Objects, Options},
    report::{Context, ModelView, Report, Resync, SnapshotStats},
    snapshot::Snapshot,
    tui,
};

/// What the report and live commands were asked.
pub struct RunOptions {
    /// How long to count.
    pub duration: Option<Duration>,
    /// Interim reports / refresh interval.
    pub interval: Option<Duration>,
    /// JSON output.
    pub json: bool,
    /// Processes in the text report.
    pub top: usize,
    /// Model options.
    pub model: Options,
    /// Probe mode.
    pub probe_mode: crate::hooks::ProbeMode,
    /// Ring buffer bytes.
    pub ring_bytes: Option<u32>,
}

/// The latest snapshot and what the model made of it.
pub struct ModelState {
    /// The estimate.
    pub estimate: Estimate,
    /// Actual per process, from the snapshot.
    pub per_process: BTreeMap<u32, Objects>,
    /// VMAs per process.
    pub vmas: BTreeMap<u32, u64>,
    /// When it was taken.
    pub taken_at: Instant,
    /// Walk statistics.
    pub stats: SnapshotStats,
    /// Slab anon_vma objects (final report only).
    pub slab_anon_vma: Option<u64>,
}

impl ModelState {
    /// Runs the model over a snapshot.
    #[must_use]
    pub fn new(snap: &Snapshot, stats: SnapshotStats, opts: Options) -> Self {
        let estimate = model::estimate(snap, opts);
        let per_process = estimate
            .processes
            .iter()
            .map(|(&pid, p)| (pid, p.actual))
            .collect();
        let vmas = snap
            .procs
            .values()
            .map(|p| (p.pid, p.vmas.len() as u64))
            .collect();
        Self {
            estimate,
            per_process,
            vmas,
            taken_at: Instant::now(),
            stats,
            slab_anon_vma: None,
        }
    }

    /// The view a report needs.
    #[must_use]
    pub fn view(&self) -> ModelView<'_> {
        ModelView {
            estimate: &self.estimate,
            snapshot_actual: self.estimate.system.actual,
            snapshot_processes: &self.per_process,
            vmas: &self.vmas,
            age_s: self.taken_at.elapsed().as_secs_f64(),
            stats: self.stats,
            slab_anon_vma: self.slab_anon_vma,
        }
    }
}

/// Takes and decodes a snapshot.
///
/// # Errors
/// The iterator is unavailable or its output is corrupt.
pub fn take_snapshot(probes: &mut Probes, taken: u64) -> anyhow::Result<(Snapshot, SnapshotStats)> {
    let t = Instant::now();
    let bytes = probes.snapshot_bytes()?;
    let snap = Snapshot::parse(&bytes).context("decoding the snapshot")?;
    let stats = SnapshotStats {
        taken,
        vmas: snap.vmas.len() as u64,
        processes: snap.procs.len() as u64,
        duplicate_vmas: snap.duplicate_vmas,
        short_chains: snap.short_chains,
        truncated_chains: snap.truncated_chains,
        walk_ms: (t.elapsed().as_secs_f64() * 1e5).round() / 100.0,
    };
    Ok((snap, stats))
}

/// Seeds the accounting's ownership from a snapshot.
pub fn seed(acct: &mut Accounting, snap: &Snapshot) {
    let comms = snap.procs.values().map(|p| (p.pid, p.comm.clone()));
    acct.seed(owned_objects(snap), comms);
}

/// `(address, owner tgid, object kind)` of every object in a snapshot.
fn owned_objects(snap: &Snapshot) -> impl Iterator<Item = (u64, u32, u32)> {
    let (av, avc) = snap.owners();
    av.into_iter()
        .map(|(p, t)| (p, t, object::ANON_VMA))
        .chain(avc.into_iter().map(|(p, t)| (p, t, object::AVC)))
}

/// `/sys/kernel/slab/anon_vma/objects` after flushing per-CPU slabs and
/// sheaves (without the shrink it counts their free objects as in use).
#[must_use]
pub fn slab_anon_vma_objects() -> Option<u64> {
    let _ = std::fs::write("/sys/kernel/slab/anon_vma/shrink", "1");
    std::fs::read_to_string("/sys/kernel/slab/anon_vma/objects")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A counting session: the probes' results, the accounting and the model.
pub struct Session<'a> {
    facts: &'a KernelFacts,
    opts: Options,
    /// The latest model, if snapshots work.
    pub model: Option<ModelState>,
    /// The latest snapshot (for the detail view).
    pub snapshot: Option<Snapshot>,
    taken: u64,
    /// New anonymous folios per process and VMA, if that hook is attached.
    rmap: Option<RmapVmas>,
    /// Dropped events already accounted for by a re-seed.
    dropped_seen: u64,
    resync: Resync,
}

impl<'a> Session<'a> {
    /// Attaches and seeds: an object allocated between attach and snapshot
    /// is both queued and in the snapshot, and the accounting counts it once.
    ///
    /// # Errors
    /// Loading or attaching fails.
    pub fn start(
        facts: &'a KernelFacts,
        run: &RunOptions,
        acct: &mut Accounting,
    ) -> anyhow::Result<(Self, Probes)> {
        let mut probes = Probes::load(facts, run.probe_mode, run.ring_bytes, Attach::All)?;
        for w in &probes.warnings {
            log::warn(w);
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
            log::info(&format!(
                "hook {:<26} {}{via}{why}",
                h.name,
                h.mode.as_str()
            ));
        }
        let mut s = Self {
            facts,
            opts: run.model,
            model: None,
            snapshot: None,
            taken: 0,
            rmap: probes
                .hooks
                .iter()
                .any(|h| {
                    h.id == hook::RMAP_NEW && matches!(h.mode, HookMode::Fentry | HookMode::Kprobe)
                })
                .then(RmapVmas::default),
            dropped_seen: 0,
            resync: Resync::default(),
        };
        match take_snapshot(&mut probes, 1) {
            Ok((snap, stats)) => {
                seed(acct, &snap);
                log::info(&format!(
                    "snapshot: {} processes, {} VMAs in {:.1} ms",
                    stats.processes, stats.vmas, stats.walk_ms
                ));
                s.taken = 1;
                s.model = Some(ModelState::new(&snap, stats, s.opts));
                s.snapshot = Some(snap);
            }
            Err(e) => log::warn(&format!("{e:#}; no live or lazy figures")),
        }
        Ok((s, probes))
    }

    /// Takes a fresh snapshot for the model (if snapshots work) and reads
    /// the per-VMA rmap counts (if hooked), pruning exited processes from
    /// the kernel's map.
    pub fn refresh(&mut self, probes: &mut Probes, acct: &mut Accounting, with_slab: bool) {
        let dropped = probes
            .stats()
            .ok()
            .and_then(|s| s.get(stat::DROPPED as usize).copied())
            .unwrap_or(0);
        if dropped > self.dropped_seen {
            self.dropped_seen = dropped;
            self.resync.degraded = true;
        }
        if let Some(rmap) = &mut self.rmap {
            match probes.rmap_vmas() {
                Ok(current) => {
                    rmap.update(current);
                    let gone =
                        rmap.retire(|tgid| acct.processes.get(&tgid).is_some_and(|p| p.exited));
                    if let Err(e) = probes.forget_rmap_vmas(&gone) {
                        log::warn(&format!("pruning RMAP_VMAS: {e:#}"));
                    }
                }
                Err(e) => log::warn(&format!("{e:#}")),
            }
        }
        if self.model.is_none() {
            return;
        }
        match take_snapshot(probes, self.taken + 1) {
            Ok((snap, stats)) => {
                self.taken += 1;
                let mut m = ModelState::new(&snap, stats, self.opts);
                if with_slab {
                    m.slab_anon_vma = slab_anon_vma_objects();
                }
                if self.resync.degraded {
                    // Events were lost: the live counts are the kernel's again.
                    let live = |o: u32| acct.objects[o as usize].live.cast_signed();
                    let actual = m.estimate.system.actual;
                    let before = (
                        live(object::ANON_VMA) - actual.anon_vma.cast_signed(),
                        live(object::AVC) - actual.avc.cast_signed(),
                    );
                    acct.reseed(owned_objects(&snap));
                    self.resync = Resync {
                        degraded: false,
                        resyncs: self.resync.resyncs + 1,
                        drift_before_last: Some(before),
                    };
                    log::warn(&format!(
                        "{dropped} events dropped so far (ring buffer full): live counts re-seeded \
                         from a fresh snapshot (they were off by {:+} anon_vma, {:+} AVC)",
                        before.0, before.1
                    ));
                }
                self.model = Some(m);
                self.snapshot = Some(snap);
            }
            Err(e) => log::warn(&format!("snapshot: {e:#}")),
        }
    }

    /// Builds a report.
    #[must_use]
    pub fn report(
        &self,
        acct: &Accounting,
        probes: &Probes,
        elapsed: Duration,
        done: bool,
    ) -> Report {
        let stats = probes.stats().unwrap_or_default();
        let programs = probes.program_stats();
        Report::build(
            acct,
            &Context {
                kernel: &self.facts.id,
                hooks: &probes.hooks,
                fork_window: probes.fork_window,
                stats: &stats,
                duration_s: elapsed.as_secs_f64(),
                anon_vma_size: self.facts.layout.anon_vma_size,
                avc_size: self.facts.layout.avc_size,
                done,
                sizes: self.facts.sizes,
                model: self.model.as_ref().map(ModelState::view),
                rmap_vmas: self.rmap.as_ref(),
                programs: programs.as_ref(),
                resync: self.resync,
            },
        )
    }

    /// The inspection of one process from the latest snapshot.
    #[must_use]
    pub fn inspect(&self, pid: u32) -> Option<Inspection> {
        let (snap, m) = (self.snapshot.as_ref()?, self.model.as_ref()?);
        snap.procs.contains_key(&pid).then(|| {
            inspect::inspect(
                snap,
                &m.estimate,
                pid,
                &inspect::map_paths(pid),
                self.facts.sizes,
            )
        })
    }
}

fn counting(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "until Ctrl-C".to_owned(),
        |d| format!("for {:.1} s", d.as_secs_f64()),
    )
}

/// The `report` command.
///
/// # Errors
/// Loading, attaching, or the collector fails.
pub async fn report(facts: &KernelFacts, run: &RunOptions) -> anyhow::Result<()> {
    let mut signals = daemon::Signals::install(None)?;
    let mut acct = Accounting::default();
    let (mut session, mut probes) = Session::start(facts, run, &mut acct)?;
    log::info(&format!("attached; counting {}", counting(run.duration)));
    let print = |r: &Report| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if run.json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", r.to_text(run.top))?;
        }
        out.flush()?;
        Ok(())
    };
    let start = Instant::now();
    let stop = daemon::collect(
        &mut probes,
        &mut acct,
        &mut signals,
        run.duration,
        run.interval,
        |a, p, el| {
            session.refresh(p, a, false);
            if let Err(e) = print(&session.report(a, p, el, false)) {
                log::warn(&format!("{e:#}"));
            }
        },
    )
    .await?;
    // A fresh snapshot for the final model and the drift check.
    session.refresh(&mut probes, &mut acct, true);
    let final_report = session.report(&acct, &probes, start.elapsed(), true);
    drop(probes); // detach before printing: nothing stays loaded
    log::info(&format!("stopped ({stop:?}); programs detached"));
    print(&final_report)
}

/// The live view: `sudo rmapwatch`.
///
/// # Errors
/// Not a terminal, loading or attaching fails, or the terminal fails.
pub fn live(facts: &KernelFacts, run: &RunOptions, log_path: &str) -> anyhow::Result<()> {
    tui::check_terminal()?;
    let delay = run.interval.unwrap_or(Duration::from_secs(1));
    log::to_file(log_path).with_context(|| format!("opening the log file {log_path}"))?;
    eprintln!("rmapwatch: attaching (log: {log_path})...");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
    let mut signals = runtime.block_on(async { daemon::Signals::install(Some(quit_rx)) })?;
    let mut acct = Accounting::default();
    let (mut session, mut probes) =
        runtime.block_on(async { Session::start(facts, run, &mut acct) })?;
    let (update_tx, update_rx) = mpsc::channel();
    let (detail_tx, detail_rx) = mpsc::channel::<Option<u32>>();
    let send_frame = move |session: &Session<'_>,
                           a: &Accounting,
                           p: &Probes,
                           el: Duration,
                           detail: Option<u32>,
                           tx: &mpsc::Sender<tui::state::Update>| {
        let frame = tui::state::Frame {
            report: session.report(a, p, el, false),
            detail: detail.and_then(|pid| session.inspect(pid)),
        };
        let _ = tx.send(tui::state::Update::Frame(Box::new(frame)));
    };
    send_frame(&session, &acct, &probes, Duration::ZERO, None, &update_tx);
    let ui_done = std::sync::Arc::new(AtomicBool::new(false));
    let ui_done_ui = ui_done.clone();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let tx = update_tx.clone();
        let collector = scope.spawn(move || {
            let mut detail = None;
            let result = runtime.block_on(daemon::collect(
                &mut probes,
                &mut acct,
                &mut signals,
                run.duration,
                Some(delay),
                |a, p, el| {
                    while let Ok(d) = detail_rx.try_recv() {
                        detail = d;
                    }
                    session.refresh(p, a, false);
                    send_frame(&session, a, p, el, detail, &tx);
                },
            ));
            let why = match &result {
                Ok(stop) => format!("stopped ({stop:?})"),
                Err(e) => format!("collector failed: {e:#}"),
            };
            let _ = tx.send(tui::state::Update::Stopped(why.clone()));
            drop(probes); // detach
            // Watchdog: a UI thread stuck in a dead terminal must not keep
            // the process alive (and spinning) once everything is detached.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !ui_done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !ui_done.load(Ordering::Acquire) {
                let _ = ratatui::try_restore();
                log::info(&format!(
                    "{why}; programs detached; the terminal did not answer"
                ));
                std::process::exit(0);
            }
            (result, why)
        });
        let ui_result = (|| -> anyhow::Result<()> {
            let mut guard = tui::TerminalGuard::new()?;
            let mut app = tui::state::App::new(delay, Some(log_path.to_owned()));
            tui::run(
                &mut guard.terminal,
                &mut app,
                &mut tui::Crossterm,
                &update_rx,
                &detail_tx,
            )
        })();
        ui_done_ui.store(true, Ordering::Release);
        let _ = quit_tx.send(());
        let (collected, why) = collector
            .join()
            .map_err(|_| anyhow::anyhow!("the collector thread panicked"))?;
        // Not eprintln!: after a hangup stderr is gone, and eprintln! panics.
        let _ = writeln!(std::io::stderr(), "rmapwatch: {why}; programs detached");
        log::info(&format!("{why}; programs detached"));
        match ui_result {
            // The terminal went away: the session ended, as on SIGHUP.
            Err(e) if format!("{e:#}").contains("the terminal hung up") => collected.map(|_| ()),
            r => r.and(collected.map(|_| ())),
        }
    })
}
