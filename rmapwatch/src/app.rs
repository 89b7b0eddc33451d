//! The report flow: attach, seed from a snapshot, collect, re-snapshot for
//! the model and drift, detach, print.
use std::{
    collections::BTreeMap,
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    account::Accounting,
    daemon,
    kernel::KernelFacts,
    loader::{Attach, Probes},
    model::{self, Estimate, Objects, Options},
    report::{Context, ModelView, Report, SnapshotStats},
    snapshot::Snapshot,
};
use rmapwatch_common::object;

/// What the report command was asked.
pub struct ReportOptions {
    /// How long to count.
    pub duration: Option<Duration>,
    /// Interim reports.
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
    /// When it was taken.
    pub taken_at: Instant,
    /// Walk statistics.
    pub stats: SnapshotStats,
    /// Slab anon_vma objects (final report only).
    pub slab_anon_vma: Option<u64>,
}

impl ModelState {
    /// The view a report needs.
    #[must_use]
    pub fn view(&self) -> ModelView<'_> {
        ModelView {
            estimate: &self.estimate,
            snapshot_actual: self.estimate.system.actual,
            snapshot_processes: &self.per_process,
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

/// Runs the model over a snapshot.
#[must_use]
pub fn model_state(snap: &Snapshot, stats: SnapshotStats, opts: Options) -> ModelState {
    let estimate = model::estimate(snap, opts);
    let per_process = estimate
        .processes
        .iter()
        .map(|(&pid, p)| (pid, p.actual))
        .collect();
    ModelState {
        estimate,
        per_process,
        taken_at: Instant::now(),
        stats,
        slab_anon_vma: None,
    }
}

/// Seeds the accounting's ownership from a snapshot.
pub fn seed(acct: &mut Accounting, snap: &Snapshot) {
    let (av, avc) = snap.owners();
    let objects = av
        .into_iter()
        .map(|(p, t)| (p, t, object::ANON_VMA))
        .chain(avc.into_iter().map(|(p, t)| (p, t, object::AVC)));
    let comms = snap.procs.values().map(|p| (p.pid, p.comm.clone()));
    acct.seed(objects, comms);
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

/// The `report` command.
///
/// # Errors
/// Loading, attaching, or the collector fails.
pub async fn report(facts: &KernelFacts, opts: &ReportOptions) -> anyhow::Result<()> {
    let mut signals = daemon::Signals::install()?;
    let mut probes = Probes::load(facts, opts.probe_mode, opts.ring_bytes, Attach::All)?;
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
    let mut acct = Accounting::default();
    let mut snapshots = 0;
    // Attached first, then the snapshot: an object allocated in between is
    // both in the snapshot and in the queue, and the accounting counts it once.
    let mut model = match take_snapshot(&mut probes, 1) {
        Ok((snap, stats)) => {
            snapshots = 1;
            seed(&mut acct, &snap);
            eprintln!(
                "rmapwatch: snapshot: {} processes, {} VMAs in {:.1} ms",
                stats.processes, stats.vmas, stats.walk_ms
            );
            Some(model_state(&snap, stats, opts.model))
        }
        Err(e) => {
            eprintln!("rmapwatch: warning: {e:#}; no live or lazy figures");
            None
        }
    };
    eprintln!(
        "rmapwatch: attached; counting {}",
        opts.duration.map_or_else(
            || "until Ctrl-C".to_owned(),
            |d| format!("for {:.1} s", d.as_secs_f64())
        )
    );
    let make = |acct: &Accounting,
                probes: &Probes,
                model: Option<&ModelState>,
                elapsed: Duration,
                done: bool| {
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
                sizes: facts.sizes,
                model: model.map(ModelState::view),
            },
        )
    };
    let print = |r: &Report| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if opts.json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", r.to_text(opts.top))?;
        }
        out.flush()?;
        Ok(())
    };
    let start = Instant::now();
    let stop = daemon::collect(
        &mut probes,
        &mut acct,
        &mut signals,
        opts.duration,
        opts.interval,
        |a, p, el| {
            if model.is_some()
                && let Ok((snap, stats)) = take_snapshot(p, snapshots + 1)
            {
                snapshots += 1;
                model = Some(model_state(&snap, stats, opts.model));
            }
            if let Err(e) = print(&make(a, p, model.as_ref(), el, false)) {
                eprintln!("rmapwatch: warning: {e:#}");
            }
        },
    )
    .await?;
    // A fresh snapshot for the final model and the drift check.
    if model.is_some() {
        match take_snapshot(&mut probes, snapshots + 1) {
            Ok((snap, stats)) => {
                let mut m = model_state(&snap, stats, opts.model);
                m.slab_anon_vma = slab_anon_vma_objects();
                model = Some(m);
            }
            Err(e) => eprintln!("rmapwatch: warning: final snapshot: {e:#}"),
        }
    }
    let final_report = make(&acct, &probes, model.as_ref(), start.elapsed(), true);
    drop(probes); // detach before printing: nothing stays loaded
    eprintln!("rmapwatch: stopped ({stop:?}); programs detached");
    print(&final_report)
}
