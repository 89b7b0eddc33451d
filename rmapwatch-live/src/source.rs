//! The live-kernel source: the attached programs' ring buffer, counters and
//! snapshot walks, turned into the engine's ordered [`Input`]s, with
//! [`Request`]s coming back. It keeps the ordering rules of
//! `rmapwatch_engine::input`: it drains the ring before a walk begins,
//! keeps draining while the walk runs (a 1M-VMA walk takes ~0.7 s, long
//! enough to fill a ring during a fork storm), and drains once more before
//! the walk ends.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use rmapwatch_common::stat;
use rmapwatch_engine::{
    event::{Event, ForkWindows},
    facts::{ClockRef, Endian, Facts},
    hooks::{HookMode, ProbeMode},
    input::{
        Counters, Input, KernelCounters, Nanos, Nested, Notice, Paths, Request, RmapUpdate,
        SlabRead,
    },
    snapshot::{Decoder, PagemapRead, SnapshotError, Vma, WalkCounts, for_each_chunk},
};
use tokio::{io::unix::AsyncFd, sync::mpsc::UnboundedReceiver};

use crate::{
    kernel::KernelFacts,
    loader::{Attach, Probes},
    pagemap, procfs,
};

/// How often the ring buffer is drained without a wakeup: the programs
/// submit without waking us (a wakeup per event costs an IPI) and force
/// one when the ring is an eighth full.
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// VMAs per [`Input::WalkVmas`] batch.
const BATCH: usize = 1024;

/// What to attach and how often to tick.
#[derive(Clone, Copy, Debug)]
pub struct LiveOptions {
    /// How to attach function hooks.
    pub probe_mode: ProbeMode,
    /// Ring buffer bytes (`None`: the default).
    pub ring_bytes: Option<u32>,
    /// The refresh tick (counters, then [`Input::Tick`]).
    pub tick: Duration,
    /// Whether and how long each walk reads its VMAs' anonymous pages
    /// from pagemap.
    pub pagemap: PagemapRead,
}

/// Where the inputs go: returns `false` once nobody listens (the source
/// then stops).
pub trait Sink {
    /// One input.
    fn put(&mut self, input: Input) -> bool;
}

impl<F: FnMut(Input) -> bool> Sink for F {
    fn put(&mut self, input: Input) -> bool {
        self(input)
    }
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(id, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The attached programs, ready to stream.
pub struct Live {
    /// Names of the inlining detector's call sites (kallsyms is read again
    /// only when a new one turns up: it is ~10 MiB).
    site_names: std::cell::RefCell<std::collections::HashMap<u64, String>>,
    /// `/proc/kallsyms` as opened at start-up, where its addresses showed
    /// (a fresh open after the capabilities were dropped reads zeros).
    kallsyms: crate::kernel::kallsyms::Opened,
    probes: Probes,
    facts: Facts,
    notices: Vec<Notice>,
    started: Instant,
    tick: Duration,
    pagemap: PagemapRead,
    detail: Option<u32>,
    rmap: bool,
    said_shrink: bool,
}

impl Live {
    /// Loads and attaches the programs (errors here are the user's to see
    /// before anything runs).
    ///
    /// # Errors
    /// Loading or attaching fails.
    pub fn start(kernel: &KernelFacts, opts: &LiveOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let clock = ClockRef {
            unix_ns: clock(libc::CLOCK_REALTIME),
            monotonic_ns: clock(libc::CLOCK_MONOTONIC),
            boottime_ns: clock(libc::CLOCK_BOOTTIME),
        };
        let probes = Probes::load(kernel, opts.probe_mode, opts.ring_bytes, Attach::All)?;
        // Loading parsed BTF (tens of MiB, freed): return it.
        trim_heap();
        let notices = probes
            .warnings
            .iter()
            .map(|w| Notice {
                warning: true,
                text: w.clone(),
            })
            .chain(kernel.notes.iter().chain(&probes.notes).map(|n| Notice {
                warning: false,
                text: n.clone(),
            }))
            .collect();
        let rmap = probes.hooks.iter().any(|h| {
            h.id == rmapwatch_common::hook::RMAP_NEW
                && matches!(h.mode, HookMode::Fentry | HookMode::Kprobe)
        });
        let facts = Facts {
            tool: format!("rmapwatch {}", env!("CARGO_PKG_VERSION")),
            kernel: kernel.id.clone(),
            // SAFETY: sysconf has no preconditions.
            page_size: u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096),
            endian: if cfg!(target_endian = "big") {
                Endian::Big
            } else {
                Endian::Little
            },
            anon_vma_size: kernel.layout.anon_vma_size,
            avc_size: kernel.layout.avc_size,
            sizes: kernel.sizes,
            probe_mode: opts.probe_mode,
            hooks: probes.hooks.clone(),
            fork_window: probes.fork_window,
            snapshot_error: probes.snapshot_error.clone(),
            ring_bytes: opts.ring_bytes.unwrap_or(rmapwatch_common::RING_BYTES),
            bpf_stats: probes.bpf_stats(),
            clock,
            source: "live".into(),
            slab: kernel.slab.clone(),
            slots: kernel.slots.clone(),
            pagemap: opts.pagemap.to_string(),
            time: probes.time.clone(),
            floor: crate::floor::read(&kernel.id.release),
            maps: crate::procfs::bpf_maps(),
        };
        Ok(Self {
            probes,
            facts,
            notices,
            started,
            tick: opts.tick,
            pagemap: opts.pagemap,
            detail: None,
            rmap,
            said_shrink: false,
            site_names: std::cell::RefCell::default(),
            kallsyms: kernel.kallsyms.clone(),
        })
    }

    /// The facts the stream will start with.
    #[must_use]
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    fn t(&self) -> Nanos {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Streams until a [`Request::Stop`], the requests' sender goes away,
    /// or the sink stops listening; then detaches and sends
    /// [`Input::End`]. Blocks (it runs its own single-threaded runtime).
    ///
    /// # Errors
    /// The runtime or the ring buffer cannot be set up.
    pub fn run(
        mut self,
        out: &mut dyn Sink,
        mut requests: UnboundedReceiver<Request>,
    ) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the source's runtime")?;
        let ring = self.probes.take_ring()?;
        let mut ring = runtime
            // SAFETY: the ring buffer owns its fd and keeps it open until
            // the AsyncFd (which owns the ring buffer) is dropped.
            .block_on(async { unsafe { AsyncFd::register(ring) } })
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        let mut ring_stats = RingStats::default();
        let facts = Box::new(self.facts.clone());
        let mut alive = out.put(Input::Facts(facts));
        for n in std::mem::take(&mut self.notices) {
            alive &= out.put(Input::Notice(n));
        }
        // What the programs reported while attaching comes before any walk.
        alive &= self.drain(ring.get_mut(), out, &mut ring_stats);
        let reason = runtime.block_on(async {
            let mut drain_timer = tokio::time::interval(DRAIN_EVERY);
            drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticker = tokio::time::interval(self.tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticker.tick().await;
            while alive {
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let Ok(mut guard) = guard else { return "the ring buffer failed".to_owned() };
                        alive = self.drain(guard.get_inner_mut(), out, &mut ring_stats);
                        guard.clear_ready();
                    }
                    _ = drain_timer.tick() => {
                        alive = self.drain(ring.get_mut(), out, &mut ring_stats);
                    }
                    _ = ticker.tick() => {
                        alive = self.counters(out, &ring_stats)
                            && self.rmap_update(out)
                            && out.put(Input::Tick { t: self.t() });
                    }
                    req = requests.recv() => match req {
                        None => return "the consumer went away".to_owned(),
                        Some(Request::Stop) => return "stopped".to_owned(),
                        Some(r) => alive = self.request(r, ring.get_mut(), out, &mut ring_stats),
                    }
                }
            }
            "the consumer went away".to_owned()
        });
        // Whatever is still in the ring happened before the stop.
        self.drain(ring.get_mut(), out, &mut ring_stats);
        self.counters(out, &ring_stats);
        let t = self.t();
        drop(ring);
        drop(self); // detach: nothing stays loaded
        out.put(Input::End { t, reason });
        Ok(())
    }

    /// Applies everything waiting in the ring buffer; `false` when the sink
    /// stopped listening.
    fn drain(
        &self,
        ring: &mut RingBuf<MapData>,
        out: &mut dyn Sink,
        stats: &mut RingStats,
    ) -> bool {
        let events = drain_ring(ring, stats);
        events.is_empty()
            || out.put(Input::Events {
                t: self.t(),
                events,
            })
    }

    /// The inlining detector's call sites, by name.
    fn inlined_sites(&self) -> std::collections::BTreeMap<String, u64> {
        let sites = self.probes.inlined_sites().unwrap_or_default();
        let mut names = self.site_names.borrow_mut();
        if sites.iter().any(|(a, _)| !names.contains_key(a))
            && let Ok(k) = self.kallsyms.read()
        {
            for (a, _) in &sites {
                names.insert(*a, k.symbolize(*a));
            }
        }
        sites
            .into_iter()
            .map(|(a, n)| {
                (
                    names.get(&a).cloned().unwrap_or_else(|| format!("{a:#x}")),
                    n,
                )
            })
            .collect()
    }

    /// The programs' log lines (as notices, before the counters that count
    /// their conditions), then the counters.
    fn counters(&mut self, out: &mut dyn Sink, ring: &RingStats) -> bool {
        for line in self.probes.kernel_log() {
            if !out.put(Input::Notice(Notice {
                warning: true,
                text: format!("kernel: {line}"),
            })) {
                return false;
            }
        }
        let kernel = self.probes.stats().ok().map(|s| KernelCounters {
            dropped: s.get(stat::DROPPED as usize).copied().unwrap_or(0),
            hook_calls: (0..rmapwatch_common::hook::COUNT as u32)
                .map(|h| s.get((stat::HOOK_CALLS + h) as usize).copied().unwrap_or(0))
                .collect(),
            rmap_ptes_pages: s.get(stat::RMAP_PTES_PAGES as usize).copied().unwrap_or(0),
            rmap_vmas_full: s.get(stat::RMAP_VMAS_FULL as usize).copied().unwrap_or(0),
            inlined_anon_vma: s.get(stat::INLINED_ANON_VMA as usize).copied().unwrap_or(0),
            fork_window_full: s.get(stat::FORK_WINDOW_FULL as usize).copied(),
            walks_torn: s.get(stat::WALK_TORN as usize).copied(),
            lock_waits_lost: Some(
                [stat::LOCKS_FULL, stat::LOCK_WAITING_FULL, stat::LOCK_REUSED]
                    .iter()
                    .map(|&i| s.get(i as usize).copied().unwrap_or(0))
                    .sum(),
            ),
            timing_unpaired: s.get(stat::TIMING_UNPAIRED as usize).copied(),
            nested: self.probes.nest_watch.then(|| {
                Box::new(Nested {
                    per_cpu: self.probes.stat_per_cpu(stat::NESTED).unwrap_or_default(),
                    ours: s.get(stat::NESTED_OURS as usize).copied().unwrap_or(0),
                    slab_misses: self.probes.slab_misses(),
                })
            }),
            inlined_sites: if s.get(stat::INLINED_ANON_VMA as usize).copied().unwrap_or(0) > 0 {
                self.inlined_sites()
            } else {
                std::collections::BTreeMap::new()
            },
        });
        out.put(Input::Counters {
            t: self.t(),
            counters: Counters {
                kernel,
                programs: self.probes.program_stats(),
                undecodable: ring.undecodable,
                ring_peak_bytes: ring.peak_bytes,
                fork_windows_dropped: ring.windows.overflowed,
            },
        })
    }

    /// The kernel's per-VMA new-folio counts; entries of processes that
    /// are gone are removed from the map (so that it never fills) and
    /// reported with their last values.
    fn rmap_update(&mut self, out: &mut dyn Sink) -> bool {
        if !self.rmap {
            return true;
        }
        let current = match self.probes.rmap_vmas() {
            Ok(c) => c,
            Err(e) => {
                return out.put(Input::Notice(Notice {
                    warning: true,
                    text: format!("{e:#}"),
                }));
            }
        };
        let gone_pids: BTreeSet<u32> = current
            .iter()
            .map(|((tgid, _), _)| *tgid)
            .filter(|&t| !procfs::exists(t))
            .collect();
        let (retired, current): (Vec<_>, Vec<_>) = current
            .into_iter()
            .partition(|((tgid, _), _)| gone_pids.contains(tgid));
        let keys: Vec<(u32, u64)> = retired.iter().map(|(k, _)| *k).collect();
        if let Err(e) = self.probes.forget_rmap_vmas(&keys) {
            out.put(Input::Notice(Notice {
                warning: true,
                text: format!("pruning RMAP_VMAS: {e:#}"),
            }));
        }
        out.put(Input::Rmap(RmapUpdate { current, retired }))
    }

    fn request(
        &mut self,
        r: Request,
        ring: &mut RingBuf<MapData>,
        out: &mut dyn Sink,
        stats: &mut RingStats,
    ) -> bool {
        match r {
            Request::Walk { slab, paths } => self.walk(ring, out, stats, slab, paths),
            Request::Detail { pid } => {
                self.detail = pid;
                true
            }
            Request::Names { pids } => {
                let names: Vec<(u32, String)> = pids
                    .into_iter()
                    .filter_map(|p| procfs::comm(p).map(|c| (p, c)))
                    .collect();
                names.is_empty() || out.put(Input::Names(names))
            }
            Request::Pause { .. } | Request::Stop => true,
        }
    }

    /// One walk, with the ring drained before, between the iterator's
    /// reads, and after.
    fn walk(
        &mut self,
        ring: &mut RingBuf<MapData>,
        out: &mut dyn Sink,
        stats: &mut RingStats,
        slab: SlabRead,
        paths: Paths,
    ) -> bool {
        if !self.drain(ring, out, stats) || !self.counters(out, stats) {
            return false;
        }
        if slab == SlabRead::Shrink && !self.said_shrink {
            // A side effect on the observed system: said once.
            self.said_shrink = true;
            out.put(Input::Notice(Notice {
                warning: false,
                text: procfs::SHRINKING.to_owned(),
            }));
        }
        if slab != SlabRead::No {
            out.put(Input::Slab(procfs::slab_counts(slab == SlabRead::Shrink)));
        }
        if !out.put(Input::WalkBegin { t: self.t() }) {
            return false;
        }
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        let (counts, error) = match self.probes.snapshot_reader() {
            Ok(reader) => {
                let t = self.started;
                let mut pagemap = pagemap::Reader::new(self.pagemap);
                let mut pump = WalkPump {
                    out: &mut *out,
                    ring,
                    stats,
                    vmas: Vec::new(),
                    comms: Vec::new(),
                    parents: Vec::new(),
                    named: BTreeSet::new(),
                    pagemap: &mut pagemap,
                    t: move || u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    alive: true,
                };
                let probes = &mut self.probes;
                let r = pump.run(reader, &mut || probes.snapshot_next_pass());
                pids.clone_from(&pump.named);
                if !pump.alive {
                    return false;
                }
                match r {
                    Ok(c) => (c, None),
                    Err(e) => (WalkCounts::default(), Some(e.to_string())),
                }
            }
            Err(e) => (WalkCounts::default(), Some(format!("{e:#}"))),
        };
        if !self.drain(ring, out, stats) {
            return false;
        }
        let wanted: Vec<u32> = match paths {
            Paths::All => pids.into_iter().collect(),
            Paths::Detail => self.detail.into_iter().collect(),
        };
        for (n, pid) in wanted.into_iter().enumerate() {
            // Every process's paths (the end of a recording) take a while:
            // the ring keeps being drained.
            if n % 64 == 63 && !self.drain(ring, out, stats) {
                return false;
            }
            let p = procfs::map_paths(pid);
            if !p.is_empty() {
                let mut paths: Vec<(u64, String)> = p.into_iter().collect();
                paths.sort_unstable();
                if !out.put(Input::MapPaths { pid, paths }) {
                    return false;
                }
            }
        }
        out.put(Input::WalkEnd {
            t: self.t(),
            counts,
            error,
        })
    }
}

/// What draining the ring saw, and the fork windows it keeps.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Records that did not decode (an ABI mismatch).
    pub undecodable: u64,
    /// The most bytes (records and their headers) waiting at one drain.
    pub peak_bytes: u64,
    /// The threads inside a fork, from the records drained so far.
    pub windows: ForkWindows,
}

/// Decodes every record waiting in the ring; counts those that do not
/// decode, and how full the ring was.
pub fn drain_ring<T: std::borrow::BorrowMut<MapData>>(
    ring: &mut RingBuf<T>,
    stats: &mut RingStats,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut bytes = 0u64;
    while let Some(item) = ring.next() {
        // Each record has an 8-byte header and is rounded up to 8 bytes.
        bytes += (item.len() as u64).div_ceil(8) * 8 + 8;
        match stats.windows.decode(&item) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => {}
            Err(_) => stats.undecodable += 1,
        }
    }
    stats.peak_bytes = stats.peak_bytes.max(bytes);
    events
}

/// Where the walk's records and the events drained between its reads go,
/// in order.
struct WalkPump<'a, R: RingSource, T: Fn() -> Nanos> {
    out: &'a mut dyn Sink,
    ring: &'a mut R,
    stats: &'a mut RingStats,
    vmas: Vec<Vma>,
    comms: Vec<(u32, String)>,
    parents: Vec<(u32, u32)>,
    named: BTreeSet<u32>,
    /// Fills each VMA's anonymous pages as it is decoded.
    pagemap: &'a mut pagemap::Reader,
    t: T,
    alive: bool,
}

/// A ring buffer to drain (the kernel's, or a test's).
pub trait RingSource {
    /// Everything waiting.
    fn drain(&mut self, stats: &mut RingStats) -> Vec<Event>;
}

impl RingSource for RingBuf<MapData> {
    fn drain(&mut self, stats: &mut RingStats) -> Vec<Event> {
        drain_ring(self, stats)
    }
}

impl<R: RingSource, T: Fn() -> Nanos> WalkPump<'_, R, T> {
    fn flush(&mut self) {
        if !self.vmas.is_empty() && self.alive {
            self.alive = self.out.put(Input::WalkVmas {
                comms: std::mem::take(&mut self.comms),
                parents: std::mem::take(&mut self.parents),
                vmas: std::mem::take(&mut self.vmas),
            });
        }
    }

    /// Reads a walk: `reader`'s pass, then each further pass `next` opens
    /// (`iter/task` walks before 5.12), draining the ring between reads.
    fn run(
        &mut self,
        reader: Box<dyn std::io::Read>,
        next: &mut dyn FnMut() -> anyhow::Result<Option<Box<dyn std::io::Read>>>,
    ) -> Result<WalkCounts, SnapshotError> {
        let mut decoder = Decoder::new();
        let mut reader = Some(reader);
        while let Some(r) = reader.take() {
            self.pass(r, &mut decoder)?;
            reader = next().map_err(|e| SnapshotError::Io(format!("{e:#}")))?;
            if reader.is_some() {
                decoder.next_pass()?;
            }
        }
        self.flush();
        let mut counts = decoder.finish()?;
        self.pagemap.add_to(&mut counts);
        Ok(counts)
    }

    fn pass(
        &mut self,
        reader: Box<dyn std::io::Read>,
        decoder: &mut Decoder,
    ) -> Result<(), SnapshotError> {
        for_each_chunk(reader, |bytes| {
            let decoded = self.vmas.len();
            let (vmas, comms, parents, named) = (
                &mut self.vmas,
                &mut self.comms,
                &mut self.parents,
                &mut self.named,
            );
            decoder.feed(bytes, |v, comm| {
                if named.insert(v.tgid) {
                    comms.push((v.tgid, rmapwatch_engine::event::Comm(*comm).text()));
                    if v.ppid != 0 {
                        parents.push((v.tgid, v.ppid));
                    }
                }
                vmas.push(v.clone());
            })?;
            // Their pages, while their processes still map what the walk
            // saw (before the batch goes, and before the events drained
            // below, which come after these VMAs).
            self.pagemap.fill(&mut self.vmas[decoded..]);
            pause_walk_for_test(&self.vmas[decoded..]);
            if self.vmas.len() >= BATCH {
                self.flush();
            }
            // The ring keeps filling while the walk runs: drain it between
            // the iterator's reads (after what was decoded so far).
            let events = self.ring.drain(self.stats);
            if !events.is_empty() {
                self.flush();
                if self.alive {
                    self.alive = self.out.put(Input::Events {
                        t: (self.t)(),
                        events,
                    });
                }
            }
            if self.alive {
                Ok(())
            } else {
                Err(SnapshotError::Io("the consumer went away".into()))
            }
        })
    }
}

/// Set to a pid: the first walk's read that hands on VMAs of that process
/// is followed by a pause of [`WALK_PAUSE`] and the line `rmapwatch: test:
/// walk paused in pid PID` on stderr, so that a test can change the
/// process between two reads of the iterator (a leader exiting alone).
pub const WALK_PAUSE_PID: &str = "RMAPWATCH_TEST_WALK_PAUSE_PID";

/// How long a walk pauses for [`WALK_PAUSE_PID`].
pub const WALK_PAUSE: Duration = Duration::from_secs(2);

/// [`WALK_PAUSE_PID`]'s pause, once per run.
fn pause_walk_for_test(decoded: &[Vma]) {
    static PID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(pid) = *PID.get_or_init(|| {
        std::env::var(WALK_PAUSE_PID)
            .ok()
            .and_then(|v| v.parse().ok())
    }) else {
        return;
    };
    if decoded.iter().any(|v| v.tgid == pid)
        && !DONE.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        eprintln!("rmapwatch: test: walk paused in pid {pid}");
        std::thread::sleep(WALK_PAUSE);
    }
}

/// Returns freed heap memory to the system (after loading, whose BTF
/// parsing peaks at tens of MiB and then frees it).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of at least this size are mapped and unmapped on their
/// own: the tables a walk builds (megabytes at 1M VMAs) go back to the
/// system when the walk ends, instead of staying in a heap whose threshold
/// glibc raises after each such free.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// One heap for every thread. The source's thread builds batches and walk
/// records that the engine's thread frees: with an arena per thread, glibc
/// keeps each arena's freed chunks, so the process's RSS rose and fell by
/// megabytes with the churn while its heap stayed flat (a heap profile of
/// `serve` through adb: 2.6-2.8 MB live the whole soak, RSS 12-19 MiB).
/// The threads allocate a few times per batch, not per event: one arena
/// costs no contention worth measuring.
const ARENA_MAX: i32 = 1;

/// Pins the allocator's behaviour for big tables (see [`MMAP_THRESHOLD`])
/// and its arenas (see [`ARENA_MAX`]).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

#[cfg(test)]
mod tests {
    use rmapwatch_common::{object, site};
    use rmapwatch_engine::snapshot;

    use super::*;

    /// A ring that fills as the walk is read: `per_read` events per read
    /// of the iterator, at most `capacity` waiting (more are dropped).
    struct FillingRing {
        waiting: Vec<Event>,
        capacity: usize,
        dropped: u64,
        next: u64,
    }

    impl FillingRing {
        fn fill(&mut self, n: usize) {
            for _ in 0..n {
                self.next += 64;
                if self.waiting.len() == self.capacity {
                    self.dropped += 1;
                } else {
                    self.waiting.push(Event::alloc(
                        object::AVC,
                        site::PREPARE,
                        9,
                        0x10_0000 + self.next,
                        false,
                    ));
                }
            }
        }
    }

    impl RingSource for std::rc::Rc<std::cell::RefCell<FillingRing>> {
        fn drain(&mut self, _: &mut RingStats) -> Vec<Event> {
            std::mem::take(&mut self.borrow_mut().waiting)
        }
    }

    /// An iterator whose every read lets `per_read` events into the ring.
    struct SlowIterator {
        bytes: Vec<u8>,
        at: usize,
        ring: std::rc::Rc<std::cell::RefCell<FillingRing>>,
        per_read: usize,
    }

    impl std::io::Read for SlowIterator {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.ring.borrow_mut().fill(self.per_read);
            let n = (self.bytes.len() - self.at).min(buf.len()).min(4096);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn the_ring_is_drained_while_a_long_walk_runs() {
        // 20k VMAs; 300 events arrive per read of the iterator; the ring
        // holds 1000. Drained only after the walk (the old rule), it
        // overflows.
        let mut bytes = Vec::new();
        for i in 0..20_000u64 {
            let v = Vma {
                tgid: 1 + (i / 100) as u32,
                mm: 0x1000 * (1 + i / 100),
                addr: 0x8000_0000 + i * 256,
                start: i * 4096,
                end: i * 4096 + 4096,
                ..Vma::default()
            };
            snapshot::encode(&v, &[b'x'; 16], &mut bytes);
        }
        let ring = std::rc::Rc::new(std::cell::RefCell::new(FillingRing {
            waiting: Vec::new(),
            capacity: 1000,
            dropped: 0,
            next: 0,
        }));
        let mut inputs = Vec::new();
        let mut sink = |i: Input| {
            inputs.push(i);
            true
        };
        let mut stats = RingStats::default();
        let mut source = ring.clone();
        let mut pump = WalkPump {
            out: &mut sink,
            ring: &mut source,
            stats: &mut stats,
            vmas: Vec::new(),
            comms: Vec::new(),
            parents: Vec::new(),
            named: BTreeSet::new(),
            pagemap: &mut pagemap::Reader::new(PagemapRead::Off),
            t: || 0,
            alive: true,
        };
        let counts = pump
            .run(
                Box::new(SlowIterator {
                    bytes: bytes.clone(),
                    at: 0,
                    ring: ring.clone(),
                    per_read: 300,
                }),
                &mut || Ok(None),
            )
            .unwrap();
        assert_eq!(counts.vmas, 20_000);
        let r = ring.borrow();
        assert_eq!(r.dropped, 0, "drained between reads: nothing lost");
        let events: usize = inputs
            .iter()
            .map(|i| match i {
                Input::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        // The last read's events wait for the drain after the walk.
        assert_eq!((events + r.waiting.len()) as u64, r.next / 64);
        let vmas: usize = inputs
            .iter()
            .map(|i| match i {
                Input::WalkVmas { vmas, .. } => vmas.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(vmas, 20_000);
        // Every process named in its walk before its VMAs (rule 5).
        let mut order = rmapwatch_engine::input::Order::default();
        order.check(&Input::Facts(Box::default())).unwrap();
        order.check(&Input::WalkBegin { t: 0 }).unwrap();
        for i in &inputs {
            order.check(i).unwrap();
        }
        drop(r);
        // The old rule: the whole walk first, the ring after it.
        let old = std::rc::Rc::new(std::cell::RefCell::new(FillingRing {
            waiting: Vec::new(),
            capacity: 1000,
            dropped: 0,
            next: 0,
        }));
        let counts = snapshot::decode(
            SlowIterator {
                bytes,
                at: 0,
                ring: old.clone(),
                per_read: 300,
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(counts.vmas, 20_000);
        assert!(old.borrow().dropped > 0, "the old rule overflows the ring");
    }
}
