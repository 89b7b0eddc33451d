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

use rmapwatch_engine::{
    account::{Accounting, RmapVmas},
    hooks::HookMode,
    inspect::{self, Inspection},
    model::{Estimate, Objects, Options},
    report::{Context, ModelView, Report, Resync, SnapshotStats},
    snapshot::{self, Snapshot},
    walk::{self, Walked},
};
use rmapwatch_live::{
    kernel::KernelFacts,
    loader::{Attach, Probes},
    procfs,
};
use rmapwatch_tui as tui;

use rmapwatch_live::daemon;

use crate::log;

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
    pub probe_mode: rmapwatch_engine::hooks::ProbeMode,
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
    /// Keeps what a walk found (all but the detail VMAs).
    #[must_use]
    pub fn new(w: Walked, stats: SnapshotStats) -> Self {
        Self {
            per_process: w.actual_by_process(),
            vmas: w.vmas_by_process(),
            estimate: w.estimate,
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

/// Walks every VMA once, streaming the records through the model:
/// `owners(address, tgid, kind)` hears of every object, and the VMAs of
/// `detail_pid` are kept.
///
/// # Errors
/// The iterator is unavailable or its output is corrupt.
pub fn walk(
    probes: &mut Probes,
    taken: u64,
    opts: Options,
    hint: usize,
    detail_pid: Option<u32>,
    owners: impl FnMut(u64, u32, u32),
) -> anyhow::Result<(Walked, SnapshotStats)> {
    let t = Instant::now();
    let w = walk::stream(probes.snapshot_reader()?, opts, hint, detail_pid, owners)
        .context("decoding the snapshot")?;
    let stats = SnapshotStats {
        taken,
        vmas: w.counts.vmas,
        processes: w.procs.len() as u64,
        duplicate_vmas: w.counts.duplicate_vmas,
        short_chains: w.counts.short_chains,
        truncated_chains: w.counts.truncated_chains,
        walk_ms: (t.elapsed().as_secs_f64() * 1e5).round() / 100.0,
    };
    Ok((w, stats))
}

/// Takes a whole snapshot into memory (`inspect`: one consistent walk for
/// the process, its family and the model).
///
/// # Errors
/// The iterator is unavailable or its output is corrupt.
pub fn take_snapshot(probes: &mut Probes) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot::default();
    s.counts = snapshot::decode(probes.snapshot_reader()?, |v, comm| s.push(v, comm))
        .context("decoding the snapshot")?;
    Ok(s)
}

/// The inspection of `pid` from a walk that kept its VMAs, with a second
/// walk for the processes sharing its anon_vmas.
fn inspect_walked(
    probes: &mut Probes,
    w: &Walked,
    pid: u32,
    sizes: rmapwatch_engine::facts::Sizes,
) -> anyhow::Result<Inspection> {
    let mut family = inspect::Family::new(pid, &w.detail);
    snapshot::decode(probes.snapshot_reader()?, |v, _| family.vma(v))
        .context("decoding the snapshot")?;
    let comm = |p: u32| w.procs.get(&p).map(|x| x.comm.clone()).unwrap_or_default();
    Ok(inspect::inspect(
        &w.detail,
        comm(pid),
        family.finish(comm),
        &w.estimate,
        pid,
        &procfs::map_paths(pid),
        sizes,
    ))
}

/// `/sys/kernel/slab/anon_vma/objects` after flushing per-CPU slabs and
/// sheaves (without the shrink it counts their free objects as in use).
#[must_use]
pub fn slab_anon_vma_objects() -> Option<u64> {
    static SAID: std::sync::Once = std::sync::Once::new();
    // A side effect on the observed system: say so, once.
    SAID.call_once(|| {
        log::info(
            "shrinking the anon_vma slab cache (/sys/kernel/slab/anon_vma/shrink) for an exact \
             object count: it returns empty slabs to the page allocator and frees nothing in use",
        );
    });
    let _ = std::fs::write("/sys/kernel/slab/anon_vma/shrink", "1");
    std::fs::read_to_string("/sys/kernel/slab/anon_vma/objects")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many anon_vmas and AVCs to make room for before the seeding walk,
/// from the slab's object counts (in use or not; 0 where unreadable). The
/// anon_vma cache is never merged; the AVC cache usually is (with
/// `fs_cache`, `eventpoll_pwq`), so its count can be any multiple of the
/// AVCs: it is believed up to 4 AVCs per anon_vma (a reservation touched
/// nowhere would still cost RSS once entries spread over it).
fn slab_objects() -> (usize, usize) {
    let read = |cache: &str| {
        std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/objects"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    reservation(read("anon_vma"), read("anon_vma_chain"))
}

/// [`slab_objects`]' arithmetic: at most 16M anon_vmas, AVCs at most 4 per
/// anon_vma.
fn reservation(anon_vma_objects: usize, avc_cache_objects: usize) -> (usize, usize) {
    let avs = anon_vma_objects.min(16 << 20);
    (avs, avc_cache_objects.min(4 * avs))
}

/// Whether a refresh walks: when `forced`, when walks are not limited, or
/// once the last walk (`since` it started, `took` long) is at most
/// `budget` of the time since.
fn walk_due(last: Option<(Duration, Duration)>, budget: Option<f64>, forced: bool) -> bool {
    forced
        || match (last, budget) {
            (Some((since, took)), Some(b)) => since >= took.div_f64(b),
            _ => true,
        }
}

/// The share of wall time snapshot walks may take in the live view (5 %).
const WALK_BUDGET: f64 = 0.05;

/// A counting session: the probes' results, the accounting and the model.
pub struct Session<'a> {
    facts: &'a KernelFacts,
    opts: Options,
    /// The latest model, if snapshots work.
    pub model: Option<ModelState>,
    /// The inspection of the detail view's process, from the latest walk.
    detail: Option<Inspection>,
    taken: u64,
    /// When the last walk started and how long it took.
    last_walk: Option<(Instant, Duration)>,
    /// The share of wall time walks may take, if limited.
    walk_budget: Option<f64>,
    /// The detail view's process at the last refresh.
    detail_asked: Option<u32>,
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
        // Loading parsed BTF (tens of MiB, freed): return it before seeding.
        daemon::trim_heap();
        for w in &probes.warnings {
            log::warn(w);
        }
        for n in &probes.notes {
            log::info(n);
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
            detail: None,
            taken: 0,
            last_walk: None,
            walk_budget: None,
            detail_asked: None,
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
        // Events reported while attaching are applied before the walk seeds
        // ownership, not after: a free of an object's earlier life (whose
        // address was reused before the allocation tracepoint was attached)
        // would otherwise remove the owner the walk gives the new life.
        match probes.ring() {
            Ok(mut ring) => {
                let bad = daemon::drain(&mut ring, acct);
                if bad > 0 {
                    log::warn(&format!("{bad} undecodable ring buffer records skipped"));
                }
            }
            Err(e) => log::warn(&format!("{e:#}")),
        }
        // Room for what the slab holds, so that the tables do not grow (a
        // growing table briefly holds its old and new slots).
        let (avs, avcs) = slab_objects();
        acct.reserve_owners(avs + avcs);
        let started = Instant::now();
        match walk(&mut probes, 1, s.opts, avs, None, |ptr, tgid, kind| {
            acct.own_existing(ptr, tgid, kind);
        }) {
            Ok((w, stats)) => {
                acct.name_existing(w.procs.iter().map(|(&pid, p)| (pid, p.comm.clone())));
                log::info(&format!(
                    "snapshot: {} processes, {} VMAs in {:.1} ms",
                    stats.processes, stats.vmas, stats.walk_ms
                ));
                s.taken = 1;
                s.last_walk = Some((started, started.elapsed()));
                s.model = Some(ModelState::new(w, stats));
            }
            Err(e) => log::warn(&format!("{e:#}; no live or lazy figures")),
        }
        Ok((s, probes))
    }

    /// Takes a fresh snapshot for the model (if snapshots work) and reads
    /// the per-VMA rmap counts (if hooked), pruning exited processes from
    /// the kernel's map. `detail_pid`: the process to inspect as well.
    pub fn refresh(
        &mut self,
        probes: &mut Probes,
        acct: &mut Accounting,
        with_slab: bool,
        detail_pid: Option<u32>,
    ) {
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
        let Some(prev) = &self.model else {
            return;
        };
        // Events were lost: the live counts become the kernel's again,
        // seeded by this walk.
        let reseed = self.resync.degraded;
        // If limited, walks take at most that share of the time: on a system
        // with millions of VMAs the model refreshes less often than the live
        // counts (its age is shown). Re-seeding, the final report and a
        // newly asked detail view walk regardless.
        let new_detail = detail_pid.is_some() && detail_pid != self.detail_asked;
        self.detail_asked = detail_pid;
        let last = self.last_walk.map(|(at, took)| (at.elapsed(), took));
        if !walk_due(last, self.walk_budget, reseed || with_slab || new_detail) {
            return;
        }
        self.detail = None;
        let started = Instant::now();
        // The live counts the events had, to report how far off they were.
        let live_before = reseed.then(|| {
            let live = |o: u32| acct.objects[o as usize].live.cast_signed();
            (live(object::ANON_VMA), live(object::AVC))
        });
        if reseed {
            let before = prev.estimate.system.actual;
            acct.forget_live();
            acct.reserve_owners(usize::try_from(before.anon_vma + before.avc).unwrap_or(0));
        }
        let hint = usize::try_from(prev.estimate.system.actual.anon_vma).unwrap_or(0);
        let walked = walk(
            probes,
            self.taken + 1,
            self.opts,
            hint,
            detail_pid,
            |p, t, k| {
                if reseed {
                    acct.own_existing(p, t, k);
                }
            },
        );
        match walked {
            Ok((w, stats)) => {
                self.taken += 1;
                self.last_walk = Some((started, started.elapsed()));
                if let Some(pid) = detail_pid.filter(|p| w.procs.contains_key(p)) {
                    match inspect_walked(probes, &w, pid, self.facts.sizes) {
                        Ok(i) => self.detail = Some(i),
                        Err(e) => log::warn(&format!("inspecting {pid}: {e:#}")),
                    }
                }
                let mut m = ModelState::new(w, stats);
                if with_slab {
                    m.slab_anon_vma = slab_anon_vma_objects();
                }
                if let Some((av, avc)) = live_before {
                    let actual = m.estimate.system.actual;
                    let before = (
                        av - actual.anon_vma.cast_signed(),
                        avc - actual.avc.cast_signed(),
                    );
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

    /// Limits walks to `share` of the wall time (the live view; `report`
    /// walks at every interval it was asked for).
    pub fn limit_walks(&mut self, share: f64) {
        self.walk_budget = Some(share);
    }

    /// The inspection of `pid` from the latest walk that was asked for it.
    #[must_use]
    pub fn inspection(&self, pid: u32) -> Option<Inspection> {
        self.detail.as_ref().filter(|i| i.pid == pid).cloned()
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
            session.refresh(p, a, false, None);
            if let Err(e) = print(&session.report(a, p, el, false)) {
                log::warn(&format!("{e:#}"));
            }
        },
    )
    .await?;
    // A fresh snapshot for the final model and the drift check.
    session.refresh(&mut probes, &mut acct, true, None);
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
    session.limit_walks(WALK_BUDGET);
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
            detail: detail.and_then(|pid| session.inspection(pid)),
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
                    session.refresh(p, a, false, detail);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_do_not_trust_a_merged_avc_cache() {
        // Unmerged: as counted.
        assert_eq!(reservation(1000, 2500), (1000, 2500));
        // Merged with caches holding millions of other 64-byte objects.
        assert_eq!(reservation(1000, 9_000_000), (1000, 4000));
        assert_eq!(reservation(usize::MAX, usize::MAX), (16 << 20, 64 << 20));
        assert_eq!(reservation(0, 0), (0, 0));
    }

    #[test]
    fn walks_keep_to_their_share_of_the_time_unless_forced() {
        let ms = Duration::from_millis;
        // Unlimited (report): every refresh walks.
        assert!(walk_due(Some((ms(10), ms(700))), None, false));
        // A 700 ms walk at 5 %: not before 14 s have passed since it began.
        assert!(!walk_due(Some((ms(1000), ms(700))), Some(0.05), false));
        assert!(!walk_due(Some((ms(13_900), ms(700))), Some(0.05), false));
        assert!(walk_due(Some((ms(14_000), ms(700))), Some(0.05), false));
        // A 2 ms walk: every second-long refresh walks.
        assert!(walk_due(Some((ms(1000), ms(2))), Some(0.05), false));
        // Re-seeding, the final report, a new detail view: at once.
        assert!(walk_due(Some((ms(1), ms(700))), Some(0.05), true));
        // Nothing walked yet.
        assert!(walk_due(None, Some(0.05), false));
    }
}
