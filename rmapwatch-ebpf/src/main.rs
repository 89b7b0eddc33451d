//! rmapwatch's kernel side.
//!
//! - Slab tracepoints (raw, so that the `void *ptr` argument loads on 6.1 and
//!   6.12 verifiers too): anon_vma / AVC allocations and frees, classified by
//!   `call_site` against the rmap functions' text ranges, streamed.
//! - `sched_process_{fork,exec,exit}`: lineage and names, streamed.
//! - `syscalls:sys_{enter,exit}_{clone,clone3,fork,vfork}`: the fork window, so
//!   that allocations made by the parent inside fork are handed to the child:
//!   the entry streams one record (`ForkWindow`), and user space flags the
//!   thread's `anon_vma_clone` allocations up to its `sched_process_fork`;
//!   `FORKING` (a hash map) times the fork and tells lock holders inside one.
//! - Function hooks (fentry or kprobe, chosen by the loader): per-CPU call
//!   counters only; the per-page rmap hooks are far too hot to stream.
//! - `lock:contention_{begin,end}`: waits on an rwsem that is an anon_vma
//!   root's (the word before it, `anon_vma->root`, points at the anon_vma
//!   itself), one record per wait; user space keeps those on the anon_vmas
//!   it knows. The slab path keeps no lock map: an anon_vma free looks its
//!   rwsem up in `WAITED` only while a wait is open.
//! - The fork window's exit: the fork syscall's time, one record per fork.
//! - Fork work (fentry/fexit or kprobe/kretprobe on `dup_mmap`,
//!   `anon_vma_fork`, `anon_vma_clone`): one record per `dup_mmap`.
//! - rmap walks (fentry or kprobe on `rmap_walk_anon`): one record per walk.
//! - Kernels without lock tracepoints (5.10, 5.15): kprobes on the rwsem
//!   slow paths stand in for `lock:contention_{begin,end}`.
//!
//! No struct layout is compiled in: every offset comes from the running
//! kernel's BTF through the `CONFIG` global.
//!
//! Rare conditions (a map full, a torn walk, an anon_vma from an unknown
//! call site) are counted in `STATS` and said through aya-log, sparingly
//! (see [`rare`]): user space turns the lines into notices.
#![cfg_attr(target_arch = "bpf", no_std)]
// `atomic_xadd`: the build sets RUSTC_BOOTSTRAP for -Z build-std anyway.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use rmapwatch_common::{
    ABSENT, COMM_LEN, Config, Event, ForkTiming, ForkWindow, LockWait, RmapKey, SlabEvent, SnapAvc,
    SnapVma, WaitEnd, arg2, flags, hook, kind, lock, nest, site, snap, stat,
};

/// A kernel-side log line about a rare condition (aya-log; its 0.2 macros
/// take a context but do not use it, and not every caller has one).
macro_rules! say {
    ($($arg:tt)*) => {
        aya_log_ebpf::warn!(&(), $($arg)*)
    };
}

/// Ring buffer to user space. The loader may resize it (`--ring-buffer-kb`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(rmapwatch_common::RING_BYTES, 0);

/// Per-CPU counters, indexed by `rmapwatch_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The nest watch (`--watch-nesting` only): per CPU, 1 while our slab
/// program of a [`nest`] slot runs.
#[map]
static INSIDE: PerCpuArray<u32> = PerCpuArray::with_max_entries(nest::SLOTS, 0);

/// Threads currently inside a fork-family syscall (tid -> ktime at entry).
/// The loader may resize it (`RMAPWATCH_FORK_WINDOW_ENTRIES`, for tests).
#[map]
static FORKING: HashMap<u32, u64> =
    HashMap::with_max_entries(rmapwatch_common::FORK_WINDOW_ENTRIES, 0);

/// New anonymous folios per (process, VMA start), from the
/// `folio_add_new_anon_rmap` hook: exact per-VMA page counts without
/// streaming the hottest path. User space reads it and prunes exited
/// processes.
#[map]
static RMAP_VMAS: HashMap<RmapKey, u64> =
    HashMap::with_max_entries(rmapwatch_common::RMAP_VMAS_ENTRIES, 0);

/// The anon_vma rwsems waited on (address of `anon_vma->rwsem` -> the
/// anon_vma frees seen at that address while a wait was open): a wait
/// that began on one object and ended after its free is told apart
/// without the slab path tracking every anon_vma. Entered at a wait's
/// begin only; least recently used entries make room.
#[map]
static WAITED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(lock::WAITING, 0);

/// Threads waiting on a tracked rwsem now (tid -> the wait).
#[map]
static WAITING: HashMap<u32, LockWait> = HashMap::with_max_entries(lock::WAITING, 0);

/// Threads inside `dup_mmap` now (tid -> its timing so far), kept by the
/// fork-work hooks (entry and exit of `dup_mmap`, `anon_vma_fork`,
/// `anon_vma_clone`).
#[map]
static TIMING: HashMap<u32, ForkTiming> =
    HashMap::with_max_entries(rmapwatch_common::TIMING_ENTRIES, 0);

/// Call sites of anon_vma allocations outside every known range (the
/// inlining detector), with counts.
#[map]
static INLINED_SITES: HashMap<u64, u64> = HashMap::with_max_entries(64, 0);

/// Set by the loader before load; read-only to the verifier (aya freezes
/// every `.rodata*` map, so the verifier prunes on its values). A
/// `static mut`, so that the compiler cannot fold the zero initialiser into
/// the code: each read is one load from the map value, not the address
/// passed through the stack. In a section of its own: placed in `.rodata`
/// itself, the writable global made a second section of that name, which
/// aya refused. (Read as zeros, no call site would classify: every root
/// test that counts events would fail.)
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata.config")]
static mut CONFIG: Config = Config {
    range_start: [0; rmapwatch_common::MAX_SITE_RANGES],
    range_end: [0; rmapwatch_common::MAX_SITE_RANGES],
    range_site: [0; rmapwatch_common::MAX_SITE_RANGES],
    nr_ranges: 0,
    kmem_cache_ctor_off: 0,
    lo: 0,
    hi: 0,
    anon_vma_ctor: 0,
    task_pid_off: 0,
    task_tgid_off: 0,
    task_comm_off: 0,
    task_signal_off: 0,
    signal_live_off: 0,
    snap: rmapwatch_common::SnapshotLayout {
        vma_start: 0,
        vma_end: 0,
        vma_mm: 0,
        vma_flags: 0,
        vma_file: 0,
        vma_pgoff: 0,
        vma_anon_vma: 0,
        vma_chain: 0,
        avc_same_vma: 0,
        avc_anon_vma: 0,
        av_root: 0,
        av_parent: 0,
        av_refcount: 0,
        av_num_children: 0,
        av_num_active_vmas: 0,
        task_mm: 0,
        mm_mmap: 0,
        vma_next: 0,
        task_real_parent: 0,
        signal_thread_head: 0,
        task_thread_node: 0,
        reserved: 0,
    },
    args: rmapwatch_common::ArgLayout {
        alloc_arg2: 0,
        free_arg2: 0,
        anon_vma_size: 0,
        anon_vma_slab_size: 0,
        anon_vma_wait_list: 0,
        rmap_new_vma: 1,
        rmap_ptes_nr: 2,
        slab_path: 0,
        perf_call_site: 0,
        perf_ptr: 0,
        perf_bytes_req: 0,
        perf_bytes_alloc: 0,
        perf_free_name: 0,
    },
    wake_bytes: 1 << 20,
    time: rmapwatch_common::TimeLayout {
        anon_vma_rwsem: ABSENT,
        folio_mapping: ABSENT,
        rwc_rmap_one: ABSENT,
        syscall_ret: 16,
        rwsem_owner: ABSENT,
        _pad: 0,
    },
    nest_watch: 0,
    _pad: 0,
};

/// The anon_vma and AVC caches (`struct kmem_cache *`), learnt from the
/// first allocation of each at an rmap call site (where only these two
/// caches are used): later events compare a pointer instead of reading
/// `s->ctor`. Races only ever store the same values.
#[unsafe(no_mangle)]
static mut CACHES: [u64; 2] = [0; 2];

#[inline(always)]
fn config() -> &'static Config {
    let config = &raw const CONFIG;
    // SAFETY: nothing writes CONFIG after load (a frozen map).
    unsafe { &*config }
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += by };
    }
}

/// Log lines said per `STATS` index, all CPUs together: the budget of
/// [`rmapwatch_common::rare::LINES_PER_CONDITION`] each.
#[unsafe(no_mangle)]
static mut LOGGED: [u64; stat::COUNT as usize] = [0; stat::COUNT as usize];

/// Counts one occurrence of a rare condition (`STATS[index]`, per CPU) and
/// returns this CPU's count when it is worth a log line: the CPU's 1st,
/// 16th, 256th, ... occurrence, while the condition's budget lasts. A
/// storm of the same condition thus costs a few lines, never one per event.
#[inline(always)]
fn rare(index: u32) -> Option<u64> {
    let counter = STATS.get_ptr_mut(index)?;
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let n = unsafe {
        *counter += 1;
        *counter
    };
    (rmapwatch_common::rare::worth_a_line(n) && budget(index)).then_some(n)
}

/// Takes one line of the condition's budget; `false` once it is spent.
/// (No fetch-and-add before 5.12: the check and the add are two steps, so
/// CPUs racing may overshoot the budget by one line each.)
#[inline(always)]
fn budget(index: u32) -> bool {
    if index >= stat::COUNT {
        return false;
    }
    let logged = &raw mut LOGGED;
    // SAFETY: in bounds (checked above); a global of this program, read
    // volatile as other CPUs add to it.
    let slot = unsafe { logged.cast::<u64>().add(index as usize) };
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(slot) } >= rmapwatch_common::rare::LINES_PER_CONDITION {
        return false;
    }
    // SAFETY: as above; an aligned u64.
    unsafe { atomic_add(slot, 1) };
    true
}

/// `BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`, `BPF_RB_AVAIL_DATA`.
const RB_NO_WAKEUP: u64 = 1;
const RB_FORCE_WAKEUP: u64 = 2;
const RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
fn emit<T: Copy + 'static>(event: &T) {
    emit_asking(event, true);
}

/// Streams a record; `ask` whether the ring is full enough to wake user
/// space.
///
/// No wakeup per event: on a VM each one is an IPI, i.e. a VM exit
/// (measured: ~700 ns per slab event with it). User space drains on a
/// short timer; a ring an eighth full wakes it at once. Asking reads both
/// ring positions, lines that every CPU and the reader write (~10 ns a
/// run, measured): the slab path asks for about one record in 32
/// ([`asks_fill`]), which still wakes the reader within a few KiB of the
/// mark.
#[inline(always)]
fn emit_asking<T: Copy + 'static>(event: &T, ask: bool) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(*event);
            let flags = if ask && EVENTS.query(RB_AVAIL_DATA) >= config().wake_bytes {
                RB_FORCE_WAKEUP
            } else {
                RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => bump(stat::DROPPED, 1),
    }
}

/// Whether a slab record asks the ring's fill: by the object's address,
/// about one in 32 (64-byte lines; slab objects of any size land on every
/// line offset of their pages in turn).
#[inline(always)]
fn asks_fill(ptr: u64) -> bool {
    (ptr >> 6) & 31 == 0
}

#[inline(always)]
fn read_or_zero(addr: u64) -> u64 {
    let mut v = 0u64;
    // SAFETY: the helper writes at most 8 bytes into `v` and zeroes it on a fault.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut v).cast(),
            8,
            addr as *const core::ffi::c_void,
        );
    }
    v
}

#[inline(always)]
fn read_kernel<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(i64::from)
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: RawTracePointContext) -> i32 {
    let w = watch_begin(nest::ALLOC, raw_streams());
    let _ = raw_slab(&ctx, kind::ALLOC);
    watch_end(nest::ALLOC, w);
    0
}

/// A separate event before 6.1 (same first four arguments as
/// `kmem_cache_alloc`).
#[raw_tracepoint(tracepoint = "kmem_cache_alloc_node")]
pub fn kmem_cache_alloc_node(ctx: RawTracePointContext) -> i32 {
    let w = watch_begin(nest::ALLOC_NODE, raw_streams());
    let _ = raw_slab(&ctx, kind::ALLOC);
    watch_end(nest::ALLOC_NODE, w);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: RawTracePointContext) -> i32 {
    let w = watch_begin(nest::FREE, raw_streams());
    let _ = raw_slab(&ctx, kind::FREE);
    watch_end(nest::FREE, w);
    0
}

/// Whether the raw slab programs stream (else the perf ones do, and the
/// raw one only detects: the nest watch follows the streaming ones).
#[inline(always)]
fn raw_streams() -> bool {
    config().args.slab_path == rmapwatch_common::slab_path::RAW
}

/// A slab program's run begins: said to the nest watch (when `on` and the
/// watch is attached) as running on this CPU for `slot`; pass the result
/// to [`watch_end`]. (Not a closure around the body: the compiler called
/// such a body as a bpf-to-bpf subprogram; inlined, ours over the cost
/// split's reserve variant went from +19.6 to +9.9 ns a run, measured.)
#[inline(always)]
fn watch_begin(slot: u32, on: bool) -> bool {
    on && watched(slot, 1)
}

/// A slab program's run ends ([`watch_begin`]).
#[inline(always)]
fn watch_end(slot: u32, watch: bool) {
    if watch {
        watched(slot, 0);
    }
}

/// With the nest watch attached, says (`INSIDE`) that our slab program of
/// `slot` runs on this CPU (`v` 1) or no longer (0); `false` without the
/// watch (a constant the verifier prunes on).
#[inline(always)]
fn watched(slot: u32, v: u32) -> bool {
    if config().nest_watch == 0 {
        return false;
    }
    if let Some(p) = INSIDE.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; a nested run only reads it.
        unsafe { core::ptr::write_volatile(p, v) };
    }
    true
}

/// The nest watch (`--watch-nesting`; attached after ours, on the same
/// tracepoints): a run that finds our program of its slot running on this
/// CPU is one the kernel skipped for ours (a recursion miss: ours was
/// interrupted, or preempted, inside). It is counted per CPU
/// ([`stat::NESTED`]) and, at an rmap call site, streamed as ours would
/// have ([`stat::NESTED_OURS`]). Every other run returns after one load.
#[inline(always)]
fn nest_watch(ctx: &RawTracePointContext, slot: u32, event_kind: u32) {
    let Some(p) = INSIDE.get_ptr(slot) else {
        return;
    };
    // SAFETY: this CPU's slot, written by the program this run interrupted.
    if unsafe { core::ptr::read_volatile(p) } == 0 {
        return;
    }
    bump(stat::NESTED, 1);
    let call_site: u64 = ctx.arg(0);
    if config().classify(call_site).is_none() {
        return;
    }
    bump(stat::NESTED_OURS, 1);
    let layout = raw_layout(event_kind);
    let _ = slab::<{ stage::FULL }>(call_site, ctx.arg(1), event_kind, Role::Count, || {
        raw_arg2(ctx, layout)
    });
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn nest_alloc(ctx: RawTracePointContext) -> i32 {
    nest_watch(&ctx, nest::ALLOC, kind::ALLOC);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc_node")]
pub fn nest_alloc_node(ctx: RawTracePointContext) -> i32 {
    nest_watch(&ctx, nest::ALLOC_NODE, kind::ALLOC);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn nest_free(ctx: RawTracePointContext) -> i32 {
    nest_watch(&ctx, nest::FREE, kind::FREE);
    0
}

/// The same events as classic (perf) tracepoints, fields at the offsets of
/// their tracefs formats: on 7.x, raw tracepoint programs run preemptible
/// (SRCU-fast tracepoints, `rcu_read_lock_dont_migrate`) and lose events to
/// their recursion guard; perf tracepoint callbacks still disable preemption.
#[tracepoint]
pub fn perf_kmem_cache_alloc(ctx: TracePointContext) -> i32 {
    let w = watch_begin(nest::ALLOC, true);
    let _ = perf_slab(&ctx, kind::ALLOC);
    watch_end(nest::ALLOC, w);
    0
}

#[tracepoint]
pub fn perf_kmem_cache_free(ctx: TracePointContext) -> i32 {
    let w = watch_begin(nest::FREE, true);
    let _ = perf_slab(&ctx, kind::FREE);
    watch_end(nest::FREE, w);
    0
}

/// The third argument of a slab tracepoint, as this kernel lays it out.
enum Arg2 {
    /// `struct kmem_cache *`.
    Cache(u64),
    /// `bytes_req` (alloc before 6.0; `bytes_alloc` follows).
    BytesReq(u64, u64),
    /// The cache's name (free on 5.12 .. 6.0).
    Name(u64),
    /// Nothing (free before 5.12).
    None,
}

/// Raw tracepoints: `kmem_cache_alloc(call_site, ptr, s, gfp, node)` (6.1+),
/// `(call_site, ptr, bytes_req, bytes_alloc, gfp[, node])` before;
/// `kmem_cache_free(call_site, ptr, s)` (6.1+), `(call_site, ptr, name)`
/// (5.12 .. 6.0), `(call_site, ptr)` before. The layout is in `CONFIG`,
/// which the verifier sees as constant (frozen `.rodata`): the branches a
/// kernel does not take are never verified, and a raw tracepoint's context
/// size only counts the arguments read in verified code.
///
/// On the perf path (7.0+ with `PREEMPT_RCU`) the perf program counts and
/// this one (attached to `kmem_cache_alloc` only) runs the inlining
/// detector, which needs the cache pointer: it streams nothing, so its
/// recursion misses lose no event.
#[inline(always)]
fn raw_slab(ctx: &RawTracePointContext, event_kind: u32) -> Result<(), i64> {
    raw_slab_to::<{ stage::FULL }>(ctx, event_kind)
}

/// [`raw_slab`] up to `STAGE` ([`stage`]): the cost split's variants.
#[inline(always)]
fn raw_slab_to<const STAGE: u32>(ctx: &RawTracePointContext, event_kind: u32) -> Result<(), i64> {
    let a = &config().args;
    let perf = a.slab_path == rmapwatch_common::slab_path::PERF;
    if perf && a.alloc_arg2 != arg2::CACHE {
        return Ok(());
    }
    let layout = raw_layout(event_kind);
    let role = if perf { Role::Detect } else { Role::Both };
    slab::<STAGE>(ctx.arg(0), ctx.arg(1), event_kind, role, || {
        raw_arg2(ctx, layout)
    })
}

/// How this kernel lays out the third argument of a raw slab event
/// ([`arg2`]).
#[inline(always)]
fn raw_layout(event_kind: u32) -> u32 {
    let a = &config().args;
    if event_kind == kind::ALLOC {
        a.alloc_arg2
    } else {
        a.free_arg2
    }
}

/// The third argument of a raw slab event, read as `layout` says.
#[inline(always)]
fn raw_arg2(ctx: &RawTracePointContext, layout: u32) -> Arg2 {
    match layout {
        arg2::CACHE => Arg2::Cache(ctx.arg(2)),
        arg2::SIZES => Arg2::BytesReq(ctx.arg(2), ctx.arg(3)),
        arg2::NAME => Arg2::Name(ctx.arg(2)),
        _ => Arg2::None,
    }
}

#[inline(always)]
fn perf_slab(ctx: &TracePointContext, event_kind: u32) -> Result<(), i64> {
    let a = &config().args;
    // SAFETY: the offsets are the running kernel's format's, checked by the
    // loader; read_at goes through bpf_probe_read.
    let field = |off: u32| unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0);
    let call_site = field(a.perf_call_site);
    let ptr = field(a.perf_ptr);
    slab::<{ stage::FULL }>(call_site, ptr, event_kind, Role::Count, || {
        if event_kind == kind::ALLOC {
            Arg2::BytesReq(field(a.perf_bytes_req), field(a.perf_bytes_alloc))
        } else if a.perf_free_name != rmapwatch_common::ABSENT {
            // `__data_loc char[] name`: offset in the low 16 bits, from the
            // start of the record.
            let loc = field(a.perf_free_name) as u32 & 0xffff;
            Arg2::Name(ctx.as_ptr() as u64 + u64::from(loc))
        } else {
            Arg2::None
        }
    })
}

/// What a program does with the slab events it sees: on the raw path one
/// program does both; on the perf path the perf program counts and a raw
/// one detects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Stream the rmap sites' objects and run the inlining detector on the
    /// other sites' allocations.
    Both,
    /// Only stream.
    Count,
    /// Only detect (and learn the anon_vma cache at an rmap site, for the
    /// detector's comparison).
    Detect,
}

/// The one entry of every slab program: the call site classified, then the
/// object streamed, or the allocation checked by the inlining detector.
#[inline(always)]
fn slab<const STAGE: u32>(
    call_site: u64,
    ptr: u64,
    event_kind: u32,
    role: Role,
    arg2: impl Fn() -> Arg2,
) -> Result<(), i64> {
    let cfg = config();
    let Some(site_id) = cfg.classify(call_site) else {
        if STAGE >= stage::DETECT && event_kind == kind::ALLOC && role != Role::Count {
            inlined(call_site, ptr, &arg2);
        }
        return Ok(());
    };
    if STAGE < stage::MATCH {
        return Ok(());
    }
    if role == Role::Detect {
        if let Arg2::Cache(cache) = arg2() {
            object_of(cache)?;
        }
        return Ok(());
    }
    if ptr == 0 {
        return Ok(());
    }
    let object = match arg2() {
        Arg2::Cache(cache) => object_of(cache)?,
        Arg2::BytesReq(req, _) => by_size(req),
        Arg2::Name(name) => by_name(name),
        // Only __put_anon_vma frees anon_vmas; the engine corrects the
        // kind from the object it knows anyway.
        Arg2::None if site_id == site::PUT => rmapwatch_common::object::ANON_VMA,
        Arg2::None => rmapwatch_common::object::AVC,
    };
    // Only an allocation names its task (the owner, and the thread whose
    // fork window it may fall in): user space knows a freed object by its
    // address. The helper call, skipped on frees, cost ~11 ns a streamed
    // free (measured with the cost split, ABI 10).
    let pid_tgid = if event_kind == kind::ALLOC {
        bpf_get_current_pid_tgid()
    } else {
        0
    };
    let tid = pid_tgid as u32;
    if STAGE < stage::FORK {
        return Ok(());
    }
    let mut event_flags = 0;
    // anon_vma_fork runs only inside fork (dup_mmap). anon_vma_clone also
    // runs for VMA splits and mremap: user space tells those inside a fork
    // by the thread's fork window ([`ForkWindow`]), without a lookup here.
    if event_kind == kind::ALLOC && site_id == site::FORK {
        event_flags |= flags::IN_FORK;
    }
    if STAGE < stage::RESERVE {
        return Ok(());
    }
    let event = SlabEvent {
        ptr,
        tid,
        tgid: (pid_tgid >> 32) as u32,
        kind: event_kind as u8,
        object: object as u8,
        site: site_id as u8,
        flags: event_flags as u8,
        pad: 0,
    };
    if STAGE == stage::BATCH || STAGE == stage::BATCH_NOTIME {
        batch_append::<STAGE>(event);
        return Ok(());
    }
    if STAGE < stage::FULL || STAGE == stage::QUERY {
        // The record reserved in the ring and written, then discarded
        // (user space skips it): what streaming costs but the wakeup
        // query and the submit's commit. QUERY: and the ring's fill asked
        // for every record (what the slab path did before it asked for
        // one in 32).
        if let Some(mut entry) = EVENTS.reserve::<SlabEvent>(0) {
            entry.write(event);
            if STAGE == stage::QUERY {
                let _ = EVENTS.query(RB_AVAIL_DATA);
            }
            entry.discard(RB_NO_WAKEUP);
        }
        return Ok(());
    }
    emit_asking(&event, asks_fill(ptr));
    if event_kind == kind::FREE && object == rmapwatch_common::object::ANON_VMA {
        freed_while_waiting(ptr);
    }
    Ok(())
}

/// How far a slab program goes: rmapwatch's own go all the way ([`FULL`]);
/// the cost split's variants (`rmw-bench cost`, never attached by
/// rmapwatch unless asked) stop earlier, so that `bpf_stats` of all of
/// them in one run tells what each stage of the path costs.
mod stage {
    /// The call site classified against the rmap functions' ranges.
    pub const SITE: u32 = 0;
    /// And the inlining detector on the other sites' allocations.
    pub const DETECT: u32 = 1;
    /// And, at an rmap site, the object's kind and, on an allocation, the
    /// current task (a free asks none since ABI 10).
    pub const MATCH: u32 = 2;
    /// And the fork flag (`anon_vma_fork`'s allocations, by site; the
    /// window's hash lookup for `anon_vma_clone`'s, here until ABI 9, is
    /// user space's now).
    pub const FORK: u32 = 3;
    /// And the record reserved in the ring and written (then discarded).
    pub const RESERVE: u32 = 4;
    /// And the ring's fill queried for a wakeup, the record submitted:
    /// rmapwatch's programs.
    pub const FULL: u32 = 5;
    /// Instead of [`RESERVE`]: the record stamped with the time (what
    /// ordering records across CPUs needs), an in-flight mark kept per CPU
    /// (what a flush needs to know), the record put in this CPU's batch,
    /// and a full batch copied into one ring reservation (discarded): the
    /// per-CPU batching lever, measured.
    pub const BATCH: u32 = 6;
    /// [`BATCH`] without the time: what batching alone saves.
    pub const BATCH_NOTIME: u32 = 7;
    /// [`RESERVE`] and the ring's fill queried, for every record.
    pub const QUERY: u32 = 8;
}

/// The batching lever's measurement ([`stage::BATCH`]): this CPU's batch.
#[map]
static SPLIT_BATCH: PerCpuArray<rmapwatch_common::SplitBatch> = PerCpuArray::with_max_entries(1, 0);

/// The batching lever's measurement: per CPU, the time since which a
/// program may be putting a record (0: none).
#[map]
static SPLIT_FLIGHT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// [`stage::BATCH`]: what a batched record would cost on the slab path.
#[inline(always)]
fn batch_append<const STAGE: u32>(mut event: SlabEvent) {
    use rmapwatch_common::SPLIT_BATCH_RECORDS as N;
    let Some(flight) = SPLIT_FLIGHT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; a nested run restores what it found.
    let prev = unsafe { core::ptr::read_volatile(flight) };
    if STAGE == stage::BATCH {
        // SAFETY: helpers without arguments. The time is read twice: the
        // mark before the record's own, so that a flush on this CPU never
        // misses a record older than it.
        unsafe {
            core::ptr::write_volatile(flight, bpf_ktime_get_ns());
            event.pad = bpf_ktime_get_ns() as u32;
        }
    } else {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(flight, 1) };
    }
    if let Some(b) = SPLIT_BATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's batch; the index is masked to its length.
        unsafe {
            let n = (*b).n as usize & (N - 1);
            *(*b).recs.as_mut_ptr().add(n) = event;
            if n + 1 == N {
                if let Some(mut entry) = EVENTS.reserve::<[SlabEvent; N]>(0) {
                    aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                        entry.as_mut_ptr().cast(),
                        core::mem::size_of::<[SlabEvent; N]>() as u32,
                        (&raw const (*b).recs).cast(),
                    );
                    entry.discard(RB_NO_WAKEUP);
                }
                (*b).n = 0;
            } else {
                (*b).n = n as u64 + 1;
            }
        }
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(flight, prev) };
}

/// The cost split's variants: one alloc and one free program per stage.
macro_rules! split_variants {
    ($($stage:ident => $alloc:ident, $free:ident;)*) => {
        $(
            #[raw_tracepoint]
            pub fn $alloc(ctx: RawTracePointContext) -> i32 {
                let _ = raw_slab_to::<{ stage::$stage }>(&ctx, kind::ALLOC);
                0
            }

            #[raw_tracepoint]
            pub fn $free(ctx: RawTracePointContext) -> i32 {
                let _ = raw_slab_to::<{ stage::$stage }>(&ctx, kind::FREE);
                0
            }
        )*
    };
}

split_variants! {
    SITE => split_site_a, split_site_f;
    DETECT => split_detect_a, split_detect_f;
    MATCH => split_match_a, split_match_f;
    FORK => split_fork_a, split_fork_f;
    RESERVE => split_reserve_a, split_reserve_f;
    BATCH => split_batch_a, split_batch_f;
    BATCH_NOTIME => split_batchn_a, split_batchn_f;
    QUERY => split_query_a, split_query_f;
}

/// An anon_vma is freed: a wait open on its rwsem now ends on another
/// object, whatever is allocated at this address next. One load while no
/// wait is open (almost always).
#[inline(always)]
fn freed_while_waiting(ptr: u64) {
    // SAFETY: a global of this program, read volatile as CPUs update it.
    if unsafe { core::ptr::read_volatile(&raw const WAITS_OPEN) } == 0 {
        return;
    }
    let off = config().time.anon_vma_rwsem;
    if off == ABSENT {
        return;
    }
    if let Some(frees) = WAITED.get_ptr_mut(ptr + u64::from(off)) {
        // SAFETY: a map value of this program, aligned.
        unsafe { atomic_add(frees, 1) };
    }
}

/// Whether the rwsem at `lock` can be an anon_vma's: rmap code locks a
/// root's, and a root's `root` points at itself. Other rwsems pass only
/// if the word at the same distance before them points at their own
/// struct; user space keeps the waits on the anon_vmas it knows and
/// counts the rest `unknown`.
#[inline(always)]
fn anon_vma_root_rwsem(lock: u64) -> bool {
    let cfg = config();
    let off = cfg.time.anon_vma_rwsem;
    if off == ABSENT || lock < u64::from(off) {
        return false;
    }
    let anon_vma = lock - u64::from(off);
    anon_vma != 0 && read_or_zero(anon_vma + u64::from(cfg.snap.av_root)) == anon_vma
}

/// An empty raw tracepoint program: the floor `rmw-bench` measures the
/// others against, on the same tracepoints in the same run (never attached
/// by rmapwatch).
#[raw_tracepoint]
pub fn empty(_ctx: RawTracePointContext) -> i32 {
    0
}

/// `lock:contention_begin(lock, flags)`: a waiter enters a lock's slow
/// path. Only an rwsem whose word before it points back (an anon_vma
/// root's) goes further than one read.
#[raw_tracepoint(tracepoint = "contention_begin")]
pub fn contention_begin(ctx: RawTracePointContext) -> i32 {
    // Spinlocks and mutexes (most contention) end here, without a lookup.
    let flags = ctx.arg::<u64>(1) as u32;
    if !lock::maybe_rwsem(flags) {
        return 0;
    }
    let lock: u64 = ctx.arg(0);
    if anon_vma_root_rwsem(lock) {
        lock_begin(lock, flags);
    }
    0
}

/// `lock:contention_end(lock, ret)`: the waiter got the lock (or gave up).
#[raw_tracepoint(tracepoint = "contention_end")]
pub fn contention_end(ctx: RawTracePointContext) -> i32 {
    // No wait open anywhere (almost always: one hot line), or none on a
    // thread of this slot: no lookup.
    // SAFETY: a global of this program, read volatile as CPUs update it.
    if unsafe { core::ptr::read_volatile(&raw const WAITS_OPEN) } == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if open_waits(pid_tgid as u32) == 0 {
        return 0;
    }
    lock_end(ctx.arg(0), pid_tgid);
    0
}

/// Waits begun and not ended, all threads: `contention_end` returns after
/// one load while it is 0.
#[unsafe(no_mangle)]
static mut WAITS_OPEN: u64 = 0;

/// Slots of [`OPEN_WAITS`].
const OPEN_SLOTS: usize = 4096;

/// Waits begun and not ended, by thread (`tid % OPEN_SLOTS`): a counting
/// filter in front of `WAITING`, so that `contention_end` of every other
/// lock returns after one load. Threads sharing a slot only cost each
/// other a lookup; a thread whose end was missed keeps its slot above 0,
/// which costs that slot's ends their lookup.
#[unsafe(no_mangle)]
static mut OPEN_WAITS: [u32; OPEN_SLOTS] = [0; OPEN_SLOTS];

#[inline(always)]
fn open_slot(tid: u32) -> *mut u32 {
    let waits = &raw mut OPEN_WAITS;
    // SAFETY: the index is below OPEN_SLOTS.
    unsafe { waits.cast::<u32>().add(tid as usize % OPEN_SLOTS) }
}

#[inline(always)]
fn open_waits(tid: u32) -> u32 {
    // SAFETY: in bounds (open_slot); read volatile as CPUs update it.
    unsafe { core::ptr::read_volatile(open_slot(tid)) }
}

/// One wait more (`delta` 1) or less (`u32::MAX`) on `tid`'s slot and in
/// all.
#[inline(always)]
fn open_wait(tid: u32, delta: u32) {
    // SAFETY: in bounds and aligned (open_slot); a global of this program.
    unsafe {
        atomic_add32(open_slot(tid), delta);
        atomic_add(&raw mut WAITS_OPEN, if delta == 1 { 1 } else { u64::MAX });
    }
}

#[inline(always)]
fn lock_begin(lock: u64, flags: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let (holder, holder_flags) = lock_holder(lock);
    // Frees are counted only while a wait is open: this begin holds one
    // open from before its count is read until its own wait is.
    // SAFETY: a global of this program, aligned.
    unsafe { atomic_add(&raw mut WAITS_OPEN, 1) };
    // The frees at this address so far: an entry of its own unless one is
    // there (BPF_NOEXIST).
    let _ = WAITED.insert(lock, 0, 1);
    // SAFETY: plain lookup; the value is copied at once.
    let generation = unsafe { WAITED.get(lock) }.map_or(lock::NOT_WAITED, |v| *v);
    let wait = LockWait {
        lock,
        generation,
        // SAFETY: a helper call without memory arguments.
        start: unsafe { bpf_ktime_get_ns() },
        flags: flags | holder_flags,
        holder,
    };
    // SAFETY: plain lookup; only its presence is used.
    let fresh = unsafe { WAITING.get(tid) }.is_none();
    if WAITING.insert(tid, wait, 0).is_ok() {
        if fresh {
            open_wait(tid, 1);
        }
    } else if let Some(n) = rare(stat::LOCK_WAITING_FULL) {
        say!(
            "lock wait map full: a wait of thread {} on an anon_vma rwsem is not measured \
             (occurrence {} on this CPU)",
            tid,
            n
        );
    }
    // SAFETY: as above.
    unsafe { atomic_add(&raw mut WAITS_OPEN, u64::MAX) };
}

/// The owner of the rwsem at `lock` now (its thread id, 0 unknown), and
/// [`lock::HOLDER_READERS`] / [`lock::HOLDER_FORKING`]: reader-owned (the
/// owner is the last reader), the owner inside a fork.
#[inline(always)]
fn lock_holder(lock: u64) -> (u32, u32) {
    let cfg = config();
    let off = cfg.time.rwsem_owner;
    if off == ABSENT {
        return (0, 0);
    }
    let Ok(owner) = read_kernel::<u64>(lock + u64::from(off)) else {
        return (0, 0);
    };
    let task = owner & !lock::OWNER_FLAGS;
    let mut flags = if owner & lock::OWNER_READER != 0 {
        lock::HOLDER_READERS
    } else {
        0
    };
    if task == 0 {
        return (0, flags);
    }
    let Ok(holder) = read_kernel::<u32>(task + u64::from(cfg.task_pid_off)) else {
        return (0, flags);
    };
    // SAFETY: plain lookup; only the value's bit is read.
    if unsafe { FORKING.get(holder) }.is_some_and(|v| v & FORK_CLOSED == 0) {
        flags |= lock::HOLDER_FORKING;
    }
    (holder, flags)
}

/// A wait ends: the thread's own wait on this lock (a spinlock taken
/// inside the rwsem's slow path begins and ends waits of its own, on
/// other addresses), on the same anon_vma as at its begin.
#[inline(always)]
fn lock_end(lock: u64, pid_tgid: u64) {
    let tid = pid_tgid as u32;
    // SAFETY: plain lookup; the value is copied at once.
    let Some(wait) = (unsafe { WAITING.get(tid) }) else {
        return;
    };
    let wait = *wait;
    // SAFETY: plain lookup; the value is copied at once.
    let current = unsafe { WAITED.get(lock) }.copied();
    let end = wait.ends(lock, current);
    if end == WaitEnd::Other {
        return;
    }
    if WAITING.remove(tid).is_ok() {
        open_wait(tid, u32::MAX);
    }
    if end == WaitEnd::Reused {
        bump(stat::LOCK_REUSED, 1);
        return;
    }
    // SAFETY: a helper call without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut e = Event {
        kind: kind::LOCK_WAIT,
        flags: wait.flags,
        tid,
        tgid: (pid_tgid >> 32) as u32,
        ptr: lock - u64::from(config().time.anon_vma_rwsem),
        child_tid: wait.holder,
        ..Event::default()
    };
    e.set_times(now.saturating_sub(wait.start), wait.start);
    emit(&e);
}

#[inline(always)]
fn by_size(bytes_req: u64) -> u32 {
    if bytes_req == u64::from(config().args.anon_vma_size) {
        rmapwatch_common::object::ANON_VMA
    } else {
        rmapwatch_common::object::AVC
    }
}

/// The cache's name is "anon_vma" (never merged) or another one.
#[inline(always)]
fn by_name(name: u64) -> u32 {
    let mut buf = [0u8; 16];
    // SAFETY: the helper copies at most 16 bytes and NUL-terminates.
    let n =
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name as *const u8, &mut buf) }
            .map_or(0, <[u8]>::len);
    if n == 8
        && u64::from_ne_bytes([
            buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
        ]) == u64::from_ne_bytes(*b"anon_vma")
    {
        rmapwatch_common::object::ANON_VMA
    } else {
        rmapwatch_common::object::AVC
    }
}

/// Inlining detector: an anon_vma allocated at a call site outside every
/// known range. With a cache pointer one comparison proves it (that cache
/// is never merged); with sizes only, an object of the anon_vma's sizes
/// whose rwsem wait list the anon_vma cache's ctor linked to itself.
#[inline(always)]
fn inlined(call_site: u64, ptr: u64, arg2: &impl Fn() -> Arg2) {
    let a = &config().args;
    let hit = match arg2() {
        Arg2::Cache(cache) => {
            let caches = &raw const CACHES;
            // SAFETY: a global of this program, in bounds; volatile, as
            // other CPUs write it. Only the anon_vma's slot: one load.
            let av = unsafe {
                core::ptr::read_volatile(
                    caches
                        .cast::<u64>()
                        .add(rmapwatch_common::object::ANON_VMA as usize),
                )
            };
            if av != 0 {
                cache == av
            } else {
                // Not learnt yet (only rmap sites teach it, and a kernel
                // with its rmap functions inlined may never run one): the
                // cache's ctor says, once per allocation until it is.
                anon_vma_cache(cache)
            }
        }
        Arg2::BytesReq(req, alloc) => {
            a.anon_vma_wait_list != ABSENT
                && req == u64::from(a.anon_vma_size)
                && alloc == u64::from(a.anon_vma_slab_size)
                && ptr != 0
                && {
                    let list = ptr + u64::from(a.anon_vma_wait_list);
                    read_or_zero(list) == list
                }
        }
        _ => false,
    };
    if !hit {
        return;
    }
    bump(stat::INLINED_ANON_VMA, 1);
    if let Some(n) = INLINED_SITES.get_ptr_mut(call_site) {
        // SAFETY: a live map value.
        unsafe { atomic_add(n, 1) };
    } else if INLINED_SITES.insert(call_site, 1, BPF_NOEXIST).is_ok() {
        // A new site: said once (at most 64 sites fit).
        if budget(stat::INLINED_ANON_VMA) {
            say!(
                "anon_vma allocated at call site {:x}, outside every rmap function (one \
                 inlined elsewhere?): its anon_vmas are missing from the counts",
                call_site
            );
        }
    } else if let Some(n) = INLINED_SITES.get_ptr_mut(call_site) {
        // Another CPU inserted it meanwhile.
        // SAFETY: a live map value.
        unsafe { atomic_add(n, 1) };
    }
}

/// Whether `cache` is the anon_vma cache, by its ctor; learnt into
/// `CACHES` when it is (never the AVC slot: any other cache is not).
#[inline(always)]
fn anon_vma_cache(cache: u64) -> bool {
    let cfg = config();
    let ctor = read_or_zero(cache + u64::from(cfg.kmem_cache_ctor_off));
    if ctor == 0 || ctor != cfg.anon_vma_ctor {
        return false;
    }
    let caches = &raw mut CACHES;
    // SAFETY: a global of this program, in bounds; an aligned 8-byte store.
    unsafe {
        core::ptr::write_volatile(
            caches
                .cast::<u64>()
                .add(rmapwatch_common::object::ANON_VMA as usize),
            cache,
        );
    }
    true
}

/// `BPF_NOEXIST`: insert only a key that is absent.
const BPF_NOEXIST: u64 = 1;

/// anon_vma or AVC, from the cache of an object allocated or freed at an
/// rmap call site.
#[inline(always)]
fn object_of(cache: u64) -> Result<u32, i64> {
    use rmapwatch_common::object::{ANON_VMA, AVC};
    let caches = &raw mut CACHES;
    // SAFETY: a global of this program; volatile, as other CPUs write it.
    let known: [u64; 2] = unsafe { core::ptr::read_volatile(caches) };
    if cache == known[ANON_VMA as usize] {
        return Ok(ANON_VMA);
    }
    if cache == known[AVC as usize] {
        return Ok(AVC);
    }
    let cfg = config();
    let ctor: u64 = read_kernel(cache + u64::from(cfg.kmem_cache_ctor_off))?;
    let object = if ctor == cfg.anon_vma_ctor {
        ANON_VMA
    } else {
        AVC
    };
    // SAFETY: as above; an aligned 8-byte store.
    unsafe {
        core::ptr::write_volatile(caches.cast::<u64>().add(object as usize), cache);
    }
    Ok(object)
}

#[inline(always)]
fn task_ids(task: u64) -> Result<(u32, u32), i64> {
    let cfg = config();
    let pid: u32 = read_kernel(task + u64::from(cfg.task_pid_off))?;
    let tgid: u32 = read_kernel(task + u64::from(cfg.task_tgid_off))?;
    Ok((pid, tgid))
}

#[inline(always)]
fn task_comm(task: u64) -> [u8; COMM_LEN] {
    read_kernel(task + u64::from(config().task_comm_off)).unwrap_or([0; COMM_LEN])
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`,
/// fired in the parent after `copy_process` (so after `dup_mmap`).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let (tid, tgid) = task_ids(parent)?;
    let (child_tid, child_tgid) = task_ids(child)?;
    // Every allocation of the fork happened in copy_process, before this:
    // the fork window closes here too, so that a missed sys_exit (7.x's
    // syscall tracepoints run preemptible, and their program can be
    // skipped: seen twice on 7.3) leaves no thread marked as forking. The
    // entry stays, closed, for the syscall's exit to time the fork.
    // SAFETY: plain lookup; the value is this program's to update.
    if let Some(start) = unsafe { FORKING.get(tid) }.copied() {
        let _ = FORKING.insert(tid, start | FORK_CLOSED, 0);
    }
    emit(&Event {
        kind: kind::FORK,
        tid,
        tgid,
        child_tid,
        child_tgid,
        comm: task_comm(child),
        ..Event::default()
    });
    Ok(())
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    let task: u64 = ctx.arg(0);
    let (tid, tgid) = task_ids(task)?;
    emit(&Event {
        kind: kind::EXEC,
        tid,
        tgid,
        comm: task_comm(task),
        ..Event::default()
    });
    Ok(())
}

/// `sched_process_exit(struct task_struct *p, ...)`: only the exit of a
/// whole process is streamed, by whichever of its threads exits last.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let task: u64 = ctx.arg(0);
    let (tid, tgid) = task_ids(task)?;
    // A thread that dies with a wait, a dup_mmap or a fork system call
    // whose end was missed (a dropped kretprobe, a recursion miss of
    // fork_exit) leaves no entry behind: a fork window's entry would
    // otherwise hold one of the map's entries for good.
    if open_waits(tid) != 0 && WAITING.remove(tid).is_ok() {
        open_wait(tid, u32::MAX);
    }
    let _ = TIMING.remove(tid);
    let _ = FORKING.remove(tid);
    if !group_dead(task, tid == tgid) {
        return Ok(());
    }
    emit(&Event {
        kind: kind::EXIT,
        tid,
        tgid,
        comm: task_comm(task),
        ..Event::default()
    });
    Ok(())
}

/// Whether the exiting `task` ends its process. `do_exit` decrements
/// `signal->live` before this tracepoint
/// (`do_exit`, <https://elixir.bootlin.com/linux/v5.10/source/kernel/exit.c>),
/// so it is 0 once every thread exits: a leader that exits alone
/// (`pthread_exit` from `main`) leaves it above 0 and its process running,
/// with all its objects. Threads exiting at the same moment may each see 0:
/// a second exit of the same process is harmless. Without the offset (or
/// when the read fails), the leader's exit counts, as before.
#[inline(always)]
fn group_dead(task: u64, leader: bool) -> bool {
    let cfg = config();
    if cfg.signal_live_off == ABSENT {
        return leader;
    }
    let signal = read_or_zero(task + u64::from(cfg.task_signal_off));
    if signal == 0 {
        return leader;
    }
    read_kernel::<i32>(signal + u64::from(cfg.signal_live_off)).map_or(leader, |live| live == 0)
}

/// A fork window's value once `sched_process_fork` closed it (the entry
/// time stays in the other bits for the syscall's exit).
const FORK_CLOSED: u64 = 1 << 63;

/// Attached to `syscalls:sys_enter_{clone,clone3,fork,vfork}`.
#[tracepoint]
pub fn fork_enter(_ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // The window, for user space: the thread's later records come after.
    emit_window(pid_tgid, 1);
    // SAFETY: a helper call without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if FORKING.insert(tid, now, 0).is_err()
        && let Some(n) = rare(stat::FORK_WINDOW_FULL)
    {
        say!(
            "fork window map full: this fork of thread {} is not timed, and waits on a lock \
             it holds are not told as held by a fork (occurrence {} on this CPU)",
            tid,
            n
        );
    }
    0
}

/// Streams the current thread's fork window opening (`open` 1) or closing
/// (0) ([`ForkWindow`]).
#[inline(always)]
fn emit_window(pid_tgid: u64, open: u32) {
    emit(&ForkWindow {
        tid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        open,
        pad: 0,
    });
}

/// Attached to `syscalls:sys_exit_{clone,clone3,fork,vfork}` (the parent's
/// side; a failed fork never reaches `sched_process_fork`): closes the
/// window and streams the syscall's time, child 0 for a failed fork.
#[tracepoint]
pub fn fork_exit(ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the offset is this kernel's format's, read by the loader.
    let ret = unsafe { ctx.read_at::<i64>(config().time.syscall_ret as usize) }.unwrap_or(0);
    // SAFETY: plain lookup; the value is copied at once.
    let Some(start) = (unsafe { FORKING.get(tid) }).copied() else {
        // The parent's side of a fork not timed (the map was full at its
        // entry): its window still closes, for user space. (A new task's
        // own return, 0, opened none.)
        if ret != 0 {
            emit_window(pid_tgid, 0);
        }
        return 0;
    };
    let _ = FORKING.remove(tid);
    if ret == 0 {
        return 0;
    }
    // SAFETY: a helper call without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut e = Event {
        kind: kind::FORK_TIME,
        tid,
        tgid: (pid_tgid >> 32) as u32,
        // A failed fork (rare: pids.max, memory) says so with child 0: what
        // its dup_mmap allocated and took is not a fork's.
        child_tid: if ret > 0 { ret as u32 } else { 0 },
        ..Event::default()
    };
    let start = start & !FORK_CLOSED;
    e.set_times(now.saturating_sub(start), start);
    emit(&e);
    0
}

/// One fentry and one kprobe program per hook; the loader loads whichever
/// the kernel accepts, for the function name (or older alias) it has.
macro_rules! function_hook {
    ($fentry:ident, $kprobe:ident, $hook:expr) => {
        #[fentry]
        pub fn $fentry(_ctx: FEntryContext) -> i32 {
            bump(stat::HOOK_CALLS + $hook, 1);
            0
        }

        #[kprobe]
        pub fn $kprobe(_ctx: ProbeContext) -> i32 {
            bump(stat::HOOK_CALLS + $hook, 1);
            0
        }
    };
}

/// `dup_mmap` entered (the forking thread, inside `copy_process`).
#[inline(always)]
fn dup_mmap_enter() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a helper call without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Full: this dup_mmap is not timed; its exit counts it unpaired.
    let _ = TIMING.insert(tid, ForkTiming::new(now), 0);
}

/// `dup_mmap` returned: one [`kind::FORK_WORK`] record, or an unpaired
/// exit counted (attached mid-call, or `TIMING` was full at its entry).
#[inline(always)]
fn dup_mmap_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: plain lookup; the value is copied at once.
    let Some(t) = (unsafe { TIMING.get(tid) }).copied() else {
        bump(stat::TIMING_UNPAIRED, 1);
        return;
    };
    let _ = TIMING.remove(tid);
    // SAFETY: a helper call without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (ns, anon_ns, calls) = t.done(now);
    let mut e = Event {
        kind: kind::FORK_WORK,
        tid,
        tgid: (pid_tgid >> 32) as u32,
        child_tid: calls,
        ..Event::default()
    };
    e.set_times(ns, anon_ns);
    emit(&e);
}

/// `anon_vma_fork` or `anon_vma_clone` entered: timed only inside a
/// `dup_mmap` of this thread (anon_vma_clone also serves splits and mremap).
#[inline(always)]
fn anon_enter() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(t) = TIMING.get_ptr_mut(tid) {
        // SAFETY: a helper call without memory arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a live map value of this thread's (no other writer).
        unsafe { (*t).enter(now) };
    }
}

/// `anon_vma_fork` or `anon_vma_clone` returned.
#[inline(always)]
fn anon_exit() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(t) = TIMING.get_ptr_mut(tid) {
        // SAFETY: a helper call without memory arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a live map value of this thread's (no other writer).
        if !unsafe { (*t).exit(now) } {
            bump(stat::TIMING_UNPAIRED, 1);
        }
    }
}

#[fentry]
pub fn fentry_dup_mmap(_ctx: FEntryContext) -> i32 {
    dup_mmap_enter();
    0
}

#[fexit]
pub fn fexit_dup_mmap(_ctx: FExitContext) -> i32 {
    dup_mmap_exit();
    0
}

#[kprobe]
pub fn kprobe_dup_mmap(_ctx: ProbeContext) -> i32 {
    dup_mmap_enter();
    0
}

#[kretprobe]
pub fn kretprobe_dup_mmap(_ctx: RetProbeContext) -> i32 {
    dup_mmap_exit();
    0
}

/// fentry programs are loaded for one function each: one pair per
/// anon_vma function. A kprobe program attaches to both.
#[fentry]
pub fn fentry_time_fork(_ctx: FEntryContext) -> i32 {
    anon_enter();
    0
}

#[fexit]
pub fn fexit_time_fork(_ctx: FExitContext) -> i32 {
    anon_exit();
    0
}

#[fentry]
pub fn fentry_time_clone(_ctx: FEntryContext) -> i32 {
    anon_enter();
    0
}

#[fexit]
pub fn fexit_time_clone(_ctx: FExitContext) -> i32 {
    anon_exit();
    0
}

#[kprobe]
pub fn kprobe_time_anon(_ctx: ProbeContext) -> i32 {
    anon_enter();
    0
}

#[kretprobe]
pub fn kretprobe_time_anon(_ctx: RetProbeContext) -> i32 {
    anon_exit();
    0
}

/// `rmap_walk_anon(folio, rwc, locked)` (`struct page *` before folios;
/// the same positions since 3.x): the folio's anon_vma (`mapping` without
/// its `PAGE_MAPPING_ANON` bits) and the walk's `rmap_one`, both at the
/// offsets BTF gave.
#[inline(always)]
fn rmap_walk(folio: u64, rwc: u64) {
    let t = &config().time;
    if t.folio_mapping == ABSENT || t.rwc_rmap_one == ABSENT {
        return;
    }
    let mapping = read_or_zero(folio + u64::from(t.folio_mapping));
    let rmap_one = read_or_zero(rwc + u64::from(t.rwc_rmap_one));
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut e = Event {
        kind: kind::RMAP_WALK,
        tid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ptr: mapping & !3,
        ..Event::default()
    };
    e.set_times(rmap_one, 0);
    emit(&e);
}

#[fentry]
pub fn fentry_rmap_walk(ctx: FEntryContext) -> i32 {
    rmap_walk(ctx.arg(0), ctx.arg(1));
    0
}

#[kprobe]
pub fn kprobe_rmap_walk(ctx: ProbeContext) -> i32 {
    rmap_walk(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0));
    0
}

/// `rwsem_down_{read,write}_slowpath(sem, ...)` entered (kernels without
/// `lock:contention_begin`, before 5.19): a wait on a tracked anon_vma
/// rwsem root begins.
#[inline(always)]
fn rwsem_slowpath(sem: u64, flags: u32) {
    if anon_vma_root_rwsem(sem) {
        lock_begin(sem, flags);
    }
}

#[kprobe]
pub fn kprobe_rwsem_read(ctx: ProbeContext) -> i32 {
    rwsem_slowpath(ctx.arg(0).unwrap_or(0), lock::READ);
    0
}

#[kprobe]
pub fn kprobe_rwsem_write(ctx: ProbeContext) -> i32 {
    rwsem_slowpath(ctx.arg(0).unwrap_or(0), lock::WRITE);
    0
}

/// Either slow path returned its rwsem, or an error pointer (killed while
/// waiting): the thread's recorded wait on that rwsem ends. Another
/// rwsem's return leaves it (a return of the tracked one's slow path the
/// kernel dropped, with too many threads asleep in it, would otherwise end
/// a stale wait on an unrelated lock).
#[kretprobe]
pub fn kretprobe_rwsem(ctx: RetProbeContext) -> i32 {
    let ret: u64 = ctx.ret();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain lookup; the value is copied at once.
    if let Some(lock) = unsafe { WAITING.get(pid_tgid as u32) }.map(|w| w.lock)
        && (ret == lock || ret >= MAX_ERRNO_POINTER)
    {
        lock_end(lock, pid_tgid);
    }
    0
}

/// `IS_ERR_VALUE`: the highest 4095 addresses are error numbers.
const MAX_ERRNO_POINTER: u64 = 4095u64.wrapping_neg();

function_hook!(fentry_prepare, kprobe_prepare, hook::PREPARE);
function_hook!(fentry_fork, kprobe_fork, hook::FORK);
function_hook!(fentry_clone, kprobe_clone, hook::CLONE);
function_hook!(fentry_unlink, kprobe_unlink, hook::UNLINK);
function_hook!(fentry_put, kprobe_put, hook::PUT);

/// `folio_add_new_anon_rmap(folio, vma, address, flags)` (6.1:
/// `page_add_new_anon_rmap(page, vma, address)`): counted, and counted per VMA.
#[fentry]
pub fn fentry_rmap_new(ctx: FEntryContext) -> i32 {
    // `vma` is argument 1 on every version (the loader checks it in BTF;
    // a variable context offset is refused by the verifier).
    let vma: u64 = ctx.arg(1);
    count_new_folio(vma);
    0
}

#[kprobe]
pub fn kprobe_rmap_new(ctx: ProbeContext) -> i32 {
    let vma: u64 = ctx.arg(1).unwrap_or(0);
    count_new_folio(vma);
    0
}

#[inline(always)]
fn count_new_folio(vma: u64) {
    bump(stat::HOOK_CALLS + hook::RMAP_NEW, 1);
    let key = RmapKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        vm_start: read_or_zero(vma + u64::from(config().snap.vma_start)),
    };
    if add_one(&key) {
        return;
    }
    // BPF_NOEXIST: if another CPU inserted it meanwhile, add to that one.
    if RMAP_VMAS.insert(key, 1, BPF_NOEXIST).is_err()
        && !add_one(&key)
        && let Some(n) = rare(stat::RMAP_VMAS_FULL)
    {
        say!(
            "per-VMA folio map full: new anonymous folios of process {} are counted, not per \
             VMA (occurrence {} on this CPU)",
            key.tgid,
            n
        );
    }
}

#[inline(always)]
fn add_one(key: &RmapKey) -> bool {
    let Some(count) = RMAP_VMAS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a live map value; other CPUs may add to it concurrently, hence
    // the atomic add (its result unused: a plain BPF_XADD).
    unsafe { atomic_add(count, 1) };
    true
}

/// `*dst += v`, atomically. The bpf target has no `AtomicU64` (no 64-bit
/// compare-exchange before BPF v3), but LLVM lowers a relaxed fetch-add
/// whose result is unused to `BPF_XADD`, which every kernel has.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: the caller passes a valid, aligned pointer.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// As [`atomic_add`], 32 bits (`BPF_XADD` of a word).
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn atomic_add32(dst: *mut u32, v: u32) {
    // SAFETY: the caller passes a valid, aligned pointer.
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn atomic_add32(dst: *mut u32, v: u32) {
    // SAFETY: the caller passes a valid, aligned pointer.
    unsafe { core::sync::atomic::AtomicU32::from_ptr(dst) }
        .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: the caller passes a valid, aligned pointer.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
        .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
}
function_hook!(fentry_rmap_pmd, kprobe_rmap_pmd, hook::RMAP_PMD);

/// `folio_add_anon_rmap_ptes(folio, page, int nr_pages, vma, address, flags)`:
/// also sums `nr_pages`.
#[fentry]
pub fn fentry_rmap_ptes(ctx: FEntryContext) -> i32 {
    // `nr_pages` is argument 2 where it exists (6.6+; checked in BTF by
    // the loader); `page_add_anon_rmap` maps one page or THP per call.
    let nr_pages: u64 = if config().args.rmap_ptes_nr == ABSENT {
        1
    } else {
        ctx.arg(2)
    };
    count_ptes(nr_pages);
    0
}

#[kprobe]
pub fn kprobe_rmap_ptes(ctx: ProbeContext) -> i32 {
    let nr_pages: u64 = if config().args.rmap_ptes_nr == ABSENT {
        1
    } else {
        ctx.arg(2).unwrap_or(0)
    };
    count_ptes(nr_pages);
    0
}

#[inline(always)]
fn count_ptes(nr_pages: u64) {
    bump(stat::HOOK_CALLS + hook::RMAP_PTES, 1);
    // `int nr_pages`: only the low 32 bits are defined.
    bump(stat::RMAP_PTES_PAGES, u64::from(nr_pages as u32));
}

// Only for the bpf target: on the host (clippy) std provides one.
/// `iter/task_vma`: per VMA of every process, one [`SnapAvc`] per AVC of its
/// chain (bounded walk), then one [`SnapVma`]. The iterator holds the mmap
/// lock for reading, but a chain may still change under us: the walk stops at
/// the head, a null link or the bound, whichever comes first.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_vma")]
pub extern "C" fn task_vma(ctx: *mut core::ffi::c_void) -> i32 {
    let _ = try_task_vma(ctx);
    0
}

fn try_task_vma(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    // struct bpf_iter__task_vma { meta, task, vma }. These are direct loads
    // from the context, so that the verifier knows meta->seq is a seq_file.
    let args = ctx as *const *const u8;
    // SAFETY: the context has these three pointer members.
    let (meta, task, vma) = unsafe { (*args, *args.add(1), *args.add(2)) };
    if task.is_null() || vma.is_null() {
        return Ok(());
    }
    // SAFETY: meta is a valid struct bpf_iter_meta; seq is its first member.
    let seq = unsafe { *(meta as *const *mut aya_ebpf::bindings::seq_file) };
    let task = task as u64;
    if borrows_parents_mm(task) {
        return Ok(());
    }
    let tgid = read_kernel::<u32>(task + u64::from(config().task_tgid_off)).unwrap_or(0);
    walk_vma(seq, tgid, parent_tgid(task), task_comm(task), vma as u64);
    Ok(())
}

/// The tgid of `task`'s parent (0 when unreadable).
#[inline(always)]
fn parent_tgid(task: u64) -> u32 {
    let cfg = config();
    let parent = read_or_zero(task + u64::from(cfg.snap.task_real_parent));
    if parent == 0 {
        return 0;
    }
    read_kernel::<u32>(parent + u64::from(cfg.task_tgid_off)).unwrap_or(0)
}

/// Whether `task` runs on its parent's mm without being its thread: a
/// vfork or `posix_spawn` child before its exec, a `CLONE_VM` child. Its
/// VMAs are walked with the parent, whose they are.
#[inline(always)]
fn borrows_parents_mm(task: u64) -> bool {
    let mm = read_or_zero(task + u64::from(config().snap.task_mm));
    on_parents_mm(task, mm)
}

/// Whether `mm` (`task`'s group's) is also `task`'s parent's.
#[inline(always)]
fn on_parents_mm(task: u64, mm: u64) -> bool {
    let l = &config().snap;
    let parent = read_or_zero(task + u64::from(l.task_real_parent));
    mm != 0 && parent != 0 && read_or_zero(parent + u64::from(l.task_mm)) == mm
}

/// The mm of `leader`'s process when the leader has none: a leader that
/// exited alone (`pthread_exit` from `main`) is a zombie with `mm` NULL
/// while its other threads still run on the process's mm. The first
/// thread of `signal->thread_head` that has one (bounded; exited threads
/// leave the list when they are released), else 0 (a kernel thread, or a
/// process whose every thread is exiting). The iterator program runs under
/// `rcu_read_lock`, as the list's readers must.
#[inline(always)]
fn live_thread_mm(leader: u64) -> u64 {
    let cfg = config();
    let l = &cfg.snap;
    if l.signal_thread_head == ABSENT {
        return 0;
    }
    let signal = read_or_zero(leader + u64::from(cfg.task_signal_off));
    if signal == 0 {
        return 0;
    }
    let head = signal + u64::from(l.signal_thread_head);
    let mut node = read_or_zero(head);
    let mut n = 0;
    while n < snap::MAX_THREADS {
        if node == head || node == 0 {
            break;
        }
        let mm = read_or_zero(node - u64::from(l.task_thread_node) + u64::from(l.task_mm));
        if mm != 0 {
            return mm;
        }
        node = read_or_zero(node);
        n += 1;
    }
    0
}

/// Next VMA to walk per process (`iter/task`, before 5.12): absent at the
/// start of a walk (user space clears it), 0 once done.
#[map]
static WALK_CURSOR: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// `iter/task` (5.8+), for kernels without `iter/task_vma` (before 5.12):
/// per thread-group leader, up to [`snap::VMAS_PER_PASS`] VMAs of its
/// `mm->mmap` list from where the last pass stopped, each written as the
/// `iter/task_vma` program writes it. No mmap lock is held: a VMA whose
/// `vm_mm` is not the process's ends that process's walk (counted).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn task_mmap(ctx: *mut core::ffi::c_void) -> i32 {
    let _ = try_task_mmap(ctx);
    0
}

fn try_task_mmap(ctx: *mut core::ffi::c_void) -> Result<(), i64> {
    // struct bpf_iter__task { meta, task }.
    let args = ctx as *const *const u8;
    // SAFETY: the context has these two pointer members.
    let (meta, task) = unsafe { (*args, *args.add(1)) };
    if task.is_null() {
        return Ok(());
    }
    // SAFETY: meta is a valid struct bpf_iter_meta; seq is its first member.
    let seq = unsafe { *(meta as *const *mut aya_ebpf::bindings::seq_file) };
    let cfg = config();
    let l = &cfg.snap;
    let task = task as u64;
    let (pid, tgid) = task_ids(task)?;
    if pid != tgid {
        return Ok(());
    }
    // This walk visits leaders only: a leader that exited alone is walked
    // on its live threads' mm (else the process would look empty).
    let mut mm = read_or_zero(task + u64::from(l.task_mm));
    if mm == 0 {
        mm = live_thread_mm(task);
    }
    if mm == 0 || on_parents_mm(task, mm) {
        return Ok(());
    }
    // SAFETY: plain lookup, copied out.
    let mut vma = match unsafe { WALK_CURSOR.get(tgid) } {
        Some(&0) => return Ok(()),
        Some(&v) => v,
        None => read_or_zero(mm + u64::from(l.mm_mmap)),
    };
    let comm = task_comm(task);
    let ppid = parent_tgid(task);
    // A few VMAs per pass, each as `iter/task_vma` walks one: the 5.10
    // verifier explores every iteration of every loop, and a flattened
    // loop of VMAs and AVCs (or many VMAs per pass) exceeds its million
    // instructions (E2BIG). User space runs as many passes as it takes.
    let mut k = 0;
    while k < snap::VMAS_PER_PASS {
        if vma == 0 {
            break;
        }
        if read_or_zero(vma + u64::from(l.vma_mm)) != mm {
            if let Some(n) = rare(stat::WALK_TORN) {
                say!(
                    "torn walk: process {}'s VMA list changed under the walk (a VMA of another \
                     mm): its walk ends there (occurrence {} on this CPU)",
                    tgid,
                    n
                );
            }
            vma = 0;
            break;
        }
        walk_vma(seq, tgid, ppid, comm, vma);
        vma = read_or_zero(vma + u64::from(l.vma_next));
        k += 1;
    }
    let _ = WALK_CURSOR.insert(tgid, vma, 0);
    Ok(())
}

/// One VMA: one [`SnapAvc`] per AVC of its chain (bounded walk), then one
/// [`SnapVma`].
#[inline(always)]
fn walk_vma(
    seq: *mut aya_ebpf::bindings::seq_file,
    tgid: u32,
    ppid: u32,
    comm: [u8; COMM_LEN],
    vma: u64,
) {
    let cfg = config();
    let l = &cfg.snap;
    // Branch-free reads (0 when a read faults): checking each read's return
    // code multiplies the verifier's states, and the 6.1 verifier then gives
    // up (E2BIG) on the chain walk.
    let field = |base: u64, off: u32| -> u64 { read_or_zero(base + u64::from(off)) };
    let mut rec = SnapVma {
        kind: snap::VMA,
        tgid,
        mm: field(vma, l.vma_mm),
        vma,
        start: field(vma, l.vma_start),
        end: field(vma, l.vma_end),
        flags: field(vma, l.vma_flags),
        file: field(vma, l.vma_file),
        anon_vma: field(vma, l.vma_anon_vma),
        pgoff: field(vma, l.vma_pgoff),
        ppid,
        comm,
        ..SnapVma::default()
    };
    let av = rec.anon_vma;
    if av != 0 {
        rec.av_root = field(av, l.av_root);
        rec.av_parent = field(av, l.av_parent);
        rec.av_num_children = field(av, l.av_num_children);
        if l.av_num_active_vmas != ABSENT {
            rec.av_num_active_vmas = field(av, l.av_num_active_vmas);
        }
        rec.av_refcount = read_kernel::<u32>(av + u64::from(l.av_refcount)).unwrap_or(0);
    }
    // One pass (two passes multiply the verifier's states by the chain
    // length): each AVC record as it is walked, then the VMA record with the
    // count, which closes the group.
    let head = vma + u64::from(l.vma_chain);
    let mut node = field(head, 0);
    let mut n = 0;
    while n < snap::MAX_CHAIN {
        if node == head || node == 0 {
            break;
        }
        let avc = node - u64::from(l.avc_same_vma);
        let link = SnapAvc {
            kind: snap::AVC,
            tgid,
            vma,
            avc,
            anon_vma: field(avc, l.avc_anon_vma),
        };
        seq_write(seq, &link);
        node = field(node, 0);
        n += 1;
    }
    rec.chain_len = n;
    rec.chain_truncated = u32::from(n == snap::MAX_CHAIN && node != head);
    seq_write(seq, &rec);
}

#[inline(always)]
fn seq_write<T>(seq: *mut aya_ebpf::bindings::seq_file, rec: &T) {
    // SAFETY: seq is the iterator's seq_file; rec lives on our stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_seq_write(
            seq,
            (rec as *const T).cast(),
            size_of::<T>() as u32,
        );
    }
}

// Only for the bpf target: on the host (clippy) std provides one.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
