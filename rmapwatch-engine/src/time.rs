//! What anon_vma costs in time, and what each design would not have spent:
//! waits on anon_vma rwsems (lock contention), fork work, rmap walks.
//! Pure: fed the timing events in order with the others, and each walk's
//! VMAs (who shares which root anon_vma, LAZY's verdicts).
//!
//! The rules (also in every report's `time.rules`):
//! - a wait counts when its lock is the rwsem of an anon_vma the engine
//!   knows live (the programs already match the address exactly; a wait
//!   on an address the engine does not know is counted apart);
//! - its family: the processes whose VMAs had that root at the last walk;
//! - LAZY would not have taken it when every VMA of that family was lazy
//!   (L) at the last walk (no anon_vma would exist to lock);
//! - the COW context takes no anon_vma rwsem at all; its per-context
//!   spinlock is not modelled.
use std::collections::{BTreeMap, BTreeSet};

use rmapwatch_common::{object, site};
use serde::{Deserialize, Serialize};

use crate::{
    event::{Event, LockWait},
    hash::{FastMap, FastSet},
    model::{self, LazyState},
    snapshot::Vma,
};

/// Buckets of a log2 histogram of nanoseconds: bucket `i` holds values in
/// `[2^i, 2^(i+1))` (bucket 0 also holds 0).
pub const BUCKETS: usize = 40;

/// Processes listed per root in `by_root` (the family's first, by pid).
pub const FAMILY_SHOWN: usize = 16;

/// Rows of `by_root` and `by_process` kept in a report (most wait time first).
pub const ROWS: usize = 256;

/// A log2 histogram of nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram(pub Vec<u64>);

impl Default for Histogram {
    fn default() -> Self {
        Self(vec![0; BUCKETS])
    }
}

impl Histogram {
    /// The bucket of `ns`.
    #[must_use]
    pub fn bucket(ns: u64) -> usize {
        (63 - ns.max(1).leading_zeros() as usize).min(BUCKETS - 1)
    }

    /// Counts one value.
    pub fn add(&mut self, ns: u64) {
        if let Some(b) = self.0.get_mut(Self::bucket(ns)) {
            *b += 1;
        }
    }

    /// Upper bound (exclusive) of bucket `i`, in ns.
    #[must_use]
    pub fn upper(i: usize) -> u64 {
        1u64 << (i + 1).min(63)
    }

    /// Cumulative counts at each bucket's upper bound, up to the last
    /// non-empty one (OpenMetrics `le` buckets).
    #[must_use]
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let last = self.0.iter().rposition(|&n| n > 0).unwrap_or(0);
        let mut sum = 0;
        self.0[..=last]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                sum += n;
                (Self::upper(i), sum)
            })
            .collect()
    }
}

/// What the holder of a contended anon_vma rwsem was doing when the wait
/// began, from the rwsem's owner field (read at the begin): the paths
/// [`holder_path`] tells apart, in report order.
pub const HOLDER_PATHS: [&str; 4] = [
    "fork",
    "reader, not forking (rmap walk)",
    "writer, not forking (unlink, merge, split, mremap, exec)",
    "unknown (released before it was read, or not recorded)",
];

/// The [`HOLDER_PATHS`] index of a wait's holder.
#[must_use]
pub const fn holder_path(w: &LockWait) -> usize {
    use rmapwatch_common::lock::{HOLDER_FORKING, HOLDER_READERS};
    if w.flags & HOLDER_FORKING != 0 {
        0
    } else if w.holder == 0 {
        3
    } else if w.flags & HOLDER_READERS != 0 {
        1
    } else {
        2
    }
}

/// `report.time.anon_vma_lock.by_holder`: waits by what the lock's holder
/// was doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderWaits {
    /// One of [`HOLDER_PATHS`].
    pub path: String,
    /// Waits.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
}

/// Waits and their time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waits {
    /// Waits.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
}

impl Waits {
    fn add(&mut self, ns: u64) {
        self.waits += 1;
        self.wait_ns += ns;
    }
}

/// One root anon_vma's waits (a root's family: the processes whose VMAs
/// had it at the last walk, its owner, and its waiters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootWaits {
    /// The root anon_vma's address (hex).
    pub root: String,
    /// Its family: the processes whose VMAs had this root at the last walk
    /// (at most [`FAMILY_SHOWN`]; `family_size` counts them all).
    pub family: Vec<u32>,
    /// Processes in the family.
    pub family_size: usize,
    /// Waits on it.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
    /// Of those, writers'.
    pub write_waits: u64,
    /// Whether LAZY would have had this root at the last walk.
    pub lazy_has_it: bool,
}

/// One waiting process's waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessWaits {
    /// The waiting process.
    pub pid: u32,
    /// Its name (sanitised by the sinks that print it).
    pub comm: String,
    /// Waits.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
}

/// What a design would not have waited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avoided {
    /// The design.
    pub design: String,
    /// Waits it would not have had.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
    /// The rule.
    pub rule: String,
}

/// `report.time.anon_vma_lock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    /// How the waits are seen (`tracepoint lock:contention_begin/end`,
    /// `kprobe ...`), or why they are not.
    pub source: String,
    /// Whether waits are measured at all.
    pub available: bool,
    /// Waits on anon_vma root rwsems.
    pub waits: u64,
    /// Their time, ns.
    pub wait_ns: u64,
    /// Readers' waits (`down_read`: rmap walks).
    pub read_waits: u64,
    /// Writers' waits (`down_write`: fork, unlink, merge, split, mremap).
    pub write_waits: u64,
    /// Wait time, log2 buckets of ns.
    pub histogram: Histogram,
    /// Per root anon_vma, most wait time first (at most [`ROWS`]).
    pub by_root: Vec<RootWaits>,
    /// Per waiting process, most wait time first (at most [`ROWS`]).
    pub by_process: Vec<ProcessWaits>,
    /// By what the holder was doing at the begin ([`HOLDER_PATHS`], each
    /// once, in that order; empty in reports of older recordings).
    #[serde(default)]
    pub by_holder: Vec<HolderWaits>,
    /// Waits on an address the engine did not know as a live anon_vma
    /// (before the seeding walk ended, or a stale entry): not counted above.
    pub unknown: u64,
    /// Per design, what it would not have waited.
    pub avoided: Vec<Avoided>,
    /// Waits lost in the kernel: the anon_vma freed (and its address
    /// perhaps reused) between the begin and the end, or a map full.
    pub lost: u64,
}

/// Objects per fork, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkObjects {
    /// anon_vmas.
    pub anon_vma: u64,
    /// AVCs.
    pub anon_vma_chain: u64,
}

/// What a design would not do at fork (sums over the forks counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkDesign {
    /// The design.
    pub design: String,
    /// Objects it would not allocate.
    pub objects_not_allocated: ForkObjects,
    /// Work it would add (COW context: contexts and remap entries copied).
    pub added: BTreeMap<String, u64>,
    /// The rule.
    pub rule: String,
}

/// `report.time.fork`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForkReport {
    /// `function hooks (dup_mmap, anon_vma_fork, anon_vma_clone)` or
    /// `syscall tracepoints` (the split needs function hooks).
    pub source: String,
    /// Process forks timed (threads are not counted).
    pub forks: u64,
    /// Fork syscalls that failed (pids.max, memory): what their
    /// `dup_mmap` allocated is in no fork's objects.
    #[serde(default)]
    pub failed: u64,
    /// The fork syscalls' time, ns (entry to return in the parent).
    pub syscall_ns: u64,
    /// Their histogram.
    pub syscall_histogram: Histogram,
    /// Time in `dup_mmap`, ns (function hooks; null without).
    pub dup_mmap_ns: Option<u64>,
    /// Of that, in `anon_vma_fork` and `anon_vma_clone` (function hooks).
    pub anon_vma_ns: Option<u64>,
    /// Calls of those two (function hooks).
    pub anon_vma_calls: Option<u64>,
    /// Forks of `forks` whose `dup_mmap` was timed (function hooks; a
    /// vfork or `CLONE_VM` child has none, an exit hook missed leaves one
    /// untimed).
    #[serde(default)]
    pub dup_mmaps: Option<u64>,
    /// Objects the forks allocated.
    pub objects: ForkObjects,
    /// Per fork, on average.
    pub objects_per_fork: Option<f64>,
    /// Per design, what it would not do.
    pub designs: Vec<ForkDesign>,
}

/// One rmap walk caller's walks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerWalks {
    /// `rmap_one`'s name (`try_to_unmap_one`: reclaim, ...), or its address.
    pub caller: String,
    /// What it is for (reclaim, migration, ...).
    pub purpose: String,
    /// Walks.
    pub walks: u64,
    /// AVCs on the walked anon_vmas at the last walk (an upper bound of
    /// what the walks visited: the kernel's interval tree skips AVCs whose
    /// VMA does not cover the folio's offset).
    pub avcs: u64,
    /// The same under LAZY (a lazy VMA's folio is walked without its chain).
    pub lazy_avcs: u64,
    /// Under the COW context: one lookup per process of the family.
    pub cow_context_visits: u64,
}

/// `report.time.rmap_walks` (function hooks only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RmapReport {
    /// How they are seen, or why not.
    pub source: String,
    /// Per caller, most walks first.
    pub by_caller: Vec<CallerWalks>,
}

/// `report.time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeReport {
    /// Waits on anon_vma rwsems.
    pub anon_vma_lock: LockReport,
    /// Fork work.
    pub fork: ForkReport,
    /// rmap walks.
    pub rmap_walks: RmapReport,
    /// What these numbers rest on.
    pub rules: Vec<String>,
}

/// The rules of [`TimeReport::rules`].
pub const RULES: [&str; 5] = [
    "a wait counts when its lock is the rwsem of an anon_vma root (rmap code locks the \
     root's; the kernel checks that the word before it points back) and the engine knows that \
     anon_vma live; other locks that pass the kernel's check count as unknown",
    "a root's family is the processes whose VMAs had it as root at the last walk",
    "LAZY would not have waited when every VMA of the root's family was lazy (L) at the last \
     walk: no anon_vma would exist to lock",
    "the COW context takes no anon_vma rwsem (RCU and per-context spinlocks): every wait is \
     avoided; the cost of its spinlocks is not modelled",
    "LAZY allocates nothing in anon_vma_fork (a child's own anon_vma and its AVC wait for its \
     first write); the COW context allocates no per-VMA object at fork but one context, and \
     copies the parent's remap entries",
];

/// How the time sources were attached (the facts say; this is the view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// Lock waits: the source, or why none.
    pub lock: (bool, String),
    /// Fork: the source.
    pub fork: String,
    /// rmap walks: the source, or why none.
    pub rmap: String,
}

#[derive(Clone, Debug, Default)]
struct RootBook {
    all: Waits,
    write: u64,
    /// The root's owner and the waiters (their VMAs chain to it): the
    /// family of a root younger than the last walk.
    seen: BTreeSet<u32>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    objects: ForkObjects,
    fork_site: ForkObjects,
    work: Option<(u64, u64, u32)>,
}

#[derive(Clone, Copy, Debug)]
struct Forked {
    child: u32,
    process: bool,
    parent: u32,
    pending: Pending,
}

#[derive(Clone, Debug, Default)]
struct Walked {
    /// root -> the tgids of the VMAs that had it.
    family: FastMap<u64, BTreeSet<u32>>,
    /// Roots with a VMA LAZY keeps an anon_vma for.
    lazy_roots: FastSet<u64>,
    /// anon_vma -> AVCs pointing to it, and whether LAZY walks its chain.
    avcs: FastMap<u64, (u64, bool)>,
    /// anon_vma -> its root.
    root_of: FastMap<u64, u64>,
}

/// The time book: fed in stream order.
#[derive(Debug, Default)]
pub struct TimeBook {
    lazy_opts: model::Options,
    lock: Waits,
    read: u64,
    write: u64,
    hist: Histogram,
    roots: FastMap<u64, RootBook>,
    procs: FastMap<u32, Waits>,
    /// The waiters' names as they were when they waited: a waiter that
    /// exited is folded out of the accounts before the report.
    names: FastMap<u32, String>,
    holders: [Waits; HOLDER_PATHS.len()],
    unknown: u64,
    lazy_avoided: Waits,
    forks: u64,
    fork_ns: u64,
    fork_hist: Histogram,
    dup_mmap: Option<(u64, u64, u64, u64)>,
    fork_objects: ForkObjects,
    lazy_skips: ForkObjects,
    cow_contexts: u64,
    cow_remaps: u64,
    pending: FastMap<u32, Pending>,
    failed_forks: u64,
    forked: FastMap<u32, Forked>,
    walks: BTreeMap<u64, (u64, u64, u64, u64)>,
    last: Walked,
    next: Option<Walked>,
    /// Per process at the last walk: the COW context's remap entries.
    cow_remap_entries: BTreeMap<u32, u64>,
}

impl TimeBook {
    /// With LAZY's verdict options.
    #[must_use]
    pub fn new(lazy_opts: model::Options) -> Self {
        Self {
            lazy_opts,
            ..Self::default()
        }
    }

    /// One event, in stream order. `owner`: who owns a live object, and
    /// its kind.
    pub fn event(&mut self, e: &Event, owner: &dyn Fn(u64) -> Option<(u32, u32)>) {
        match *e {
            Event::LockWait(w) => self.wait(&w, owner),
            Event::Alloc(s) if s.in_fork => {
                let p = self.pending.entry(s.tid).or_default();
                let add = |o: &mut ForkObjects| {
                    if s.object == object::ANON_VMA {
                        o.anon_vma += 1;
                    } else {
                        o.anon_vma_chain += 1;
                    }
                };
                add(&mut p.objects);
                if s.site == site::FORK {
                    add(&mut p.fork_site);
                }
            }
            Event::ForkWork {
                tid,
                dup_mmap_ns,
                anon_ns,
                anon_calls,
                ..
            } => {
                self.pending.entry(tid).or_default().work =
                    Some((dup_mmap_ns, anon_ns, anon_calls));
            }
            Event::Fork {
                tid,
                tgid,
                child_tid,
                child_tgid,
                ..
            } => {
                let pending = self.pending.remove(&tid).unwrap_or_default();
                self.forked.insert(
                    tid,
                    Forked {
                        child: child_tid,
                        process: child_tgid != tgid,
                        parent: tgid,
                        pending,
                    },
                );
            }
            Event::ForkTime { tid, child, ns, .. } => {
                if child == 0 {
                    // A failed fork: what its dup_mmap allocated and
                    // timed must not join the thread's next fork.
                    self.pending.remove(&tid);
                    self.failed_forks += 1;
                    return;
                }
                let Some(f) = self.forked.remove(&tid) else {
                    return;
                };
                if f.child != child || !f.process {
                    return;
                }
                self.fork_done(&f, ns);
            }
            Event::RmapWalk {
                anon_vma, rmap_one, ..
            } => {
                let (avcs, lazy_walks) =
                    self.last.avcs.get(&anon_vma).copied().unwrap_or((0, true));
                let root = self
                    .last
                    .root_of
                    .get(&anon_vma)
                    .copied()
                    .unwrap_or(anon_vma);
                let family = self.last.family.get(&root).map_or(0, BTreeSet::len) as u64;
                let w = self.walks.entry(rmap_one).or_default();
                w.0 += 1;
                w.1 += avcs;
                w.2 += if lazy_walks { avcs } else { avcs.min(1) };
                w.3 += family;
            }
            _ => {}
        }
    }

    fn wait(&mut self, w: &LockWait, owner: &dyn Fn(u64) -> Option<(u32, u32)>) {
        let Some((owner_pid, object::ANON_VMA)) = owner(w.anon_vma) else {
            self.unknown += 1;
            return;
        };
        self.lock.add(w.wait_ns);
        if w.write() {
            self.write += 1;
        } else {
            self.read += 1;
        }
        self.hist.add(w.wait_ns);
        let r = self.roots.entry(w.anon_vma).or_default();
        r.all.add(w.wait_ns);
        r.write += u64::from(w.write());
        r.seen.insert(owner_pid);
        r.seen.insert(w.tgid);
        self.procs.entry(w.tgid).or_default().add(w.wait_ns);
        self.holders[holder_path(w)].add(w.wait_ns);
        if self.last.family.contains_key(&w.anon_vma) && !self.last.lazy_roots.contains(&w.anon_vma)
        {
            self.lazy_avoided.add(w.wait_ns);
        }
    }

    fn fork_done(&mut self, f: &Forked, ns: u64) {
        self.forks += 1;
        self.fork_ns += ns;
        self.fork_hist.add(ns);
        let p = f.pending;
        self.fork_objects.anon_vma += p.objects.anon_vma;
        self.fork_objects.anon_vma_chain += p.objects.anon_vma_chain;
        self.lazy_skips.anon_vma += p.fork_site.anon_vma;
        self.lazy_skips.anon_vma_chain += p.fork_site.anon_vma_chain;
        self.cow_contexts += 1;
        self.cow_remaps += self.cow_remap_entries.get(&f.parent).copied().unwrap_or(0);
        if let Some((d, a, n)) = p.work {
            let t = self.dup_mmap.get_or_insert((0, 0, 0, 0));
            t.0 += d;
            t.1 += a;
            t.2 += u64::from(n);
            t.3 += 1;
        }
    }

    /// A walk begins.
    pub fn begin_walk(&mut self) {
        self.next = Some(Walked::default());
    }

    /// One VMA of the walk.
    pub fn vma(&mut self, v: &Vma) {
        let Some(w) = &mut self.next else {
            return;
        };
        if v.anon_vma == 0 {
            return;
        }
        let root = if v.av_root == 0 {
            v.anon_vma
        } else {
            v.av_root
        };
        w.family.entry(root).or_default().insert(v.tgid);
        w.root_of.insert(v.anon_vma, root);
        let lazy = model::verdict(v, self.lazy_opts).state == LazyState::L;
        if !lazy {
            w.lazy_roots.insert(root);
        }
        let own = w.avcs.entry(v.anon_vma).or_insert((0, false));
        own.1 |= !lazy;
        for &(_, av) in &v.chain {
            let e = w.avcs.entry(av).or_insert((0, false));
            e.0 += 1;
            e.1 |= !lazy;
        }
    }

    /// The walk ended; `cow_remaps`: the COW context's remap entries per
    /// process at this walk.
    pub fn end_walk(&mut self, cow_remaps: BTreeMap<u32, u64>) {
        if let Some(w) = self.next.take() {
            self.last = w;
        }
        self.cow_remap_entries = cow_remaps;
    }

    /// The walk failed.
    pub fn abort_walk(&mut self) {
        self.next = None;
    }

    /// Forgets per-process state of processes folded away (their waits
    /// stay in the totals).
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.names.remove(&pid);
    }

    /// Names a waiter (`name` is asked only for a pid with waits and no
    /// name yet, so once a waiter): called after each wait's event, while
    /// the waiter is still in the accounts.
    pub fn name_waiter(&mut self, pid: u32, name: &dyn Fn(u32) -> String) {
        if self.procs.contains_key(&pid) && !self.names.contains_key(&pid) {
            let n = name(pid);
            if !n.is_empty() {
                self.names.insert(pid, n);
            }
        }
    }

    /// The report block. `comm`: a process's name; `name_of`: an rmap_one
    /// address's symbol.
    #[must_use]
    pub fn report(
        &self,
        sources: &Sources,
        lost: u64,
        comm: &dyn Fn(u32) -> String,
        name_of: &dyn Fn(u64) -> Option<String>,
    ) -> TimeReport {
        let mut by_root: Vec<RootWaits> = self
            .roots
            .iter()
            .map(|(&root, b)| {
                let walked = self.last.family.get(&root);
                let mut fam = b.seen.clone();
                fam.extend(walked.into_iter().flatten().copied());
                fam.remove(&0);
                RootWaits {
                    root: format!("{root:#x}"),
                    family: fam.iter().take(FAMILY_SHOWN).copied().collect(),
                    family_size: fam.len(),
                    waits: b.all.waits,
                    wait_ns: b.all.wait_ns,
                    write_waits: b.write,
                    lazy_has_it: walked.is_none() || self.last.lazy_roots.contains(&root),
                }
            })
            .collect();
        by_root.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.root.cmp(&b.root)));
        by_root.truncate(ROWS);
        let mut by_process: Vec<ProcessWaits> = self
            .procs
            .iter()
            .map(|(&pid, w)| ProcessWaits {
                pid,
                comm: Some(comm(pid))
                    .filter(|c| !c.is_empty())
                    .or_else(|| self.names.get(&pid).cloned())
                    .unwrap_or_default(),
                waits: w.waits,
                wait_ns: w.wait_ns,
            })
            .collect();
        by_process.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.pid.cmp(&b.pid)));
        by_process.truncate(ROWS);
        let anon_vma_lock = LockReport {
            source: sources.lock.1.clone(),
            available: sources.lock.0,
            waits: self.lock.waits,
            wait_ns: self.lock.wait_ns,
            read_waits: self.read,
            write_waits: self.write,
            histogram: self.hist.clone(),
            by_root,
            by_process,
            by_holder: HOLDER_PATHS
                .iter()
                .zip(&self.holders)
                .map(|(path, w)| HolderWaits {
                    path: (*path).to_owned(),
                    waits: w.waits,
                    wait_ns: w.wait_ns,
                })
                .collect(),
            unknown: self.unknown,
            avoided: vec![
                Avoided {
                    design: "lazy".into(),
                    waits: self.lazy_avoided.waits,
                    wait_ns: self.lazy_avoided.wait_ns,
                    rule: RULES[2].into(),
                },
                Avoided {
                    design: "cow_context".into(),
                    waits: self.lock.waits,
                    wait_ns: self.lock.wait_ns,
                    rule: RULES[3].into(),
                },
            ],
            lost,
        };
        let per = |n: u64| (self.forks > 0).then(|| n as f64 / self.forks as f64);
        let fork = ForkReport {
            source: sources.fork.clone(),
            forks: self.forks,
            failed: self.failed_forks,
            syscall_ns: self.fork_ns,
            syscall_histogram: self.fork_hist.clone(),
            dup_mmap_ns: self.dup_mmap.map(|d| d.0),
            anon_vma_ns: self.dup_mmap.map(|d| d.1),
            anon_vma_calls: self.dup_mmap.map(|d| d.2),
            dup_mmaps: self.dup_mmap.map(|d| d.3),
            objects: self.fork_objects,
            objects_per_fork: per(self.fork_objects.anon_vma + self.fork_objects.anon_vma_chain),
            designs: vec![
                ForkDesign {
                    design: "lazy".into(),
                    objects_not_allocated: self.lazy_skips,
                    added: BTreeMap::new(),
                    rule: "no anon_vma_fork: a child's own anon_vma and AVC wait for its first \
                           write; anon_vma_clone's links are kept"
                        .into(),
                },
                ForkDesign {
                    design: "cow_context".into(),
                    objects_not_allocated: self.fork_objects,
                    added: BTreeMap::from([
                        ("cow_context".to_owned(), self.cow_contexts),
                        ("remap_entries_copied".to_owned(), self.cow_remaps),
                    ]),
                    rule: "no per-VMA object at fork; one context per child, and the parent's \
                           remap entries (private file mappings with COW'd pages, moved VMAs, \
                           the stack) copied, as the parent held them at the last walk"
                        .into(),
                },
            ],
        };
        let mut by_caller: Vec<CallerWalks> = self
            .walks
            .iter()
            .map(|(&f, &(walks, avcs, lazy_avcs, cow))| {
                let caller = name_of(f).unwrap_or_else(|| format!("{f:#x}"));
                CallerWalks {
                    purpose: purpose(&caller).into(),
                    caller,
                    walks,
                    avcs,
                    lazy_avcs,
                    cow_context_visits: cow,
                }
            })
            .collect();
        by_caller.sort_by(|a, b| b.walks.cmp(&a.walks).then(a.caller.cmp(&b.caller)));
        TimeReport {
            anon_vma_lock,
            fork,
            rmap_walks: RmapReport {
                source: sources.rmap.clone(),
                by_caller,
            },
            rules: RULES.iter().map(|r| (*r).to_owned()).collect(),
        }
    }
}

/// What an rmap walk's `rmap_one` is for.
#[must_use]
pub fn purpose(rmap_one: &str) -> &'static str {
    match rmap_one {
        "folio_referenced_one" | "page_referenced_one" => "reclaim (aging)",
        // Before 5.16 migration unmapped through it too (TTU_MIGRATION,
        // paired with remove_migration_pte walks): seen on 5.10.
        "try_to_unmap_one" => "reclaim (unmap), or migration before 5.16",
        "try_to_migrate_one" | "remove_migration_pte" => "migration / compaction",
        "page_mkclean_one" => "writeback",
        "page_idle_clear_pte_refs_one" | "damon_folio_mkold_one" | "damon_folio_young_one" => {
            "idle tracking"
        }
        "folio_make_device_exclusive" | "page_make_device_exclusive_one" => "device",
        _ => "other",
    }
}

/// The `rmap_one` functions whose addresses the live source looks up.
pub const RMAP_ONE: [&str; 10] = [
    "folio_referenced_one",
    "page_referenced_one",
    "try_to_unmap_one",
    "try_to_migrate_one",
    "remove_migration_pte",
    "page_mkclean_one",
    "page_idle_clear_pte_refs_one",
    "damon_folio_mkold_one",
    "damon_folio_young_one",
    "page_make_device_exclusive_one",
];

#[cfg(test)]
mod tests;
