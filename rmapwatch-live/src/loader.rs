//! Loads the eBPF object, hands it the kernel's layouts, and attaches every
//! program, choosing fentry, kprobe or the tracepoint path per hook.
//!
//! This and `daemon` are the only modules that know about aya.
use std::{collections::BTreeMap, os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FEntry, Iter, KProbe, Program, RawTracePoint, TracePoint},
};
use rmapwatch_common::{RmapKey, stat};

use rmapwatch_engine::{
    hooks::{HOOKS, HookMode, HookSpec, HookStatus, ProbeMode, TimeHooks},
    input::ProgramStats,
};

use crate::kernel::KernelFacts;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rmapwatch"));

/// Raw tracepoints and the programs attached to them, in attach order: the
/// end of a life before its start, so that every allocation seen also has
/// its free seen, and every allocation made inside a fork has the fork's
/// end (`sched_process_fork`, which names the child) seen.
/// - Alloc before free left an object allocated and freed between the two
///   attaches live forever (drift 1 in a VM whose shell forks in a loop).
/// - Alloc before fork left the allocations of forks that straddled the
///   attach waiting for the parent's next fork, which charged them to the
///   wrong child: a child that exited kept objects it never had, or took an
///   object from its owner (root test `a_process_forking_while_rmapwatch_attaches_is_charged_exactly`:
///   198 anon_vma allocations, 33 frees for one child of a fork loop).
/// - Exit before fork: a child seen forking is seen exiting.
///
/// What was allocated before is seeded by the snapshot taken after
/// attaching, or is a free of a pre-existing object.
const RAW_TRACEPOINTS: [&str; 5] = [
    "kmem_cache_free",
    "sched_process_exit",
    "sched_process_fork",
    "kmem_cache_alloc",
    "sched_process_exec",
];

/// Most passes of an `iter/task` walk (each walks `VMAS_PER_PASS` more
/// VMAs of every unfinished process).
const MAX_WALK_PASSES: u32 = 1 << 16;

/// Fork-family syscalls whose entry/exit delimit the fork window.
const FORK_SYSCALLS: [&str; 4] = ["clone", "clone3", "fork", "vfork"];

/// The loaded and attached programs. Dropping it detaches and unloads all.
pub struct Probes {
    ebpf: Ebpf,
    /// How each function hook was attached.
    pub hooks: Vec<HookStatus>,
    /// Whether the fork window (syscall tracepoints) is attached.
    pub fork_window: bool,
    /// How lock waits, fork work and rmap walks are timed.
    pub time: TimeHooks,
    /// Whether the nest watch is attached (`--watch-nesting`).
    pub nest_watch: bool,
    /// Warnings for the user (fallbacks taken).
    pub warnings: Vec<String>,
    /// What the user is told besides (side effects on the system).
    pub notes: Vec<String>,
    /// Why snapshots are unavailable, if they are.
    pub snapshot_error: Option<String>,
    /// Which iterator walks: `task_vma` (5.12+) or `task_mmap` (`iter/task`
    /// following `mm->mmap`, before 5.12, in passes).
    pub walker: &'static str,
    /// Whether a multi-pass walk is under way.
    walk_open: bool,
    /// The unfinished processes after the last pass, and where each stood.
    walk_cursors: Vec<(u32, u64)>,
    /// Passes of the walk under way.
    walk_passes: u32,
    /// Keeps the kernel's run-time statistics on while we run
    /// (`BPF_ENABLE_STATS`, 5.8+; dropped = off again unless others hold it).
    stats_fd: Option<std::os::fd::OwnedFd>,
    /// The programs' log (aya-log's ring) of rare conditions; `None` when
    /// it could not be set up (said once).
    kernel_log: Option<RingBuf<MapData>>,
}

/// Lines of the programs' log taken at once, at most: the programs already
/// say each condition sparingly (`rmapwatch_common::rare`); the rest of a
/// burst stays in the ring for the next call.
const KERNEL_LOG_LINES: usize = 256;

/// The programs' log level when their log is off (`AYA_LOG_LEVEL`: no
/// level enabled, so the verifier never sees the logging code).
static LOG_OFF: u8 = 0;

/// Entries of the fork window's map: `RMAPWATCH_FORK_WINDOW_ENTRIES`
/// (tests make it tiny to fill it), else the default.
fn fork_window_entries() -> anyhow::Result<u32> {
    match std::env::var("RMAPWATCH_FORK_WINDOW_ENTRIES") {
        Err(_) => Ok(rmapwatch_common::FORK_WINDOW_ENTRIES),
        Ok(v) => v
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("RMAPWATCH_FORK_WINDOW_ENTRIES={v:?}: give a number from 1")),
    }
}

/// What to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Everything: event probes and the snapshot iterator.
    All,
    /// Only the snapshot iterator (`inspect`).
    SnapshotOnly,
}

/// First line of an error chain, for compact fallback notes.
fn short(e: &dyn std::fmt::Display) -> String {
    let s = format!("{e:#}");
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

impl Probes {
    /// Loads and attaches everything.
    ///
    /// # Errors
    /// The object fails to load, or a required tracepoint fails to attach.
    pub fn load(
        facts: &KernelFacts,
        mode: ProbeMode,
        ring_bytes: Option<u32>,
        attach: Attach,
    ) -> anyhow::Result<Self> {
        let mut config = facts.config;
        config.wake_bytes = u64::from(ring_bytes.unwrap_or(rmapwatch_common::RING_BYTES)) / 8;
        let mut loader = EbpfLoader::new();
        loader.override_global("CONFIG", &config, true);
        // No per-instruction log unless asked for: on a refusal aya loads
        // again with a log buffer that it grows tenfold per retry, and a
        // refused loop's log (millions of lines) then takes minutes on a
        // slow CPU.
        loader.verifier_log_level(if std::env::var_os("RMAPWATCH_VERIFIER_LOG").is_some() {
            aya::VerifierLogLevel::DEBUG | aya::VerifierLogLevel::STATS
        } else {
            aya::VerifierLogLevel::STATS
        });
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        loader.map_max_entries("FORKING", fork_window_entries()?);
        let split = std::env::var_os(COST_SPLIT).is_some();
        let mut warnings = Vec::new();
        let (mut ebpf, log_refused) = match loader.load(OBJECT) {
            Ok(ebpf) => (ebpf, None),
            // The programs' log needs a ring buffer of its own: without
            // it, no log (the verifier then drops the logging code).
            Err(aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }))
                if name == "AYA_LOGS" =>
            {
                loader.override_global("AYA_LOG_LEVEL", &LOG_OFF, true);
                loader.map_max_entries("AYA_LOGS", 4096);
                let ebpf = loader.load(OBJECT).context("loading the eBPF object")?;
                (ebpf, Some(format!("creating its ring buffer: {io_error}")))
            }
            Err(e) => return Err(e).context("loading the eBPF object"),
        };
        let kernel_log = match log_refused {
            Some(why) => Err(why),
            None => match ebpf.take_map("AYA_LOGS") {
                Some(map) => RingBuf::try_from(map).map_err(|e| short(&e)),
                None => Err("no AYA_LOGS map in the object".to_owned()),
            },
        };
        let kernel_log = kernel_log
            .map_err(|why| {
                warnings.push(format!(
                    "the programs' log is unavailable ({why}): rare conditions (a map full, a \
                     torn walk) are counted in the report, not described"
                ));
            })
            .ok();
        let (walker, snapshot_error) = match load_iterator(&mut ebpf, facts) {
            Ok(w) => (w, None),
            Err(e) => ("", Some(short(&e))),
        };
        if attach == Attach::SnapshotOnly {
            return Ok(Self {
                ebpf,
                hooks: Vec::new(),
                fork_window: false,
                time: TimeHooks::default(),
                nest_watch: false,
                warnings,
                notes: Vec::new(),
                snapshot_error,
                walker,
                walk_open: false,
                walk_cursors: Vec::new(),
                walk_passes: 0,
                stats_fd: None,
                kernel_log,
            });
        }

        let stats_off = std::env::var_os(BPF_STATS_ENV).is_some_and(|v| v == "0");
        let stats_fd = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            _ if stats_off => {
                warnings.push(format!(
                    "bpf_stats left off ({BPF_STATS_ENV}=0): no per-program cost; recursion \
                     misses are still counted"
                ));
                None
            }
            Ok(fd) => Some(fd),
            Err(e) => {
                warnings.push(format!(
                    "bpf_stats unavailable ({}): no per-program cost",
                    short(&e)
                ));
                None
            }
        };
        let mut notes = Vec::new();
        let fork_window = match attach_fork_window(&mut ebpf, &mut notes) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(format!(
                    "fork window unavailable ({}): AVCs that anon_vma_clone allocates inside \
                     fork are attributed to the parent",
                    short(&e)
                ));
                false
            }
        };

        // After the fork window: allocations inside a fork that the slab
        // tracepoints see are then flagged, and a fork seen entering is
        // seen leaving.
        for tp in RAW_TRACEPOINTS {
            let perf = facts.config.args.slab_path == rmapwatch_common::slab_path::PERF;
            let kmem = tp.starts_with("kmem_cache_");
            if perf && kmem {
                attach_perf_slab(&mut ebpf, tp)?;
                // The inlining detector needs the cache pointer: a raw
                // program that emits nothing.
                if tp == "kmem_cache_alloc" {
                    attach_raw(&mut ebpf, tp, tp)?;
                }
                continue;
            }
            attach_raw(&mut ebpf, tp, tp)?;
            // Before 6.1, allocations on a given node have their own event.
            if tp == "kmem_cache_alloc" && facts.alloc_node {
                attach_raw(&mut ebpf, "kmem_cache_alloc_node", "kmem_cache_alloc_node")?;
            }
        }
        if facts.config.nest_watch != 0 {
            let perf = facts.config.args.slab_path == rmapwatch_common::slab_path::PERF;
            attach_raw(&mut ebpf, "nest_alloc", "kmem_cache_alloc")?;
            if facts.alloc_node && !perf {
                attach_raw(&mut ebpf, "nest_alloc_node", "kmem_cache_alloc_node")?;
            }
            attach_raw(&mut ebpf, "nest_free", "kmem_cache_free")?;
            notes.push(
                "nest watch: a second raw program on each slab tracepoint counts, per CPU, the \
                 runs the kernel skips for ours (recursion misses) and streams those at rmap call \
                 sites (--watch-nesting; one more program run per slab event)"
                    .into(),
            );
        }

        if std::env::var_os(FLOOR_BESIDE).is_some() {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(FLOOR_PROGRAM)
                .ok_or_else(|| anyhow!("program {FLOOR_PROGRAM} missing from the eBPF object"))?
                .try_into()?;
            prog.load()
                .context("loading the empty program (RMAPWATCH_FLOOR)")?;
            for tp in ["kmem_cache_alloc", "kmem_cache_free"] {
                prog.attach(tp)
                    .with_context(|| format!("attaching the empty program to {tp}"))?;
            }
            notes.push(
                "floor: the empty raw program is attached beside ours on kmem_cache_alloc/free \
                 (RMAPWATCH_FLOOR); the report shows our slab programs against it, this run"
                    .into(),
            );
        }
        if split {
            if facts.config.args.slab_path == rmapwatch_common::slab_path::PERF {
                warnings.push(
                    "cost split: not on the perf slab path (7.0+ with PREEMPT_RCU): its variants \
                     are raw tracepoint programs"
                        .into(),
                );
            } else {
                // A benchmark's programs: one this kernel refuses is said,
                // and rmapwatch runs on without it.
                let mut attached = 0;
                for (alloc, free) in SPLIT_PROGRAMS {
                    for (prog, tp) in [(alloc, "kmem_cache_alloc"), (free, "kmem_cache_free")] {
                        match attach_raw(&mut ebpf, prog, tp) {
                            Ok(()) => attached += 1,
                            Err(e) => warnings
                                .push(format!("cost split: {prog} not attached: {}", short(&e))),
                        }
                    }
                }
                notes.push(format!(
                    "cost split: {attached} variant programs on kmem_cache_alloc/free besides ours \
                     (benchmark; they stream nothing){}",
                    if facts.alloc_node {
                        "; kmem_cache_alloc_node is not split"
                    } else {
                        ""
                    }
                ));
            }
        }

        let btf = match mode {
            ProbeMode::Auto | ProbeMode::Fentry => Some(
                Btf::parse_file(&facts.btf_path, Endianness::default())
                    .context("parsing BTF for fentry"),
            ),
            _ => None,
        };
        let mut hooks = Vec::new();
        for spec in &HOOKS {
            let status = attach_hook(&mut ebpf, facts, spec, mode, btf.as_ref());
            hooks.push(status);
        }
        if matches!(mode, ProbeMode::Fentry | ProbeMode::Kprobe)
            && hooks
                .iter()
                .all(|h| h.mode != HookMode::Fentry && h.mode != HookMode::Kprobe)
        {
            let why = hooks
                .first()
                .and_then(|h| h.fallbacks.first().cloned())
                .unwrap_or_default();
            return Err(anyhow!(
                "--probe-mode {} was forced but this kernel accepts no such hook: {why}",
                if mode == ProbeMode::Fentry {
                    "fentry"
                } else {
                    "kprobe"
                }
            ));
        }
        let mut time = TimeHooks {
            rmap_one: facts.rmap_one.clone(),
            ..TimeHooks::default()
        };
        (time.lock_mode, time.lock) = attach_locks(&mut ebpf, facts, mode);
        let btf_ref = btf.as_ref();
        (time.fork_mode, time.fork) = if fork_window {
            attach_fork_work(&mut ebpf, facts, mode, btf_ref)
        } else {
            (
                "unavailable".to_owned(),
                "unavailable: the fork syscall tracepoints are not attached".to_owned(),
            )
        };
        (time.rmap_mode, time.rmap) = attach_rmap_walk(&mut ebpf, facts, mode, btf_ref);
        if !time.lock_on() {
            warnings.push(time.lines()[0].clone());
        }
        Ok(Self {
            ebpf,
            hooks,
            fork_window,
            time,
            nest_watch: facts.config.nest_watch != 0,
            warnings,
            notes,
            snapshot_error,
            walker,
            walk_open: false,
            walk_cursors: Vec::new(),
            walk_passes: 0,
            stats_fd,
            kernel_log,
        })
    }

    /// What the programs logged since the last call (rare conditions,
    /// each line already rate-limited in the kernel).
    /// A record that cannot be decoded is a line that says so (and the
    /// record's bytes), never a panic.
    pub fn kernel_log(&mut self) -> Vec<String> {
        let Some(ring) = &mut self.kernel_log else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        while lines.len() < KERNEL_LOG_LINES {
            let Some(record) = ring.next() else { break };
            lines.push(match crate::kernel_log::decode(&record) {
                Ok(line) => line,
                Err(why) => format!(
                    "a record of the programs' log could not be decoded ({why}; {} bytes)",
                    record.len()
                ),
            });
        }
        lines
    }

    /// Whether the kernel keeps the programs' run-time statistics for us.
    #[must_use]
    pub fn bpf_stats(&self) -> bool {
        self.stats_fd.is_some()
    }

    /// Recursion misses of our slab programs (counted by the kernel with or
    /// without `bpf_stats`).
    #[must_use]
    pub fn slab_misses(&self) -> Option<u64> {
        let mut sum = None;
        for (name, prog) in self.ebpf.programs() {
            if !rmapwatch_engine::report::SLAB_PROGRAMS.contains(&name) {
                continue;
            }
            let Ok(fd) = prog.fd() else {
                continue;
            };
            let s = prog_stats(fd.as_fd())?;
            sum = Some(sum.unwrap_or(0) + s.recursion_misses);
        }
        sum
    }

    /// Run statistics of every loaded program, by name (None when the
    /// kernel keeps none).
    #[must_use]
    pub fn program_stats(&self) -> Option<BTreeMap<String, ProgramStats>> {
        self.stats_fd.as_ref()?;
        let mut out = BTreeMap::new();
        // The cost split's variants come too: the report sets them apart
        // (`report::SPLIT_PREFIX`), not as our cost.
        for (name, prog) in self.ebpf.programs() {
            let Ok(fd) = prog.fd() else {
                continue; // not loaded (the other half of a fentry/kprobe pair)
            };
            if let Some(s) = prog_stats(fd.as_fd()) {
                out.insert(name.to_owned(), s);
            }
        }
        Some(out)
    }

    /// Starts a walk of every process's VMAs with the `iter/task_vma`
    /// program: the records are produced as the returned reader is read
    /// (decoded by `snapshot::decode`).
    ///
    /// # Errors
    /// The iterator is unavailable or cannot be started.
    pub fn snapshot_reader(&mut self) -> anyhow::Result<Box<dyn std::io::Read>> {
        if let Some(e) = &self.snapshot_error {
            return Err(anyhow!("snapshots unavailable: {e}"));
        }
        if self.walker == "task_mmap" {
            // A new walk: every process starts at its first VMA.
            let map = self
                .ebpf
                .map_mut("WALK_CURSOR")
                .ok_or_else(|| anyhow!("WALK_CURSOR map missing"))?;
            let mut h: HashMap<&mut MapData, u32, u64> = HashMap::try_from(map)?;
            let keys: Vec<u32> = h.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = h.remove(&k);
            }
            self.walk_open = true;
            self.walk_cursors.clear();
            self.walk_passes = 1;
        }
        self.open_pass()
    }

    /// The next pass of a walk that [`Self::snapshot_reader`] started, or
    /// `None` once every process was walked to its end (always `None` for
    /// `iter/task_vma`, which walks everything in one pass).
    ///
    /// # Errors
    /// The cursor map cannot be read, or the iterator cannot be started.
    pub fn snapshot_next_pass(&mut self) -> anyhow::Result<Option<Box<dyn std::io::Read>>> {
        if !self.walk_open {
            return Ok(None);
        }
        let map = self
            .ebpf
            .map_mut("WALK_CURSOR")
            .ok_or_else(|| anyhow!("WALK_CURSOR map missing"))?;
        let mut h: HashMap<&mut MapData, u32, u64> = HashMap::try_from(map)?;
        let mut open: Vec<(u32, u64)> = h
            .iter()
            .filter_map(Result::ok)
            .filter(|&(_, next)| next != 0)
            .collect();
        open.sort_unstable();
        // A process the last pass did not visit (it exited) stands where
        // it stood: it is done.
        let (stale, open): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|e| self.walk_cursors.binary_search(e).is_ok());
        for (tgid, _) in stale {
            let _ = h.insert(tgid, 0, 0);
        }
        if open.is_empty() || self.walk_passes >= MAX_WALK_PASSES {
            self.walk_open = false;
            return Ok(None);
        }
        self.walk_cursors = open;
        self.walk_passes += 1;
        self.open_pass().map(Some)
    }

    fn open_pass(&mut self) -> anyhow::Result<Box<dyn std::io::Read>> {
        let name = self.walker;
        let prog: &mut Iter = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?;
        let link_id = prog.attach().with_context(|| format!("attaching {name}"))?;
        let link = prog.take_link(link_id)?;
        let file = link.into_file().context("opening the iterator")?;
        // RMAPWATCH_DUMP_SNAPSHOT=FILE keeps the raw records (for bug reports).
        if let Some(path) = std::env::var_os("RMAPWATCH_DUMP_SNAPSHOT") {
            let copy = std::fs::OpenOptions::new()
                .create(true)
                .append(self.walk_open)
                .write(true)
                .truncate(!self.walk_open)
                .open(&path)
                .context("creating RMAPWATCH_DUMP_SNAPSHOT")?;
            return Ok(Box::new(Tee(file, copy)));
        }
        Ok(Box::new(file))
    }

    /// Takes the ring buffer (once).
    ///
    /// # Errors
    /// Called twice.
    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("ring buffer already taken"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// New anonymous folios per (process, VMA start) counted in the kernel
    /// since attach (empty unless the `folio_add_new_anon_rmap` hook is on).
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn rmap_vmas(&self) -> anyhow::Result<Vec<((u32, u64), u64)>> {
        let map = self
            .ebpf
            .map("RMAP_VMAS")
            .ok_or_else(|| anyhow!("RMAP_VMAS map missing"))?;
        let h: HashMap<&MapData, RmapKey, u64> = HashMap::try_from(map)?;
        h.iter()
            .map(|kv| {
                let (k, v) = kv.context("reading RMAP_VMAS")?;
                Ok(((k.tgid, k.vm_start), v))
            })
            .collect()
    }

    /// Removes these entries of `RMAP_VMAS` (the caller keeps their counts),
    /// so that exited processes do not fill it.
    ///
    /// # Errors
    /// The map is missing.
    pub fn forget_rmap_vmas(&mut self, keys: &[(u32, u64)]) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut("RMAP_VMAS")
            .ok_or_else(|| anyhow!("RMAP_VMAS map missing"))?;
        let mut h: HashMap<&mut MapData, RmapKey, u64> = HashMap::try_from(map)?;
        for &(tgid, vm_start) in keys {
            // Already gone is fine.
            let _ = h.remove(&RmapKey {
                tgid,
                _pad: 0,
                vm_start,
            });
        }
        Ok(())
    }

    /// The inlining detector's call sites and their anon_vma allocations.
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn inlined_sites(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        let map = self
            .ebpf
            .map("INLINED_SITES")
            .ok_or_else(|| anyhow!("INLINED_SITES map missing"))?;
        let h: HashMap<&MapData, u64, u64> = HashMap::try_from(map)?;
        h.iter()
            .map(|kv| kv.context("reading INLINED_SITES"))
            .collect()
    }

    /// The per-CPU counters, summed over CPUs.
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn stats(&self) -> anyhow::Result<Vec<u64>> {
        let arr = self.stats_map()?;
        (0..stat::COUNT)
            .map(|i| Ok(arr.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// One per-CPU counter, per possible CPU (index: CPU number).
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn stat_per_cpu(&self, index: u32) -> anyhow::Result<Vec<u64>> {
        Ok(self.stats_map()?.get(&index, 0)?.iter().copied().collect())
    }

    /// The per-CPU counters' map (`STATS`).
    fn stats_map(&self) -> anyhow::Result<PerCpuArray<&MapData, u64>> {
        let map = self
            .ebpf
            .map("STATS")
            .ok_or_else(|| anyhow!("STATS map missing"))?;
        Ok(PerCpuArray::try_from(map)?)
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD` for the fields aya's `ProgramInfo` does not
/// expose (`recursion_misses`).
fn prog_stats(fd: std::os::fd::BorrowedFd<'_>) -> Option<ProgramStats> {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain old data; all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        info_len: u32::try_from(size_of_val(&info)).ok()?,
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr points at a live, writable bpf_prog_info of info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    (rc == 0).then_some(ProgramStats {
        runs: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}

/// Loads the snapshot iterator: `iter/task_vma` (5.12+), else `iter/task`
/// following `mm->mmap` (5.8 .. 6.0). Returns the program's name.
fn load_iterator(ebpf: &mut Ebpf, facts: &KernelFacts) -> anyhow::Result<&'static str> {
    let btf = Btf::parse_file(&facts.btf_path, Endianness::default()).context("parsing BTF")?;
    let prog: &mut Iter = ebpf
        .program_mut("task_vma")
        .ok_or_else(|| anyhow!("program task_vma missing"))?
        .try_into()?;
    let first = match prog.load("task_vma", &btf) {
        Ok(()) => return Ok("task_vma"),
        Err(e) => describe_load_error(&e),
    };
    let snap = facts.config.snap;
    if snap.mm_mmap == rmapwatch_common::ABSENT || snap.vma_next == rmapwatch_common::ABSENT {
        return Err(anyhow!("iter/task_vma: {first}"));
    }
    let prog: &mut Iter = ebpf
        .program_mut("task_mmap")
        .ok_or_else(|| anyhow!("program task_mmap missing"))?
        .try_into()?;
    prog.load("task", &btf).map_err(|e| {
        anyhow!(
            "iter/task_vma: {first}; iter/task (mm->mmap): {}",
            describe_load_error(&e)
        )
    })?;
    Ok("task_mmap")
}

fn ensure_tracefs() -> anyhow::Result<bool> {
    crate::kernel::ensure_tracefs().map_err(|e| anyhow!(e))
}

/// What the user is told when rmapwatch mounted tracefs.
pub const MOUNTED_TRACEFS: &str = "tracefs was not mounted: mounted it at /sys/kernel/tracing \
                                   (the fork window's syscall tracepoints need it)";

fn attach_raw(ebpf: &mut Ebpf, prog_name: &str, tp: &str) -> anyhow::Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(prog_name)
        .ok_or_else(|| anyhow!("program {prog_name} missing from the eBPF object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading raw tracepoint program {prog_name}"))?;
    prog.attach(tp)
        .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    Ok(())
}

/// The slab events as classic tracepoints (the perf path, 7.0+).
fn attach_perf_slab(ebpf: &mut Ebpf, tp: &str) -> anyhow::Result<()> {
    let prog_name = format!("perf_{tp}");
    let prog: &mut TracePoint = ebpf
        .program_mut(&prog_name)
        .ok_or_else(|| anyhow!("program {prog_name} missing from the eBPF object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading tracepoint program {prog_name}"))?;
    prog.attach("kmem", tp)
        .with_context(|| format!("attaching tracepoint kmem:{tp}"))?;
    Ok(())
}

/// The empty program attached to raw tracepoints: the floor a benchmark
/// measures rmapwatch's programs against (detached when dropped).
pub struct Floor {
    _ebpf: Ebpf,
}

/// The name the floor's program has in `bpf_stats`.
pub const FLOOR_PROGRAM: &str = rmapwatch_engine::report::FLOOR_PROGRAM;

/// Set to `0` to leave `bpf_stats` off (no cost figures): the kernel then
/// counts a run as the program's only while it runs, not while it reads
/// the clock around it, which the nest watch cannot see (root test
/// `nested_slab_runs_are_never_at_rmap_sites`).
pub const BPF_STATS_ENV: &str = "RMAPWATCH_BPF_STATS";

/// Set (to anything) to attach the empty program beside ours on
/// `kmem_cache_alloc` and `kmem_cache_free` (after ours): the report then
/// shows our slab programs against it, measured in the same run (the QEMU
/// matrix's guests, which have no `rmw-bench`).
pub const FLOOR_BESIDE: &str = "RMAPWATCH_FLOOR";

/// Loads the object's empty program alone and attaches it to each raw
/// tracepoint of `tracepoints`.
///
/// # Errors
/// Loading or attaching fails (not root, no such tracepoint).
pub fn attach_floor(tracepoints: &[&str]) -> anyhow::Result<Floor> {
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .context("loading the eBPF object")?;
    let prog: &mut RawTracePoint = ebpf
        .program_mut(FLOOR_PROGRAM)
        .ok_or_else(|| anyhow!("program {FLOOR_PROGRAM} missing from the eBPF object"))?
        .try_into()?;
    prog.load()?;
    for tp in tracepoints {
        prog.attach(tp)
            .with_context(|| format!("attaching the empty program to {tp}"))?;
    }
    Ok(Floor { _ebpf: ebpf })
}

/// Set (to anything) to also attach the cost split's variants of the slab
/// programs (`rmw-bench cost`): each stops at one stage of the path
/// (classified, detector, object and, on allocations, task, fork window, record reserved and
/// discarded) or takes another road from the fork window (per-CPU batches,
/// with and without a time per record: the batching lever, measured), so
/// that `bpf_stats` of all of them and of ours in one run tells what each
/// stage costs. Raw slab path only.
pub const COST_SPLIT: &str = "RMAPWATCH_COST_SPLIT";

/// The cost split's (alloc, free) programs, stage by stage, then the
/// batching variants; ours (`kmem_cache_alloc`, `kmem_cache_free`) are the
/// last stage.
pub const SPLIT_PROGRAMS: [(&str, &str); 8] = [
    ("split_site_a", "split_site_f"),
    ("split_detect_a", "split_detect_f"),
    ("split_match_a", "split_match_f"),
    ("split_fork_a", "split_fork_f"),
    ("split_reserve_a", "split_reserve_f"),
    ("split_batch_a", "split_batch_f"),
    ("split_batchn_a", "split_batchn_f"),
    ("split_query_a", "split_query_f"),
];

/// Set (to anything) to act as if the kernel had no lock tracepoints (tests
/// of the fallback line).
pub const NO_LOCK_TRACEPOINTS: &str = "RMAPWATCH_NO_LOCK_TRACEPOINTS";

/// How lock waits can be measured on a kernel: `Err(why not)`, else the
/// mode (`tracepoint` or `kprobe`) and the line that says how (before
/// attaching). `kprobes`: whether the rwsem slow paths can be kprobed
/// here (`Err`: why not), asked only without the tracepoints.
///
/// # Errors
/// The one line the user reads when waits are not measured.
pub fn lock_plan(
    rwsem_off: u32,
    tracepoints: bool,
    kprobes: Result<(), String>,
) -> Result<(&'static str, String), String> {
    if rwsem_off == rmapwatch_common::ABSENT {
        return Err(
            "this kernel's BTF has no anon_vma.rwsem, so no lock can be matched to an anon_vma"
                .into(),
        );
    }
    if tracepoints {
        return Ok((
            "tracepoint",
            format!(
                "tracepoint lock:contention_begin/end, kept where the lock is an anon_vma \
                 root's rwsem (at +{rwsem_off} from BTF) of an anon_vma rmapwatch knows; \
                 optimistic spins that win are not seen"
            ),
        ));
    }
    match kprobes {
        Ok(()) => Ok((
            "kprobe",
            format!(
                "kprobe rwsem_down_{{read,write}}_slowpath (entry and return; no \
                 lock:contention_begin/end tracepoints before 5.19), kept where the lock is an \
                 anon_vma root's rwsem (at +{rwsem_off} from BTF) of an anon_vma rmapwatch knows; \
                 optimistic spins that win are not seen"
            ),
        )),
        Err(why) => Err(format!(
            "this kernel has no lock:contention_begin/end tracepoints (they came in 5.19), so \
             anon_vma rwsem waits are not measured (kprobes on the rwsem slow paths: {why})"
        )),
    }
}

/// The rwsem slow paths, kprobed where the lock tracepoints are missing.
const RWSEM_SLOWPATHS: [(&str, &str); 2] = [
    ("rwsem_down_read_slowpath", "kprobe_rwsem_read"),
    ("rwsem_down_write_slowpath", "kprobe_rwsem_write"),
];

/// Whether kprobes can be used for the rwsem slow paths here.
fn rwsem_kprobes(facts: &KernelFacts, mode: ProbeMode) -> Result<(), String> {
    if !matches!(mode, ProbeMode::Auto | ProbeMode::Kprobe) {
        return Err(format!(
            "not in --probe-mode {}",
            if mode == ProbeMode::Fentry {
                "fentry (they are kprobed only)"
            } else {
                "tracepoint"
            }
        ));
    }
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err("kernel has no kprobe support (CONFIG_KPROBES)".into());
    }
    for (f, _) in RWSEM_SLOWPATHS {
        if !facts.time_symbols.contains_key(f) {
            return Err(format!("{f} not in this kernel's kallsyms"));
        }
    }
    Ok(())
}

/// `lock:contention_begin/end` (or, without them, kprobes on the rwsem
/// slow paths) for waits on tracked anon_vma rwsems: the mode and the line
/// that says it.
fn attach_locks(ebpf: &mut Ebpf, facts: &KernelFacts, mode: ProbeMode) -> (String, String) {
    let off = |why: String| ("unavailable".to_owned(), format!("unavailable: {why}"));
    let have = Path::new("/sys/kernel/tracing/events/lock/contention_begin").exists()
        && std::env::var_os(NO_LOCK_TRACEPOINTS).is_none();
    let kprobes = if have {
        Ok(())
    } else {
        rwsem_kprobes(facts, mode)
    };
    let (how, line) = match lock_plan(facts.config.time.anon_vma_rwsem, have, kprobes) {
        Ok(plan) => plan,
        Err(why) => return off(why),
    };
    if how == "tracepoint" {
        for tp in ["contention_end", "contention_begin"] {
            if let Err(e) = attach_raw(ebpf, tp, tp) {
                return off(format!("attaching lock:{tp}: {}", short(&e)));
            }
        }
        return ("tracepoint".to_owned(), line);
    }
    // The returns first: a wait seen beginning is seen ending.
    let mut plan: Vec<(&str, &str)> = RWSEM_SLOWPATHS
        .iter()
        .map(|&(f, _)| ("kretprobe_rwsem", f))
        .collect();
    plan.extend(RWSEM_SLOWPATHS.iter().map(|&(f, p)| (p, f)));
    match attach_kprobes(ebpf, facts, &plan) {
        Ok(()) => ("kprobe".to_owned(), line),
        Err(e) => off(format!(
            "this kernel has no lock:contention_begin/end tracepoints (they came in 5.19), \
             and kprobing the rwsem slow paths failed: {}",
            short(&e)
        )),
    }
}

/// Loads (once) and attaches kprobe programs, `(program, function)` in
/// order, at each function's kprobe entry symbol; on a failure, unloads
/// every program of the plan (no half-attached pairs) and says which.
fn attach_kprobes(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    plan: &[(&str, &str)],
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
            return Err(anyhow!("kernel has no kprobe support (CONFIG_KPROBES)"));
        }
        for &(prog_name, function) in plan {
            let symbol = facts
                .time_symbols
                .get(function)
                .ok_or_else(|| anyhow!("{function} not in this kernel's kallsyms"))?;
            let prog: &mut KProbe = ebpf
                .program_mut(prog_name)
                .ok_or_else(|| anyhow!("program {prog_name} missing"))?
                .try_into()?;
            if prog.fd().is_err() {
                prog.load()
                    .map_err(|e| anyhow!("{prog_name}: {}", describe_load_error(&e)))?;
            }
            prog.attach(symbol, 0)
                .map_err(|e| anyhow!("{prog_name} on {symbol}: {}", short(&e)))?;
        }
        Ok(())
    })();
    if result.is_err() {
        unload(ebpf, plan.iter().map(|&(p, _)| p));
    }
    result
}

/// Loads and attaches fentry/fexit programs, `(program, function)` in
/// order; on a failure, unloads every program of the plan.
fn attach_trampolines(
    ebpf: &mut Ebpf,
    btf: Option<&anyhow::Result<Btf>>,
    plan: &[(&str, &str)],
) -> anyhow::Result<()> {
    let btf = match btf {
        Some(Ok(btf)) => btf,
        Some(Err(e)) => return Err(anyhow!("{e:#}")),
        None => return Err(anyhow!("not requested")),
    };
    let result = (|| -> anyhow::Result<()> {
        for &(prog_name, function) in plan {
            let prog = ebpf
                .program_mut(prog_name)
                .ok_or_else(|| anyhow!("program {prog_name} missing"))?;
            let attached = match prog {
                Program::FEntry(p) => p
                    .load(function, btf)
                    .map_err(|e| describe_load_error(&e))
                    .and_then(|()| p.attach().map(drop).map_err(|e| attach_error(e.into()))),
                Program::FExit(p) => p
                    .load(function, btf)
                    .map_err(|e| describe_load_error(&e))
                    .and_then(|()| p.attach().map(drop).map_err(|e| attach_error(e.into()))),
                _ => Err("not an fentry/fexit program".to_owned()),
            };
            attached.map_err(|e| anyhow!("{prog_name} on {function}: {e}"))?;
        }
        Ok(())
    })();
    if result.is_err() {
        unload(ebpf, plan.iter().map(|&(p, _)| p));
    }
    result
}

/// An fentry/fexit attach error, with its errno.
fn attach_error(e: anyhow::Error) -> String {
    // With its source chain: aya's Display omits the errno.
    let s = format!("{e:#}");
    if s.contains("os error 524") {
        // ENOTSUPP: e.g. arm64 before BPF trampolines were supported there.
        "attach refused: ENOTSUPP (524), no BPF trampoline on this kernel".to_owned()
    } else {
        s
    }
}

/// Detaches and unloads these programs (those loaded).
fn unload<'a>(ebpf: &mut Ebpf, names: impl Iterator<Item = &'a str>) {
    for name in names {
        let _ = match ebpf.program_mut(name) {
            Some(Program::FEntry(p)) => p.unload(),
            Some(Program::FExit(p)) => p.unload(),
            Some(Program::KProbe(p)) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// The fork-work hooks: fentry/fexit (else kprobe/kretprobe) on
/// `dup_mmap`, `anon_vma_fork`, `anon_vma_clone`, beside the fork
/// syscall tracepoints (attached already): the mode and the line.
fn attach_fork_work(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: ProbeMode,
    btf: Option<&anyhow::Result<Btf>>,
) -> (String, String) {
    let syscalls = "syscall tracepoints: each fork syscall's time and the objects it allocated";
    let without = |why: &str| {
        (
            "tracepoint".to_owned(),
            format!(
                "{syscalls} (time in dup_mmap and anon_vma_fork/anon_vma_clone needs function \
                 hooks: {why})"
            ),
        )
    };
    if mode == ProbeMode::Tracepoint {
        return without("not in --probe-mode tracepoint");
    }
    let Some((enter, exit, how)) = dup_mmap_bracket(&facts.time_symbols) else {
        return without(
            "dup_mmap not in this kernel's kallsyms, nor the uprobe_start_dup_mmap / \
             uprobe_end_dup_mmap it calls first and last (CONFIG_UPROBES)",
        );
    };
    let missing: Vec<&str> = ["anon_vma_fork", "anon_vma_clone"]
        .into_iter()
        .filter(|f| !facts.time_symbols.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return without(&format!(
            "{} not in this kernel's kallsyms (inlined?)",
            missing.join(", ")
        ));
    }
    let what = |hooks: &str| {
        format!(
            "{hooks} dup_mmap{how}, anon_vma_fork, anon_vma_clone (entry and exit): time in \
             dup_mmap per fork and, of it, in the outermost anon_vma function; {syscalls}"
        )
    };
    let mut fallbacks = Vec::new();
    if matches!(mode, ProbeMode::Auto | ProbeMode::Fentry) {
        // The exits first: a call seen entering is seen returning.
        let plan = [
            ("fexit_dup_mmap", exit),
            ("fexit_time_fork", "anon_vma_fork"),
            ("fexit_time_clone", "anon_vma_clone"),
            ("fentry_time_fork", "anon_vma_fork"),
            ("fentry_time_clone", "anon_vma_clone"),
            ("fentry_dup_mmap", enter),
        ];
        match attach_trampolines(ebpf, btf, &plan) {
            Ok(()) => return ("fentry".to_owned(), what("fentry/fexit")),
            Err(e) => fallbacks.push(format!("fentry: {}", short(&e))),
        }
    }
    if matches!(mode, ProbeMode::Auto | ProbeMode::Kprobe) {
        let plan = [
            ("kretprobe_dup_mmap", exit),
            ("kretprobe_time_anon", "anon_vma_fork"),
            ("kretprobe_time_anon", "anon_vma_clone"),
            ("kprobe_time_anon", "anon_vma_fork"),
            ("kprobe_time_anon", "anon_vma_clone"),
            ("kprobe_dup_mmap", enter),
        ];
        match attach_kprobes(ebpf, facts, &plan) {
            Ok(()) => return ("kprobe".to_owned(), what("kprobe/kretprobe")),
            Err(e) => fallbacks.push(format!("kprobe: {}", short(&e))),
        }
    }
    without(&fallbacks.join("; "))
}

/// Where `dup_mmap` is hooked: its entry and exit, or (inlined into
/// `copy_process`, as on Debian's 5.10 and 6.12) the entry of
/// `uprobe_start_dup_mmap` and the exit of `uprobe_end_dup_mmap`, its first
/// and last calls, which nothing else calls (`kernel/fork.c`, 5.10 .. 6.12;
/// `mm/mmap.c` after): the functions, and what the line says of them.
#[must_use]
pub fn dup_mmap_bracket(
    symbols: &BTreeMap<String, String>,
) -> Option<(&'static str, &'static str, &'static str)> {
    if symbols.contains_key("dup_mmap") {
        return Some(("dup_mmap", "dup_mmap", ""));
    }
    (symbols.contains_key("uprobe_start_dup_mmap") && symbols.contains_key("uprobe_end_dup_mmap"))
        .then_some((
            "uprobe_start_dup_mmap",
            "uprobe_end_dup_mmap",
            " (inlined here: from the entry of uprobe_start_dup_mmap to the exit of \
             uprobe_end_dup_mmap, its first and last calls)",
        ))
}

/// The rmap walk hook: fentry (else kprobe) on `rmap_walk_anon`: the mode
/// and the line.
fn attach_rmap_walk(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    mode: ProbeMode,
    btf: Option<&anyhow::Result<Btf>>,
) -> (String, String) {
    let off = |why: &str| {
        (
            "unavailable".to_owned(),
            format!("unavailable: rmap walks need a function hook on rmap_walk_anon ({why})"),
        )
    };
    if mode == ProbeMode::Tracepoint {
        return off("not in --probe-mode tracepoint");
    }
    let t = &facts.config.time;
    if t.folio_mapping == rmapwatch_common::ABSENT || t.rwc_rmap_one == rmapwatch_common::ABSENT {
        return off("BTF has no folio.mapping or rmap_walk_control.rmap_one");
    }
    let Some(entry) = facts.time_symbols.get("rmap_walk_anon") else {
        return off("rmap_walk_anon not in this kernel's kallsyms (inlined into rmap_walk?)");
    };
    let in_btf = match &facts.rmap_walk_args {
        Ok(in_btf) => *in_btf,
        Err(why) => return off(why),
    };
    let what = |how: &str| {
        format!(
            "{how} rmap_walk_anon{}: each walk's anon_vma (folio->mapping at +{}) and its \
             rmap_one (rwc->rmap_one at +{}), from BTF",
            if in_btf {
                ""
            } else {
                " (its prototype is not in BTF: (page, rwc, locked) assumed, as since 3.x)"
            },
            t.folio_mapping,
            t.rwc_rmap_one
        )
    };
    let mut fallbacks = Vec::new();
    if !in_btf {
        fallbacks.push("fentry: BTF has no rmap_walk_anon".to_owned());
    } else if matches!(mode, ProbeMode::Auto | ProbeMode::Fentry) {
        match attach_trampolines(ebpf, btf, &[("fentry_rmap_walk", "rmap_walk_anon")]) {
            Ok(()) => return ("fentry".to_owned(), what("fentry")),
            Err(e) => fallbacks.push(format!("fentry: {}", short(&e))),
        }
    }
    if matches!(mode, ProbeMode::Auto | ProbeMode::Kprobe) {
        if entry == "rmap_walk_anon" {
            match attach_kprobes(ebpf, facts, &[("kprobe_rmap_walk", "rmap_walk_anon")]) {
                Ok(()) => return ("kprobe".to_owned(), what("kprobe")),
                Err(e) => fallbacks.push(format!("kprobe: {}", short(&e))),
            }
        } else {
            // A compiler-renamed copy may take other arguments.
            fallbacks.push(format!(
                "kprobe: only {entry} in kallsyms (arguments may differ)"
            ));
        }
    }
    off(&fallbacks.join("; "))
}

fn attach_fork_window(ebpf: &mut Ebpf, notes: &mut Vec<String>) -> anyhow::Result<()> {
    if ensure_tracefs()? {
        notes.push(MOUNTED_TRACEFS.to_owned());
    }
    // Exit before enter: a window opened is always closed.
    for (prog_name, phase) in [("fork_exit", "exit"), ("fork_enter", "enter")] {
        let prog: &mut TracePoint = ebpf
            .program_mut(prog_name)
            .ok_or_else(|| anyhow!("program {prog_name} missing"))?
            .try_into()?;
        prog.load()?;
        for sc in FORK_SYSCALLS {
            let name = format!("sys_{phase}_{sc}");
            // clone3 or vfork may be absent on some architectures: skip those.
            if !Path::new("/sys/kernel/tracing/events/syscalls")
                .join(&name)
                .exists()
            {
                continue;
            }
            prog.attach("syscalls", &name)
                .with_context(|| format!("attaching syscalls:{name}"))?;
        }
    }
    Ok(())
}

fn attach_hook(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    spec: &HookSpec,
    mode: ProbeMode,
    btf: Option<&anyhow::Result<Btf>>,
) -> HookStatus {
    let mut fallbacks = Vec::new();
    let symbol = std::iter::once(spec.name)
        .chain(spec.aliases.iter().copied())
        .find(|s| facts.hook_symbols.contains_key(*s));
    let done = |mode, symbol: Option<&str>, fallbacks| HookStatus {
        id: spec.id,
        name: spec.name.to_owned(),
        symbol: symbol.map(str::to_owned),
        mode,
        fallbacks,
    };
    let Some(symbol) = symbol else {
        fallbacks.push(format!("{} not in this kernel", spec.name));
        let mode = if spec.slab_covered {
            HookMode::Tracepoint
        } else {
            HookMode::Unavailable
        };
        return done(mode, None, fallbacks);
    };
    // The programs read `vma` as argument 1 and `nr_pages` as argument 2:
    // another position in this kernel's prototype is not hooked.
    let a = &facts.config.args;
    let odd = match spec.id {
        rmapwatch_common::hook::RMAP_NEW if a.rmap_new_vma != 1 => Some(format!(
            "vma is argument {} of {symbol}, the program reads 1",
            a.rmap_new_vma
        )),
        rmapwatch_common::hook::RMAP_PTES
            if a.rmap_ptes_nr != 2 && a.rmap_ptes_nr != rmapwatch_common::ABSENT =>
        {
            Some(format!(
                "nr_pages is argument {} of {symbol}, the program reads 2",
                a.rmap_ptes_nr
            ))
        }
        _ => None,
    };
    if let Some(why) = odd {
        fallbacks.push(why);
        return done(HookMode::Unavailable, Some(symbol), fallbacks);
    }
    if matches!(mode, ProbeMode::Auto | ProbeMode::Fentry) {
        match try_fentry(ebpf, spec, symbol, btf) {
            Ok(()) => return done(HookMode::Fentry, Some(symbol), fallbacks),
            Err(e) => fallbacks.push(format!("fentry: {}", short(&e))),
        }
    }
    if matches!(mode, ProbeMode::Auto | ProbeMode::Kprobe) {
        // The entry kallsyms names (`name.isra.0` where the compiler renamed it).
        let entry = facts
            .hook_symbols
            .get(symbol)
            .map_or(symbol, String::as_str);
        match try_kprobe(ebpf, spec, entry) {
            Ok(()) => return done(HookMode::Kprobe, Some(entry), fallbacks),
            Err(e) => fallbacks.push(format!("kprobe: {}", short(&e))),
        }
    }
    let mode = if spec.slab_covered {
        HookMode::Tracepoint
    } else {
        HookMode::Unavailable
    };
    done(mode, Some(symbol), fallbacks)
}

fn try_fentry(
    ebpf: &mut Ebpf,
    spec: &HookSpec,
    symbol: &str,
    btf: Option<&anyhow::Result<Btf>>,
) -> anyhow::Result<()> {
    let btf = match btf {
        Some(Ok(btf)) => btf,
        Some(Err(e)) => return Err(anyhow!("{e:#}")),
        None => return Err(anyhow!("not requested")),
    };
    let prog: &mut FEntry = ebpf
        .program_mut(spec.fentry_prog)
        .ok_or_else(|| anyhow!("program {} missing", spec.fentry_prog))?
        .try_into()?;
    prog.load(symbol, btf)
        .map_err(|e| anyhow!("{}", describe_load_error(&e)))?;
    prog.attach().map_err(|e| {
        // With its source chain: aya's Display omits the errno.
        let s = format!("{:#}", anyhow::Error::from(e));
        if s.contains("os error 524") {
            // ENOTSUPP: e.g. arm64 before BPF trampolines were supported there.
            anyhow!("attach refused: ENOTSUPP (524), no BPF trampoline on this kernel")
        } else {
            anyhow!(s)
        }
    })?;
    Ok(())
}

fn try_kprobe(ebpf: &mut Ebpf, spec: &HookSpec, symbol: &str) -> anyhow::Result<()> {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err(anyhow!("kernel has no kprobe support (CONFIG_KPROBES)"));
    }
    let prog: &mut KProbe = ebpf
        .program_mut(spec.kprobe_prog)
        .ok_or_else(|| anyhow!("program {} missing", spec.kprobe_prog))?
        .try_into()?;
    prog.load()
        .map_err(|e| anyhow!("{}", describe_load_error(&e)))?;
    prog.attach(symbol, 0)?;
    Ok(())
}

/// A load error without the (long) verifier log, but with the errno.
fn describe_load_error(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // RMAPWATCH_VERIFIER_LOG=1 prints the verifier's last words (for
            // bug reports from kernels rmapwatch was not tested on).
            if std::env::var_os("RMAPWATCH_VERIFIER_LOG").is_some() {
                let log = verifier_log.to_string();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                for line in tail.iter().rev() {
                    eprintln!("rmapwatch: verifier: {line}");
                }
            }
            format!("load refused by the kernel: {io_error}")
        }
        other => other.to_string(),
    }
}

/// A reader that copies what it reads.
struct Tee<R, W>(R, W);

impl<R: std::io::Read, W: std::io::Write> std::io::Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dup_mmap_is_bracketed_by_its_uprobe_calls_where_inlined() {
        let syms = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|n| ((*n).to_owned(), (*n).to_owned()))
                .collect()
        };
        let all = syms(&["dup_mmap", "uprobe_start_dup_mmap", "uprobe_end_dup_mmap"]);
        assert_eq!(dup_mmap_bracket(&all), Some(("dup_mmap", "dup_mmap", "")));
        // Debian's 5.10 and 6.12: dup_mmap inlined into copy_process.
        let (enter, exit, line) =
            dup_mmap_bracket(&syms(&["uprobe_start_dup_mmap", "uprobe_end_dup_mmap"])).unwrap();
        assert_eq!(
            (enter, exit),
            ("uprobe_start_dup_mmap", "uprobe_end_dup_mmap")
        );
        assert!(line.contains("inlined"), "{line}");
        assert_eq!(dup_mmap_bracket(&syms(&["uprobe_start_dup_mmap"])), None);
        assert_eq!(dup_mmap_bracket(&syms(&[])), None);
    }

    #[test]
    fn lock_waits_say_why_they_are_not_measured() {
        let no_field = lock_plan(rmapwatch_common::ABSENT, true, Ok(())).unwrap_err();
        assert!(no_field.contains("BTF has no anon_vma.rwsem"), "{no_field}");
        let old = lock_plan(8, false, Err("kernel has no kprobe support".into())).unwrap_err();
        assert!(
            old.contains("no lock:contention_begin/end tracepoints (they came in 5.19)")
                && old.contains("kprobes on the rwsem slow paths: kernel has no kprobe support"),
            "{old}"
        );
        let (how, ok) = lock_plan(8, true, Err("unused".into())).unwrap();
        assert_eq!(how, "tracepoint");
        assert!(ok.contains("rwsem (at +8 from BTF)"), "{ok}");
        // 5.10, 5.15: the slow paths kprobed instead.

        let (how, line) = lock_plan(8, false, Ok(())).unwrap();
        assert_eq!(how, "kprobe");
        assert!(
            line.starts_with("kprobe rwsem_down_{read,write}_slowpath")
                && line.contains("rwsem (at +8 from BTF)"),
            "{line}"
        );
    }
}
