//! Accounting of the actual objects: allocations and frees system-wide, per
//! call site and per process, and what a walk says of them. Pure: events
//! and walk observations in, numbers out.
//!
//! Attribution goes through ownership, not through `current`:
//! - an object belongs to the process that allocated it, except that
//!   allocations made inside a fork (flagged in-fork) belong to the child
//!   that the fork's end names, unless a walk saw the object in another
//!   process first (then the fork's end was lost or came from an earlier
//!   fork: the walk knows better);
//! - a free is charged to the object's owner, whichever task runs it
//!   (exit, ksmd, kcompactd...); objects that existed before start-up and
//!   that no walk saw have no known owner and count system-wide only.
//!
//! # Walks
//! A walk is not atomic: it visits processes one after the other while
//! they keep allocating and freeing, and events keep arriving during it
//! (`input` rule 4). Between [`Accounting::begin_walk`] and
//! [`Accounting::end_walk`], every address an event touches is "changed
//! during the walk" and is left out of the comparison of the events' live
//! objects with the walk's: for every other object both describe the same
//! moment, so the difference ([`Comparison`]) is exactly what events were
//! lost or misapplied. A walk that seeds (the first) or re-seeds (after
//! lost events) then makes the live objects the walk's, again except for
//! the addresses the events settled during the walk.
//!
//! # Retention
//! A run may last days on a machine that forks all the time: an exited
//! process stays listed for a while ([`Retention`]: by source time, and at
//! most so many), then [`Accounting::fold`] folds it into one aggregate
//! ([`Folded`]), once it owns no live object. What is kept is then bounded
//! by the live processes, the live objects and the retention.
use std::collections::{BTreeMap, VecDeque};

use rmapwatch_common::{object, site};

use crate::{
    addrmap::AddrMap,
    event::{Event, Slab},
    hash::{FastMap, FastSet},
};

/// Allocations and frees of one object kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    /// Objects allocated.
    pub allocs: u64,
    /// Objects freed.
    pub frees: u64,
}

/// System-wide totals of one object kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectTotals {
    /// Allocations and frees.
    pub flow: Flow,
    /// Allocations per site.
    pub alloc_by_site: [u64; site::COUNT],
    /// Frees per site.
    pub free_by_site: [u64; site::COUNT],
    /// Frees of objects with no known owner (allocated before start-up and
    /// not seen by the seeding walk).
    pub frees_of_preexisting: u64,
    /// Live objects with a known owner.
    pub live: u64,
}

/// One process (thread group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// tgid.
    pub pid: u32,
    /// Name (empty until known).
    pub comm: String,
    /// Parent tgid, when the fork was seen.
    pub ppid: Option<u32>,
    /// Whether the process has exited.
    pub exited: bool,
    /// When it exited (source time), if it did.
    pub exited_at: Option<u64>,
    /// Flows per object kind.
    pub flows: [Flow; object::COUNT],
    /// Live objects it owns (seeded by a walk, then event-maintained).
    pub live: [u64; object::COUNT],
    /// The walks begun before it was first seen (a walk that began
    /// before it may not have seen it).
    pub born: u64,
}

impl Process {
    /// Whether it had anon_vma/AVC traffic or owns objects (the processes
    /// reports and views list).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.flows.iter().any(|f| f.allocs + f.frees > 0) || self.live.iter().any(|&n| n > 0)
    }
}

/// What the processes folded away had: exited processes kept past their
/// retention ([`Retention`]) once they owned no live object, summed. With
/// the processes still listed it adds up to the system's flows of owned
/// objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Processes folded (those with anon_vma/AVC traffic: the others had
    /// nothing to add and are only forgotten).
    pub processes: u64,
    /// Their flows per object kind.
    pub flows: [Flow; object::COUNT],
}

/// How long exited processes stay listed before they are folded into
/// [`Folded`] (never while they own live objects: an mm still held, an
/// anon_vma a child still links to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Source time (event and tick timestamps, not the wall clock: a
    /// recording replays the same) an exited process stays listed, in ns.
    pub exited_ns: u64,
    /// At most this many exits wait for their time; past it the oldest
    /// are folded first.
    pub exited_max: usize,
}

impl Retention {
    /// Nothing is ever folded.
    pub const FOREVER: Self = Self {
        exited_ns: u64::MAX,
        exited_max: usize::MAX,
    };
}

impl Default for Retention {
    /// 60 s, 1024 exited processes.
    fn default() -> Self {
        Self {
            exited_ns: 60_000_000_000,
            exited_max: 1024,
        }
    }
}

/// The size of the accounting's state (for an exporter to watch it stay
/// bounded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Processes listed.
    pub processes: usize,
    /// Of them, exited ones not folded yet.
    pub exited_kept: usize,
    /// Of those, the ones that still own live objects (not foldable).
    pub exited_with_objects: usize,
    /// Bytes held by the owner table.
    pub owner_table_bytes: usize,
}

/// New anonymous folios per (process, VMA start), from the kernel's
/// `RMAP_VMAS` map: its current values plus those of entries the source
/// already removed from it (exited processes, so that it never fills).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RmapVmas {
    retired: BTreeMap<(u32, u64), u64>,
    current: BTreeMap<(u32, u64), u64>,
    /// Retired counts of processes folded away (and of removed entries of
    /// processes the accounting does not list).
    folded: u64,
}

impl RmapVmas {
    /// Replaces the kernel map's current contents, and adds the last values
    /// of the entries removed from it since.
    pub fn update(
        &mut self,
        current: impl IntoIterator<Item = ((u32, u64), u64)>,
        retired: impl IntoIterator<Item = ((u32, u64), u64)>,
    ) {
        self.current = current.into_iter().collect();
        for (key, n) in retired {
            let r = self.retired.entry(key).or_default();
            *r = r.saturating_add(n);
        }
    }

    /// Folds the removed entries of `tgid` into [`Self::folded`] (the
    /// process was folded away, or is not listed).
    pub fn fold(&mut self, tgid: u32) {
        let keys: Vec<(u32, u64)> = self
            .retired
            .range((tgid, 0)..=(tgid, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(n) = self.retired.remove(&k) {
                self.folded = self.folded.saturating_add(n);
            }
        }
    }

    /// New anonymous folios of the processes folded away.
    #[must_use]
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Entries held: the kernel map's, and those removed from it that are
    /// kept per process.
    #[must_use]
    pub fn entries(&self) -> usize {
        self.retired.len() + self.current.len()
    }

    /// Per process: VMA start -> new anonymous folios.
    #[must_use]
    pub fn by_process(&self) -> BTreeMap<u32, BTreeMap<u64, u64>> {
        let mut out: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
        for (&(tgid, start), &n) in self.retired.iter().chain(&self.current) {
            let c = out.entry(tgid).or_default().entry(start).or_default();
            *c = c.saturating_add(n);
        }
        out
    }
}

/// Bits of an owner-table value: the owner's tgid, the object kind, and
/// what the walk in progress said of the address.
mod bits {
    /// `rmapwatch_common::object` (one bit).
    pub const KIND: u64 = 1;
    /// Only the walk in progress knows this address (events do not): not
    /// counted live until the walk ends and keeps it.
    pub const PROVISIONAL: u64 = 2;
    /// The walk in progress saw this address.
    pub const SEEN: u64 = 4;
    /// The owner's tgid, above the flags.
    pub const TGID_SHIFT: u32 = 3;
}

/// Owner-table values hold a tgid (at most 22 bits: `pid_max` is at most
/// 4M) and three flags.
type Owners = AddrMap<25>;

fn owner_value(tgid: u32, obj: u32) -> u64 {
    u64::from(tgid) << bits::TGID_SHIFT | u64::from(obj) & bits::KIND
}

fn owner_of(v: u64) -> (u32, u32) {
    (
        u32::try_from(v >> bits::TGID_SHIFT).unwrap_or(u32::MAX),
        (v & bits::KIND) as u32,
    )
}

/// An allocation made inside a fork, waiting for the fork's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    ptr: u64,
    obj: u32,
    /// The process a walk saw it in, if one did.
    seen_in: Option<u32>,
    /// Walks begun when it was allocated.
    epoch: u64,
    /// The process whose thread allocated it (the forking parent).
    tgid: u32,
}

/// What a walk does besides comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkKind {
    /// Only compares.
    Refresh,
    /// The first walk: the live objects become the walk's (but for what
    /// events settled during it). Fork allocations still waiting for their
    /// end stay the events' (the end is never lost before the first walk:
    /// the source attaches it first).
    Seed,
    /// After lost events: as a seed, and fork allocations still waiting
    /// from before the walk are settled by it (their end may have been
    /// lost): those it saw become its, the others are forgotten.
    Reseed,
}

/// The walk in progress.
#[derive(Debug)]
struct Window {
    /// What it does.
    kind: WalkKind,
    /// Its number ([`Pending::epoch`] of what is allocated during it).
    epoch: u64,
    /// Addresses events touched since the walk began.
    changed: FastSet<u64>,
    /// Addresses the walk saw owned by another process or as another kind
    /// than the events say: the walk's owner value.
    moved: FastMap<u64, u64>,
}

impl Window {
    fn reconcile(&self) -> bool {
        self.kind != WalkKind::Refresh
    }
}

/// Live objects (events) against a walk, over the objects that did not
/// change during it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Events' live minus the walk's, per object kind, system-wide.
    pub drift: [i64; object::COUNT],
    /// The same per process, where not zero.
    pub by_process: BTreeMap<u32, [i64; object::COUNT]>,
    /// Addresses left out because events changed them during the walk.
    pub changed_during_walk: u64,
    /// Whether the walk made the live objects its own (seed or re-seed).
    pub reconciled: bool,
}

/// The accounting state.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Totals per object kind.
    pub objects: [ObjectTotals; object::COUNT],
    /// Processes seen, by tgid.
    pub processes: BTreeMap<u32, Process>,
    /// Events applied.
    pub events: u64,
    /// Live objects with a known owner: address -> owner (8 bytes a slot:
    /// it holds every anon_vma and AVC of the system).
    owners: Owners,
    /// Allocations made inside a fork, waiting for the child, by thread.
    pending: FastMap<u32, Vec<Pending>>,
    /// Processes first seen without a name (the source looks them up).
    unnamed: Vec<u32>,
    window: Option<Window>,
    /// Walks begun.
    epoch: u64,
    /// What the processes folded away had.
    pub folded: Folded,
    /// The source's time of the latest input ([`Self::set_now`]).
    now: u64,
    /// Exits waiting for their retention, oldest first: (tgid, time).
    exits: VecDeque<(u32, u64)>,
    /// Of those, the entries of lives already gone (their pid was reused
    /// and the earlier life folded at once): not counted toward the cap.
    stale_exits: usize,
    /// Objects still held by earlier lives of reused pids (an mm kept past
    /// its pid): address -> kind. Live system-wide, no process's; their
    /// frees go to the folded aggregate.
    earlier: FastMap<u64, u32>,
    /// Exited processes past their retention that still own live objects.
    held: FastSet<u32>,
    /// Of those, the ones whose last live object was freed since: (tgid,
    /// exit time).
    ready: Vec<(u32, u64)>,
    /// Processes folded away since the last [`Self::take_folded`].
    folded_pids: Vec<u32>,
}

impl Accounting {
    /// Applies one event.
    pub fn apply(&mut self, e: &Event) {
        self.events += 1;
        match e {
            Event::Alloc(s) => self.alloc(s),
            Event::Free(s) => self.free(s),
            Event::Fork {
                tid,
                tgid,
                child_tgid,
                comm,
                ..
            } => self.fork(*tid, *tgid, *child_tgid, comm.text()),
            Event::Exec { tgid, comm, .. } => {
                self.process(*tgid).comm = comm.text();
            }
            Event::Exit { tgid, comm, .. } => {
                // A process that never had traffic is not listed for its
                // exit alone (every exit of the system would be).
                let Some(p) = self.processes.get_mut(tgid) else {
                    return;
                };
                if p.comm.is_empty() {
                    p.comm = comm.text();
                }
                if !p.exited {
                    p.exited = true;
                    p.exited_at = Some(self.now);
                    self.exits.push_back((*tgid, self.now));
                }
            }
            // Time, not objects: the engine's time book.
            Event::LockWait(_)
            | Event::ForkTime { .. }
            | Event::ForkWork { .. }
            | Event::RmapWalk { .. } => {}
        }
    }

    /// Who owns the live object at `ptr`, and its kind
    /// (`rmapwatch_common::object`).
    #[must_use]
    pub fn owner(&self, ptr: u64) -> Option<(u32, u32)> {
        self.owners
            .get(ptr)
            .map(|v| owner_of(v & !(bits::SEEN | bits::PROVISIONAL)))
    }

    /// The source's time now (event batches and ticks): exits are
    /// timestamped with it.
    pub fn set_now(&mut self, t: u64) {
        self.now = self.now.max(t);
    }

    /// Folds exited processes past `r` into [`Self::folded`]: the oldest
    /// exits first, once their time is up or too many wait; a process that
    /// still owns live objects waits until they are freed. Not during a
    /// walk (it may still give objects to them). Amortised constant time
    /// per exit.
    pub fn fold(&mut self, r: Retention) {
        if self.window.is_some() {
            return;
        }
        for (pid, t) in std::mem::take(&mut self.ready) {
            match self.processes.get(&pid) {
                Some(p) if p.exited_at == Some(t) && p.live == [0; object::COUNT] => {
                    self.fold_one(pid);
                }
                // A walk gave it objects again.
                Some(p) if p.exited_at == Some(t) => {
                    self.held.insert(pid);
                }
                _ => {}
            }
        }
        while let Some(&(pid, t)) = self.exits.front() {
            let waiting = self.exits.len() - self.stale_exits;
            if waiting <= r.exited_max && self.now.saturating_sub(t) < r.exited_ns {
                break;
            }
            self.exits.pop_front();
            match self.processes.get(&pid) {
                Some(p) if p.exited_at == Some(t) => {
                    if p.live == [0; object::COUNT] {
                        self.fold_one(pid);
                    } else {
                        self.held.insert(pid);
                    }
                }
                // A later life of the pid (the earlier one folded when the
                // pid was reused), or gone already.
                _ => self.stale_exits = self.stale_exits.saturating_sub(1),
            }
        }
    }

    fn fold_one(&mut self, pid: u32) {
        self.held.remove(&pid);
        let Some(p) = self.processes.remove(&pid) else {
            return;
        };
        if p.is_active() {
            self.folded.processes += 1;
            for (f, pf) in self.folded.flows.iter_mut().zip(p.flows) {
                f.allocs += pf.allocs;
                f.frees += pf.frees;
            }
        }
        self.folded_pids.push(pid);
    }

    /// Processes folded away since the last call (their other state, such
    /// as the rmap counts, follows them).
    pub fn take_folded(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.folded_pids)
    }

    /// The size of the state.
    #[must_use]
    pub fn state_size(&self) -> StateSize {
        let exited = self.processes.values().filter(|p| p.exited);
        let (kept, with_objects) = exited.fold((0, 0), |(k, w), p| {
            (k + 1, w + usize::from(p.live != [0; object::COUNT]))
        });
        StateSize {
            processes: self.processes.len(),
            exited_kept: kept,
            exited_with_objects: with_objects,
            owner_table_bytes: self.owner_table_bytes(),
        }
    }

    /// An event is about to change `ptr`: during a walk, the address leaves
    /// the comparison, and what only the walk knew of it is dropped (the
    /// event is newer).
    fn touch(&mut self, ptr: u64) {
        let Some(w) = &mut self.window else {
            return;
        };
        if !w.changed.insert(ptr) {
            return;
        }
        w.moved.remove(&ptr);
        if self
            .owners
            .get(ptr)
            .is_some_and(|v| v & bits::PROVISIONAL != 0)
        {
            self.owners.remove(ptr);
        }
    }

    fn alloc(&mut self, s: &Slab) {
        let (obj, site_) = (s.object as usize, s.site as usize);
        let t = &mut self.objects[obj];
        t.flow.allocs += 1;
        t.alloc_by_site[site_] += 1;
        // Inside fork the current task is the parent; the child is named by
        // the fork's end, from the same thread.
        if s.in_fork {
            let epoch = self.epoch;
            self.pending.entry(s.tid).or_default().push(Pending {
                ptr: s.ptr,
                obj: s.object,
                seen_in: None,
                epoch,
                tgid: s.tgid,
            });
        } else {
            self.touch(s.ptr);
            self.own(s.ptr, s.tgid, s.object);
        }
    }

    fn own(&mut self, ptr: u64, tgid: u32, obj: u32) {
        self.process(tgid).flows[obj as usize].allocs += 1;
        self.set_owner(ptr, tgid, obj);
    }

    /// Records `ptr` as live and owned by `tgid`. An address that is already
    /// live lost its free (or the walk that seeded it saw it after its
    /// allocation event was queued): it is not counted twice.
    fn set_owner(&mut self, ptr: u64, tgid: u32, obj: u32) {
        if let Some(old) = self.owners.insert(ptr, owner_value(tgid, obj))
            && old & bits::PROVISIONAL == 0
        {
            let (old, old_obj) = owner_of(old);
            self.drop_live(old, old_obj);
        }
        self.process(tgid).live[obj as usize] += 1;
        self.objects[obj as usize].live += 1;
    }

    fn drop_live(&mut self, tgid: u32, obj: u32) {
        if let Some(p) = self.processes.get_mut(&tgid) {
            p.live[obj as usize] = p.live[obj as usize].saturating_sub(1);
            // Its last object: an exited process that waited for it can go.
            if let Some(t) = p.exited_at
                && p.live == [0; object::COUNT]
                && self.held.remove(&tgid)
            {
                self.ready.push((tgid, t));
            }
        }
        let t = &mut self.objects[obj as usize];
        t.live = t.live.saturating_sub(1);
    }

    fn free(&mut self, s: &Slab) {
        // The kind of a known object is the one it was allocated (or seen)
        // as: kernels whose free tracepoint has no cache pointer (5.10)
        // only give a guess by call site.
        let entry = self.owners.remove(s.ptr);
        let earlier = if entry.is_none() {
            self.earlier.remove(&s.ptr)
        } else {
            None
        };
        // What only the walk in progress saw (its owner, never counted
        // live): freed during the walk, it is no one's live object to drop.
        let seen_only = entry.filter(|v| v & bits::PROVISIONAL != 0).map(owner_of);
        let owned = entry.filter(|v| v & bits::PROVISIONAL == 0).map(owner_of);
        let pending = if owned.is_none() {
            self.take_pending(s.tid, s.ptr)
        } else {
            None
        };
        let obj = owned
            .map(|(_, o)| o)
            .or(pending.as_ref().map(|p| p.obj))
            .or(seen_only.map(|(_, o)| o))
            .or(earlier)
            .unwrap_or(s.object) as usize;
        let site_ = s.site as usize;
        let t = &mut self.objects[obj];
        t.flow.frees += 1;
        t.free_by_site[site_] += 1;
        self.touch(s.ptr);
        match (owned, pending, seen_only) {
            (Some((owner, owned_obj)), _, _) => {
                self.process(owner).flows[obj].frees += 1;
                self.drop_live(owner, owned_obj);
            }
            // An allocation still pending (fork failed after dup_mmap).
            (None, Some(Pending { tgid, .. }), _) => {
                let p = self.process(tgid);
                p.flows[obj].allocs += 1;
                p.flows[obj].frees += 1;
            }
            // Older than start-up, seen by the walk in progress: its owner
            // is known, as for a seeded object.
            (None, None, Some((owner, _))) => self.process(owner).flows[obj].frees += 1,
            // An earlier life's, of a reused pid: live, and folded.
            (None, None, None) if earlier.is_some() => {
                self.folded.flows[obj].frees += 1;
                let t = &mut self.objects[obj];
                t.live = t.live.saturating_sub(1);
            }
            // An object older than start-up.
            (None, None, None) => self.objects[obj].frees_of_preexisting += 1,
        }
    }

    /// Takes the fork allocation waiting at `ptr` for its fork's end: from
    /// thread `tid`'s list when it holds it (recordings before ABI 10 name
    /// the freeing thread), else from whichever thread's does. Frees carry
    /// no task since ABI 10; a fork that fails frees what it allocated in
    /// the same thread, and an address waits in one list at a time, as a
    /// free takes it out before it can be allocated again (after lost
    /// events two lists may hold it until the re-seed, as for the walk's
    /// `pending_at`: then either is taken). A scan of what waits (the forks
    /// in progress), only for a free of an address no process owns.
    fn take_pending(&mut self, tid: u32, ptr: u64) -> Option<Pending> {
        let at = |l: &Vec<Pending>| l.iter().position(|p| p.ptr == ptr);
        let (holder, pos) = match self.pending.get(&tid).and_then(at) {
            Some(pos) => (tid, pos),
            None => self.pending.iter().find_map(|(&t, l)| Some((t, at(l)?)))?,
        };
        let list = self.pending.get_mut(&holder)?;
        let taken = list.swap_remove(pos);
        if list.is_empty() {
            self.pending.remove(&holder);
        }
        Some(taken)
    }

    fn fork(&mut self, tid: u32, parent: u32, child_tgid: u32, comm: String) {
        let pending = self.pending.remove(&tid).unwrap_or_default();
        if child_tgid != parent {
            // A reused pid starts a new life: the previous one is folded at
            // once, whatever its retention. What it still owns (an mm held
            // past its pid) is set aside, not the new life's: the owner
            // table knows objects by tgid alone.
            let earlier = self
                .processes
                .get(&child_tgid)
                .filter(|p| p.exited)
                .map(|p| p.live != [0; object::COUNT]);
            if let Some(owns) = earlier {
                // Its exit still waits unless it was held past it.
                if !self.held.contains(&child_tgid) {
                    self.stale_exits += 1;
                }
                if owns {
                    self.set_aside(child_tgid);
                }
                self.fold_one(child_tgid);
            }
            let epoch = self.epoch;
            let child = self.processes.entry(child_tgid).or_insert_with(|| Process {
                born: epoch,
                ..Process::default()
            });
            child.pid = child_tgid;
            child.comm = comm;
            child.ppid = Some(parent);
            self.process(parent);
        }
        for p in pending {
            // A walk that saw the object in another process knows better:
            // this fork's end is not the one of the fork that allocated it
            // (that one was lost, or came before rmapwatch attached).
            let owner = p.seen_in.unwrap_or(child_tgid);
            self.touch(p.ptr);
            self.own(p.ptr, owner, p.obj);
        }
    }

    /// Moves what `tgid` owns to [`Self::earlier`] (its pid is being
    /// reused). A scan of the owner table: only for a reused pid whose
    /// earlier life still holds objects.
    fn set_aside(&mut self, tgid: u32) {
        let earlier = &mut self.earlier;
        self.owners.update_all(|addr, v| {
            let (owner, obj) = owner_of(v);
            if owner == tgid && v & bits::PROVISIONAL == 0 {
                earlier.insert(addr, obj);
                return None;
            }
            Some(v)
        });
        if let Some(p) = self.processes.get_mut(&tgid) {
            p.live = [0; object::COUNT];
        }
    }

    fn process(&mut self, tgid: u32) -> &mut Process {
        let unnamed = &mut self.unnamed;
        let born = self.epoch;
        self.processes.entry(tgid).or_insert_with(|| {
            unnamed.push(tgid);
            Process {
                pid: tgid,
                born,
                ..Process::default()
            }
        })
    }

    /// After a walk that re-seeded the live counts (events were lost):
    /// listed processes it did not find, that own nothing and were listed
    /// before it began, are gone, their exit among the lost events. They
    /// are marked exited now, and folded as any other exited process (else
    /// they would stay listed for ever). Returns how many.
    pub fn exits_lost(&mut self, seen: impl Fn(u32) -> bool) -> u64 {
        let (epoch, now) = (self.epoch, self.now);
        let mut n = 0;
        for p in self.processes.values_mut() {
            if !p.exited && p.born < epoch && p.live == [0; object::COUNT] && !seen(p.pid) {
                p.exited = true;
                p.exited_at = Some(now);
                self.exits.push_back((p.pid, now));
                n += 1;
            }
        }
        n
    }

    /// Processes seen since the last call whose name is still unknown.
    pub fn take_unnamed(&mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.unnamed);
        v.retain(|pid| self.processes.get(pid).is_some_and(|p| p.comm.is_empty()));
        v
    }

    /// Sets a process's name (looked up by the source).
    pub fn set_comm(&mut self, tgid: u32, comm: String) {
        if let Some(p) = self.processes.get_mut(&tgid) {
            p.comm = comm;
        }
    }

    /// A process's name (empty if unknown or folded away).
    #[must_use]
    pub fn comm(&self, tgid: u32) -> String {
        self.processes
            .get(&tgid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    }

    /// Names processes a walk found (where not named yet).
    pub fn name_existing(&mut self, comms: impl IntoIterator<Item = (u32, String)>) {
        for (tgid, comm) in comms {
            if let Some(p) = self.processes.get_mut(&tgid)
                && p.comm.is_empty()
            {
                p.comm = comm;
            }
        }
    }

    /// Sets the parent of listed processes whose fork was not seen.
    pub fn parents_existing(&mut self, parents: impl IntoIterator<Item = (u32, u32)>) {
        for (tgid, ppid) in parents {
            if let Some(p) = self.processes.get_mut(&tgid)
                && p.ppid.is_none()
            {
                p.ppid = Some(ppid);
            }
        }
    }

    /// Makes room for `n` more owned objects at once (a growing table
    /// briefly holds its old and new slots).
    pub fn reserve_owners(&mut self, n: usize) {
        self.owners.reserve(n);
    }

    /// Bytes held by the owner table.
    #[must_use]
    pub fn owner_table_bytes(&self) -> usize {
        self.owners.heap_bytes()
    }

    /// Live objects per kind, system-wide.
    #[must_use]
    pub fn live(&self) -> [u64; object::COUNT] {
        [
            self.objects[object::ANON_VMA as usize].live,
            self.objects[object::AVC as usize].live,
        ]
    }

    /// A walk begins.
    pub fn begin_walk(&mut self, kind: WalkKind) {
        self.epoch += 1;
        self.window = Some(Window {
            kind,
            epoch: self.epoch,
            changed: FastSet::default(),
            moved: FastMap::default(),
        });
    }

    /// Whether a walk is in progress.
    #[must_use]
    pub fn in_walk(&self) -> bool {
        self.window.is_some()
    }

    /// The walk in progress saw `ptr` (an object of kind `obj`) owned by
    /// `tgid`.
    pub fn walk_object(&mut self, ptr: u64, tgid: u32, obj: u32) {
        let Some(w) = &mut self.window else {
            return;
        };
        if w.changed.contains(&ptr) {
            return;
        }
        let seen = owner_value(tgid, obj);
        match self.owners.get(ptr) {
            Some(v) if v & bits::SEEN != 0 => {} // twice in one walk: the first holds
            Some(v) => {
                if v & !(bits::SEEN | bits::PROVISIONAL) != seen {
                    w.moved.insert(ptr, seen);
                }
                self.owners.insert(ptr, v | bits::SEEN);
            }
            None => {
                self.owners
                    .insert(ptr, seen | bits::SEEN | bits::PROVISIONAL);
            }
        }
    }

    /// The walk in progress failed: forget what it said.
    pub fn abort_walk(&mut self) {
        if self.window.take().is_some() {
            self.owners.update_all(|_, v| {
                (v & bits::PROVISIONAL == 0).then_some(v & !(bits::SEEN | bits::PROVISIONAL))
            });
        }
    }

    /// The walk ended: compares, and reconciles if it seeds. `None` if no
    /// walk was in progress.
    pub fn end_walk(&mut self) -> Option<Comparison> {
        let w = self.window.take()?;
        let mut cmp = Comparison {
            changed_during_walk: w.changed.len() as u64,
            reconciled: w.reconcile(),
            ..Comparison::default()
        };
        // Allocations inside forks still waiting for their end: a walk that
        // saw one knows its process; they are the events' to settle.
        let mut pending_at: FastMap<u64, (u32, usize)> = FastMap::default();
        for (&tid, list) in &self.pending {
            for (i, p) in list.iter().enumerate() {
                pending_at.insert(p.ptr, (tid, i));
            }
        }
        let mut diff: BTreeMap<u32, [i64; object::COUNT]> = BTreeMap::new();
        let mut bump = |tgid: u32, obj: u32, by: i64| {
            diff.entry(tgid).or_default()[obj as usize & 1] += by;
        };
        let mut gained: Vec<(u32, u32)> = Vec::new();
        let mut lost: Vec<(u32, u32)> = Vec::new();
        let mut seen_pending: Vec<(u64, u32)> = Vec::new();
        let reconcile = w.reconcile();
        let reseed = w.kind == WalkKind::Reseed;
        let pending = &self.pending;
        let earlier = &mut self.earlier;
        // Earlier lives' objects a seeding walk found in a process: its.
        let mut earlier_found: Vec<u32> = Vec::new();
        self.owners.update_all(|addr, v| {
            let clean = v & !(bits::SEEN | bits::PROVISIONAL);
            let (tgid, obj) = owner_of(v);
            if w.changed.contains(&addr) {
                return (v & bits::PROVISIONAL == 0).then_some(clean);
            }
            if v & bits::PROVISIONAL != 0 {
                if let Some(&(tid, i)) = pending_at.get(&addr) {
                    seen_pending.push((addr, tgid));
                    // A re-seed settles allocations waiting from before it
                    // began: the walk's. (Those of a fork in flight during
                    // it are the events'.)
                    let old = reseed
                        && pending
                            .get(&tid)
                            .and_then(|l| l.get(i))
                            .is_some_and(|p| p.epoch < w.epoch);
                    if !old {
                        return None;
                    }
                    gained.push((tgid, obj));
                    return Some(clean);
                }
                // Only the walk knows it.
                bump(tgid, obj, -1);
                if reconcile {
                    if let Some(o) = earlier.remove(&addr) {
                        earlier_found.push(o);
                    }
                    gained.push((tgid, obj));
                    return Some(clean);
                }
                return None;
            }
            if v & bits::SEEN != 0 {
                if let Some(&walk) = w.moved.get(&addr) {
                    let (wt, wo) = owner_of(walk);
                    bump(tgid, obj, 1);
                    bump(wt, wo, -1);
                    if reconcile {
                        lost.push((tgid, obj));
                        gained.push((wt, wo));
                        return Some(walk);
                    }
                }
                return Some(clean);
            }
            // Only the events know it.
            bump(tgid, obj, 1);
            if reconcile {
                lost.push((tgid, obj));
                return None;
            }
            Some(clean)
        });
        for (tgid, obj) in lost {
            self.drop_live(tgid, obj);
        }
        // Counted live once already (set aside), and now gained again.
        let mut unlive = |obj: u32| {
            let t = &mut self.objects[obj as usize];
            t.live = t.live.saturating_sub(1);
        };
        earlier_found.into_iter().for_each(&mut unlive);
        if reseed {
            // Their frees may be among the lost events, and no walk can
            // see an mm without a task: the walk's count stands.
            std::mem::take(&mut self.earlier)
                .into_values()
                .for_each(&mut unlive);
        }
        for (tgid, obj) in gained {
            self.process(tgid).live[obj as usize] += 1;
            self.objects[obj as usize].live += 1;
        }
        for (ptr, tgid) in seen_pending {
            if let Some(&(tid, i)) = pending_at.get(&ptr)
                && let Some(p) = self.pending.get_mut(&tid).and_then(|l| l.get_mut(i))
            {
                p.seen_in = Some(tgid);
            }
        }
        if reseed {
            // Settled by this walk (adopted above, or gone: their frees or
            // their fork's end were lost): only allocations made during it
            // keep waiting.
            for list in self.pending.values_mut() {
                list.retain(|p| p.epoch >= w.epoch);
            }
            self.pending.retain(|_, l| !l.is_empty());
        }
        diff.retain(|_, d| *d != [0; object::COUNT]);
        for d in diff.values() {
            cmp.drift[0] += d[0];
            cmp.drift[1] += d[1];
        }
        cmp.by_process = diff;
        Some(cmp)
    }
}

#[cfg(test)]
mod tests {
    use rmapwatch_common::site;

    use super::*;
    use crate::event::Comm;

    const AV: u32 = object::ANON_VMA;
    const AVC: u32 = object::AVC;

    fn alloc(obj: u32, s: u32, tgid: u32, ptr: u64, in_fork: bool) -> Event {
        Event::alloc(obj, s, tgid, ptr, in_fork)
    }

    fn free(obj: u32, s: u32, tgid: u32, ptr: u64) -> Event {
        Event::free(obj, s, tgid, ptr)
    }

    fn fork(parent: u32, child: u32) -> Event {
        Event::fork(parent, child, "kid")
    }

    /// Seeds objects as a first walk would: `(address, owner, kind)`.
    fn seeded(objects: &[(u64, u32, u32)]) -> Accounting {
        let mut a = Accounting::default();
        a.begin_walk(WalkKind::Seed);
        for &(p, t, k) in objects {
            a.walk_object(p, t, k);
        }
        let cmp = a.end_walk().unwrap();
        assert_eq!(
            cmp.drift,
            [
                -(objects.iter().filter(|o| o.2 == AV).count() as i64),
                -(objects.iter().filter(|o| o.2 == AVC).count() as i64)
            ]
        );
        a
    }

    #[test]
    fn fork_time_allocations_belong_to_the_child() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 10, 0x40, false));
        a.apply(&alloc(AVC, site::PREPARE, 10, 0x80, false));
        a.apply(&alloc(AVC, site::CLONE, 10, 0xc0, true));
        a.apply(&alloc(AV, site::FORK, 10, 0x100, true));
        a.apply(&alloc(AVC, site::FORK, 10, 0x140, true));
        a.apply(&fork(10, 11));
        let parent = &a.processes[&10];
        let child = &a.processes[&11];
        assert_eq!(parent.flows[AV as usize].allocs, 1);
        assert_eq!(parent.flows[AVC as usize].allocs, 1);
        assert_eq!(child.flows[AV as usize].allocs, 1);
        assert_eq!(child.flows[AVC as usize].allocs, 2);
        assert_eq!(child.comm, "kid");
        assert_eq!(child.ppid, Some(10));
        assert_eq!(a.objects[AVC as usize].flow.allocs, 3);
        assert_eq!(
            a.objects[AVC as usize].alloc_by_site[site::CLONE as usize],
            1
        );
    }

    #[test]
    fn a_free_counts_as_the_kind_the_object_was_allocated_as() {
        // 5.10's free tracepoint has no cache pointer: the programs guess
        // the kind by call site (anon_vma at __put_anon_vma, AVC
        // elsewhere); a known object keeps its own kind.
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::FORK, 10, 0x40, true));
        a.apply(&fork(10, 11));
        a.apply(&alloc(AVC, site::PREPARE, 11, 0x80, false));
        // Freed where anon_vmas are not freed (an error path): guessed AVC.
        a.apply(&free(AVC, site::FORK, 11, 0x40));
        assert_eq!(a.live(), [0, 1]);
        assert_eq!(a.objects[AV as usize].flow.frees, 1);
        assert_eq!(a.objects[AVC as usize].flow.frees, 0);
        assert_eq!(a.objects[AV as usize].free_by_site[site::FORK as usize], 1);
        assert_eq!(a.processes[&11].flows[AV as usize].frees, 1);
        assert_eq!(a.processes[&11].flows[AVC as usize].frees, 0);
        // An AVC guessed as an anon_vma.
        a.apply(&free(AV, site::PUT, 11, 0x80));
        assert_eq!(a.live(), [0, 0]);
        assert_eq!(a.objects[AVC as usize].flow.frees, 1);
        assert_eq!(a.processes[&11].flows[AVC as usize].frees, 1);
        // An object older than start-up keeps the guess.
        a.apply(&free(AV, site::PUT, 11, 0xc0));
        assert_eq!(a.objects[AV as usize].frees_of_preexisting, 1);
    }

    #[test]
    fn a_failed_forks_allocations_freed_without_a_task_stay_the_parents() {
        // Frees carry no task since ABI 10 (tid and tgid 0); recordings
        // before it name the freeing thread. Either way a fork that failed
        // after dup_mmap hands what it freed to the thread that forked, and
        // another thread's fork in progress keeps its own.
        for freeing in [0, 10] {
            let mut a = Accounting::default();
            a.apply(&alloc(AV, site::FORK, 10, 0x40, true));
            a.apply(&alloc(AVC, site::FORK, 10, 0x80, true));
            a.apply(&alloc(AVC, site::FORK, 20, 0xc0, true));
            a.apply(&free(AV, site::PUT, freeing, 0x40));
            a.apply(&free(AVC, site::FORK, freeing, 0x80));
            let parent = &a.processes[&10];
            assert_eq!(parent.flows[AV as usize].allocs, 1, "tid {freeing}");
            assert_eq!(parent.flows[AV as usize].frees, 1, "tid {freeing}");
            assert_eq!(parent.flows[AVC as usize].allocs, 1, "tid {freeing}");
            assert_eq!(parent.flows[AVC as usize].frees, 1, "tid {freeing}");
            assert!(!a.processes.contains_key(&0), "tid {freeing}");
            assert_eq!(a.objects[AV as usize].frees_of_preexisting, 0);
            assert_eq!(a.objects[AVC as usize].frees_of_preexisting, 0);
            a.apply(&fork(20, 21));
            a.apply(&fork(10, 11));
            assert_eq!(a.processes[&21].flows[AVC as usize].allocs, 1);
            assert_eq!(
                a.processes[&11].flows[AV as usize].allocs
                    + a.processes[&11].flows[AVC as usize].allocs,
                0
            );
            assert_eq!(a.live(), [0, 1], "tid {freeing}");
        }
    }

    #[test]
    fn clone_outside_fork_stays_with_the_current_process() {
        let mut a = Accounting::default();
        a.apply(&alloc(AVC, site::CLONE, 10, 0x40, false));
        a.apply(&fork(10, 11));
        assert_eq!(a.processes[&10].flows[AVC as usize].allocs, 1);
        assert_eq!(a.processes[&11].flows[AVC as usize].allocs, 0);
    }

    #[test]
    fn frees_are_charged_to_the_owner_not_the_freeing_task() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 10, 0x40, false));
        // freed by a kernel thread (pid 42, e.g. ksmd)
        a.apply(&free(AV, site::PUT, 42, 0x40));
        assert_eq!(a.processes[&10].flows[0].frees, 1);
        assert!(!a.processes.contains_key(&42));
        // a preexisting object
        a.apply(&free(AV, site::PUT, 42, 0x99 * 8));
        assert_eq!(a.objects[0].frees_of_preexisting, 1);
        assert_eq!(a.objects[0].flow.frees, 2);
        assert!(a.owners.is_empty());
    }

    #[test]
    fn seeded_objects_are_live_charged_on_free_and_never_double_counted() {
        let mut a = seeded(&[(0x40, 10, AV), (0x80, 10, AVC), (0xc0, 11, AVC)]);
        a.name_existing([(10, "a".into())]);
        assert_eq!(a.processes[&10].live, [1, 1]);
        assert_eq!(a.objects[AVC as usize].live, 2);
        // an allocation event the walk already saw the object of
        a.apply(&alloc(AVC, site::PREPARE, 11, 0xc0, false));
        assert_eq!(a.objects[AVC as usize].live, 2);
        assert_eq!(a.processes[&11].live, [0, 1]);
        // a free by a kernel thread of a seeded object goes to its owner
        a.apply(&free(AVC, site::UNLINK, 77, 0x80));
        assert_eq!(a.processes[&10].live, [1, 0]);
        assert_eq!(a.processes[&10].flows[1].frees, 1);
        assert_eq!(a.objects[AVC as usize].frees_of_preexisting, 0);
        assert_eq!(a.processes[&10].comm, "a");
    }

    #[test]
    fn an_object_only_the_walk_saw_and_freed_during_it_is_not_taken_from_its_owner() {
        // The owner holds one object the events know; the seeding walk sees
        // another one, older than start-up, which is freed while the walk
        // runs (an exit, an exec): that free must not take the first one
        // from the owner's live count.
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 10, 0x40, false));
        a.begin_walk(WalkKind::Seed);
        a.walk_object(0x40, 10, AV);
        a.walk_object(0x80, 10, AV);
        a.apply(&free(AV, site::PUT, 10, 0x80));
        let cmp = a.end_walk().unwrap();
        assert_eq!(cmp.drift, [0, 0]);
        assert_eq!(a.processes[&10].live, [1, 0]);
        assert_eq!(a.live(), [1, 0]);
        // Charged to the owner the walk saw, as a seeded object's free.
        assert_eq!(a.objects[AV as usize].frees_of_preexisting, 0);
        assert_eq!(a.processes[&10].flows[AV as usize].frees, 1);
        assert_eq!(a.objects[AV as usize].flow.frees, 1);
    }

    #[test]
    fn a_walk_agreeing_with_the_events_has_no_drift_whatever_changes_during_it() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 10, 0x40, false));
        a.apply(&alloc(AVC, site::PREPARE, 10, 0x80, false));
        a.apply(&alloc(AVC, site::PREPARE, 10, 0xc0, false));
        a.begin_walk(WalkKind::Refresh);
        a.walk_object(0x80, 10, AVC);
        // Seen, then freed during the walk; allocated during the walk after
        // the walk passed its VMA (never seen); allocated and seen.
        a.apply(&free(AVC, site::UNLINK, 10, 0x80));
        a.apply(&alloc(AVC, site::PREPARE, 10, 0x100, false));
        a.apply(&alloc(AVC, site::PREPARE, 10, 0x140, false));
        a.walk_object(0x140, 10, AVC);
        a.walk_object(0xc0, 10, AVC);
        a.walk_object(0x40, 10, AV);
        let cmp = a.end_walk().unwrap();
        assert_eq!(cmp.drift, [0, 0]);
        assert!(cmp.by_process.is_empty());
        assert_eq!(cmp.changed_during_walk, 3);
        assert_eq!(a.live(), [1, 3]);
        // A refresh walk that saw something only it knows, and missed
        // something the events have: drift both ways, nothing changed.
        a.begin_walk(WalkKind::Refresh);
        a.walk_object(0x40, 10, AV);
        a.walk_object(0xc0, 10, AVC);
        a.walk_object(0x100, 10, AVC);
        a.walk_object(0x180, 12, AVC);
        let cmp = a.end_walk().unwrap();
        assert_eq!(cmp.drift, [0, 0]);
        assert_eq!(cmp.by_process[&10], [0, 1]);
        assert_eq!(cmp.by_process[&12], [0, -1]);
        assert_eq!(a.live(), [1, 3], "a refresh walk only compares");
    }

    #[test]
    fn a_reseeding_walk_makes_the_live_objects_its_own_but_keeps_flows() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 7, 0x100, false));
        a.apply(&alloc(AV, site::PREPARE, 7, 0x200, false));
        a.apply(&alloc(AV, site::PREPARE, 9, 0x400, false));
        // Events were lost: the kernel really holds 0x200 (pid 7), 0x300
        // (pid 8) and 0x400, now pid 8's.
        a.begin_walk(WalkKind::Seed);
        a.walk_object(0x200, 7, AV);
        a.walk_object(0x300, 8, AV);
        a.walk_object(0x400, 8, AV);
        let cmp = a.end_walk().unwrap();
        // As many objects on both sides, not the same ones.
        assert_eq!(cmp.drift, [0, 0]);
        assert_eq!(cmp.by_process[&7], [1, 0]);
        assert_eq!(cmp.by_process[&8], [-2, 0]);
        assert_eq!(cmp.by_process[&9], [1, 0]);
        assert_eq!(a.objects[AV as usize].live, 3);
        assert_eq!(a.processes[&7].live[0], 1);
        assert_eq!(a.processes[&8].live[0], 2);
        assert_eq!(a.processes[&9].live[0], 0);
        assert_eq!(a.processes[&7].flows[0].allocs, 2);
        // A free of the object the walk did not have is not charged.
        a.apply(&free(AV, site::PUT, 7, 0x100));
        assert_eq!(a.objects[AV as usize].live, 3);
        assert_eq!(a.objects[AV as usize].frees_of_preexisting, 1);
    }

    #[test]
    fn a_walk_that_sees_an_addresss_next_life_does_not_take_it_from_the_events() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::FORK, 1, 0x100, true));
        a.apply(&fork(1, 20));
        assert_eq!(a.processes[&20].live, [1, 0]);
        a.begin_walk(WalkKind::Seed);
        // The walk sees 21's life of 0x100 while 20's free, the fork of 21
        // and its allocation are still on their way.
        a.walk_object(0x100, 21, AV);
        for e in [
            free(AV, site::PUT, 20, 0x100),
            alloc(AV, site::FORK, 1, 0x100, true),
            fork(1, 21),
        ] {
            a.apply(&e);
        }
        let cmp = a.end_walk().unwrap();
        assert_eq!(cmp.drift, [0, 0]);
        let p = |pid: u32| (a.processes[&pid].flows[0], a.processes[&pid].live[0]);
        assert_eq!(
            p(20),
            (
                Flow {
                    allocs: 1,
                    frees: 1
                },
                0
            )
        );
        assert_eq!(
            p(21),
            (
                Flow {
                    allocs: 1,
                    frees: 0
                },
                1
            )
        );
        assert_eq!(a.objects[AV as usize].live, 1);
    }

    #[test]
    fn a_fork_allocation_a_walk_saw_elsewhere_is_not_taken_by_a_later_fork() {
        let mut a = Accounting::default();
        // Allocations of a fork whose end never arrives (lost, or before
        // the attach), that the next walk sees in child 20.
        a.apply(&alloc(AV, site::FORK, 10, 0x100, true));
        a.apply(&alloc(AVC, site::FORK, 10, 0x140, true));
        a.begin_walk(WalkKind::Seed);
        a.walk_object(0x140, 20, AVC);
        a.walk_object(0x100, 20, AV);
        let cmp = a.end_walk().unwrap();
        assert_eq!(cmp.drift, [0, 0], "in flight: the events' to settle");
        // The parent's next fork.
        a.apply(&alloc(AV, site::FORK, 10, 0x200, true));
        a.apply(&fork(10, 21));
        assert_eq!(a.processes[&20].live, [1, 1]);
        assert_eq!(a.processes[&21].live, [1, 0]);
    }

    #[test]
    fn an_aborted_walk_leaves_no_trace() {
        let mut a = Accounting::default();
        a.apply(&alloc(AV, site::PREPARE, 7, 0x100, false));
        a.begin_walk(WalkKind::Seed);
        a.walk_object(0x100, 7, AV);
        a.walk_object(0x200, 8, AV);
        a.abort_walk();
        assert_eq!(a.live(), [1, 0]);
        assert_eq!(a.owners.len(), 1);
        a.begin_walk(WalkKind::Refresh);
        a.walk_object(0x100, 7, AV);
        assert_eq!(a.end_walk().unwrap().drift, [0, 0]);
    }

    #[test]
    fn a_reused_pid_starts_fresh() {
        let mut a = Accounting::default();
        a.apply(&fork(1, 5));
        a.apply(&alloc(AVC, site::PREPARE, 5, 0x40, false));
        a.apply(&Event::Exit {
            tid: 5,
            tgid: 5,
            comm: Comm::new("kid"),
        });
        assert!(a.processes[&5].exited);
        a.apply(&fork(1, 5));
        assert!(!a.processes[&5].exited);
        assert_eq!(a.processes[&5].flows[1].allocs, 0);
        // The previous life was folded at once; what it still owned is set
        // aside: live system-wide, not the new life's.
        assert_eq!(a.folded.processes, 1);
        assert_eq!(a.folded.flows[1].allocs, 1);
        assert_eq!(a.take_folded(), [5]);
        assert_eq!(a.processes[&5].live, [0, 0]);
        assert_eq!(a.live(), [0, 1]);
        // The new life's own object, then the earlier life's free.
        a.apply(&alloc(AVC, site::PREPARE, 5, 0x80, false));
        assert_eq!(a.processes[&5].live, [0, 1]);
        a.apply(&free(AVC, site::UNLINK, 5, 0x40));
        assert_eq!(a.processes[&5].live, [0, 1], "the new life keeps its own");
        assert_eq!(a.processes[&5].flows[1].frees, 0);
        assert_eq!(a.folded.flows[1].frees, 1);
        assert_eq!(a.live(), [0, 1]);
        assert_eq!(summed(&a), [a.objects[0].flow, a.objects[1].flow]);
        // Its old exit, still queued, is not the new life's.
        a.set_now(1000);
        a.fold(Retention {
            exited_ns: 0,
            exited_max: 0,
        });
        assert!(a.processes.contains_key(&5));
    }

    #[test]
    fn a_reused_pid_s_old_exit_does_not_count_toward_the_cap() {
        // Two exits may wait. A pid exits and is reused at once: its old
        // exit entry is stale, and must not push a real exit out early.
        let mut a = Accounting::default();
        let r = Retention {
            exited_ns: u64::MAX,
            exited_max: 2,
        };
        for pid in [5, 6, 7] {
            a.apply(&fork(1, pid));
            a.apply(&alloc(
                AVC,
                site::PREPARE,
                pid,
                u64::from(pid) * 0x40,
                false,
            ));
            a.apply(&free(AVC, site::UNLINK, pid, u64::from(pid) * 0x40));
        }
        a.apply(&exit(6));
        a.apply(&exit(5));
        a.apply(&fork(1, 5)); // reused: exit 5's entry, behind 6's, is stale
        a.apply(&exit(7));
        a.fold(r);
        assert!(
            a.processes.contains_key(&6),
            "two real exits wait: none folded"
        );
        assert!(a.processes.contains_key(&7));
        a.apply(&fork(1, 8));
        a.apply(&alloc(AVC, site::PREPARE, 8, 0x400, false));
        a.apply(&exit(8));
        a.fold(r);
        assert!(!a.processes.contains_key(&6), "a third: the oldest goes");
        assert!(a.processes.contains_key(&7) && a.processes.contains_key(&8));
        assert!(a.processes.contains_key(&5) && !a.processes[&5].exited);
    }

    #[test]
    fn a_seeding_walk_that_finds_an_earlier_life_s_object_counts_it_once() {
        let mut a = Accounting::default();
        a.apply(&fork(1, 5));
        a.apply(&alloc(AV, site::PREPARE, 5, 0x40, false));
        a.apply(&exit(5));
        a.apply(&fork(1, 5));
        assert_eq!(a.live(), [1, 0]);
        // Lost events: the re-seeding walk finds it in pid 9.
        a.begin_walk(WalkKind::Reseed);
        a.walk_object(0x40, 9, AV);
        a.end_walk().unwrap();
        assert_eq!(a.live(), [1, 0]);
        assert_eq!(a.processes[&9].live, [1, 0]);
        assert!(a.earlier.is_empty());
    }

    fn exit(tgid: u32) -> Event {
        Event::Exit {
            tid: tgid,
            tgid,
            comm: Comm::new("kid"),
        }
    }

    /// Flows of the listed processes plus the folded ones.
    fn summed(a: &Accounting) -> [Flow; object::COUNT] {
        let mut out = a.folded.flows;
        for p in a.processes.values() {
            for (o, f) in out.iter_mut().zip(p.flows) {
                o.allocs += f.allocs;
                o.frees += f.frees;
            }
        }
        out
    }

    const SOON: Retention = Retention {
        exited_ns: 10,
        exited_max: 1024,
    };

    #[test]
    fn an_exited_process_is_folded_only_once_its_objects_are_freed() {
        let mut a = Accounting::default();
        a.apply(&fork(1, 5));
        a.apply(&alloc(AV, site::PREPARE, 5, 0x40, false));
        a.apply(&alloc(AVC, site::PREPARE, 5, 0x80, false));
        a.apply(&free(AVC, site::UNLINK, 5, 0x80));
        a.apply(&exit(5));
        a.set_now(100);
        a.fold(SOON);
        // Its anon_vma outlives it (a child still links to it).
        assert_eq!(a.processes[&5].live, [1, 0]);
        assert_eq!(a.state_size().exited_with_objects, 1);
        assert!(a.take_folded().is_empty());
        a.apply(&free(AV, site::PUT, 1, 0x40));
        assert!(a.processes.contains_key(&5), "folded at the next fold");
        a.fold(SOON);
        assert!(!a.processes.contains_key(&5));
        assert_eq!(a.take_folded(), vec![5]);
        assert_eq!(a.folded.processes, 1);
        assert_eq!(
            a.folded.flows,
            [
                Flow {
                    allocs: 1,
                    frees: 1
                },
                Flow {
                    allocs: 1,
                    frees: 1
                }
            ]
        );
        assert_eq!(summed(&a), [a.objects[0].flow, a.objects[1].flow]);
        assert_eq!(a.live(), [0, 0]);
        // Pid 1 has no traffic of its own: listed, never folded (alive).
        a.apply(&exit(1));
        a.set_now(200);
        a.fold(SOON);
        assert!(a.processes.is_empty());
        assert_eq!(a.folded.processes, 1, "nothing to add: only forgotten");
    }

    #[test]
    fn the_cap_folds_the_oldest_exits_first_and_the_time_the_rest() {
        let mut a = Accounting::default();
        for pid in 10..15 {
            a.set_now(u64::from(pid));
            a.apply(&alloc(AV, site::PREPARE, pid, u64::from(pid) * 64, false));
            a.apply(&free(AV, site::PUT, pid, u64::from(pid) * 64));
            a.apply(&exit(pid));
        }
        // An exit unknown to the accounting is not listed for itself.
        a.apply(&exit(99));
        let r = Retention {
            exited_ns: 100,
            exited_max: 2,
        };
        a.fold(r);
        assert_eq!(a.processes.keys().copied().collect::<Vec<_>>(), [13, 14]);
        assert_eq!(a.take_folded(), [10, 11, 12]);
        a.set_now(113);
        a.fold(r);
        assert_eq!(a.processes.keys().copied().collect::<Vec<_>>(), [14]);
        assert_eq!(a.folded.processes, 4);
        assert_eq!(summed(&a), [a.objects[0].flow, a.objects[1].flow]);
        // Not during a walk (it may still give them objects).
        a.begin_walk(WalkKind::Refresh);
        a.set_now(1000);
        a.fold(r);
        assert!(a.processes.contains_key(&14));
        a.end_walk();
        a.fold(r);
        assert!(a.processes.is_empty());
    }

    #[test]
    fn a_pid_reused_after_its_fold_starts_fresh() {
        let mut a = Accounting::default();
        a.apply(&fork(1, 5));
        a.apply(&alloc(AVC, site::PREPARE, 5, 0x40, false));
        a.apply(&free(AVC, site::UNLINK, 5, 0x40));
        a.apply(&exit(5));
        a.set_now(50);
        a.fold(SOON);
        assert!(!a.processes.contains_key(&5));
        a.apply(&fork(1, 5));
        let p = &a.processes[&5];
        assert!(!p.exited && p.exited_at.is_none());
        assert_eq!(p.flows, [Flow::default(); 2]);
        assert_eq!(p.ppid, Some(1));
        a.apply(&exit(5));
        assert_eq!(a.processes[&5].exited_at, Some(50));
        // The first life's exit is long due, this one's is not.
        a.set_now(55);
        a.fold(SOON);
        assert!(a.processes.contains_key(&5));
        assert_eq!(summed(&a), [a.objects[0].flow, a.objects[1].flow]);
    }

    #[test]
    fn unnamed_processes_are_reported_once() {
        let mut a = Accounting::default();
        a.apply(&alloc(AVC, site::PREPARE, 10, 0x40, false));
        a.apply(&fork(10, 11));
        assert_eq!(a.take_unnamed(), vec![10]);
        assert!(a.take_unnamed().is_empty());
    }

    #[test]
    fn rmap_vmas_keep_the_counts_of_removed_entries() {
        let mut r = RmapVmas::default();
        r.update(
            [((10, 0x1000), 3), ((10, 0x5000), 1), ((11, 0x1000), 2)],
            [],
        );
        // The source removed 11's entry; a new one (pid reuse) adds.
        r.update(
            [((10, 0x1000), 4), ((10, 0x5000), 1), ((11, 0x1000), 5)],
            [((11, 0x1000), 2)],
        );
        let by = r.by_process();
        assert_eq!(by[&10][&0x1000], 4);
        assert_eq!(by[&10][&0x5000], 1);
        assert_eq!(by[&11][&0x1000], 7);
    }
}
