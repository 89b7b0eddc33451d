//! COW context (Lorenzo Stoakes; proof of concept `mm/cow_context.c` at
//! `a4ac19665445540721830ef6014642daddc0eff0` of
//! `kernelorg-mirror/linux_kernel_git_ljs_linux`), modelled as its target:
//! no anon_vma, no AVC (the PoC still allocates both beside it).
//!
//! What it holds, from that source:
//! - one `struct cow_context` (96 B on LP64, `kzalloc`: kmalloc-96) per mm,
//!   made at mm init: at fork and at exec; `CLONE_VM` children and threads
//!   share their mm's;
//! - fork links the child's context under the parent's with a reference,
//!   so a context outlives its mm while a descendant context lives (a
//!   dead ancestor); exec starts a new root;
//! - remap entries in a per-context maple tree: one range per VMA with
//!   anonymous pages whose `vm_pgoff` is not its `vm_start` in pages
//!   (anonymous VMAs moved by mremap; private file mappings with COW'd
//!   pages, whose pgoff is the file offset). The key is the pgoff range, so
//!   ranges of several VMAs overlapping in pgoff split into pieces that
//!   hold several offsets: a kmalloc'd offset array (8 + 8 x capacity
//!   bytes, capacity 2 doubling). One offset is an immediate value (no
//!   allocation). Fork re-adds a parent's offsets, and re-adding one an
//!   immediate entry holds makes a capacity-2 array (a quirk of the PoC,
//!   option `fork_readd_arrays`). Entries go at munmap and exit.
use std::collections::{BTreeMap, HashMap};

use super::base::{
    Design, Holding, ModelOption, Outcome, PINNERS_SHOWN, Pinned, VM_SHARED, Walked, kmalloc_slot,
};
use crate::{event::Event, facts::Facts, hash::FastMap, snapshot::Vma};

/// `VM_MAYSHARE`.
const VM_MAYSHARE: u64 = 0x80;
/// Foreign anon_vma roots kept per process as evidence of its lineage.
const ROOTS_KEPT: usize = 4;

/// The rules the source does not settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `sizeof(struct cow_context)` (96 on LP64, read from the PoC).
    pub context_bytes: u32,
    /// Remap entries per 256 B maple node (inferred: 16-slot leaves with
    /// gaps between ranges).
    pub entries_per_node: u32,
    /// The PoC's fork re-adds a parent's offsets, turning its immediate
    /// entries into capacity-2 arrays.
    pub fork_readd_arrays: bool,
    /// At the seeding walk, infer dead ancestors from anon_vma roots no
    /// live VMA holds.
    pub infer_dead_at_seed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            context_bytes: 96,
            entries_per_node: 10,
            fork_readd_arrays: true,
            infer_dead_at_seed: true,
        }
    }
}

/// Why a VMA has a remap entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remap {
    /// An anonymous VMA moved by mremap.
    MovedAnon,
    /// A main stack: exec moves it, growth lowers pgoff with the start.
    Stack,
    /// A private file mapping with COW'd pages.
    PrivateFile,
}

/// Whether the VMA has a remap entry, and why (`page_shift` of the
/// measured machine). `None` also when `vm_pgoff` is unknown.
#[must_use]
pub fn remap(v: &Vma, page_shift: u32) -> Option<Remap> {
    let pgoff = v.pgoff?;
    if v.anon_vma == 0 || pgoff == v.start >> page_shift {
        return None;
    }
    if !v.file {
        Some(if v.flags & super::base::VM_GROWSDOWN != 0 {
            Remap::Stack
        } else {
            Remap::MovedAnon
        })
    } else if v.flags & (VM_SHARED | VM_MAYSHARE) == 0 {
        Some(Remap::PrivateFile)
    } else {
        None
    }
}

#[derive(Debug)]
struct Ctx {
    pid: u32,
    comm: String,
    parent: Option<u64>,
    children: u32,
    alive: bool,
    /// Walk number at its making (a context made during a walk is not
    /// judged by it).
    born: u64,
    /// Its mm forked (the PoC's re-added offsets).
    forked: bool,
    /// Made at the seeding walk for an ancestor that was already dead.
    inferred: bool,
}

/// Contexts and their links, kept from events and walks.
#[derive(Debug, Default)]
struct Lineage {
    ctxs: HashMap<u64, Ctx>,
    by_pid: HashMap<u32, u64>,
    next: u64,
    walk: u64,
    /// Dead contexts freed so far, and exits whose context stayed.
    pinned_at_exit: u64,
}

impl Lineage {
    fn make(&mut self, pid: u32, comm: String, parent: Option<u64>, alive: bool) -> u64 {
        self.next += 1;
        let id = self.next;
        if let Some(p) = parent.and_then(|p| self.ctxs.get_mut(&p)) {
            p.children += 1;
            p.forked = true;
        }
        self.ctxs.insert(
            id,
            Ctx {
                pid,
                comm,
                parent,
                children: 0,
                alive,
                born: self.walk,
                forked: false,
                inferred: !alive,
            },
        );
        id
    }

    /// The mm of `id` is gone: free it, and the dead ancestors only it
    /// kept (`__put_cow_context` cascading up).
    fn release(&mut self, id: u64) {
        let Some(c) = self.ctxs.get_mut(&id) else {
            return;
        };
        c.alive = false;
        if c.children > 0 {
            self.pinned_at_exit += 1;
        }
        let mut cur = Some(id);
        while let Some(i) = cur {
            match self.ctxs.get(&i) {
                Some(c) if !c.alive && c.children == 0 => {
                    let parent = c.parent;
                    self.ctxs.remove(&i);
                    cur = parent.filter(|p| {
                        self.ctxs.get_mut(p).is_some_and(|pc| {
                            pc.children = pc.children.saturating_sub(1);
                            true
                        })
                    });
                }
                _ => cur = None,
            }
        }
    }

    fn set_parent(&mut self, id: u64, parent: u64) {
        if let Some(c) = self.ctxs.get_mut(&id) {
            c.parent = Some(parent);
        }
        if let Some(p) = self.ctxs.get_mut(&parent) {
            p.children += 1;
            p.forked = true;
        }
    }

    fn fork(&mut self, parent: u32, child: u32, comm: String) {
        // A pid whose exit was not seen is reused.
        if let Some(old) = self.by_pid.remove(&child) {
            self.release(old);
        }
        let p = self.by_pid.get(&parent).copied();
        let id = self.make(child, comm, p, true);
        self.by_pid.insert(child, id);
    }

    fn exec(&mut self, pid: u32, comm: String) {
        let old = self.by_pid.remove(&pid);
        let id = self.make(pid, comm, None, true);
        self.by_pid.insert(pid, id);
        if let Some(o) = old {
            self.release(o);
        }
    }

    /// `comm`: its name at exit (a dead context is named by it).
    fn exit(&mut self, pid: u32, comm: String) {
        if let Some(o) = self.by_pid.remove(&pid) {
            if let Some(c) = self.ctxs.get_mut(&o) {
                c.comm = comm;
            }
            self.release(o);
        }
    }
}

/// log2 of the measured machine's page size (12 when unknown).
fn page_shift(facts: &Facts) -> u32 {
    if facts.page_size.is_power_of_two() {
        facts.page_size.trailing_zeros()
    } else {
        12
    }
}

/// A per-process collection of the walk.
#[derive(Debug, Default)]
struct ProcWalk {
    /// Remap ranges: (first pgoff, last pgoff, offset).
    ranges: Vec<(u64, u64, u64)>,
    moved: u64,
    stacks: u64,
    files: u64,
    /// anon_vma roots of its VMAs that are not the VMA's own anon_vma.
    roots: Vec<u64>,
    ppid: u32,
}

/// Remap entries of one context, from its ranges: (entries, offset
/// arrays by capacity).
fn entries(ranges: &[(u64, u64, u64)], readd: bool) -> (u64, BTreeMap<u32, u64>) {
    // Sweep over the pgoff axis: a piece between two range ends is one
    // entry, holding the offsets of the ranges over it.
    let mut ends: Vec<(u64, bool, u64)> = Vec::with_capacity(ranges.len() * 2);
    for &(lo, hi, off) in ranges.iter() {
        ends.push((lo, true, off));
        ends.push((hi.saturating_add(1), false, off));
    }
    ends.sort_unstable_by_key(|&(at, open, _)| (at, open));
    let mut live: BTreeMap<u64, u32> = BTreeMap::new();
    let mut n = 0;
    let mut arrays: BTreeMap<u32, u64> = BTreeMap::new();
    let mut i = 0;
    while i < ends.len() {
        let at = ends[i].0;
        while i < ends.len() && ends[i].0 == at {
            let (_, open, off) = ends[i];
            if open {
                *live.entry(off).or_default() += 1;
            } else if let Some(c) = live.get_mut(&off) {
                *c -= 1;
                if *c == 0 {
                    live.remove(&off);
                }
            }
            i += 1;
        }
        if i < ends.len() && !live.is_empty() {
            n += 1;
            let k = u32::try_from(live.len()).unwrap_or(u32::MAX);
            if k >= 2 || readd {
                *arrays.entry(k.max(2).next_power_of_two()).or_default() += 1;
            }
        }
    }
    (n, arrays)
}

/// Union-find over anon_vma roots (dead ancestors inferred at seeding).
#[derive(Default)]
struct Groups(HashMap<u64, u64>);

impl Groups {
    fn find(&mut self, x: u64) -> u64 {
        let mut r = x;
        while let Some(&p) = self.0.get(&r) {
            if p == r {
                break;
            }
            r = p;
        }
        self.0.insert(x, r);
        r
    }

    fn union(&mut self, a: u64, b: u64) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0.insert(ra.max(rb), ra.min(rb));
        }
    }
}

/// The COW context design.
#[derive(Debug)]
pub struct CowContext {
    opts: Options,
    lineage: Lineage,
    procs: FastMap<u32, ProcWalk>,
    /// The process whose VMAs are coming.
    cur: Option<(u32, ProcWalk)>,
    no_pgoff: u64,
    shift: u32,
}

impl CowContext {
    /// With its options.
    #[must_use]
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            lineage: Lineage::default(),
            procs: FastMap::default(),
            cur: None,
            no_pgoff: 0,
            shift: 12,
        }
    }

    /// Files the process being collected.
    fn flush(&mut self) {
        if let Some((t, p)) = self.cur.take() {
            self.procs.insert(t, p);
        }
    }

    /// Brings the lineage in line with the walk: contexts for processes
    /// the events did not make (linked where the walk shows a fork without
    /// exec), contexts of processes gone without a seen exit released.
    /// Returns the dead ancestors inferred.
    fn reconcile(&mut self, w: &Walked<'_>) -> u64 {
        let l = &mut self.lineage;
        let gone: Vec<(u32, u64)> = l
            .by_pid
            .iter()
            .filter(|(pid, id)| {
                !w.procs.contains_key(pid) && l.ctxs.get(id).is_some_and(|c| c.born < l.walk)
            })
            .map(|(&p, &i)| (p, i))
            .collect();
        for (pid, id) in gone {
            l.by_pid.remove(&pid);
            l.release(id);
        }
        let new: Vec<u32> = w
            .procs
            .keys()
            .copied()
            .filter(|p| !l.by_pid.contains_key(p))
            .collect();
        for &pid in &new {
            let comm = w.procs.get(&pid).cloned().unwrap_or_default();
            let id = l.make(pid, comm, None, true);
            l.by_pid.insert(pid, id);
        }
        // Links the walk shows: a process whose VMAs chain to an anon_vma
        // tree its parent made was forked from it without exec.
        let mut orphans: Vec<(u32, Option<u32>)> = Vec::new();
        for &pid in &new {
            let Some(pw) = self.procs.get(&pid) else {
                continue;
            };
            let ppid = w.parents.get(&pid).copied().unwrap_or(pw.ppid);
            let creators: Vec<Option<u32>> = pw
                .roots
                .iter()
                .map(|&r| (w.owner)(r).filter(|&(_, own)| own).map(|(t, _)| t))
                .collect();
            let parent_ctx = l.by_pid.get(&ppid).copied();
            if let Some(pc) = parent_ctx.filter(|_| creators.contains(&Some(ppid))) {
                if let Some(&id) = l.by_pid.get(&pid) {
                    l.set_parent(id, pc);
                }
            } else if !pw.roots.is_empty() {
                // Its tree's maker is dead, or is not its parent: an
                // ancestor between them died.
                let live_maker = creators
                    .iter()
                    .flatten()
                    .copied()
                    .find(|&t| t != pid && w.procs.contains_key(&t));
                orphans.push((pid, live_maker));
            }
        }
        if !(w.seeding && self.opts.infer_dead_at_seed) {
            return 0;
        }
        let mut groups = Groups::default();
        for (pid, _) in &orphans {
            if let Some(pw) = self.procs.get(pid)
                && let Some((&first, rest)) = pw.roots.split_first()
            {
                for &r in rest {
                    groups.union(first, r);
                }
            }
        }
        let mut dead: HashMap<u64, u64> = HashMap::new();
        let mut inferred = 0;
        for (pid, maker) in orphans {
            let Some(&first) = self.procs.get(&pid).and_then(|p| p.roots.first()) else {
                continue;
            };
            let key = groups.find(first);
            let d = *dead.entry(key).or_insert_with(|| {
                inferred += 1;
                let parent = maker.and_then(|m| l.by_pid.get(&m).copied());
                l.make(0, "?".into(), parent, false)
            });
            if let Some(&id) = l.by_pid.get(&pid) {
                l.set_parent(id, d);
            }
        }
        inferred
    }
}

impl Design for CowContext {
    fn name(&self) -> &'static str {
        "cow_context"
    }

    fn event(&mut self, e: &Event) {
        match e {
            Event::Fork {
                tgid,
                child_tgid,
                comm,
                ..
            } if tgid != child_tgid => self.lineage.fork(*tgid, *child_tgid, comm.text()),
            Event::Exec { tgid, comm, .. } => self.lineage.exec(*tgid, comm.text()),
            Event::Exit { tgid, comm, .. } => self.lineage.exit(*tgid, comm.text()),
            _ => {}
        }
    }

    fn begin(&mut self, facts: &Facts) {
        self.shift = page_shift(facts);
        self.lineage.walk += 1;
        self.procs.clear();
        self.cur = None;
        self.no_pgoff = 0;
    }

    fn vma(&mut self, v: &Vma) {
        // A walk gives a process's VMAs one after the other: collect them
        // apart and file them when the next process comes (no lookup per
        // VMA).
        if self.cur.as_ref().is_none_or(|(t, _)| *t != v.tgid) {
            self.flush();
            self.cur = Some((v.tgid, self.procs.remove(&v.tgid).unwrap_or_default()));
        }
        let Some((_, p)) = self.cur.as_mut() else {
            return;
        };
        if v.ppid != 0 {
            p.ppid = v.ppid;
        }
        if v.anon_vma == 0 {
            return;
        }
        if v.av_root != 0
            && v.av_root != v.anon_vma
            && p.roots.len() < ROOTS_KEPT
            && !p.roots.contains(&v.av_root)
        {
            p.roots.push(v.av_root);
        }
        if v.pgoff.is_none() {
            self.no_pgoff += 1;
            return;
        }
        let Some(r) = remap(v, self.shift) else {
            return;
        };
        match r {
            Remap::MovedAnon => p.moved += 1,
            Remap::Stack => p.stacks += 1,
            Remap::PrivateFile => p.files += 1,
        }
        let pgoff = v.pgoff.unwrap_or(0);
        let pages = (v.end.saturating_sub(v.start) >> self.shift).max(1);
        let offset = (v.start >> self.shift).wrapping_sub(pgoff);
        p.ranges
            .push((pgoff, pgoff.saturating_add(pages - 1), offset));
    }

    fn end(&mut self, w: &Walked<'_>) -> Outcome {
        self.flush();
        let inferred = self.reconcile(w);
        let ctx_slot = kmalloc_slot(w.facts, self.opts.context_bytes);
        let node_slot = u64::from(w.facts.slots.maple_node.unwrap_or(256));
        let per_node = u64::from(self.opts.entries_per_node.max(1));
        let l = &self.lineage;
        let mut processes = BTreeMap::new();
        let mut system = Holding::default();
        let (mut moved, mut stacks, mut files, mut arrays_n) = (0, 0, 0, 0);
        for &pid in w.procs.keys() {
            let mut ranges = Vec::new();
            if let Some(pw) = self.procs.get_mut(&pid) {
                ranges = std::mem::take(&mut pw.ranges);
                moved += pw.moved;
                stacks += pw.stacks;
                files += pw.files;
            }
            let forked = l
                .by_pid
                .get(&pid)
                .and_then(|id| l.ctxs.get(id))
                .is_some_and(|c| c.forked);
            let mut h = Holding::default();
            h.add("cow_context", 1, ctx_slot);
            let (n, arrays) = entries(&ranges, forked && self.opts.fork_readd_arrays);
            h.add("remap_entry", n, 0);
            h.add("maple_node", n.div_ceil(per_node), node_slot);
            h.add("offset_array", 0, 0);
            for (cap, k) in arrays {
                arrays_n += k;
                h.add("offset_array", k, kmalloc_slot(w.facts, 8 + 8 * cap));
            }
            system.merge(&h);
            processes.insert(pid, h);
        }
        // Dead contexts: the struct alone (exit removed their entries).
        let dead: Vec<(&u64, &Ctx)> = l.ctxs.iter().filter(|(_, c)| !c.alive).collect();
        system.add("cow_context", dead.len() as u64, ctx_slot);
        let mut pinners: HashMap<u64, Vec<u32>> = HashMap::new();
        for c in l.ctxs.values().filter(|c| c.alive) {
            let mut up = c.parent;
            while let Some(p) = up {
                let Some(pc) = l.ctxs.get(&p) else { break };
                if !pc.alive {
                    pinners.entry(p).or_default().push(c.pid);
                }
                up = pc.parent;
            }
        }
        let mut pinned: Vec<Pinned> = dead
            .iter()
            .map(|(id, c)| {
                let mut by = pinners.remove(id).unwrap_or_default();
                by.sort_unstable();
                Pinned {
                    pid: c.pid,
                    comm: c.comm.clone(),
                    pinners: by.len() as u64,
                    pinned_by: by.into_iter().take(PINNERS_SHOWN).collect(),
                }
            })
            .collect();
        pinned.sort_by(|a, b| (b.pinners, a.pid).cmp(&(a.pinners, b.pid)));
        let inferred_now = l.ctxs.values().filter(|c| c.inferred).count();
        let remaps = system.count("remap_entry");
        let mut blind_spots = vec![
            "the PoC adds a cow_context pointer to every anonymous folio; whether struct \
             page grows with it is unknown: not counted"
                .to_owned(),
            format!(
                "maple nodes are estimated at {per_node} entries per 256 B node; a tree \
                 with gaps between ranges may use more, and nodes a dead context keeps \
                 are not counted"
            ),
            "contexts kept only by anonymous folios' references (no live descendant \
             context) are not seen"
                .to_owned(),
            "at the seeding walk, dead ancestors are inferred from anon_vma trees whose \
             maker no live process is: several dead generations in a row, or a dead \
             ancestor without anonymous memory, count as at most one"
                .to_owned(),
        ];
        if self.no_pgoff > 0 {
            blind_spots.push(format!(
                "{} faulted VMAs came without vm_pgoff (a recording before stream 1.2): \
                 their remap entries are not counted",
                self.no_pgoff
            ));
        }
        Outcome {
            name: self.name().into(),
            rules: vec![
                format!(
                    "one context per live mm: {} ({} B struct in kmalloc's {ctx_slot} B slot); \
                     no anon_vma, no AVC (the target design: the PoC at a4ac196 still \
                     allocates both beside it)",
                    w.procs.len(),
                    self.opts.context_bytes
                ),
                format!(
                    "dead contexts kept by live descendants through fork-without-exec links: \
                     {} ({} inferred at the seeding walk{})",
                    dead.len(),
                    inferred_now,
                    if inferred > 0 { ", this walk" } else { "" }
                ),
                format!(
                    "remap entries: {remaps} ({moved} ranges of moved anonymous VMAs, \
                     {stacks} main stacks, {files} private file mappings with COW'd pages); \
                     pieces of ranges overlapping in pgoff count once each"
                ),
                format!(
                    "offset arrays: {arrays_n} (pieces holding several offsets{})",
                    if self.opts.fork_readd_arrays {
                        ", and every entry of a context that forked: the PoC's fork \
                         re-adds the parent's offsets"
                    } else {
                        ""
                    }
                ),
                format!(
                    "maple nodes: ceil(entries / {per_node}) per context with entries, \
                     {node_slot} B each"
                ),
            ],
            blind_spots,
            options: vec![
                ModelOption {
                    name: "cow_context_bytes".into(),
                    value: self.opts.context_bytes.to_string(),
                    affects: "bytes of every context".into(),
                },
                ModelOption {
                    name: "maple_entries_per_node".into(),
                    value: per_node.to_string(),
                    affects: "maple_node objects".into(),
                },
                ModelOption {
                    name: "fork_readd_arrays".into(),
                    value: self.opts.fork_readd_arrays.to_string(),
                    affects: "offset arrays of contexts that forked".into(),
                },
                ModelOption {
                    name: "infer_dead_at_seed".into(),
                    value: self.opts.infer_dead_at_seed.to_string(),
                    affects: "dead contexts of ancestors that exited before the start".into(),
                },
            ],
            pinned: Some(pinned),
            system,
            processes,
            ..Outcome::default()
        }
    }

    fn verdict(&self, v: &Vma, facts: &Facts) -> (Holding, String) {
        let mut h = Holding::default();
        let why = match remap(v, page_shift(facts)) {
            Some(r) => {
                h.add("remap_entry", 1, 0);
                match r {
                    Remap::MovedAnon => "remap entry (moved anonymous VMA)",
                    Remap::Stack => "remap entry (main stack)",
                    Remap::PrivateFile => "remap entry (private file, COW'd pages)",
                }
            }
            None if v.anon_vma != 0 && v.pgoff.is_none() => "vm_pgoff unknown",
            None => "nothing: its pages point at the mm's context",
        };
        (h, why.to_owned())
    }
}
