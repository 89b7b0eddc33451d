//! The headless report: a stable JSON contract (`rmapwatch.report/1`,
//! documented in docs/json.md; additive changes only) and a text rendering.
use std::{collections::BTreeMap, fmt::Write as _};

use rmapwatch_common::{hook, object, site};
use serde::{Deserialize, Serialize};

use crate::{
    account::{Accounting, Comparison, Flow, ObjectTotals, RmapVmas},
    design::{self, Outcome, Share},
    facts::{Facts, KernelId, Sizes},
    hooks::{HookMode, HookStatus},
    input::{KernelCounters, ProgramStats},
    model::{self, Estimate, LazyState, Objects, Options, Rule},
    rows::{WalkOf, process_rows},
    text::{Printable, printable_lines},
    walk::ProcInfo,
};

/// Objects and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjBytes {
    /// Objects.
    pub objects: u64,
    /// Bytes (objects times the slab's per-object size).
    pub bytes: u64,
}

/// Lazy objects, bytes and change against actual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LazyBytes {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
    /// (lazy - actual) / actual in percent; null when actual is 0.
    pub change_pct: Option<f64>,
}

/// `live` block: objects that exist now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveBlock {
    /// anon_vma.
    pub anon_vma: ObjBytes,
    /// AVC.
    pub anon_vma_chain: ObjBytes,
}

/// `lazy` block: what ANON_VMA_LAZY would hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LazyBlock {
    /// anon_vma.
    pub anon_vma: LazyBytes,
    /// AVC.
    pub anon_vma_chain: LazyBytes,
}

impl LiveBlock {
    /// The block of `o` objects.
    #[must_use]
    pub fn of(o: Objects, sizes: Sizes) -> Self {
        let [a, c] = sizes.per_type(o);
        Self {
            anon_vma: ObjBytes {
                objects: o.anon_vma,
                bytes: a,
            },
            anon_vma_chain: ObjBytes {
                objects: o.avc,
                bytes: c,
            },
        }
    }

    /// Bytes of both types.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.anon_vma.bytes + self.anon_vma_chain.bytes
    }
}

impl LazyBlock {
    /// The block of `lazy` objects, with the change against `actual`.
    #[must_use]
    pub fn of(lazy: Objects, actual: Objects, sizes: Sizes) -> Self {
        let [a, c] = sizes.per_type(lazy);
        Self {
            anon_vma: LazyBytes {
                objects: lazy.anon_vma,
                bytes: a,
                change_pct: round2(model::change_pct(actual.anon_vma, lazy.anon_vma)),
            },
            anon_vma_chain: LazyBytes {
                objects: lazy.avc,
                bytes: c,
                change_pct: round2(model::change_pct(actual.avc, lazy.avc)),
            },
        }
    }

    /// Bytes of both types.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.anon_vma.bytes + self.anon_vma_chain.bytes
    }
}

fn round2(v: Option<f64>) -> Option<f64> {
    v.map(|x| (x * 100.0).round() / 100.0)
}

/// The model's inputs for a report: the latest walk and what it found.
pub struct ModelView<'a> {
    /// The estimate.
    pub estimate: &'a Estimate,
    /// Processes the walk saw (name, VMAs).
    pub procs: &'a BTreeMap<u32, ProcInfo>,
    /// Seconds since the walk ended.
    pub age_s: f64,
    /// Walk statistics.
    pub stats: SnapshotStats,
    /// `/sys/kernel/slab/anon_vma/objects` after a shrink, when read.
    pub slab_anon_vma: Option<u64>,
    /// The events' live objects against the walk.
    pub comparison: &'a Comparison,
    /// Every design's outcome at the walk.
    pub designs: &'a [Outcome],
}

/// Statistics of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Snapshots taken so far.
    pub taken: u64,
    /// VMAs walked.
    pub vmas: u64,
    /// Processes with an mm.
    pub processes: u64,
    /// VMA records of an already-walked mm (threads).
    pub duplicate_vmas: u64,
    /// Chains that changed under the walk.
    pub short_chains: u64,
    /// Chains longer than the walk's bound.
    pub truncated_chains: u64,
    /// Milliseconds the walk and decoding took.
    pub walk_ms: f64,
}

/// Event-maintained live counts against a fresh snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// live (events) - snapshot, anon_vma.
    pub anon_vma: i64,
    /// live (events) - snapshot, AVC.
    pub anon_vma_chain: i64,
    /// Processes whose event-maintained live counts differ from the snapshot.
    pub processes_differing: u64,
}

/// `model` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelBlock {
    /// Options used.
    pub options: Options,
    /// What the model cannot see.
    pub blind_spots: Vec<String>,
    /// The estimate under the other value of `tree_parent_keeps_chain`.
    pub lazy_other_option: LazyBlock,
    /// Objects saved per rule.
    pub saved_by_rule: BTreeMap<Rule, Objects>,
    /// VMAs per lazy state.
    pub vmas_by_state: BTreeMap<LazyState, u64>,
    /// Event-maintained live counts minus the latest snapshot's.
    pub drift: Drift,
    /// The snapshot behind `lazy`.
    pub snapshot: SnapshotBlock,
    /// Slab anon_vma objects the snapshot cannot reach (pinned by KSM,
    /// migration, RCU): slab count minus snapshot count.
    pub unreachable_anon_vmas: Option<i64>,
}

/// The snapshot behind the estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBlock {
    /// Seconds since it was taken.
    pub age_s: f64,
    /// Statistics.
    #[serde(flatten)]
    pub stats: SnapshotStats,
    /// Its actual counts.
    pub actual: LiveBlock,
}

/// rmapwatch's own cost in the kernel, from `bpf_stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// Runs of the per-event programs (all but the snapshot iterator).
    pub event_runs: u64,
    /// Mean run time of the per-event programs, weighted by their runs.
    pub ns_per_event: Option<f64>,
    /// Share of one CPU spent in all of rmapwatch's programs since attach.
    pub cpu_pct: f64,
    /// Runs lost to recursion, all programs.
    pub recursion_misses: u64,
    /// Per program.
    pub programs: BTreeMap<String, ProgramStats>,
    /// Mean run time of our slab programs (`SLAB_PROGRAMS`), the ones the
    /// floor is measured for.
    #[serde(default)]
    pub slab_ns_per_run: Option<f64>,
    /// The floor measured on this machine and kernel (`rmw-bench cost`),
    /// and `slab_ns_per_run` over it; `None` when none was measured.
    #[serde(default)]
    pub floor: Option<FloorRatio>,
    /// The cost split's variants (`RMAPWATCH_COST_SPLIT`: copies of our
    /// slab programs that stop after one stage), ns per run by program;
    /// not our cost, and absent unless asked for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub split: BTreeMap<String, f64>,
}

/// The live slab cost against the floor `rmw-bench cost` measured here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorRatio {
    /// The empty raw program's ns per run.
    pub ns_per_run: f64,
    /// `slab_ns_per_run / ns_per_run`.
    pub ratio: Option<f64>,
    /// When it was measured, seconds since the epoch.
    pub measured_unix: u64,
    /// How.
    pub by: String,
}

/// Our slab programs, whose recursion misses the nest watch accounts for.
pub const SLAB_PROGRAMS: [&str; 5] = [
    "kmem_cache_alloc",
    "kmem_cache_alloc_node",
    "kmem_cache_free",
    "perf_kmem_cache_alloc",
    "perf_kmem_cache_free",
];

/// The nest watch's account of our slab programs' recursion misses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NestReport {
    /// Recursion misses of our slab programs (`bpf_stats`), if read.
    pub slab_misses: Option<u64>,
    /// Skipped runs the watch saw (our program of the same tracepoint
    /// running on that CPU).
    pub seen: u64,
    /// Per CPU.
    pub seen_per_cpu: Vec<u64>,
    /// Of `seen`, at an rmap call site: streamed by the watch, not lost.
    pub ours: u64,
    /// Misses the watch did not see (`slab_misses - seen`): an interrupt
    /// that came while the kernel counted ours as running outside its code
    /// (the clock reads of `bpf_stats`, the RCU unlock after it), or behind
    /// another of our programs on the perf path. Where they were is not
    /// known.
    pub unseen: Option<u64>,
}

impl NestReport {
    /// From the watch's counters and the programs' statistics.
    #[must_use]
    pub fn new(
        n: &crate::input::Nested,
        programs: Option<&BTreeMap<String, ProgramStats>>,
    ) -> Self {
        let seen = n.per_cpu.iter().sum();
        let slab_misses = slab_misses(Some(n), programs);
        Self {
            slab_misses,
            seen,
            seen_per_cpu: n.per_cpu.clone(),
            ours: n.ours,
            unseen: slab_misses.map(|m| m.saturating_sub(seen)),
        }
    }

    /// The report's line.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "nest watch: {} skipped runs of our slab programs seen (per CPU {:?}), {} at rmap call \
             sites (streamed by the watch); recursion misses {}, unseen {}",
            self.seen,
            self.seen_per_cpu,
            self.ours,
            self.slab_misses
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
            self.unseen
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
        )
    }
}

/// rmapwatch's memory in the kernel: its maps, fixed at load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMemory {
    /// All maps, bytes.
    pub bytes: u64,
    /// Each, largest first.
    pub maps: Vec<crate::facts::MapMemory>,
}

impl KernelMemory {
    /// From the facts' maps; `None` when there are none.
    #[must_use]
    pub fn new(maps: &[crate::facts::MapMemory]) -> Option<Self> {
        if maps.is_empty() {
            return None;
        }
        let mut maps = maps.to_vec();
        maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        Some(Self {
            bytes: maps.iter().map(|m| m.bytes).sum(),
            maps,
        })
    }

    /// The report's line: the total and the four largest.
    #[must_use]
    pub fn line(&self) -> String {
        let kib = |b: u64| b.div_ceil(1024);
        let top: Vec<String> = self
            .maps
            .iter()
            .take(4)
            .map(|m| format!("{} {} KiB", m.name, kib(m.bytes)))
            .collect();
        format!(
            "kernel memory: {} KiB in {} maps, fixed at load ({}{})",
            kib(self.bytes),
            self.maps.len(),
            top.join(", "),
            if self.maps.len() > 4 { ", ..." } else { "" }
        )
    }
}

/// The empty raw program `rmw-bench` and `RMAPWATCH_FLOOR` attach beside
/// ours: the floor, not rmapwatch's cost.
pub const FLOOR_PROGRAM: &str = "empty";

/// The snapshot iterator: not a per-event program.
pub const ITERATOR_PROGRAM: &str = "task_vma";

/// Names of the cost split's variants (`split_site_a`, ...): the
/// benchmark's programs, not rmapwatch's cost.
pub const SPLIT_PREFIX: &str = "split_";

impl CostReport {
    /// Sums the programs' statistics over `duration_s`.
    #[must_use]
    pub fn new(programs: &BTreeMap<String, ProgramStats>, duration_s: f64) -> Self {
        let split: BTreeMap<String, f64> = programs
            .iter()
            .filter(|(name, p)| name.starts_with(SPLIT_PREFIX) && p.runs > 0)
            .filter_map(|(name, p)| Some((name.clone(), round2(p.ns_per_run())?)))
            .collect();
        let programs: BTreeMap<String, ProgramStats> = programs
            .iter()
            .filter(|(name, _)| !name.starts_with(SPLIT_PREFIX))
            .map(|(n, p)| (n.clone(), *p))
            .collect();
        let programs = &programs;
        let ours = || programs.iter().filter(|(name, _)| *name != FLOOR_PROGRAM);
        let events = ours()
            .filter(|(name, _)| *name != ITERATOR_PROGRAM)
            .map(|(_, p)| p);
        let (event_runs, event_ns) =
            events.fold((0, 0), |(r, t), p| (r + p.runs, t + p.run_time_ns));
        let total_ns: u64 = ours().map(|(_, p)| p.run_time_ns).sum();
        let slab_ns_per_run = slab_ns(programs);
        // The empty program attached beside ours in this run
        // (`RMAPWATCH_FLOOR`): the floor, measured at the same time.
        let floor = programs
            .get(FLOOR_PROGRAM)
            .and_then(ProgramStats::ns_per_run)
            .map(|ns| FloorRatio {
                ns_per_run: round2(Some(ns)).unwrap_or(ns),
                ratio: round2(slab_ns_per_run.map(|s| s / ns)),
                measured_unix: 0,
                by: "an empty raw program beside ours, this run".into(),
            });
        Self {
            event_runs,
            ns_per_event: round2((event_runs > 0).then(|| event_ns as f64 / event_runs as f64)),
            cpu_pct: if duration_s > 0.0 {
                (total_ns as f64 / 1e9 / duration_s * 100.0 * 1000.0).round() / 1000.0
            } else {
                0.0
            },
            recursion_misses: ours().map(|(_, p)| p.recursion_misses).sum(),
            programs: programs.clone(),
            slab_ns_per_run: round2(slab_ns_per_run),
            floor,
            split,
        }
    }

    /// With the floor measured on this machine, if any (one measured in
    /// this run stays).
    #[must_use]
    pub fn against(mut self, floor: Option<&crate::facts::Floor>) -> Self {
        if self.floor.is_some() {
            return self;
        }
        self.floor = floor.map(|f| FloorRatio {
            ns_per_run: f.ns_per_run,
            ratio: round2(
                self.slab_ns_per_run
                    .filter(|_| f.ns_per_run > 0.0)
                    .map(|s| s / f.ns_per_run),
            ),
            measured_unix: f.measured_unix,
            by: f.by.clone(),
        });
        self
    }

    /// The cost split's variants, stage by stage: `cost split (ns/run):
    /// site 50/49, ...` (alloc/free).
    #[must_use]
    pub fn split_words(&self) -> String {
        let mut stages: Vec<(String, [Option<f64>; 2])> = Vec::new();
        for (name, ns) in &self.split {
            let rest = name.trim_start_matches(SPLIT_PREFIX);
            let (stage, side) = match rest.rsplit_once('_') {
                Some((stage, "a")) => (stage, 0),
                Some((stage, "f")) => (stage, 1),
                _ => (rest, 0),
            };
            match stages.iter_mut().find(|(s, _)| s == stage) {
                Some((_, v)) => v[side] = Some(*ns),
                None => {
                    let mut v = [None, None];
                    v[side] = Some(*ns);
                    stages.push((stage.to_owned(), v));
                }
            }
        }
        // In the path's order; a stage this rmapwatch does not know, last.
        const ORDER: [&str; 8] = [
            "site", "detect", "match", "fork", "reserve", "query", "batch", "batchn",
        ];
        stages
            .sort_by_key(|(stage, _)| ORDER.iter().position(|o| o == stage).unwrap_or(ORDER.len()));
        let ns = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |n| format!("{n:.0}"));
        let words: Vec<String> = stages
            .iter()
            .map(|(stage, [a, f])| format!("{stage} {}/{}", ns(*a), ns(*f)))
            .collect();
        format!(
            "cost split, ns/run alloc/free (RMAPWATCH_COST_SPLIT; not our cost): {}",
            words.join(", ")
        )
    }

    /// `ns/event`, and the slab programs against the floor when one was
    /// measured: the report's and the dashboard's words.
    #[must_use]
    pub fn floor_words(&self) -> String {
        match (&self.floor, self.slab_ns_per_run) {
            (Some(f), Some(s)) => format!(
                "slab programs {s:.0} ns/run = {} the floor ({:.1} ns, {})",
                f.ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                f.ns_per_run,
                f.by
            ),
            (None, Some(s)) => format!(
                "slab programs {s:.0} ns/run (no floor measured on this machine and kernel: \
                 cargo xtask bench cost)"
            ),
            _ => String::new(),
        }
    }
}

/// Recursion misses of our slab programs: as the source read them with the
/// nest watch's counts, else from the programs' statistics.
#[must_use]
pub fn slab_misses(
    nested: Option<&crate::input::Nested>,
    programs: Option<&BTreeMap<String, ProgramStats>>,
) -> Option<u64> {
    nested.and_then(|n| n.slab_misses).or_else(|| {
        programs.map(|p| {
            SLAB_PROGRAMS
                .iter()
                .filter_map(|name| p.get(*name))
                .map(|s| s.recursion_misses)
                .sum()
        })
    })
}

/// Weighted ns per run of our slab programs.
fn slab_ns(programs: &BTreeMap<String, ProgramStats>) -> Option<f64> {
    let (runs, ns) = SLAB_PROGRAMS
        .iter()
        .filter_map(|n| programs.get(*n))
        .fold((0u64, 0u64), |(r, t), p| (r + p.runs, t + p.run_time_ns));
    (runs > 0).then(|| ns as f64 / runs as f64)
}

/// Lost events and recovery: when the ring buffer overflows, the live
/// counts are re-seeded from the next snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// Events were lost since the last re-seed: live figures are uncertain
    /// until the next snapshot.
    pub degraded: bool,
    /// Re-seeds so far.
    pub resyncs: u64,
    /// Live objects (events) minus the snapshot's, just before the last
    /// re-seed: what the lost events had cost.
    pub drift_before_last: Option<(i64, i64)>,
}

/// JSON schema name.
pub const SCHEMA: &str = "rmapwatch.report/1";

/// Inputs of a report besides the accounting.
pub struct Context<'a> {
    /// The measured machine.
    pub facts: &'a Facts,
    /// The programs' counters (`None`: unreadable).
    pub counters: Option<&'a KernelCounters>,
    /// Seconds since attach.
    pub duration_s: f64,
    /// The source's clock: nanoseconds since it started.
    pub t_ns: u64,
    /// Whether the run ended (final report) or is an interim line.
    pub done: bool,
    /// The model, when a walk is available.
    pub model: Option<ModelView<'a>>,
    /// New anonymous folios per process and VMA (rmap hook attached).
    pub rmap_vmas: Option<&'a RmapVmas>,
    /// Run statistics of rmapwatch's programs (null when the kernel keeps none).
    pub programs: Option<&'a BTreeMap<String, ProgramStats>>,
    /// Fork windows user space dropped ([`crate::input::Counters`]).
    pub fork_windows_dropped: u64,
    /// Lost events and recovery.
    pub resync: Resync,
}

/// Per-object block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectReport {
    /// Allocations seen.
    pub allocs: u64,
    /// Frees seen.
    pub frees: u64,
    /// `sizeof` from BTF, in bytes.
    pub object_size: u32,
    /// Events per call site (allocations at alloc sites plus frees at free sites).
    pub by_site: BTreeMap<String, u64>,
    /// Allocations per call site.
    pub allocs_by_site: BTreeMap<String, u64>,
    /// Frees per call site.
    pub frees_by_site: BTreeMap<String, u64>,
    /// Frees of objects allocated before rmapwatch started (owner unknown).
    pub frees_of_preexisting: u64,
}

/// Per-process block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// tgid.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// Parent tgid if its fork was seen.
    pub ppid: Option<u32>,
    /// Whether it has exited.
    pub exited: bool,
    /// VMAs in the latest snapshot.
    pub vmas: Option<u64>,
    /// anon_vma flow.
    pub anon_vma: Flow,
    /// AVC flow.
    pub anon_vma_chain: Flow,
    /// Objects it owns now.
    pub live: LiveBlock,
    /// What lazy would hold for it (as of the latest snapshot).
    pub lazy: Option<LazyBlock>,
    /// What the latest snapshot saw it own (compare with `live`).
    pub snapshot: Option<LiveBlock>,
    /// New anonymous folios it mapped since attach (null without the
    /// `folio_add_new_anon_rmap` hook).
    pub rmap: Option<ProcessRmap>,
    /// What each design would hold for it at the latest walk (empty
    /// without a walk; all zero for a process the walk did not see).
    #[serde(default)]
    pub designs: Vec<Share>,
}

/// A process's new anonymous folios, counted in the kernel per VMA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRmap {
    /// Sum over its VMAs.
    pub new_anon_folios: u64,
    /// VMA start (hex, as in /proc/PID/maps) -> new anonymous folios.
    pub by_vma: BTreeMap<String, u64>,
}

/// A function hook's mode and call count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookReport {
    /// fentry | kprobe | tracepoint | unavailable.
    pub mode: HookMode,
    /// The symbol hooked (an older alias on older kernels).
    pub symbol: Option<String>,
    /// Calls counted (null unless fentry or kprobe).
    pub calls: Option<u64>,
    /// Why better modes were not used.
    pub fallbacks: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// Kernel identity.
    pub kernel: KernelId,
    /// Mode per hook.
    pub probes: BTreeMap<String, HookMode>,
    /// Detail per hook.
    pub hooks: BTreeMap<String, HookReport>,
    /// Whether fork-time allocations are attributed to children exactly.
    pub fork_window: bool,
    /// Seconds since attach.
    pub duration_s: f64,
    /// The source's clock at this report, in nanoseconds since it started
    /// (`duration_s` unrounded): the time of a recording's frame, as a
    /// Perfetto trace of it stamps its samples.
    #[serde(default)]
    pub t_ns: u64,
    /// Events lost in the ring buffer (null when the counters could not be
    /// read).
    pub dropped_events: Option<u64>,
    /// Fork windows user space dropped, too many open at once (only after
    /// closing records were lost; a loss like `dropped_events`).
    #[serde(default)]
    pub fork_windows_dropped: u64,
    /// Whether live figures are degraded by lost events, and the recoveries.
    pub resync: Resync,
    /// Events decoded.
    pub events: u64,
    /// Whether this is the final report.
    pub done: bool,
    /// Per-page rmap counters (null when the rmap hooks are unavailable).
    pub rmap: Option<RmapReport>,
    /// rmapwatch's own cost in the kernel (null without `bpf_stats`).
    pub cost: Option<CostReport>,
    /// anon_vma and anon_vma_chain blocks.
    pub objects: BTreeMap<String, ObjectReport>,
    /// Objects that exist now (snapshot-seeded, event-maintained).
    pub live: LiveBlock,
    /// What lazy would hold (null without a snapshot).
    pub lazy: Option<LazyBlock>,
    /// The model's options, blind spots, drift and snapshot.
    pub model: Option<ModelBlock>,
    /// Every design at the latest walk: today, lazy, cow_context, ideal
    /// (empty without a walk).
    #[serde(default)]
    pub designs: Vec<Outcome>,
    /// What anon_vma costs in time: rwsem waits, fork work, rmap walks,
    /// and what each design would not have spent (null in recordings' reports
    /// made before it was measured).
    #[serde(default)]
    pub time: Option<crate::time::TimeReport>,
    /// Processes with anon_vma/AVC traffic or objects, biggest first.
    pub processes: Vec<ProcessReport>,
    /// Exited processes folded away past their retention, summed: with
    /// `processes`, the system's flows of owned objects.
    #[serde(default)]
    pub exited: ExitedReport,
    /// How the slab events were taken (tracepoint path and layout).
    #[serde(default)]
    pub slab: crate::hooks::SlabEvents,
    /// The inlining detector: anon_vma allocations at call sites outside
    /// every rmap function (null when the counters could not be read).
    #[serde(default)]
    pub inlined: Option<InlinedReport>,
    /// Fork-family syscalls that found the fork window's timing map full:
    /// those forks were not timed, nor waits on locks they held told as
    /// held by a fork (since ABI 9 their AVCs are counted right; before,
    /// `anon_vma_clone`'s were charged to the parent). Null when the
    /// counters could not be read, or in a recording made before they were
    /// counted.
    #[serde(default)]
    pub fork_window_full: Option<u64>,
    /// `iter/task` walks (before 5.12) of a process that ended early, its
    /// VMA list changed under them (null as `fork_window_full`).
    #[serde(default)]
    pub walks_torn: Option<u64>,
    /// Function-hook exits whose entry was not seen (attached mid-call,
    /// or the timing map full): those calls are not timed (null as
    /// `fork_window_full`).
    #[serde(default)]
    pub timing_unpaired: Option<u64>,
    /// The nest watch (`--watch-nesting`): what our slab programs' recursion
    /// misses were; `None` without it.
    #[serde(default)]
    pub nest_watch: Option<NestReport>,
    /// rmapwatch's maps in the kernel, largest first, and their total;
    /// `None` when not recorded.
    #[serde(default)]
    pub kernel_memory: Option<KernelMemory>,
    /// Why no walk of the VMAs could be taken, if none could (then the
    /// live counts come from events alone and no lazy figure is given).
    #[serde(default)]
    pub snapshot_error: Option<String>,
    /// The size of rmapwatch's own state (bounded by the live objects, the
    /// live processes and the retention of exited ones).
    #[serde(default)]
    pub state: StateReport,
    /// The link to a remote agent (a phone over adb, `--remote`): absent
    /// for the kernel here and for recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkReport>,
}

/// Rows of the text report's time tables (roots, waiting processes).
pub const TIME_ROWS: usize = 5;

/// Family pids shown per root in the text report's time table.
const FAMILY_PIDS: usize = 5;

/// A duration for people: `1.25 ms` from 1 ms up, else `12.3 µs`.
#[must_use]
pub fn duration(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// A root's family, at most [`FAMILY_PIDS`] pids, then how many more.
#[must_use]
pub fn family_text(r: &crate::time::RootWaits) -> String {
    if r.family_size == 0 {
        return "(not seen at a walk)".to_owned();
    }
    let pids: Vec<String> = r
        .family
        .iter()
        .take(FAMILY_PIDS)
        .map(u32::to_string)
        .collect();
    let shown = pids.len();
    let mut s = pids.join(" ");
    if r.family_size > shown {
        let _ = write!(s, " (+{} more)", r.family_size - shown);
    }
    s
}

/// The text report's time section: how each source is attached, anon_vma
/// lock waits (by root and by waiting process, what each design would not
/// have waited), fork cost per design.
#[must_use]
pub fn time_text(t: &crate::time::TimeReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Time");
    let hooks = crate::hooks::TimeHooks {
        lock: t.anon_vma_lock.source.clone(),
        fork: t.fork.source.clone(),
        rmap: t.rmap_walks.source.clone(),
        ..crate::hooks::TimeHooks::default()
    };
    for l in hooks.lines() {
        let _ = writeln!(s, "  {}", Printable(&l));
    }
    let l = &t.anon_vma_lock;
    if l.available {
        let mean = l.wait_ns.checked_div(l.waits).unwrap_or(0);
        let _ = writeln!(
            s,
            "anon_vma lock waits: {} (read {}, write {}), {} in all, mean {}; {} on untracked \
             addresses, {} lost",
            l.waits,
            l.read_waits,
            l.write_waits,
            duration(l.wait_ns),
            duration(mean),
            l.unknown,
            l.lost
        );
        if !l.by_root.is_empty() {
            let _ = writeln!(
                s,
                "  {:<20} {:>8} {:>10} {:>7}  family (pids)",
                "root anon_vma", "waits", "wait", "writes"
            );
            for r in l.by_root.iter().take(TIME_ROWS) {
                let _ = writeln!(
                    s,
                    "  {:<20} {:>8} {:>10} {:>7}  {}",
                    Printable(&r.root),
                    r.waits,
                    duration(r.wait_ns),
                    r.write_waits,
                    family_text(r)
                );
            }
            if l.by_root.len() > TIME_ROWS {
                let _ = writeln!(
                    s,
                    "  ... {} more roots (report --json: time.anon_vma_lock.by_root)",
                    l.by_root.len() - TIME_ROWS
                );
            }
        }
        if !l.by_process.is_empty() {
            let _ = writeln!(
                s,
                "  {:>8} {:<16} {:>8} {:>10}",
                "pid", "waiting comm", "waits", "wait"
            );
            for p in l.by_process.iter().take(TIME_ROWS) {
                let _ = writeln!(
                    s,
                    "  {:>8} {:<16} {:>8} {:>10}",
                    p.pid,
                    Printable(&p.comm),
                    p.waits,
                    duration(p.wait_ns)
                );
            }
            if l.by_process.len() > TIME_ROWS {
                let _ = writeln!(
                    s,
                    "  ... {} more processes (report --json: time.anon_vma_lock.by_process)",
                    l.by_process.len() - TIME_ROWS
                );
            }
        }
        if l.by_holder.iter().any(|h| h.waits > 0) {
            let _ = writeln!(s, "  the lock's holder at the begin:");
            for h in l.by_holder.iter().filter(|h| h.waits > 0) {
                let _ = writeln!(
                    s,
                    "    {:<58} {:>8} {:>10}",
                    h.path,
                    h.waits,
                    duration(h.wait_ns)
                );
            }
        }
        for a in &l.avoided {
            let _ = writeln!(
                s,
                "  {} would not have waited: {} waits, {}{}",
                a.design,
                a.waits,
                duration(a.wait_ns),
                if a.design == "cow_context" {
                    " (its per-context spinlock cost is not modelled)"
                } else {
                    ""
                }
            );
        }
    } else {
        let _ = writeln!(s, "anon_vma lock waits: not measured");
    }
    let f = &t.fork;
    if f.forks == 0 {
        let _ = writeln!(s, "fork: no process forks timed");
    } else {
        let _ = writeln!(
            s,
            "fork: {} forks, mean syscall {}, {} objects per fork (anon_vma {}, AVC {} in all)",
            f.forks,
            duration(f.syscall_ns / f.forks),
            f.objects_per_fork
                .map_or_else(|| "-".to_owned(), |o| format!("{o:.1}")),
            f.objects.anon_vma,
            f.objects.anon_vma_chain
        );
        if let (Some(d), Some(a), Some(n)) = (f.dup_mmap_ns, f.anon_vma_ns, f.anon_vma_calls) {
            let _ = writeln!(
                s,
                "  dup_mmap {} in all, of which anon_vma_fork/anon_vma_clone {} over {n} calls",
                duration(d),
                duration(a)
            );
        }
        for d in &f.designs {
            let o = d.objects_not_allocated;
            let mut line = format!(
                "  {}: would not allocate anon_vma {}, AVC {}",
                d.design, o.anon_vma, o.anon_vma_chain
            );
            if !d.added.is_empty() {
                let added: Vec<String> = d.added.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = write!(line, "; adds {}", added.join(", "));
            }
            let _ = writeln!(s, "{line}");
        }
    }
    if f.failed > 0 {
        let _ = writeln!(
            s,
            "  {} fork syscalls failed (their dup_mmap's objects are in no fork's count)",
            f.failed
        );
    }
    rmap_walks_text(&mut s, &t.rmap_walks);
    s
}

/// The time section's rmap walks: per caller, what it is for, and the
/// AVCs each design's walk would visit.
fn rmap_walks_text(s: &mut String, r: &crate::time::RmapReport) {
    if r.by_caller.is_empty() {
        // The source line above says why when they are not measured.
        if r.source.starts_with("fentry") || r.source.starts_with("kprobe") {
            let _ = writeln!(s, "rmap walks: none seen");
        }
        return;
    }
    let walks: u64 = r.by_caller.iter().map(|c| c.walks).sum();
    let _ = writeln!(
        s,
        "rmap walks: {walks} of anonymous folios (AVCs: on the walked anon_vmas at their last \
         walk, an upper bound)"
    );
    let _ = writeln!(
        s,
        "  {:<20} {:>8} {:>8} {:>10} {:>11}  purpose",
        "caller", "walks", "AVCs", "LAZY AVCs", "COW visits"
    );
    for c in r.by_caller.iter().take(TIME_ROWS) {
        let _ = writeln!(
            s,
            "  {:<20} {:>8} {:>8} {:>10} {:>11}  {}",
            Printable(&c.caller),
            c.walks,
            c.avcs,
            c.lazy_avcs,
            c.cow_context_visits,
            Printable(&c.purpose)
        );
    }
    if r.by_caller.len() > TIME_ROWS {
        let _ = writeln!(
            s,
            "  ... {} more callers (report --json: time.rmap_walks.by_caller)",
            r.by_caller.len() - TIME_ROWS
        );
    }
}

/// Exited processes folded into one aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitedReport {
    /// Processes folded.
    pub processes: u64,
    /// Their anon_vma flow.
    pub anon_vma: Flow,
    /// Their AVC flow.
    pub anon_vma_chain: Flow,
    /// Their new anonymous folios (null without the
    /// `folio_add_new_anon_rmap` hook).
    pub new_anon_folios: Option<u64>,
}

impl ExitedReport {
    /// One line: `exited (folded): 1200 processes, av +10/-10, avc +30/-30`.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "exited (folded): {} processes, anon_vma +{}/-{}, AVC +{}/-{}{}",
            self.processes,
            self.anon_vma.allocs,
            self.anon_vma.frees,
            self.anon_vma_chain.allocs,
            self.anon_vma_chain.frees,
            self.new_anon_folios
                .map_or_else(String::new, |n| format!(", {n} new anon folios"))
        )
    }
}

/// The size of rmapwatch's own state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// Processes listed (live, and exited ones not folded yet).
    pub processes: u64,
    /// Of them, exited ones.
    pub exited_kept: u64,
    /// Of those, the ones that still own live objects (kept until freed).
    pub exited_with_objects: u64,
    /// Per-VMA new-folio counts held (the kernel map's and those kept of
    /// removed entries).
    pub rmap_entries: u64,
    /// Bytes of the owner table (every live anon_vma and AVC).
    pub owner_table_bytes: u64,
}

/// The link to a remote agent, as the host measured it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// How the agent is reached: `adb SERIAL`, or `remote: CMD`.
    pub via: String,
    /// The device, as it described itself (adb: model, Android SDK,
    /// build type, how root was had); empty for `--remote`.
    pub device: BTreeMap<String, String>,
    /// Stream bytes received.
    pub bytes: u64,
    /// Stream bytes per second over the run.
    pub bytes_per_s: f64,
    /// Stream bytes per second over the last second or so.
    pub recent_bytes_per_s: f64,
    /// How late the newest tick arrived, above the quickest tick seen (ms):
    /// the link's queueing delay (the two clocks are never compared).
    pub lag_ms: f64,
    /// The largest such lag of the run (ms).
    pub lag_max_ms: f64,
}

impl LinkReport {
    /// One line: `via adb X (Pixel 8): 12.3 KB/s, lag 4 ms (max 20 ms)`.
    #[must_use]
    pub fn line(&self) -> String {
        let model = self
            .device
            .get("model")
            .map_or_else(String::new, |m| format!(" ({m})"));
        format!(
            "via {}{model}: {:.1} KB/s now, {:.1} KB/s mean, {} KB in all, lag {:.0} ms (max {:.0} ms)",
            self.via,
            self.recent_bytes_per_s / 1024.0,
            self.bytes_per_s / 1024.0,
            self.bytes / 1024,
            self.lag_ms,
            self.lag_max_ms
        )
    }
}

/// anon_vma allocations the call-site ranges missed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlinedReport {
    /// How many (0 on every kernel rmapwatch was tested on).
    pub anon_vma_allocs: u64,
    /// By call site (`function+0xoffset`).
    pub sites: BTreeMap<String, u64>,
}

impl InlinedReport {
    /// The warning shown when it is not 0.
    #[must_use]
    pub fn warning(&self) -> Option<String> {
        (self.anon_vma_allocs > 0).then(|| {
            let sites: Vec<String> = self
                .sites
                .iter()
                .map(|(s, n)| format!("{s} ({n})"))
                .collect();
            format!(
                "{} anon_vma allocations at call sites outside the rmap functions (inlined \
                 elsewhere, e.g. by LTO): missing from the counts; sites: {}",
                self.anon_vma_allocs,
                if sites.is_empty() {
                    "unknown".to_owned()
                } else {
                    sites.join(", ")
                }
            )
        })
    }
}

/// Per-page rmap counters from the function hooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmapReport {
    /// `folio_add_new_anon_rmap` calls: new anonymous folios mapped.
    pub new_anon_folios: u64,
    /// `folio_add_anon_rmap_ptes` calls.
    pub ptes_calls: u64,
    /// Pages those calls mapped.
    pub ptes_pages: u64,
    /// `folio_add_anon_rmap_pmd` calls.
    pub pmd_calls: u64,
    /// New anonymous folios missing from the per-VMA counts (map full).
    pub per_vma_missed: u64,
}

fn model_block(m: &ModelView<'_>, sizes: Sizes) -> ModelBlock {
    let c = m.comparison;
    ModelBlock {
        options: m.estimate.options,
        blind_spots: model::BLIND_SPOTS.iter().map(|&s| s.to_owned()).collect(),
        lazy_other_option: LazyBlock::of(
            m.estimate.lazy_other_option,
            m.estimate.system.actual,
            sizes,
        ),
        saved_by_rule: m.estimate.saved_by_rule.clone(),
        vmas_by_state: m.estimate.vmas_by_state.clone(),
        drift: Drift {
            anon_vma: c.drift[object::ANON_VMA as usize],
            anon_vma_chain: c.drift[object::AVC as usize],
            processes_differing: c.by_process.len() as u64,
        },
        snapshot: SnapshotBlock {
            age_s: (m.age_s * 1000.0).round() / 1000.0,
            stats: m.stats,
            actual: LiveBlock::of(m.estimate.system.actual, sizes),
        },
        unreachable_anon_vmas: m.slab_anon_vma.map(|slab| {
            i64::try_from(i128::from(slab) - i128::from(m.estimate.system.actual.anon_vma))
                .unwrap_or(i64::MAX)
        }),
    }
}

fn object_report(t: &ObjectTotals, size: u32) -> ObjectReport {
    let named = |v: &[u64; site::COUNT]| -> BTreeMap<String, u64> {
        site::NAMES
            .iter()
            .zip(v.iter().copied())
            .filter(|&(_, n)| n > 0)
            .map(|(&name, n)| (name.to_owned(), n))
            .collect()
    };
    let mut by_site = named(&t.alloc_by_site);
    for (name, n) in named(&t.free_by_site) {
        *by_site.entry(name).or_default() += n;
    }
    ObjectReport {
        allocs: t.flow.allocs,
        frees: t.flow.frees,
        object_size: size,
        by_site,
        allocs_by_site: named(&t.alloc_by_site),
        frees_by_site: named(&t.free_by_site),
        frees_of_preexisting: t.frees_of_preexisting,
    }
}

/// Object names in JSON, indexed by `rmapwatch_common::object`.
pub const OBJECT_NAMES: [&str; object::COUNT] = ["anon_vma", "anon_vma_chain"];

/// Fields added to `rmapwatch.report/1` since its first recordings, at
/// any depth (`designs`: the report's and each process's).
pub const ADDED_FIELDS: [&str; 11] = [
    "by_holder",
    "designs",
    "floor",
    "fork_windows_dropped",
    "kernel_memory",
    "nest_watch",
    "preemptible",
    "slab_ns_per_run",
    "split",
    "time",
    "timing_unpaired",
];

/// Whether `newer` (this rmapwatch's report, JSON) says what `older` (one
/// an earlier rmapwatch printed for the same input) said: every field of
/// `older` equal, at any depth; `newer` may only add [`ADDED_FIELDS`].
///
/// # Errors
/// Where they differ: the path and both values.
pub fn same_as_older(newer: &serde_json::Value, older: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    fn walk(n: &Value, o: &Value, at: &str) -> Result<(), String> {
        match (n, o) {
            (Value::Object(n), Value::Object(o)) => {
                for (k, ov) in o {
                    let nv = n.get(k).ok_or_else(|| format!("{at}.{k}: missing"))?;
                    walk(nv, ov, &format!("{at}.{k}"))?;
                }
                match n
                    .keys()
                    .find(|k| !o.contains_key(*k) && !ADDED_FIELDS.contains(&k.as_str()))
                {
                    Some(k) => Err(format!("{at}.{k}: not in the older report")),
                    None => Ok(()),
                }
            }
            (Value::Array(n), Value::Array(o)) if n.len() == o.len() => n
                .iter()
                .zip(o)
                .enumerate()
                .try_for_each(|(i, (n, o))| walk(n, o, &format!("{at}[{i}]"))),
            _ if n == o => Ok(()),
            _ => Err(format!("{at}: {n} here, {o} then")),
        }
    }
    walk(newer, older, "")
}

impl Report {
    /// Builds a report.
    #[must_use]
    pub fn build(acct: &Accounting, ctx: &Context<'_>) -> Self {
        let f = ctx.facts;
        let hooked = |h: &HookStatus| matches!(h.mode, HookMode::Fentry | HookMode::Kprobe);
        let hooks = f
            .hooks
            .iter()
            .map(|h| {
                let calls = ctx.counters.filter(|_| hooked(h)).map(|c| c.calls(h.id));
                let r = HookReport {
                    mode: h.mode,
                    symbol: h.symbol.clone(),
                    calls,
                    fallbacks: h.fallbacks.clone(),
                };
                (h.name.clone(), r)
            })
            .collect();
        let rmap_hooked = f
            .hooks
            .iter()
            .filter(|h| (hook::RMAP_NEW..=hook::RMAP_PMD).contains(&h.id))
            .any(hooked);
        let rmap = ctx.counters.filter(|_| rmap_hooked).map(|c| RmapReport {
            new_anon_folios: c.calls(hook::RMAP_NEW),
            ptes_calls: c.calls(hook::RMAP_PTES),
            ptes_pages: c.rmap_ptes_pages,
            pmd_calls: c.calls(hook::RMAP_PMD),
            per_vma_missed: c.rmap_vmas_full,
        });
        let rmap_by_process = ctx.rmap_vmas.map(RmapVmas::by_process);
        let sizes = [f.anon_vma_size, f.avc_size];
        let objects = OBJECT_NAMES
            .iter()
            .zip(acct.objects.iter().zip(sizes))
            .map(|(&name, (t, size))| (name.to_owned(), object_report(t, size)))
            .collect();
        let walk = ctx.model.as_ref().map(|m| WalkOf {
            estimate: m.estimate,
            procs: m.procs,
        });
        let mut processes: Vec<ProcessReport> = process_rows(acct, walk)
            .map(|p| {
                let lazy = p
                    .walked
                    .zip(p.lazy)
                    .map(|(actual, lazy)| LazyBlock::of(lazy, actual, f.sizes));
                ProcessReport {
                    pid: p.pid,
                    comm: p.comm,
                    ppid: p.ppid,
                    exited: p.exited,
                    vmas: p.vmas,
                    anon_vma: p.flows[object::ANON_VMA as usize],
                    anon_vma_chain: p.flows[object::AVC as usize],
                    live: LiveBlock::of(p.live, f.sizes),
                    lazy,
                    snapshot: p.walked.map(|a| LiveBlock::of(a, f.sizes)),
                    designs: ctx
                        .model
                        .as_ref()
                        .map(|m| design::shares(m.designs, p.pid))
                        .unwrap_or_default(),
                    rmap: rmap_by_process.as_ref().map(|by| {
                        let vmas = by.get(&p.pid);
                        ProcessRmap {
                            new_anon_folios: vmas.map_or(0, |v| v.values().sum()),
                            by_vma: vmas
                                .into_iter()
                                .flatten()
                                .map(|(start, n)| (format!("{start:x}"), *n))
                                .collect(),
                        }
                    }),
                }
            })
            .collect();
        // Biggest saving first, then most traffic.
        processes.sort_by_key(|p| {
            let saved = p
                .lazy
                .map_or(0, |l| p.live.bytes().saturating_sub(l.bytes()));
            std::cmp::Reverse((saved, p.anon_vma.allocs + p.anon_vma_chain.allocs))
        });
        let live = Objects::from(acct.live());
        let lazy = ctx
            .model
            .as_ref()
            .map(|m| LazyBlock::of(m.estimate.system.lazy, m.estimate.system.actual, f.sizes));
        let model = ctx.model.as_ref().map(|m| model_block(m, f.sizes));
        let folded = &acct.folded;
        let exited = ExitedReport {
            processes: folded.processes,
            anon_vma: folded.flows[object::ANON_VMA as usize],
            anon_vma_chain: folded.flows[object::AVC as usize],
            new_anon_folios: ctx.rmap_vmas.map(RmapVmas::folded),
        };
        let size = acct.state_size();
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let state = StateReport {
            processes: n(size.processes),
            exited_kept: n(size.exited_kept),
            exited_with_objects: n(size.exited_with_objects),
            rmap_entries: n(ctx.rmap_vmas.map_or(0, RmapVmas::entries)),
            owner_table_bytes: n(size.owner_table_bytes),
        };
        Self {
            schema: SCHEMA.to_owned(),
            kernel: f.kernel.clone(),
            probes: f.hooks.iter().map(|h| (h.name.clone(), h.mode)).collect(),
            hooks,
            fork_window: f.fork_window,
            duration_s: (ctx.duration_s * 1000.0).round() / 1000.0,
            t_ns: ctx.t_ns,
            dropped_events: ctx.counters.map(|c| c.dropped),
            fork_windows_dropped: ctx.fork_windows_dropped,
            resync: ctx.resync,
            events: acct.events,
            done: ctx.done,
            rmap,
            cost: ctx
                .programs
                .map(|p| CostReport::new(p, ctx.duration_s).against(f.floor.as_ref())),
            objects,
            live: LiveBlock::of(live, f.sizes),
            lazy,
            model,
            designs: ctx
                .model
                .as_ref()
                .map(|m| m.designs.iter().map(Outcome::summary).collect())
                .unwrap_or_default(),
            time: None,
            processes,
            exited,
            slab: f.slab.clone(),
            snapshot_error: f.snapshot_error.clone(),
            state,
            link: None,
            inlined: ctx.counters.map(|c| InlinedReport {
                anon_vma_allocs: c.inlined_anon_vma,
                sites: c.inlined_sites.clone(),
            }),
            fork_window_full: ctx.counters.and_then(|c| c.fork_window_full),
            walks_torn: ctx.counters.and_then(|c| c.walks_torn),
            timing_unpaired: ctx.counters.and_then(|c| c.timing_unpaired),
            kernel_memory: KernelMemory::new(&f.maps),
            nest_watch: ctx
                .counters
                .and_then(|c| c.nested.as_ref())
                .map(|n| NestReport::new(n, ctx.programs)),
        }
    }

    /// The seed's table: Object | Actual (KB) | Lazy (KB) | Change.
    #[must_use]
    pub fn seed_table(&self) -> Option<String> {
        let lazy = self.lazy?;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} | {:>12} | {:>12} | {:>8} | {:>9} | {:>9}",
            "Object", "Actual (KB)", "Lazy (KB)", "Change", "Actual #", "Lazy #"
        );
        let kb = |b: u64| b as f64 / 1024.0;
        let row = |s: &mut String, name: &str, a: ObjBytes, l: LazyBytes| {
            let change = l
                .change_pct
                .map_or_else(|| "-".to_owned(), |c| format!("{c:+.1}%"));
            let _ = writeln!(
                s,
                "{name:<16} | {:>12.1} | {:>12.1} | {change:>8} | {:>9} | {:>9}",
                kb(a.bytes),
                kb(l.bytes),
                a.objects,
                l.objects
            );
        };
        let actual = self.model.as_ref().map_or(self.live, |m| m.snapshot.actual);
        row(&mut s, "anon_vma", actual.anon_vma, lazy.anon_vma);
        row(
            &mut s,
            "anon_vma_chain",
            actual.anon_vma_chain,
            lazy.anon_vma_chain,
        );
        let sum_a = ObjBytes {
            objects: actual.anon_vma.objects + actual.anon_vma_chain.objects,
            bytes: actual.bytes(),
        };
        let sum_l_bytes = lazy.bytes();
        let sum_l = LazyBytes {
            objects: lazy.anon_vma.objects + lazy.anon_vma_chain.objects,
            bytes: sum_l_bytes,
            change_pct: round2(model::change_pct(sum_a.bytes, sum_l_bytes)),
        };
        row(&mut s, "total", sum_a, sum_l);
        Some(s)
    }

    /// Every design beside today's: objects by type, KB, change in bytes;
    /// `explain`: each design's rules, options and blind spots below.
    #[must_use]
    pub fn designs_table(&self, explain: bool) -> String {
        let mut s = design::table(
            self.designs
                .iter()
                .map(|d| (d.name.as_str(), &d.system, d.change_vs_today)),
        );
        if explain {
            for d in self.designs.iter().filter(|d| d.name != "today") {
                let _ = writeln!(s, "{}:", d.name);
                for r in &d.rules {
                    let _ = writeln!(s, "  - {r}");
                }
                if !d.options.is_empty() {
                    let o: Vec<String> = d
                        .options
                        .iter()
                        .map(|o| format!("{}={}", o.name, o.value))
                        .collect();
                    let _ = writeln!(s, "  rests on: {}", o.join(", "));
                }
                if let Some(p) = d.pinned.as_ref().filter(|p| !p.is_empty()) {
                    let named: Vec<String> = p
                        .iter()
                        .take(5)
                        .map(|x| {
                            let who = if x.pid == 0 {
                                "(exited before start)".to_owned()
                            } else {
                                format!("{} {}", x.pid, x.comm)
                            };
                            format!("{who} kept by {} live", x.pinners)
                        })
                        .collect();
                    let _ = writeln!(s, "  pinned: {}", named.join("; "));
                }
                if let Some(c) = d.coverage {
                    let _ = writeln!(
                        s,
                        "  pagemap: {} of {} faulted VMAs read in {:.1} ms ({} past the time \
                         budget, {} unreadable)",
                        c.read, c.needed, c.ms, c.skipped, c.failed
                    );
                }
                let _ = writeln!(
                    s,
                    "  blind spots: {} (report --json: designs[].blind_spots)",
                    d.blind_spots.len()
                );
            }
        }
        s
    }

    /// Human-readable rendering; `top` limits the process list.
    #[must_use]
    pub fn to_text(&self, top: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rmapwatch: kernel {} {}, {:.1} s, {} events, {} dropped",
            Printable(&self.kernel.release),
            Printable(&self.kernel.arch),
            self.duration_s,
            self.events,
            self.dropped_events.map_or_else(
                || "unknown (counters unreadable)".to_owned(),
                |d| d.to_string()
            )
        );
        let modes: Vec<String> = self
            .probes
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str()))
            .collect();
        let _ = writeln!(s, "probes: {}", modes.join(" "));
        let _ = writeln!(s, "{}", self.slab.line());
        if let Some(l) = &self.link {
            let _ = writeln!(s, "link: {}", l.line());
        }
        if let Some(w) = self.inlined.as_ref().and_then(InlinedReport::warning) {
            let _ = writeln!(s, "WARNING: {w}");
        }
        if let Some(n) = self.fork_window_full.filter(|&n| n > 0) {
            let _ = writeln!(
                s,
                "WARNING: the fork window's map was full {n} times: those forks were not \
                 timed, nor waits on locks they held told as held by a fork (their AVCs still \
                 went to the children; recordings made before ABI 9 charged them to the \
                 parents)"
            );
        }
        if let Some(n) = self.walks_torn.filter(|&n| n > 0) {
            let _ = writeln!(
                s,
                "{n} process walks torn (a VMA list changed under the iter/task walk, which \
                 ended there): the snapshot missed the rest of those processes' VMAs"
            );
        }
        if let Some(e) = &self.snapshot_error {
            let _ = writeln!(
                s,
                "no VMA walk on this kernel ({e}): live counts from events alone (objects older \
                 than start-up are not seen), no lazy figures"
            );
        }
        let dropped = self.dropped_events.unwrap_or(0);
        if dropped > 0 || self.fork_windows_dropped > 0 {
            let mut what = Vec::new();
            if dropped > 0 {
                what.push(format!("{dropped} dropped (ring buffer full)"));
            }
            if self.fork_windows_dropped > 0 {
                what.push(format!(
                    "{} fork windows dropped (over 65,536 threads seemed inside a fork at once: \
                     their closing records were lost)",
                    self.fork_windows_dropped
                ));
            }
            let _ = writeln!(
                s,
                "lost events: {}; live counts re-seeded from snapshots {} times{}",
                what.join(", "),
                self.resync.resyncs,
                if self.resync.degraded {
                    ", degraded until the next snapshot"
                } else {
                    ""
                }
            );
        }
        if let Some(c) = &self.cost {
            let _ = writeln!(
                s,
                "kernel cost: {} ns/event over {} runs, {:.3}% of a CPU, {} recursion misses",
                c.ns_per_event
                    .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}")),
                c.event_runs,
                c.cpu_pct,
                c.recursion_misses
            );
            let missed: Vec<String> = c
                .programs
                .iter()
                .filter(|(_, p)| p.recursion_misses > 0)
                .map(|(name, p)| format!("{name} {}", p.recursion_misses))
                .collect();
            if !missed.is_empty() {
                let _ = writeln!(s, "recursion misses by program: {}", missed.join(", "));
            }
            let floor = c.floor_words();
            if !floor.is_empty() {
                let _ = writeln!(s, "kernel cost: {floor}");
            }
            if !c.split.is_empty() {
                let _ = writeln!(s, "kernel cost: {}", c.split_words());
            }
        }
        if let Some(n) = &self.nest_watch {
            let _ = writeln!(s, "{}", n.line());
        }
        if let Some(m) = &self.kernel_memory {
            let _ = writeln!(s, "{}", m.line());
        }
        let _ = writeln!(s);
        if let Some(table) = self.seed_table() {
            let _ = writeln!(s, "{table}");
        }
        if !self.designs.is_empty() {
            let _ = writeln!(s, "{}", self.designs_table(true));
        }
        if let Some(t) = &self.time {
            let _ = writeln!(s, "{}", time_text(t));
        }
        if let Some(m) = &self.model {
            let _ = writeln!(
                s,
                "live (events): anon_vma {} objects, AVC {} objects; drift vs snapshot {:+} / {:+}",
                self.live.anon_vma.objects,
                self.live.anon_vma_chain.objects,
                m.drift.anon_vma,
                m.drift.anon_vma_chain
            );
            let _ = writeln!(
                s,
                "if tree-parent VMAs dropped their chain links: AVC {} objects ({})",
                m.lazy_other_option.anon_vma_chain.objects,
                m.lazy_other_option
                    .anon_vma_chain
                    .change_pct
                    .map_or_else(|| "-".into(), |c| format!("{c:+.1}%"))
            );
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>10} {:>10} {:>9}  by call site",
            "object", "allocs", "frees", "net", "net KB"
        );
        for (name, o) in &self.objects {
            let net = o.allocs.cast_signed() - o.frees.cast_signed();
            let kb = net as f64 * f64::from(o.object_size) / 1024.0;
            let sites: Vec<String> = o.by_site.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "{name:<16} {:>10} {:>10} {net:>10} {kb:>9.1}  {}",
                o.allocs,
                o.frees,
                sites.join(" ")
            );
        }
        if let Some(r) = &self.rmap {
            let _ = writeln!(
                s,
                "rmap: {} new anon folios, {} pte calls ({} pages), {} pmd calls",
                r.new_anon_folios, r.ptes_calls, r.ptes_pages, r.pmd_calls
            );
            if r.per_vma_missed > 0 {
                let _ = writeln!(
                    s,
                    "rmap: {} new anon folios not counted per VMA (map full)",
                    r.per_vma_missed
                );
            }
        }
        if !self.processes.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9}",
                "pid", "comm", "av+", "av-", "avc+", "avc-"
            );
            for p in self.processes.iter().take(top) {
                let _ = writeln!(
                    s,
                    "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9}{}",
                    p.pid,
                    Printable(&p.comm),
                    p.anon_vma.allocs,
                    p.anon_vma.frees,
                    p.anon_vma_chain.allocs,
                    p.anon_vma_chain.frees,
                    if p.exited { "  (exited)" } else { "" }
                );
            }
            if self.processes.len() > top {
                let _ = writeln!(
                    s,
                    "... {} more processes (use --json for all)",
                    self.processes.len() - top
                );
            }
        }
        if self.exited.processes > 0 {
            let _ = writeln!(s, "{}", self.exited.line());
        }
        // What a remote agent or a recording said (kernel, hooks, device)
        // reaches the terminal without its control characters.
        printable_lines(&s).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(runs: u64, ns: u64, misses: u64) -> ProgramStats {
        ProgramStats {
            runs,
            run_time_ns: runs * ns,
            recursion_misses: misses,
        }
    }

    #[test]
    fn the_floor_is_not_our_cost_and_one_measured_in_the_run_wins() {
        let programs: BTreeMap<String, ProgramStats> = [
            ("kmem_cache_alloc", stats(100, 120, 0)),
            ("kmem_cache_free", stats(100, 80, 3)),
            ("sched_process_fork", stats(10, 300, 0)),
            (FLOOR_PROGRAM, stats(200, 50, 7)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
        let c = CostReport::new(&programs, 1.0);
        assert_eq!(c.event_runs, 210, "the empty program's runs are not ours");
        assert_eq!(c.recursion_misses, 3);
        assert_eq!(c.slab_ns_per_run, Some(100.0));
        let f = c.floor.as_ref().expect("the empty program ran");
        assert_eq!((f.ns_per_run, f.ratio), (50.0, Some(2.0)));
        let file = crate::facts::Floor {
            ns_per_run: 25.0,
            measured_unix: 1,
            by: "rmw-bench cost".into(),
        };
        assert_eq!(c.clone().against(Some(&file)).floor, c.floor);
        // Without it, the machine's file; without either, none.
        let mut ours = programs.clone();
        ours.remove(FLOOR_PROGRAM);
        let c = CostReport::new(&ours, 1.0);
        assert!(c.floor.is_none());
        assert!(c.floor_words().contains("no floor measured"));
        let c = c.against(Some(&file));
        assert_eq!(c.floor.as_ref().and_then(|f| f.ratio), Some(4.0));
        assert!(c.floor_words().contains("= 4.00x the floor (25.0 ns"));
    }

    #[test]
    fn the_cost_split_is_reported_apart_and_not_as_our_cost() {
        let programs: BTreeMap<String, ProgramStats> = [
            ("kmem_cache_alloc", stats(100, 120, 0)),
            ("kmem_cache_free", stats(100, 80, 0)),
            ("split_site_a", stats(100, 50, 2)),
            ("split_site_f", stats(100, 51, 0)),
            ("split_detect_a", stats(100, 55, 0)),
            ("split_query_f", stats(100, 60, 0)),
            ("split_batch_f", stats(0, 0, 0)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
        let c = CostReport::new(&programs, 1.0);
        assert_eq!(c.event_runs, 200, "the variants' runs are not ours");
        assert_eq!(c.recursion_misses, 0);
        assert_eq!(c.slab_ns_per_run, Some(100.0));
        assert_eq!(c.programs.len(), 2);
        assert_eq!(c.split.len(), 4, "a variant that never ran is left out");
        assert_eq!(
            c.split_words(),
            "cost split, ns/run alloc/free (RMAPWATCH_COST_SPLIT; not our cost): \
             site 50/51, detect 55/-, query -/60"
        );
        let json = serde_json::to_value(&c).unwrap();
        assert!(json["split"].is_object());
        let mut ours = programs;
        ours.retain(|n, _| !n.starts_with(SPLIT_PREFIX));
        let json = serde_json::to_value(CostReport::new(&ours, 1.0)).unwrap();
        assert!(json.get("split").is_none(), "absent unless asked for");
    }

    #[test]
    fn kernel_memory_lists_the_largest_maps_first() {
        let maps: Vec<crate::facts::MapMemory> = [("STATS", 4096), ("EVENTS", 8 << 20)]
            .iter()
            .map(|(n, b)| crate::facts::MapMemory {
                name: (*n).to_owned(),
                max_entries: 1,
                bytes: *b,
            })
            .collect();
        let m = KernelMemory::new(&maps).expect("maps");
        assert_eq!(m.bytes, (8 << 20) + 4096);
        assert_eq!(m.maps[0].name, "EVENTS");
        assert_eq!(
            m.line(),
            "kernel memory: 8196 KiB in 2 maps, fixed at load (EVENTS 8192 KiB, STATS 4 KiB)"
        );
        assert!(KernelMemory::new(&[]).is_none());
    }
}
