//! The engine: one state machine fed by [`Input`]s, whatever their source,
//! that keeps the accounting and the model and builds what sinks show. It
//! decides when walks are needed and asks the source through [`Request`]s;
//! its decisions depend only on the inputs (their timestamps included), so
//! a recording replays to the same results.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use rmapwatch_common::hook;

pub use crate::account::Retention;
use crate::{
    account::{Accounting, Comparison, RmapVmas, StateSize, WalkKind},
    design::{Designs, Options as DesignOptions, Outcome},
    event::Event,
    facts::Facts,
    hash::FastMap,
    hooks::HookMode,
    input::{Counters, Input, Nanos, Order, OrderError, Paths, Request, SlabCounts, SlabRead},
    inspect::{self, Family, Inspection},
    model::{Estimate, Objects, Options as ModelOptions},
    report::{Context, ModelView, Report, Resync, SnapshotStats},
    rows::{ProcRow, WalkOf, process_rows},
    snapshot::{Vma, WalkCounts},
    view::{Frame, WalkView},
    walk::{Digest, ProcInfo},
};

/// How the engine runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// The lazy model's options.
    pub model: ModelOptions,
    /// The designs' options (their `lazy` is `model`).
    pub designs: DesignOptions,
    /// Walk at every tick (the live view, `report --interval`); otherwise
    /// only to seed, re-seed, and at the end.
    pub walk_on_tick: bool,
    /// The share of wall time walks may take (the live view: 5 %); `None`:
    /// no limit.
    pub walk_budget: Option<f64>,
    /// Whether the source answers requests (a recording does not: its
    /// walks are the ones recorded).
    pub source_answers: bool,
    /// How long exited processes stay listed before they are folded into
    /// the `exited` aggregate (default: 60 s of source time, at most 1024).
    pub retention: Retention,
}

/// The share of wall time walks may take where they run at every tick
/// for a watching user (5 %): on a 1M-VMA system a walk takes ~0.7 s.
pub const WALK_BUDGET: f64 = 0.05;

/// The presets of the commands: which one a sink runs with is decided
/// here, not by each command.
impl Options {
    /// The dashboard's, and that of `record` and `serve`: a walk at every
    /// tick (a frame after it), at most [`WALK_BUDGET`] of the time
    /// walking.
    #[must_use]
    pub fn dashboard(designs: DesignOptions) -> Self {
        Self {
            model: designs.lazy,
            designs,
            walk_on_tick: true,
            walk_budget: Some(WALK_BUDGET),
            source_answers: true,
            retention: Retention::default(),
        }
    }

    /// A headless report of a live source: walks to seed, re-seed and
    /// end, and at every tick when `interim` reports are printed.
    #[must_use]
    pub fn headless(designs: DesignOptions, interim: bool) -> Self {
        Self {
            model: designs.lazy,
            designs,
            walk_on_tick: interim,
            walk_budget: None,
            source_answers: true,
            retention: Retention::default(),
        }
    }

    /// A recording's replay: its walks are the ones recorded; `view`: as
    /// the dashboard shows it (a tick's frame after the walk it had).
    #[must_use]
    pub fn replay(designs: DesignOptions, view: bool) -> Self {
        Self {
            model: designs.lazy,
            designs,
            walk_on_tick: view,
            walk_budget: None,
            source_answers: false,
            retention: Retention::default(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model: ModelOptions::default(),
            designs: DesignOptions::default(),
            walk_on_tick: true,
            walk_budget: None,
            source_answers: true,
            retention: Retention::default(),
        }
    }
}

/// The size of the engine's state: what grows with the observed system
/// (and stays bounded by it: live objects, live processes, the retention).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineState {
    /// The accounting's.
    pub accounting: StateSize,
    /// Entries of the per-VMA new-folio counts (0 without the rmap hook).
    pub rmap_entries: usize,
    /// Processes whose mapping paths are kept (inspections).
    pub path_processes: usize,
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing for the sinks.
    Nothing,
    /// A new frame is ready (a tick, or the walk a tick asked for ended).
    Frame,
    /// The source ended.
    End,
}

/// The latest complete walk.
#[derive(Debug)]
struct Walk {
    estimate: Estimate,
    /// Every design's outcome at this walk.
    designs: Arc<Vec<Outcome>>,
    procs: BTreeMap<u32, ProcInfo>,
    counts: WalkCounts,
    ended: Nanos,
    walk_ms: f64,
    comparison: Comparison,
    slab_anon_vma: Option<u64>,
}

/// The walk in progress.
#[derive(Debug)]
struct Walking {
    began: Nanos,
    /// The detail process this walk keeps the VMAs of.
    detail_pid: Option<u32>,
    digest: Digest,
    comms: FastMap<u32, String>,
    /// The parents the walk saw.
    parents: Vec<(u32, u32)>,
    family: Option<Family>,
}

/// Whether a refresh walks: when `forced`, when walks are not limited, or
/// once the last walk (`since` it started, `took` long) is at most
/// `budget` of the time since.
fn walk_due(last: Option<(Nanos, Nanos)>, budget: Option<f64>, forced: bool) -> bool {
    forced
        || match (last, budget) {
            (Some((since, took)), Some(b)) => since as f64 >= took as f64 / b,
            _ => true,
        }
}

/// How many anon_vmas and AVCs to make room for before the seeding walk,
/// from the slab's object counts (in use or not). The anon_vma cache is
/// never merged; the AVC cache usually is (with `fs_cache`,
/// `eventpoll_pwq`), so its count can be any multiple of the AVCs: it is
/// believed up to 4 AVCs per anon_vma (a reservation touched nowhere would
/// still cost RSS once entries spread over it). At most 16M anon_vmas.
fn reservation(anon_vma_objects: u64, avc_cache_objects: u64) -> (usize, usize) {
    let avs = usize::try_from(anon_vma_objects.min(16 << 20)).unwrap_or(0);
    let avcs = usize::try_from(avc_cache_objects).unwrap_or(0);
    (avs, avcs.min(4 * avs))
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    opts: Options,
    designs: Designs,
    time: crate::time::TimeBook,
    order: Order,
    facts: Option<Facts>,
    acct: Accounting,
    walking: Option<Walking>,
    walk: Option<Walk>,
    walks: u64,
    /// When the last walk began and how long it took.
    last_walk: Option<(Nanos, Nanos)>,
    /// Walks asked for and not begun yet.
    walk_asked: bool,
    /// A frame is due when the walk asked for ends.
    frame_after_walk: bool,
    seeded: bool,
    /// Events were lost: the next walk re-seeds.
    reseed: bool,
    counters: Counters,
    dropped_seen: u64,
    /// [`Self::suspect_misses`] at the last counters.
    suspect_seen: u64,
    /// Fork windows user space dropped, at the last counters.
    windows_seen: u64,
    resync: Resync,
    rmap: Option<RmapVmas>,
    slab: Option<SlabCounts>,
    detail_pid: Option<u32>,
    /// The detail process's VMAs from the last walk (its family is found
    /// in the next walk against their anon_vmas).
    detail_vmas: Option<(u32, Vec<Vma>)>,
    detail: Option<Inspection>,
    paths: HashMap<u32, HashMap<u64, String>>,
    now: Nanos,
    requests: Vec<Request>,
    finishing: Finish,
    ended: Option<String>,
}

/// Where the end of a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    /// Running.
    No,
    /// The final walk is asked for.
    FinalWalk,
    /// The source is asked to stop.
    Stopping,
}

impl Engine {
    /// An engine waiting for its source's facts.
    #[must_use]
    pub fn new(opts: Options) -> Self {
        Self {
            designs: Designs::new(DesignOptions {
                lazy: opts.model,
                ..opts.designs
            }),
            time: crate::time::TimeBook::new(opts.model),
            opts,
            order: Order::default(),
            facts: None,
            acct: Accounting::default(),
            walking: None,
            walk: None,
            walks: 0,
            last_walk: None,
            walk_asked: false,
            frame_after_walk: false,
            seeded: false,
            reseed: false,
            counters: Counters::default(),
            dropped_seen: 0,
            suspect_seen: 0,
            windows_seen: 0,
            resync: Resync::default(),
            rmap: None,
            slab: None,
            detail_pid: None,
            detail_vmas: None,
            detail: None,
            paths: HashMap::new(),
            now: 0,
            requests: Vec::new(),
            finishing: Finish::No,
            ended: None,
        }
    }

    /// The measured machine, once its facts came.
    #[must_use]
    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_ref()
    }

    /// The accounting.
    #[must_use]
    pub fn accounting(&self) -> &Accounting {
        &self.acct
    }

    /// The source's time of the latest input.
    #[must_use]
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Walks completed.
    #[must_use]
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// Lost events and the re-seeds so far.
    #[must_use]
    pub fn resync(&self) -> Resync {
        self.resync
    }

    /// Events lost in the ring buffer, as the latest counters said (`None`
    /// before any or when unreadable).
    #[must_use]
    pub fn dropped_events(&self) -> Option<u64> {
        self.counters.kernel.as_ref().map(|k| k.dropped)
    }

    /// Why the source ended, once it did.
    #[must_use]
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// Requests for the source since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    fn snapshots(&self) -> bool {
        self.facts
            .as_ref()
            .is_some_and(|f| f.snapshot_error.is_none())
    }

    fn ask_walk(&mut self, slab: SlabRead) {
        if !self.snapshots() || self.walk_asked {
            return;
        }
        let paths = if self.finishing == Finish::FinalWalk {
            Paths::All
        } else {
            Paths::Detail
        };
        self.requests.push(Request::Walk { slab, paths });
        self.walk_asked = self.opts.source_answers;
    }

    /// Applies one input.
    ///
    /// # Errors
    /// The input breaks an ordering rule (a corrupt or hostile stream);
    /// the engine's state is unchanged by it.
    pub fn apply(&mut self, input: Input) -> Result<Step, OrderError> {
        self.order.check(&input)?;
        if let Some(t) = input.time() {
            self.now = t;
            self.acct.set_now(t);
        }
        Ok(match input {
            Input::Facts(f) => {
                if f.hooks.iter().any(|h| {
                    h.id == hook::RMAP_NEW && matches!(h.mode, HookMode::Fentry | HookMode::Kprobe)
                }) {
                    self.rmap = Some(RmapVmas::default());
                }
                self.facts = Some(*f);
                // The seeding walk, with the slab counts to size its tables.
                self.ask_walk(SlabRead::Read);
                Step::Nothing
            }
            Input::Events { events, .. } => {
                for e in &events {
                    self.acct.apply(e);
                    self.designs.event(e);
                    let acct = &self.acct;
                    self.time.event(e, &|p| acct.owner(p));
                    if let Event::LockWait(w) = e {
                        self.time.name_waiter(w.tgid, &|p| acct.comm(p));
                    }
                }
                // Lives ended by a reused pid.
                self.folded_away();
                Step::Nothing
            }
            Input::WalkBegin { t } => {
                self.walk_began(t);
                Step::Nothing
            }
            Input::WalkVmas {
                comms,
                parents,
                vmas,
            } => {
                if let Some(w) = &mut self.walking {
                    w.parents.extend(parents);
                }
                self.walk_vmas(comms, &vmas);
                Step::Nothing
            }
            Input::WalkEnd { t, counts, error } => self.walk_ended(t, counts, error),
            Input::Counters { counters, .. } => {
                self.counters_came(counters);
                Step::Nothing
            }
            Input::Rmap(u) => {
                if let Some(r) = &mut self.rmap {
                    // Removed entries of processes not listed (folded away
                    // already, or never seen) go to the folded ones.
                    let mut unlisted: Vec<u32> = u
                        .retired
                        .iter()
                        .map(|((tgid, _), _)| *tgid)
                        .filter(|t| !self.acct.processes.contains_key(t))
                        .collect();
                    unlisted.sort_unstable();
                    unlisted.dedup();
                    r.update(u.current, u.retired);
                    for tgid in unlisted {
                        r.fold(tgid);
                    }
                }
                Step::Nothing
            }
            Input::Names(names) => {
                for (pid, comm) in names {
                    self.acct.set_comm(pid, comm);
                }
                Step::Nothing
            }
            Input::MapPaths { pid, paths } => {
                self.paths.insert(pid, paths.into_iter().collect());
                Step::Nothing
            }
            Input::Slab(s) => {
                if !self.seeded
                    && let (Some(av), avc) = (s.anon_vma, s.anon_vma_chain)
                {
                    let (avs, avcs) = reservation(av, avc.unwrap_or(0));
                    self.acct.reserve_owners(avs + avcs);
                }
                self.slab = Some(s);
                Step::Nothing
            }
            Input::Notice(_) => Step::Nothing,
            Input::Tick { .. } => self.tick(),
            Input::End { reason, .. } => {
                if self.acct.in_walk() {
                    self.acct.abort_walk();
                    self.time.abort_walk();
                    self.walking = None;
                }
                self.ended = Some(reason);
                Step::End
            }
        })
    }

    /// What follows the processes folded away: their rmap counts, their
    /// mapping paths.
    fn folded_away(&mut self) {
        for pid in self.acct.take_folded() {
            if let Some(r) = &mut self.rmap {
                r.fold(pid);
            }
            self.paths.remove(&pid);
        }
    }

    /// The size of the state now.
    #[must_use]
    pub fn state_size(&self) -> EngineState {
        EngineState {
            accounting: self.acct.state_size(),
            rmap_entries: self.rmap.as_ref().map_or(0, RmapVmas::entries),
            path_processes: self.paths.len(),
        }
    }

    fn tick(&mut self) -> Step {
        self.acct.fold(self.opts.retention);
        self.folded_away();
        let unnamed = self.acct.take_unnamed();
        if !unnamed.is_empty() {
            self.requests.push(Request::Names { pids: unnamed });
        }
        let wants = self.opts.walk_on_tick || self.reseed;
        if self.finishing != Finish::No || !wants || !self.snapshots() {
            return Step::Frame;
        }
        if self.walk_asked || self.walking.is_some() {
            self.frame_after_walk = true;
            return Step::Nothing;
        }
        if self.walk_due(false) {
            self.ask_walk(SlabRead::No);
            if self.walk_asked {
                self.frame_after_walk = true;
                return Step::Nothing;
            }
        }
        Step::Frame
    }

    /// Recursion misses of our slab programs that may have been anon_vma
    /// or AVC events: on a kernel whose raw tracepoints are preemptible
    /// and that takes them raw (forced), those the nest watch did not see
    /// (a miss it saw at an rmap site was streamed by it). Elsewhere a
    /// miss is a run nested by an interrupt, which never allocates or
    /// frees at an rmap site (root test
    /// `nested_slab_runs_are_never_at_rmap_sites`): 0.
    fn suspect_misses(&self, c: &Counters) -> u64 {
        let preemptible = self.facts.as_ref().is_some_and(|f| f.slab.preemptible);
        if !preemptible {
            return 0;
        }
        let nested = c.kernel.as_ref().and_then(|k| k.nested.as_deref());
        let misses = crate::report::slab_misses(nested, c.programs.as_ref());
        let seen: u64 = nested.map_or(0, |n| n.per_cpu.iter().sum());
        misses.unwrap_or(0).saturating_sub(seen)
    }

    /// Whether a walk is due now (see [`walk_due`]).
    fn walk_due(&self, forced: bool) -> bool {
        let last = self
            .last_walk
            .map(|(began, took)| (self.now.saturating_sub(began), took));
        walk_due(last, self.opts.walk_budget, forced)
    }

    fn counters_came(&mut self, c: Counters) {
        let suspect = self.suspect_misses(&c);
        let dropped = c.kernel.as_ref().map(|k| k.dropped);
        // Each loss is told by its own high-water mark: a read without the
        // kernel's counters neither hides a loss of fork windows nor counts
        // one twice.
        let lost = suspect > self.suspect_seen
            || dropped.is_some_and(|d| d > self.dropped_seen)
            || c.fork_windows_dropped > self.windows_seen;
        self.suspect_seen = self.suspect_seen.max(suspect);
        self.dropped_seen = self.dropped_seen.max(dropped.unwrap_or(0));
        self.windows_seen = self.windows_seen.max(c.fork_windows_dropped);
        if lost && self.seeded {
            // Events were lost: the live counts become the kernel's again,
            // at the next walk, which is asked for now.
            self.reseed = true;
            self.resync.degraded = true;
            // At once if the walk budget allows, else at a tick.
            if self.walk_due(false) {
                self.ask_walk(SlabRead::No);
            }
        }
        self.counters = c;
    }

    fn walk_began(&mut self, t: Nanos) {
        self.walk_asked = false;
        let hint = self.walk.as_ref().map_or_else(
            || {
                self.slab
                    .and_then(|s| s.anon_vma)
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0)
            },
            |w| usize::try_from(w.estimate.system.actual.anon_vma).unwrap_or(0),
        );
        let model = self.opts.model;
        let family = self
            .detail_vmas
            .as_ref()
            .filter(|(pid, _)| Some(*pid) == self.detail_pid)
            .map(|(pid, vmas)| Family::new(*pid, vmas));
        self.designs
            .begin(self.facts.as_ref().unwrap_or(&Facts::default()));
        self.time.begin_walk();
        self.walking = Some(Walking {
            began: t,
            detail_pid: self.detail_pid,
            digest: Digest::new(model, hint.min(16 << 20), self.detail_pid),
            comms: FastMap::default(),
            parents: Vec::new(),
            family,
        });
        self.acct.begin_walk(if !self.seeded {
            WalkKind::Seed
        } else if self.reseed {
            WalkKind::Reseed
        } else {
            WalkKind::Refresh
        });
    }

    fn walk_vmas(&mut self, comms: Vec<(u32, String)>, vmas: &[Vma]) {
        let Some(w) = &mut self.walking else {
            return;
        };
        w.comms.extend(comms);
        let acct = &mut self.acct;
        for v in vmas {
            self.designs.vma(v);
            self.time.vma(v);
            let comms = &w.comms;
            w.digest.vma(
                v,
                || comms.get(&v.tgid).cloned().unwrap_or_default(),
                |ptr, tgid, kind| acct.walk_object(ptr, tgid, kind),
            );
            if let Some(f) = &mut w.family {
                f.vma(v);
            }
        }
    }

    fn walk_ended(&mut self, t: Nanos, counts: WalkCounts, error: Option<String>) -> Step {
        let Some(w) = self.walking.take() else {
            return Step::Nothing;
        };
        let frame = std::mem::take(&mut self.frame_after_walk);
        if error.is_some() {
            self.acct.abort_walk();
            self.time.abort_walk();
            self.last_walk = Some((w.began, t.saturating_sub(w.began)));
        } else {
            let acct = &mut self.acct;
            let designs = &mut self.designs;
            let default_facts = Facts::default();
            let facts = self.facts.as_ref().unwrap_or(&default_facts);
            let seeding = !self.seeded;
            let parents: BTreeMap<u32, u32> = w.parents.iter().copied().collect();
            let (walked, outcomes) = w.digest.finish_with(
                counts,
                |ptr, tgid, kind| acct.walk_object(ptr, tgid, kind),
                |walked, owner| designs.end_walk(walked, owner, facts, &parents, seeding),
            );
            self.time.end_walk(
                outcomes
                    .iter()
                    .find(|o| o.name == "cow_context")
                    .map(|o| {
                        o.processes
                            .iter()
                            .map(|(&pid, h)| (pid, h.count("remap_entry")))
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            let comparison = self.acct.end_walk().unwrap_or_default();
            if comparison.reconciled {
                if self.seeded {
                    // Exits lost with the events: gone, not listed for ever.
                    self.acct.exits_lost(|pid| walked.procs.contains_key(&pid));
                    self.resync = Resync {
                        degraded: false,
                        resyncs: self.resync.resyncs + 1,
                        drift_before_last: Some((comparison.drift[0], comparison.drift[1])),
                    };
                }
                self.seeded = true;
                self.reseed = false;
            }
            self.acct
                .name_existing(walked.procs.iter().map(|(&p, i)| (p, i.comm.clone())));
            // Processes the events never saw fork (older than start-up):
            // their parent as the walk saw it.
            self.acct.parents_existing(w.parents.iter().copied());
            self.walks += 1;
            self.last_walk = Some((w.began, t.saturating_sub(w.began)));
            // The detail view: this walk's VMAs, the family against the
            // previous walk's anon_vmas (one more walk if there was none).
            self.detail = None;
            // Only for the process this walk kept: the user may have opened
            // another one while it ran (then the next walk is asked for).
            if let Some(pid) = self.detail_pid.filter(|&p| w.detail_pid == Some(p)) {
                if walked.procs.contains_key(&pid) {
                    let comm = |p: u32| {
                        walked
                            .procs
                            .get(&p)
                            .map(|i| i.comm.clone())
                            .unwrap_or_default()
                    };
                    let had_family = w.family.is_some();
                    let family = w.family.map(|f| f.finish(comm)).unwrap_or_default();
                    let empty = HashMap::new();
                    let paths = self.paths.get(&pid).unwrap_or(&empty);
                    let sizes = self.facts.as_ref().map(|f| f.sizes).unwrap_or_default();
                    let facts = self.facts.clone().unwrap_or_default();
                    self.detail = Some(inspect::inspect(
                        &walked.detail,
                        comm(pid),
                        family,
                        pid,
                        &inspect::Seen {
                            est: &walked.estimate,
                            paths,
                            sizes,
                            designs: Some(inspect::DesignView {
                                designs: &self.designs,
                                outcomes: &outcomes,
                                facts: &facts,
                            }),
                        },
                    ));
                    self.detail_vmas = Some((pid, walked.detail.clone()));
                    if !had_family {
                        self.ask_walk(SlabRead::No);
                    }
                } else {
                    self.detail_vmas = None;
                }
            }
            let slab_anon_vma = self
                .slab
                .take()
                .filter(|s| s.shrunk)
                .and_then(|s| s.anon_vma);
            self.walk = Some(Walk {
                designs: Arc::new(outcomes),
                estimate: walked.estimate,
                procs: walked.procs,
                counts: walked.counts,
                ended: t,
                walk_ms: (t.saturating_sub(w.began) as f64 / 1e4).round() / 100.0,
                comparison,
                slab_anon_vma,
            });
        }
        match self.finishing {
            Finish::FinalWalk => {
                self.finishing = Finish::Stopping;
                self.requests.push(Request::Stop);
            }
            // Events were lost during this walk: re-seed, within the walk
            // budget (a failed walk is not asked again before the next
            // tick).
            _ if self.reseed && error.is_none() && self.walk_due(false) => {
                self.ask_walk(SlabRead::No);
            }
            _ => {}
        }
        if frame { Step::Frame } else { Step::Nothing }
    }

    /// The process the user inspects (the live view's detail), or none:
    /// it is walked at once, and at every walk after.
    pub fn want_detail(&mut self, pid: Option<u32>) {
        if pid == self.detail_pid {
            return;
        }
        self.detail_pid = pid;
        self.detail = None;
        self.requests.push(Request::Detail { pid });
        if pid.is_some() {
            self.ask_walk(SlabRead::No);
        }
    }

    /// The inspection of `pid`, from the latest walk that kept it.
    #[must_use]
    pub fn inspection(&self, pid: u32) -> Option<&Inspection> {
        self.detail.as_ref().filter(|i| i.pid == pid)
    }

    /// The run should end: one final walk (with the slab counters and
    /// every process's mapping paths), then the source is asked to stop.
    pub fn finish(&mut self) {
        if self.finishing != Finish::No || self.ended.is_some() {
            return;
        }
        if self.snapshots() && self.opts.source_answers {
            self.finishing = Finish::FinalWalk;
            self.walk_asked = false;
            self.requests.retain(|r| !matches!(r, Request::Walk { .. }));
            self.ask_walk(SlabRead::Shrink);
        } else {
            self.finishing = Finish::Stopping;
            self.requests.push(Request::Stop);
        }
    }

    fn duration_s(&self) -> f64 {
        self.now as f64 / 1e9
    }

    /// The report of the state now (`done`: the final one).
    ///
    /// # Panics
    /// Never: without facts a default is used.
    #[must_use]
    pub fn report(&self, done: bool) -> Report {
        let default_facts = Facts::default();
        let facts = self.facts.as_ref().unwrap_or(&default_facts);
        let model = self.walk.as_ref().map(|w| ModelView {
            estimate: &w.estimate,
            procs: &w.procs,
            age_s: self.now.saturating_sub(w.ended) as f64 / 1e9,
            stats: SnapshotStats {
                taken: self.walks,
                vmas: w.counts.vmas,
                processes: w.procs.len() as u64,
                duplicate_vmas: w.counts.duplicate_vmas,
                short_chains: w.counts.short_chains,
                truncated_chains: w.counts.truncated_chains,
                walk_ms: w.walk_ms,
            },
            slab_anon_vma: w.slab_anon_vma,
            comparison: &w.comparison,
            designs: &w.designs,
        });
        let mut r = Report::build(
            &self.acct,
            &Context {
                facts,
                counters: self.counters.kernel.as_ref(),
                duration_s: self.duration_s(),
                t_ns: self.now,
                done,
                model,
                rmap_vmas: self.rmap.as_ref(),
                programs: self.counters.programs.as_ref(),
                resync: self.resync,
                fork_windows_dropped: self.counters.fork_windows_dropped,
            },
        );
        r.time = Some(self.time_report());
        r
    }

    /// The time block (lock waits, fork work, rmap walks) now.
    #[must_use]
    pub fn time_report(&self) -> crate::time::TimeReport {
        let default_facts = Facts::default();
        let facts = self.facts.as_ref().unwrap_or(&default_facts);
        let t = &facts.time;
        let sources = crate::time::Sources {
            lock: (t.lock_on(), t.lock.clone()),
            fork: t.fork.clone(),
            rmap: t.rmap.clone(),
        };
        let lost = self
            .counters
            .kernel
            .as_ref()
            .and_then(|k| k.lock_waits_lost)
            .unwrap_or(0);
        let names: HashMap<u64, &str> = t.rmap_one.iter().map(|(n, &a)| (a, n.as_str())).collect();
        self.time
            .report(&sources, lost, &|pid| self.acct.comm(pid), &|a| {
                names.get(&a).map(|n| (*n).to_owned())
            })
    }

    /// The processes with traffic or objects, as every sink sees them
    /// ([`crate::rows`]).
    pub fn rows(&self) -> impl Iterator<Item = ProcRow> + '_ {
        process_rows(&self.acct, self.walk_of())
    }

    /// Objects that exist now, system-wide (events).
    #[must_use]
    pub fn live(&self) -> Objects {
        Objects::from(self.acct.live())
    }

    /// What ANON_VMA_LAZY would hold system-wide, as of the latest walk.
    #[must_use]
    pub fn lazy(&self) -> Option<Objects> {
        self.walk.as_ref().map(|w| w.estimate.system.lazy)
    }

    /// Every design's outcome at the latest walk (today, lazy,
    /// cow_context, ideal; `None` before the first walk).
    #[must_use]
    pub fn designs(&self) -> Option<&[Outcome]> {
        self.walk.as_ref().map(|w| w.designs.as_slice())
    }

    /// The latest walk, for the per-process projection.
    fn walk_of(&self) -> Option<WalkOf<'_>> {
        self.walk.as_ref().map(|w| WalkOf {
            estimate: &w.estimate,
            procs: &w.procs,
        })
    }

    /// The typed view of the state now, for the live view.
    #[must_use]
    pub fn frame(&self) -> Frame {
        let walk = self.walk.as_ref();
        let processes = self.rows().collect();
        Frame {
            facts: self.facts.clone().unwrap_or_default(),
            uptime_s: self.duration_s(),
            events: self.acct.events,
            dropped: self.counters.kernel.as_ref().map(|k| k.dropped),
            ring_peak_pct: self
                .facts
                .as_ref()
                .filter(|f| f.ring_bytes > 0)
                .map(|f| self.counters.ring_peak_bytes as f64 * 100.0 / f64::from(f.ring_bytes)),
            resync: self.resync,
            cost: self.counters.programs.as_ref().map(|p| {
                crate::report::CostReport::new(p, self.duration_s())
                    .against(self.facts.as_ref().and_then(|f| f.floor.as_ref()))
            }),
            totals: self.acct.objects,
            live: self.live(),
            walk: walk.map(|w| WalkView {
                actual: w.estimate.system.actual,
                lazy: w.estimate.system.lazy,
                lazy_other_option: w.estimate.lazy_other_option,
                age_s: self.now.saturating_sub(w.ended) as f64 / 1e9,
                walk_ms: w.walk_ms,
                walks: self.walks,
                drift: w.comparison.drift,
                designs: Arc::clone(&w.designs),
            }),
            processes,
            exited: self.acct.folded,
            detail: self.detail.clone(),
            inlined_warning: self.counters.kernel.as_ref().and_then(|k| {
                crate::report::InlinedReport {
                    anon_vma_allocs: k.inlined_anon_vma,
                    sites: k.inlined_sites.clone(),
                }
                .warning()
            }),
            link: None,
            // O(roots + processes waiting): cheap beside the rows.
            time: Some(self.time_report()),
        }
    }
}

#[cfg(test)]
mod tests;
