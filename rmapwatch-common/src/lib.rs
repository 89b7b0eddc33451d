//! The ABI between rmapwatch's eBPF programs and its daemon.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding: the
//! kernel side writes these bytes into a ring buffer or reads them from
//! globals, and user space reads them back on the same machine.
#![no_std]

/// Version of this ABI (the records below): recorded in streams, so that a
/// recording says which programs measured it. Bumped on any change.
pub const ABI_VERSION: u32 = 10;

/// Kernel objects that rmapwatch counts.
pub mod object {
    /// `struct anon_vma` (cache `anon_vma`, never merged).
    pub const ANON_VMA: u32 = 0;
    /// `struct anon_vma_chain` (cache merged with `fs_cache` and `eventpoll_pwq`).
    pub const AVC: u32 = 1;
    /// Number of object kinds.
    pub const COUNT: usize = 2;
}

/// Call paths ("sites") of the slab allocations and frees, identified by the
/// kmem tracepoints' `call_site`: the allocation helpers are inlined, so the
/// call site is the enclosing rmap function.
pub mod site {
    /// `__anon_vma_prepare`: first write fault of a VMA.
    pub const PREPARE: u32 = 0;
    /// `anon_vma_clone`: split, merge, mremap, and the first half of fork.
    pub const CLONE: u32 = 1;
    /// `anon_vma_fork`: the child's own anon_vma and AVC at fork.
    pub const FORK: u32 = 2;
    /// `unlink_anon_vmas`: munmap, exit, merge.
    pub const UNLINK: u32 = 3;
    /// `__put_anon_vma`: last reference dropped.
    pub const PUT: u32 = 4;
    /// Number of sites.
    pub const COUNT: usize = 5;
    /// Kernel function names of the sites, indexed by site id.
    pub const NAMES: [&str; COUNT] = [
        "__anon_vma_prepare",
        "anon_vma_clone",
        "anon_vma_fork",
        "unlink_anon_vmas",
        "__put_anon_vma",
    ];
}

/// Function hooks (fentry, else kprobe, else covered by the tracepoint path).
pub mod hook {
    /// `__anon_vma_prepare(vma)`.
    pub const PREPARE: u32 = 0;
    /// `anon_vma_fork(vma, pvma)`.
    pub const FORK: u32 = 1;
    /// `anon_vma_clone(dst, src)`.
    pub const CLONE: u32 = 2;
    /// `unlink_anon_vmas(vma)`.
    pub const UNLINK: u32 = 3;
    /// `__put_anon_vma(anon_vma)`.
    pub const PUT: u32 = 4;
    /// `folio_add_new_anon_rmap(folio, vma, address, flags)`: a new anonymous folio.
    pub const RMAP_NEW: u32 = 5;
    /// `folio_add_anon_rmap_ptes(folio, page, nr_pages, vma, address, flags)`.
    pub const RMAP_PTES: u32 = 6;
    /// `folio_add_anon_rmap_pmd(folio, page, vma, address, flags)`.
    pub const RMAP_PMD: u32 = 7;
    /// Number of hooks.
    pub const COUNT: usize = 8;
}

/// Indices of the per-CPU `STATS` array.
pub mod stat {
    /// Events lost because the ring buffer was full.
    pub const DROPPED: u32 = 0;
    /// First of `hook::COUNT` call counters, one per hook.
    pub const HOOK_CALLS: u32 = 1;
    /// Pages mapped through `folio_add_anon_rmap_ptes` (its `nr_pages` argument summed).
    pub const RMAP_PTES_PAGES: u32 = HOOK_CALLS + super::hook::COUNT as u32;
    /// New anonymous folios not counted per VMA because `RMAP_VMAS` was full.
    pub const RMAP_VMAS_FULL: u32 = RMAP_PTES_PAGES + 1;
    /// anon_vma allocations at call sites outside every known range: an
    /// rmap function inlined into a caller elsewhere (LTO kernels).
    pub const INLINED_ANON_VMA: u32 = RMAP_VMAS_FULL + 1;
    /// `iter/task` walks (before 5.12) that met a VMA of another mm (the
    /// list changed under the walk, which holds no lock): that process's
    /// walk ended there.
    pub const WALK_TORN: u32 = INLINED_ANON_VMA + 1;
    /// Fork-family syscall entries that found the fork window's map
    /// (`FORKING`, which times forks and tells lock holders inside one)
    /// full: that fork is not timed. (Before ABI 9 its `anon_vma_clone`
    /// AVCs also went to the parent; user space keeps the windows now.)
    pub const FORK_WINDOW_FULL: u32 = WALK_TORN + 1;
    /// Never counted now: the slab programs kept a lock map (`LOCKS`) until
    /// its upkeep was found to cost a third of their time; the index stays.
    pub const LOCKS_FULL: u32 = FORK_WINDOW_FULL + 1;
    /// anon_vma rwsem waits not measured because `WAITING` (threads
    /// waiting now) was full.
    pub const LOCK_WAITING_FULL: u32 = LOCKS_FULL + 1;
    /// anon_vma rwsem waits dropped because the lock's anon_vma was freed
    /// (and perhaps its address reused) between the wait's begin and end.
    pub const LOCK_REUSED: u32 = LOCK_WAITING_FULL + 1;
    /// Function-hook entry/exit pairs whose entry was not seen (attached
    /// mid-call, or `TIMING` full): not timed.
    pub const TIMING_UNPAIRED: u32 = LOCK_REUSED + 1;
    /// Nest watch (`--watch-nesting`): slab events that came while our
    /// slab program of the same tracepoint was running on that CPU, so the
    /// kernel skipped ours (a recursion miss) and the watch saw them.
    pub const NESTED: u32 = TIMING_UNPAIRED + 1;
    /// Those of [`NESTED`] at an rmap call site: events ours would have
    /// streamed, streamed by the watch instead.
    pub const NESTED_OURS: u32 = NESTED + 1;
    /// Length of the array.
    pub const COUNT: u32 = NESTED_OURS + 1;
}

/// Kernel-side log records (aya-log) of rare conditions: how often each
/// CPU says one (every occurrence is counted in `STATS` anyway).
pub mod rare {
    /// A CPU logs its occurrences number 1, 16, 256, ... of a condition
    /// (`n` is a power of 16): a storm costs a handful of lines.
    #[must_use]
    pub const fn worth_a_line(n: u64) -> bool {
        n != 0 && n & (n - 1) == 0 && n & 0x1111_1111_1111_1111 != 0
    }

    /// Lines per condition, all CPUs together (a shared budget; a race
    /// between CPUs may overshoot it by one line per CPU).
    pub const LINES_PER_CONDITION: u64 = 32;
}

/// Kinds of [`Event`].
pub mod kind {
    /// An anon_vma or AVC was allocated.
    pub const ALLOC: u32 = 1;
    /// An anon_vma or AVC is being freed.
    pub const FREE: u32 = 2;
    /// A task was created (`sched_process_fork`, in the parent).
    pub const FORK: u32 = 3;
    /// A process executed a new image (`sched_process_exec`).
    pub const EXEC: u32 = 4;
    /// A thread-group leader exited (`sched_process_exit`).
    pub const EXIT: u32 = 5;
    /// A wait on a tracked anon_vma's rwsem ended (`lock:contention_end`,
    /// or the rwsem slow path's return): `ptr` the anon_vma whose rwsem
    /// it is, `flags` the [`super::lock`] flags, `tid`/`tgid` the waiter,
    /// [`super::Event::times`] (wait ns, begin ktime ns).
    pub const LOCK_WAIT: u32 = 6;
    /// A fork-family syscall returned in the parent (tracepoint mode):
    /// `child_tid` its return value (the child's id; threads included),
    /// [`super::Event::times`] (syscall ns, entry ktime ns).
    pub const FORK_TIME: u32 = 7;
    /// `dup_mmap` returned (function hooks): [`super::Event::times`]
    /// (ns in `dup_mmap`, ns of it in `anon_vma_fork`/`anon_vma_clone`),
    /// `child_tid` the calls to those two inside it; `tid`/`tgid` the
    /// forking thread (its `sched_process_fork` follows).
    pub const FORK_WORK: u32 = 8;
    /// `rmap_walk_anon` (or `rmap_walk_anon_lock`) was entered (function
    /// hooks): `ptr` the folio's anon_vma, [`super::Event::times`]
    /// (the walk's `rmap_one` function address, 0).
    pub const RMAP_WALK: u32 = 9;
}

/// Lock contention: the `flags` of `lock:contention_begin` (LCB_F_*), and
/// the maps' sizes.
pub mod lock {
    /// A spinning waiter.
    pub const SPIN: u32 = 1 << 0;
    /// A reader (`down_read`).
    pub const READ: u32 = 1 << 1;
    /// A writer (`down_write`).
    pub const WRITE: u32 = 1 << 2;
    /// A real-time (rtmutex-based) lock.
    pub const RT: u32 = 1 << 3;
    /// A per-CPU rwsem.
    pub const PERCPU: u32 = 1 << 4;
    /// A mutex.
    pub const MUTEX: u32 = 1 << 5;

    /// Whether a `contention_begin` with these flags can be an anon_vma
    /// rwsem's (a reader or a writer, not a spinlock, a mutex or a per-CPU
    /// rwsem): only those cost a hash lookup. An RT kernel's rwsem is an
    /// rtmutex (`RT`): it is looked up.
    #[inline(always)]
    #[must_use]
    pub const fn maybe_rwsem(flags: u32) -> bool {
        flags & (READ | WRITE) != 0 && flags & (SPIN | PERCPU | MUTEX) == 0
    }
    /// Entries of `WAITING` (threads waiting on an anon_vma root's rwsem
    /// now), and of `WAITED` (the rwsems waited on, least recently used
    /// make room).
    pub const WAITING: u32 = 8192;
    /// A wait's generation when `WAITED` had no entry for its rwsem at the
    /// begin: its end is counted as reused (lost), never measured.
    pub const NOT_WAITED: u64 = u64::MAX;
    /// A wait's flag: the rwsem's owner at the begin was inside a fork
    /// (between the fork system call's entry and the child's creation, the
    /// path that runs `dup_mmap`, `anon_vma_fork`).
    pub const HOLDER_FORKING: u32 = 1 << 16;
    /// A wait's flag: the rwsem was reader-owned at the begin; its owner
    /// field names the last reader only.
    pub const HOLDER_READERS: u32 = 1 << 17;
    /// Low bits of `rw_semaphore.owner` that are flags, not the task
    /// pointer (`RWSEM_READER_OWNED`, `RWSEM_NONSPINNABLE`; 5.x had a third).
    pub const OWNER_FLAGS: u64 = 7;
    /// `RWSEM_READER_OWNED`.
    pub const OWNER_READER: u64 = 1;
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// The allocation ran inside a fork of the current task, before
    /// `sched_process_fork`: it belongs to the child being created. Set by
    /// the kernel for every allocation in `anon_vma_fork` (called only by
    /// fork); user space sets it for those in `anon_vma_clone` inside the
    /// thread's fork window ([`ForkWindow`]).
    pub const IN_FORK: u32 = 1;
}

/// A thread's fork window opens or closes. It opens at the entry of a
/// fork-family syscall (`syscalls:sys_enter_{clone,clone3,fork,vfork}`).
/// User space closes it at the thread's `sched_process_fork` or
/// [`kind::FORK_TIME`] record, at this record with `open` 0 (the syscall's
/// exit where `FORKING` had no entry to time it: the map was full), at the
/// thread's exec, or at its process's exit. It does so from the one
/// ordered stream: a thread's records are reserved in the ring in the
/// order it ran them. Its `anon_vma_clone` allocations inside the window
/// are the child's. (The slab programs looked the window up in a hash map
/// at every `anon_vma_clone` allocation before ABI 9: 7 ns a run,
/// measured.) 16 bytes: user space tells it from the other records by
/// length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkWindow {
    /// The forking thread.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// 1: the window opens; 0: it closes.
    pub open: u32,
    /// Explicit padding (zero).
    pub pad: u32,
}

/// An anon_vma or AVC allocation or free ([`kind::ALLOC`], [`kind::FREE`])
/// as the slab programs stream it: the fields of [`Event`] those kinds use,
/// in 24 bytes instead of 56 (a ring record of the full size cost 10-13 ns
/// more a run, measured). User space tells the two records apart by length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabEvent {
    /// The object's address.
    pub ptr: u64,
    /// Thread id of the current task; 0 on a free (since ABI 10: user
    /// space knows a freed object by its address, and the helper call
    /// cost ~11 ns a free).
    pub tid: u32,
    /// Process id (tgid) of the current task; 0 on a free, as `tid`.
    pub tgid: u32,
    /// [`kind::ALLOC`] or [`kind::FREE`].
    pub kind: u8,
    /// One of [`object`].
    pub object: u8,
    /// One of [`site`].
    pub site: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    /// Explicit padding (zero).
    pub pad: u32,
}

/// Key of the `RMAP_VMAS` map: new anonymous folios per process and VMA
/// (`vm_start` at the time of the fault).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RmapKey {
    /// Process id of the faulting task.
    pub tgid: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
    /// `vma->vm_start`.
    pub vm_start: u64,
}

/// Bytes of the `EVENTS` ring buffer unless `--ring-buffer-kb` says otherwise.
pub const RING_BYTES: u32 = 8 << 20;

/// Records in a batch of the cost split's batching variant (a power of two).
pub const SPLIT_BATCH_RECORDS: usize = 32;

/// One CPU's batch of the cost split's batching variant: what per-CPU
/// batching would cost, measured (`rmw-bench cost`) and refuted on the
/// developers' machine (BENCHMARKS.md); never used to stream.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SplitBatch {
    /// Records in `recs`.
    pub n: u64,
    /// The records.
    pub recs: [SlabEvent; SPLIT_BATCH_RECORDS],
}

/// Entries of the `RMAP_VMAS` map.
pub const RMAP_VMAS_ENTRIES: u32 = 16384;

/// Entries of the fork window's map (`FORKING`: threads inside a fork
/// syscall), unless the loader is told otherwise
/// (`RMAPWATCH_FORK_WINDOW_ENTRIES`, for tests).
pub const FORK_WINDOW_ENTRIES: u32 = 16384;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// One record of the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// For ALLOC/FREE: one of [`object`].
    pub object: u32,
    /// For ALLOC/FREE: one of [`site`].
    pub site: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// Thread id of the current task (the parent, for FORK).
    pub tid: u32,
    /// Process id (tgid) of the current task (the parent, for FORK).
    pub tgid: u32,
    /// For FORK: the child's thread id.
    pub child_tid: u32,
    /// For FORK: the child's tgid (equal to the parent's for a thread).
    pub child_tgid: u32,
    /// For ALLOC/FREE: the object's address.
    pub ptr: u64,
    /// For FORK: the child's comm; EXEC: the new comm; EXIT: the exiting
    /// task's comm; zero for ALLOC/FREE (user space knows it from lineage).
    pub comm: [u8; COMM_LEN],
}

impl Event {
    /// The two 64-bit values of a timing record ([`kind::LOCK_WAIT`],
    /// [`kind::FORK_TIME`], [`kind::FORK_WORK`], [`kind::RMAP_WALK`]),
    /// carried in `comm` (little-endian), which those kinds do not use.
    #[must_use]
    pub fn times(&self) -> (u64, u64) {
        let c = &self.comm;
        (
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        )
    }

    /// Sets [`Event::times`].
    #[inline(always)]
    pub fn set_times(&mut self, a: u64, b: u64) {
        let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
        let mut i = 0;
        while i < 8 {
            self.comm[i] = a[i];
            self.comm[8 + i] = b[i];
            i += 1;
        }
    }
}

/// Most text ranges of call sites the probes look at.
pub const MAX_SITE_RANGES: usize = 16;

/// Run-time settings that the loader reads from the running kernel (BTF,
/// kallsyms) and hands to the programs as the global `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Start addresses of the call-site ranges (function text, `.cold` parts included).
    pub range_start: [u64; MAX_SITE_RANGES],
    /// End addresses (exclusive) of the call-site ranges.
    pub range_end: [u64; MAX_SITE_RANGES],
    /// The [`site`] of each range.
    pub range_site: [u32; MAX_SITE_RANGES],
    /// Number of valid ranges.
    pub nr_ranges: u32,
    /// `offsetof(struct kmem_cache, ctor)`.
    pub kmem_cache_ctor_off: u32,
    /// Lowest start of all ranges: one comparison rejects most slab events.
    pub lo: u64,
    /// Highest end of all ranges.
    pub hi: u64,
    /// Address of `anon_vma_ctor`: the anon_vma cache is the only one whose
    /// `ctor` is this function, and merged caches have no ctor, so this
    /// tells an anon_vma from an AVC allocated at the same call site.
    pub anon_vma_ctor: u64,
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid_off: u32,
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid_off: u32,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm_off: u32,
    /// `offsetof(struct task_struct, signal)`.
    pub task_signal_off: u32,
    /// `offsetof(struct signal_struct, live)`: the threads of the group
    /// not yet exiting. An exit is streamed once it is 0 (the whole
    /// process), not at the leader's: a main thread that exits alone leaves
    /// the process running. [`ABSENT`] (BTF without `signal_struct`): the
    /// leader's exit is streamed.
    pub signal_live_off: u32,
    /// Offsets the snapshot iterator reads.
    pub snap: SnapshotLayout,
    /// How the slab tracepoints' and hooks' arguments are laid out on this
    /// kernel.
    pub args: ArgLayout,
    /// Wake user space once this many bytes wait in the ring buffer (an
    /// eighth of it); below that the programs submit without a wakeup.
    pub wake_bytes: u64,
    /// What the time programs read.
    pub time: TimeLayout,
    /// Non-zero: the nest watch is attached (`--watch-nesting`), and our
    /// slab programs say when they run ([`nest`]).
    pub nest_watch: u32,
    /// Zero.
    pub _pad: u32,
}

/// The nest watch's slots: which of our slab programs is running on a CPU
/// now (the `INSIDE` per-CPU array).
pub mod nest {
    /// `kmem_cache_alloc`'s program.
    pub const ALLOC: u32 = 0;
    /// `kmem_cache_alloc_node`'s (before 6.1).
    pub const ALLOC_NODE: u32 = 1;
    /// `kmem_cache_free`'s.
    pub const FREE: u32 = 2;
    /// Slots.
    pub const SLOTS: u32 = 3;
}

/// Offsets and switches of the time programs (lock contention, fork work,
/// rmap walks), from the running kernel's BTF and tracefs formats.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeLayout {
    /// `offsetof(struct anon_vma, rwsem)`, or [`ABSENT`] (BTF without it:
    /// no lock tracking).
    pub anon_vma_rwsem: u32,
    /// `offsetof(struct folio, mapping)` (`struct page` before folios), or
    /// [`ABSENT`].
    pub folio_mapping: u32,
    /// `offsetof(struct rmap_walk_control, rmap_one)`, or [`ABSENT`].
    pub rwc_rmap_one: u32,
    /// Offset of `ret` in the `syscalls:sys_exit_*` records.
    pub syscall_ret: u32,
    /// `offsetof(struct rw_semaphore, owner)`, or [`ABSENT`] (PREEMPT_RT's
    /// rwsems have none): the holder of a contended anon_vma rwsem.
    pub rwsem_owner: u32,
    /// Zero.
    pub _pad: u32,
}

/// What the third argument of a slab tracepoint is ([`ArgLayout`]).
pub mod arg2 {
    /// `struct kmem_cache *s` (6.0+ alloc, 6.1+ free).
    pub const CACHE: u32 = 0;
    /// `size_t bytes_req, size_t bytes_alloc` (alloc before 6.0).
    pub const SIZES: u32 = 1;
    /// `const char *name`, the cache's (free on 5.12 .. 6.0).
    pub const NAME: u32 = 2;
    /// No third argument (free before 5.12).
    pub const NONE: u32 = 3;
}

/// Where the slab events come from ([`ArgLayout::slab_path`]).
pub mod slab_path {
    /// Raw tracepoints (`BPF_PROG_TYPE_RAW_TRACEPOINT`), arguments by position.
    pub const RAW: u32 = 0;
    /// Classic (perf) tracepoints, fields at the tracefs `format` offsets:
    /// these run with preemption disabled on 7.x, raw ones do not.
    pub const PERF: u32 = 1;
}

/// Argument layouts of the running kernel's slab tracepoints and rmap hooks,
/// read from its BTF (and tracefs formats) by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgLayout {
    /// [`arg2`] of `kmem_cache_alloc` (and `kmem_cache_alloc_node`).
    pub alloc_arg2: u32,
    /// [`arg2`] of `kmem_cache_free`.
    pub free_arg2: u32,
    /// `sizeof(struct anon_vma)`: an allocation's `bytes_req` tells an
    /// anon_vma from an AVC where the cache pointer is missing.
    pub anon_vma_size: u32,
    /// `slab_size` of the anon_vma cache (`bytes_alloc`), for the inlining
    /// detector on [`arg2::SIZES`] kernels.
    pub anon_vma_slab_size: u32,
    /// Offset of the anon_vma's rwsem wait list: the anon_vma cache's ctor
    /// links it to itself, which tells an anon_vma from another object of
    /// the same size (inlining detector, [`arg2::SIZES`] kernels).
    pub anon_vma_wait_list: u32,
    /// Position of `vma` in the new-anon-rmap hook (1 on every version).
    pub rmap_new_vma: u32,
    /// Position of `nr_pages` in the ptes hook, or [`ABSENT`]
    /// (`page_add_anon_rmap` before 6.6: one call per page or compound page).
    pub rmap_ptes_nr: u32,
    /// [`slab_path`].
    pub slab_path: u32,
    /// Classic tracepoint field offsets ([`slab_path::PERF`]): `call_site`,
    /// `ptr`, alloc `bytes_req`; `free` name (`__data_loc`), or [`ABSENT`].
    pub perf_call_site: u32,
    /// See `perf_call_site`.
    pub perf_ptr: u32,
    /// See `perf_call_site`.
    pub perf_bytes_req: u32,
    /// See `perf_call_site`.
    pub perf_bytes_alloc: u32,
    /// See `perf_call_site`.
    pub perf_free_name: u32,
}

/// Offsets (bytes) the `iter/task_vma` snapshot reads, from BTF.
/// [`ABSENT`] marks a member this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotLayout {
    /// `vm_area_struct.vm_start`.
    pub vma_start: u32,
    /// `vm_area_struct.vm_end`.
    pub vma_end: u32,
    /// `vm_area_struct.vm_mm`.
    pub vma_mm: u32,
    /// `vm_area_struct.vm_flags`.
    pub vma_flags: u32,
    /// `vm_area_struct.vm_file`.
    pub vma_file: u32,
    /// `vm_area_struct.vm_pgoff`.
    pub vma_pgoff: u32,
    /// `vm_area_struct.anon_vma`.
    pub vma_anon_vma: u32,
    /// `vm_area_struct.anon_vma_chain` (list head).
    pub vma_chain: u32,
    /// `anon_vma_chain.same_vma` (list node).
    pub avc_same_vma: u32,
    /// `anon_vma_chain.anon_vma`.
    pub avc_anon_vma: u32,
    /// `anon_vma.root`.
    pub av_root: u32,
    /// `anon_vma.parent`.
    pub av_parent: u32,
    /// `anon_vma.refcount`.
    pub av_refcount: u32,
    /// `anon_vma.num_children` (`degree` before 6.0 is not supported).
    pub av_num_children: u32,
    /// `anon_vma.num_active_vmas`, or [`ABSENT`].
    pub av_num_active_vmas: u32,
    /// `task_struct.mm` (the `iter/task` walk of kernels without
    /// `iter/task_vma`, before 5.12).
    pub task_mm: u32,
    /// `mm_struct.mmap` (the VMA list, before 6.1), or [`ABSENT`].
    pub mm_mmap: u32,
    /// `vm_area_struct.vm_next` (before 6.1), or [`ABSENT`].
    pub vma_next: u32,
    /// `task_struct.real_parent`: a task that shares its parent's mm
    /// without being its thread (a vfork or `posix_spawn` child before its
    /// exec, a `CLONE_VM` child) is not walked: those VMAs are its parent's,
    /// walked with the parent (else whichever of the two the iterator met
    /// first, by pid, took the parent's objects).
    pub task_real_parent: u32,
    /// `signal_struct.thread_head` (the group's threads, 3.14+), or
    /// [`ABSENT`]: the `iter/task` walk visits leaders only, and a leader
    /// that exited alone (a zombie without an mm) is walked on the mm of
    /// the first of its threads that has one.
    pub signal_thread_head: u32,
    /// `task_struct.thread_node` (a thread's node in that list).
    pub task_thread_node: u32,
    /// Zero: keeps the layout a multiple of eight bytes (no hidden padding
    /// in [`Config`]).
    pub reserved: u32,
}

/// Marks an absent member in [`SnapshotLayout`].
pub const ABSENT: u32 = u32::MAX;

/// Kinds of snapshot records.
pub mod snap {
    /// A [`super::SnapVma`].
    pub const VMA: u32 = 1;
    /// A [`super::SnapAvc`].
    pub const AVC: u32 = 2;
    /// Longest AVC chain walked per VMA; longer ones are flagged truncated.
    pub const MAX_CHAIN: u32 = 128;
    /// VMAs the `iter/task` walk (before 5.12) visits per process and
    /// pass (each with its chain, as `iter/task_vma` walks one): the 5.10
    /// verifier explores every iteration of every loop within a million
    /// instructions. User space runs passes until every process is done.
    pub const VMAS_PER_PASS: u32 = 4;
    /// Threads of a group the `iter/task` walk looks through for one with
    /// an mm when the leader has none (exited alone): exited threads leave
    /// the list at once, so the first live one is near its head.
    pub const MAX_THREADS: u32 = 16;
}

/// One VMA, written by the `iter/task_vma` program after its AVC records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapVma {
    /// [`snap::VMA`].
    pub kind: u32,
    /// Process (tgid) of the iterated task.
    pub tgid: u32,
    /// `vm_mm`.
    pub mm: u64,
    /// The VMA's address.
    pub vma: u64,
    /// `vm_start`.
    pub start: u64,
    /// `vm_end`.
    pub end: u64,
    /// `vm_flags`.
    pub flags: u64,
    /// `vm_file` (0: anonymous).
    pub file: u64,
    /// `anon_vma` (0: none yet).
    pub anon_vma: u64,
    /// `anon_vma->root`.
    pub av_root: u64,
    /// `anon_vma->parent`.
    pub av_parent: u64,
    /// `anon_vma->num_children` (a root counts itself).
    pub av_num_children: u64,
    /// `anon_vma->num_active_vmas`.
    pub av_num_active_vmas: u64,
    /// `vm_pgoff`.
    pub pgoff: u64,
    /// `anon_vma->refcount`.
    pub av_refcount: u32,
    /// AVC records written before this one (at most [`snap::MAX_CHAIN`]).
    pub chain_len: u32,
    /// 1 when the chain was longer than [`snap::MAX_CHAIN`].
    pub chain_truncated: u32,
    /// The parent's tgid (`task->real_parent->tgid`; 0 unread).
    pub ppid: u32,
    /// The task's comm.
    pub comm: [u8; COMM_LEN],
}

/// One AVC of a VMA's chain, written before its [`SnapVma`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapAvc {
    /// [`snap::AVC`].
    pub kind: u32,
    /// Process (tgid) of the iterated task.
    pub tgid: u32,
    /// The VMA whose chain this is.
    pub vma: u64,
    /// The AVC's address.
    pub avc: u64,
    /// `avc->anon_vma`.
    pub anon_vma: u64,
}

impl Config {
    /// The site of `call_site`, if it lies in one of the ranges.
    #[inline(always)]
    #[must_use]
    pub fn classify(&self, call_site: u64) -> Option<u32> {
        if call_site < self.lo || call_site >= self.hi {
            return None;
        }
        let mut i = 0;
        while i < MAX_SITE_RANGES {
            if i as u32 >= self.nr_ranges {
                break;
            }
            if call_site >= self.range_start[i] && call_site < self.range_end[i] {
                return Some(self.range_site[i]);
            }
            i += 1;
        }
        None
    }
}

/// Value of the `WAITING` map: a thread waiting on an anon_vma root's rwsem.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockWait {
    /// The rwsem's address.
    pub lock: u64,
    /// The frees of an anon_vma at this rwsem's address seen so far
    /// (`WAITED`'s value) at the begin, or [`lock::NOT_WAITED`].
    pub generation: u64,
    /// ktime at the begin.
    pub start: u64,
    /// [`lock`] flags, with [`lock::HOLDER_FORKING`] and
    /// [`lock::HOLDER_READERS`].
    pub flags: u32,
    /// The thread id of the rwsem's owner at the begin (a reader-owned
    /// one's last reader), 0 unknown.
    pub holder: u32,
}

/// What a `contention_end` on `lock` means for a thread's recorded wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Another lock's end (a spinlock taken inside the rwsem's slow path):
    /// the wait goes on.
    Other,
    /// The wait ended on the object it began on: measured.
    Measured,
    /// The lock's anon_vma was freed since the begin (its address perhaps
    /// reused by a new anon_vma, of another generation): not measured, counted.
    Reused,
}

impl LockWait {
    /// The end of a wait on `lock`, whose count of frees is now `current`
    /// (`None`: its entry made room for another).
    #[inline(always)]
    #[must_use]
    pub fn ends(&self, lock: u64, current: Option<u64>) -> WaitEnd {
        if self.lock != lock {
            WaitEnd::Other
        } else if current == Some(self.generation) {
            WaitEnd::Measured
        } else {
            WaitEnd::Reused
        }
    }
}

/// Entries of the `TIMING` map (threads inside `dup_mmap` now). A
/// `dup_mmap` whose entry found it full is not timed: its exit counts in
/// [`stat::TIMING_UNPAIRED`].
pub const TIMING_ENTRIES: u32 = 16384;

/// Value of the `TIMING` map: a thread inside `dup_mmap` (function hooks).
/// `anon_vma_fork` calls `anon_vma_clone`: only the outermost of the two
/// is timed, every call is counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkTiming {
    /// ktime at `dup_mmap`'s entry.
    pub start: u64,
    /// ktime at the entry of the outermost anon_vma function running now.
    pub anon_start: u64,
    /// Time in the anon_vma functions so far (outermost calls), ns.
    pub anon_ns: u64,
    /// Calls of `anon_vma_fork` and `anon_vma_clone` so far (nested ones too).
    pub calls: u32,
    /// anon_vma functions running now (1 inside `anon_vma_fork` or a
    /// lone `anon_vma_clone`, 2 inside the clone that `anon_vma_fork` calls).
    pub depth: u32,
}

impl ForkTiming {
    /// `dup_mmap` entered at `now`.
    #[must_use]
    pub const fn new(now: u64) -> Self {
        Self {
            start: now,
            anon_start: 0,
            anon_ns: 0,
            calls: 0,
            depth: 0,
        }
    }

    /// An anon_vma function entered at `now`.
    #[inline(always)]
    pub fn enter(&mut self, now: u64) {
        if self.depth == 0 {
            self.anon_start = now;
        }
        self.depth = self.depth.saturating_add(1);
        self.calls = self.calls.saturating_add(1);
    }

    /// An anon_vma function returned at `now`; `false` when no entry of
    /// one was seen (attached mid-call): not timed, counted.
    #[inline(always)]
    pub fn exit(&mut self, now: u64) -> bool {
        if self.depth == 0 {
            return false;
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.anon_ns += now.saturating_sub(self.anon_start);
        }
        true
    }

    /// `dup_mmap` returned at `now`: (ns in it, ns of it in the anon_vma
    /// functions, their calls). An anon_vma function still running (its
    /// return missed) counts up to `now`.
    #[inline(always)]
    #[must_use]
    pub fn done(&self, now: u64) -> (u64, u64, u32) {
        let open = if self.depth > 0 {
            now.saturating_sub(self.anon_start)
        } else {
            0
        };
        (
            now.saturating_sub(self.start),
            self.anon_ns + open,
            self.calls,
        )
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), Copy, made of integers with no padding.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RmapKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SnapshotLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LockWait {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ForkTiming {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rare_condition_is_worth_a_line_at_powers_of_16() {
        let mut lines = (0..70_000).filter(|&n| super::rare::worth_a_line(n));
        for want in [1, 16, 256, 4096, 65536] {
            assert_eq!(lines.next(), Some(want));
        }
        assert_eq!(lines.next(), None);
        assert!(super::rare::worth_a_line(1 << 60));
        assert!(!super::rare::worth_a_line(1 << 63));
    }

    #[test]
    fn abi_sizes_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<Event>(), 8 * 4 + 8 + COMM_LEN);
        assert_eq!(size_of::<SlabEvent>(), 8 + 4 + 4 + 4 + 4);
        assert_ne!(size_of::<SlabEvent>(), size_of::<Event>());
        assert_eq!(size_of::<ForkWindow>(), 16);
        assert!(flags::IN_FORK <= u32::from(u8::MAX));
        assert!(kind::FREE <= u32::from(u8::MAX) && site::COUNT <= 256 && object::COUNT <= 256);
        assert_eq!(
            core::mem::size_of::<Config>(),
            MAX_SITE_RANGES * (8 + 8 + 4)
                + 4
                + 4
                + 8 * 3
                + 4 * 5
                + size_of::<SnapshotLayout>()
                + size_of::<ArgLayout>()
                + 8
                + size_of::<TimeLayout>()
                + 4 * 2
        );
        assert_eq!(size_of::<TimeLayout>(), 6 * 4);
        assert_eq!(size_of::<RmapKey>(), 4 + 4 + 8);
        assert_eq!(size_of::<SnapshotLayout>(), 22 * 4);
        assert_eq!(size_of::<ArgLayout>(), 13 * 4);
        assert_eq!(size_of::<SnapVma>(), 4 * 2 + 8 * 12 + 4 * 4 + COMM_LEN);
        assert_eq!(size_of::<SnapAvc>(), 4 * 2 + 8 * 3);
    }

    #[test]
    fn timing_values_round_trip_through_comm() {
        let mut e = Event {
            kind: kind::LOCK_WAIT,
            ..Event::default()
        };
        e.set_times(0x0102_0304_0506_0708, u64::MAX - 5);
        assert_eq!(e.times(), (0x0102_0304_0506_0708, u64::MAX - 5));
        assert_eq!(size_of::<LockWait>(), 8 * 3 + 4 * 2);
    }

    #[test]
    fn only_reader_or_writer_waits_of_a_rwsem_are_looked_up() {
        assert!(lock::maybe_rwsem(lock::WRITE));
        assert!(lock::maybe_rwsem(lock::READ));
        assert!(
            lock::maybe_rwsem(lock::READ | lock::RT),
            "PREEMPT_RT's rwsem"
        );
        assert!(!lock::maybe_rwsem(lock::SPIN), "a spinlock");
        assert!(
            !lock::maybe_rwsem(lock::SPIN | lock::READ),
            "a queued rwlock"
        );
        assert!(
            !lock::maybe_rwsem(lock::PERCPU | lock::READ),
            "a per-CPU rwsem"
        );
        assert!(!lock::maybe_rwsem(lock::MUTEX), "a mutex");
        assert!(!lock::maybe_rwsem(0));
    }

    #[test]
    fn a_wait_is_measured_only_on_the_object_it_began_on() {
        let w = LockWait {
            lock: 0x1008,
            generation: 77,
            start: 5,
            flags: lock::WRITE,
            holder: 0,
        };
        assert_eq!(w.ends(0x2000, Some(77)), WaitEnd::Other, "a nested lock");
        assert_eq!(w.ends(0x1008, Some(77)), WaitEnd::Measured);
        // Freed since the begin, and the address reused by a new anon_vma.
        assert_eq!(w.ends(0x1008, Some(78)), WaitEnd::Reused);
        assert_eq!(w.ends(0x1008, None), WaitEnd::Reused, "freed");
    }

    #[test]
    fn fork_timing_counts_every_call_and_times_only_the_outermost() {
        let mut t = ForkTiming::new(100);
        // anon_vma_clone for a VMA (lone), then anon_vma_fork, which
        // calls anon_vma_clone.
        t.enter(110);
        assert!(t.exit(120));
        t.enter(130);
        t.enter(135);
        assert!(t.exit(140));
        assert_eq!(t.depth, 1);
        assert!(t.exit(150));
        assert_eq!(t.done(200), (100, 10 + 20, 3));
        // An exit without its entry: refused, nothing changes.
        assert!(!t.exit(160));
        assert_eq!(t.done(200), (100, 30, 3));
        // A return missed: the open call counts up to dup_mmap's exit.
        t.enter(190);
        assert_eq!(t.done(200), (100, 40, 4));
        assert_eq!(size_of::<ForkTiming>(), 8 * 3 + 4 * 2);
    }

    #[test]
    fn classify_finds_ranges_and_rejects_outside() {
        let mut c = Config::default();
        c.range_start[0] = 100;
        c.range_end[0] = 200;
        c.range_site[0] = site::FORK;
        c.range_start[1] = 300;
        c.range_end[1] = 400;
        c.range_site[1] = site::PUT;
        c.nr_ranges = 2;
        c.lo = 100;
        c.hi = 400;
        assert_eq!(c.classify(99), None);
        assert_eq!(c.classify(100), Some(site::FORK));
        assert_eq!(c.classify(199), Some(site::FORK));
        assert_eq!(c.classify(200), None);
        assert_eq!(c.classify(350), Some(site::PUT));
        assert_eq!(c.classify(400), None);
    }
}
