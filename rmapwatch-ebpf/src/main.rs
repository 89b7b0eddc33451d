//! rmapwatch's kernel side.
//!
//! - Slab tracepoints (raw, so that the `void *ptr` argument loads on 6.1 and
//!   6.12 verifiers too): anon_vma / AVC allocations and frees, classified by
//!   `call_site` against the rmap functions' text ranges, streamed.
//! - `sched_process_{fork,exec,exit}`: lineage and names, streamed.
//! - `syscalls:sys_{enter,exit}_{clone,clone3,fork,vfork}`: the fork window, so
//!   that allocations made by the parent inside fork are handed to the child.
//! - Function hooks (fentry or kprobe, chosen by the loader): per-CPU call
//!   counters only; the per-page rmap hooks are far too hot to stream.
//!
//! No struct layout is compiled in: every offset comes from the running
//! kernel's BTF through the `CONFIG` global.
#![cfg_attr(target_arch = "bpf", no_std)]
// `atomic_xadd`: the build sets RUSTC_BOOTSTRAP for -Z build-std anyway.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fentry, kprobe, map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, ProbeContext, RawTracePointContext, TracePointContext},
};
use rmapwatch_common::{
    ABSENT, COMM_LEN, Config, Event, RmapKey, SnapAvc, SnapVma, flags, hook, kind, site, snap, stat,
};

/// Ring buffer to user space. The loader may resize it (`--ring-buffer-kb`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(rmapwatch_common::RING_BYTES, 0);

/// Per-CPU counters, indexed by `rmapwatch_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Threads currently inside a fork-family syscall (tid -> 1).
#[map]
static FORKING: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// New anonymous folios per (process, VMA start), from the
/// `folio_add_new_anon_rmap` hook: exact per-VMA page counts without
/// streaming the hottest path. User space reads it and prunes exited
/// processes.
#[map]
static RMAP_VMAS: HashMap<RmapKey, u64> =
    HashMap::with_max_entries(rmapwatch_common::RMAP_VMAS_ENTRIES, 0);

/// Set by the loader before load; read-only to the verifier.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
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
    snap: rmapwatch_common::SnapshotLayout {
        vma_start: 0,
        vma_end: 0,
        vma_mm: 0,
        vma_flags: 0,
        vma_file: 0,
        vma_anon_vma: 0,
        vma_chain: 0,
        avc_same_vma: 0,
        avc_anon_vma: 0,
        av_root: 0,
        av_parent: 0,
        av_refcount: 0,
        av_num_children: 0,
        av_num_active_vmas: 0,
    },
    _pad: 0,
    wake_bytes: 1 << 20,
};

/// The anon_vma and AVC caches (`struct kmem_cache *`), learnt from the
/// first allocation of each at an rmap call site (where only these two
/// caches are used): later events compare a pointer instead of reading
/// `s->ctor`. Races only ever store the same values.
#[unsafe(no_mangle)]
static mut CACHES: [u64; 2] = [0; 2];

#[inline(always)]
fn config() -> &'static Config {
    // SAFETY: CONFIG lives in .rodata; volatile keeps the compiler from
    // folding the zero initialiser into the code.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += by };
    }
}

/// `BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`, `BPF_RB_AVAIL_DATA`.
const RB_NO_WAKEUP: u64 = 1;
const RB_FORCE_WAKEUP: u64 = 2;
const RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
fn emit(event: &Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(*event);
            // No wakeup per event: on a VM each one is an IPI, i.e. a VM exit
            // (measured: ~700 ns per slab event with it). User space drains
            // on a short timer; a ring an eighth full wakes it at once.
            let flags = if EVENTS.query(RB_AVAIL_DATA) >= config().wake_bytes {
                RB_FORCE_WAKEUP
            } else {
                RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => bump(stat::DROPPED, 1),
    }
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
    let _ = try_slab(&ctx, kind::ALLOC);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: RawTracePointContext) -> i32 {
    let _ = try_slab(&ctx, kind::FREE);
    0
}

/// `kmem_cache_alloc(call_site, ptr, s, gfp, node)` and
/// `kmem_cache_free(call_site, ptr, s)`.
#[inline(always)]
fn try_slab(ctx: &RawTracePointContext, event_kind: u32) -> Result<(), i64> {
    let call_site: u64 = ctx.arg(0);
    let cfg = config();
    let Some(site_id) = cfg.classify(call_site) else {
        return Ok(());
    };
    let ptr: u64 = ctx.arg(1);
    if ptr == 0 {
        return Ok(());
    }
    let cache: u64 = ctx.arg(2);
    let object = object_of(cache)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let mut event_flags = 0;
    // anon_vma_fork runs only inside fork (dup_mmap): its allocations need
    // no lookup. anon_vma_clone also runs for VMA splits and mremap: only
    // the fork window tells.
    if event_kind == kind::ALLOC
        && (site_id == site::FORK
            // SAFETY: plain lookup; the value is not used.
            || (site_id == site::CLONE && unsafe { FORKING.get(tid) }.is_some()))
    {
        event_flags |= flags::IN_FORK;
    }
    emit(&Event {
        kind: event_kind,
        object,
        site: site_id,
        flags: event_flags,
        tid,
        tgid: (pid_tgid >> 32) as u32,
        ptr,
        ..Event::default()
    });
    Ok(())
}

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

/// `sched_process_exit(struct task_struct *p, ...)`: only leaders are streamed.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let task: u64 = ctx.arg(0);
    let (tid, tgid) = task_ids(task)?;
    if tid != tgid {
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

/// Attached to `syscalls:sys_enter_{clone,clone3,fork,vfork}`.
#[tracepoint]
pub fn fork_enter(_ctx: TracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = FORKING.insert(tid, 1, 0);
    0
}

/// Attached to `syscalls:sys_exit_{clone,clone3,fork,vfork}` (the parent's
/// side; a failed fork never reaches `sched_process_fork`).
#[tracepoint]
pub fn fork_exit(_ctx: TracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = FORKING.remove(tid);
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

function_hook!(fentry_prepare, kprobe_prepare, hook::PREPARE);
function_hook!(fentry_fork, kprobe_fork, hook::FORK);
function_hook!(fentry_clone, kprobe_clone, hook::CLONE);
function_hook!(fentry_unlink, kprobe_unlink, hook::UNLINK);
function_hook!(fentry_put, kprobe_put, hook::PUT);

/// `folio_add_new_anon_rmap(folio, vma, address, flags)` (6.1:
/// `page_add_new_anon_rmap(page, vma, address)`): counted, and counted per VMA.
#[fentry]
pub fn fentry_rmap_new(ctx: FEntryContext) -> i32 {
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
    if RMAP_VMAS.insert(key, 1, 1).is_err() && !add_one(&key) {
        bump(stat::RMAP_VMAS_FULL, 1);
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
    let nr_pages: u64 = ctx.arg(2);
    count_ptes(nr_pages);
    0
}

#[kprobe]
pub fn kprobe_rmap_ptes(ctx: ProbeContext) -> i32 {
    let nr_pages: u64 = ctx.arg(2).unwrap_or(0);
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
    let cfg = config();
    let l = &cfg.snap;
    let vma = vma as u64;
    let task = task as u64;
    // Branch-free reads (0 when a read faults): checking each read's return
    // code multiplies the verifier's states, and the 6.1 verifier then gives
    // up (E2BIG) on the chain walk.
    let field = |base: u64, off: u32| -> u64 { read_or_zero(base + u64::from(off)) };
    let mut rec = SnapVma {
        kind: snap::VMA,
        tgid: read_kernel::<u32>(task + u64::from(cfg.task_tgid_off)).unwrap_or(0),
        mm: field(vma, l.vma_mm),
        vma,
        start: field(vma, l.vma_start),
        end: field(vma, l.vma_end),
        flags: field(vma, l.vma_flags),
        file: field(vma, l.vma_file),
        anon_vma: field(vma, l.vma_anon_vma),
        comm: task_comm(task),
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
            tgid: rec.tgid,
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
    Ok(())
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
