//! Accounting of the actual objects: allocations and frees system-wide, per
//! call site and per process. Pure: events in, numbers out.
//!
//! Attribution goes through ownership, not through `current`:
//! - an object belongs to the process that allocated it, except that
//!   allocations made inside a fork (flag `IN_FORK`, or the `anon_vma_fork`
//!   site) belong to the child that `sched_process_fork` names next;
//! - a free is charged to the object's owner, whichever task runs it
//!   (exit, ksmd, kcompactd...); objects that existed before start-up have
//!   no known owner and count system-wide only.
use std::collections::BTreeMap;

use rmapwatch_common::{Event, flags, kind, object, site};

use crate::{addrmap::AddrMap, decode::comm_str, hash::FastMap};

/// Allocations and frees of one object kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// not in the seeding snapshot).
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
    /// Flows per object kind.
    pub flows: [Flow; object::COUNT],
    /// Live objects it owns (seeded from a snapshot, then event-maintained).
    pub live: [u64; object::COUNT],
}

/// New anonymous folios per (process, VMA start), from the kernel's
/// `RMAP_VMAS` map: its current values plus those of entries already
/// removed from it (exited processes are removed so that it never fills).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RmapVmas {
    retired: BTreeMap<(u32, u64), u64>,
    current: BTreeMap<(u32, u64), u64>,
}

impl RmapVmas {
    /// Replaces the kernel map's current contents.
    pub fn update(&mut self, current: impl IntoIterator<Item = ((u32, u64), u64)>) {
        self.current = current.into_iter().collect();
    }

    /// Moves the entries of processes that `exited` into the retired counts
    /// and returns their keys, to be removed from the kernel map.
    pub fn retire(&mut self, exited: impl Fn(u32) -> bool) -> Vec<(u32, u64)> {
        let gone: Vec<(u32, u64)> = self
            .current
            .keys()
            .filter(|(tgid, _)| exited(*tgid))
            .copied()
            .collect();
        for key in &gone {
            if let Some(n) = self.current.remove(key) {
                *self.retired.entry(*key).or_default() += n;
            }
        }
        gone
    }

    /// Per process: VMA start -> new anonymous folios.
    #[must_use]
    pub fn by_process(&self) -> BTreeMap<u32, BTreeMap<u64, u64>> {
        let mut out: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
        for (&(tgid, start), &n) in self.retired.iter().chain(&self.current) {
            *out.entry(tgid).or_default().entry(start).or_default() += n;
        }
        out
    }
}

/// The accounting state.
#[derive(Clone, Debug, Default)]
pub struct Accounting {
    /// Totals per object kind.
    pub objects: [ObjectTotals; object::COUNT],
    /// Processes seen, by tgid.
    pub processes: BTreeMap<u32, Process>,
    /// Events applied.
    pub events: u64,
    /// Live objects with a known owner: address -> owner tgid << 1 | kind
    /// (8 bytes a slot: it holds every anon_vma and AVC of the system).
    owners: AddrMap<23>,
    /// Allocations made inside a fork, waiting for the child: tid -> objects.
    pending: FastMap<u32, Vec<(u64, u32)>>,
    /// Processes first seen without a name (the daemon looks them up).
    unnamed: Vec<u32>,
}

impl Accounting {
    /// Applies one event.
    pub fn apply(&mut self, e: &Event) {
        self.events += 1;
        match e.kind {
            kind::ALLOC => self.alloc(e),
            kind::FREE => self.free(e),
            kind::FORK => self.fork(e),
            kind::EXEC => {
                let comm = comm_str(&e.comm);
                self.process(e.tgid).comm = comm;
            }
            kind::EXIT => {
                let comm = comm_str(&e.comm);
                let p = self.process(e.tgid);
                p.exited = true;
                if p.comm.is_empty() {
                    p.comm = comm;
                }
            }
            _ => {}
        }
    }

    fn alloc(&mut self, e: &Event) {
        let (obj, s) = (e.object as usize, e.site as usize);
        let t = &mut self.objects[obj];
        t.flow.allocs += 1;
        t.alloc_by_site[s] += 1;
        // Inside fork the current task is the parent; the child is named by
        // the sched_process_fork event that follows from the same thread.
        if e.flags & flags::IN_FORK != 0 {
            self.pending
                .entry(e.tid)
                .or_default()
                .push((e.ptr, e.object));
        } else {
            self.own(e.ptr, e.tgid, e.object);
        }
    }

    fn own(&mut self, ptr: u64, tgid: u32, obj: u32) {
        self.process(tgid).flows[obj as usize].allocs += 1;
        self.set_owner(ptr, tgid, obj);
    }

    /// Records `ptr` as live and owned by `tgid`. An address that is already
    /// live can only be one the seeding snapshot saw after its allocation
    /// event was queued: it is not counted twice.
    fn set_owner(&mut self, ptr: u64, tgid: u32, obj: u32) {
        if let Some(old) = self.owners.insert(ptr, owner_value(tgid, obj)) {
            let (old, old_obj) = owner_of(old);
            self.drop_live(old, old_obj);
        }
        self.process(tgid).live[obj as usize] += 1;
        self.objects[obj as usize].live += 1;
    }

    fn drop_live(&mut self, tgid: u32, obj: u32) {
        if let Some(p) = self.processes.get_mut(&tgid) {
            p.live[obj as usize] = p.live[obj as usize].saturating_sub(1);
        }
        let t = &mut self.objects[obj as usize];
        t.live = t.live.saturating_sub(1);
    }

    /// Seeds ownership of the objects that exist now (from a snapshot):
    /// `(address, owner tgid, object kind)`. Frees of them are then charged
    /// to their owners, and `live` counts start from them. (Tests; the
    /// daemon streams a walk into [`Self::own_existing`].)
    #[cfg(test)]
    pub fn seed(
        &mut self,
        objects: impl IntoIterator<Item = (u64, u32, u32)>,
        comms: impl IntoIterator<Item = (u32, String)>,
    ) {
        self.name_existing(comms);
        for (ptr, tgid, obj) in objects {
            self.own_existing(ptr, tgid, obj);
        }
    }

    /// Names processes found by a snapshot (where not named yet).
    pub fn name_existing(&mut self, comms: impl IntoIterator<Item = (u32, String)>) {
        for (tgid, comm) in comms {
            let p = self.process(tgid);
            if p.comm.is_empty() {
                p.comm = comm;
            }
        }
    }

    /// Seeds one object that exists now (a snapshot streams them), unless
    /// events already gave its address an owner: the walk runs while the
    /// programs keep reporting, so the life it saw may be a newer one whose
    /// predecessor's free is still queued. Seeding over it charged that
    /// free to the new owner and left the old one's allocations unfreed
    /// (a fork loop under a slow, debug-built daemon). The queued events
    /// settle such an address; an address events never named is the
    /// walk's.
    pub fn own_existing(&mut self, ptr: u64, tgid: u32, obj: u32) {
        if self.owners.get(ptr).is_none() {
            self.set_owner(ptr, tgid, obj);
        }
    }

    /// Makes room for `n` more owned objects at once (a growing table
    /// briefly holds its old and new slots).
    pub fn reserve_owners(&mut self, n: usize) {
        self.owners.reserve(n);
    }

    /// Forgets every live count and owner, to be seeded again from a fresh
    /// snapshot after events were lost (ring buffer full): the live figures
    /// are then those of the kernel again. Flows stay as counted.
    pub fn forget_live(&mut self) {
        self.owners.clear();
        for p in self.processes.values_mut() {
            p.live = [0; object::COUNT];
        }
        for t in &mut self.objects {
            t.live = 0;
        }
    }

    /// Bytes held by the owner table.
    #[must_use]
    pub fn owner_table_bytes(&self) -> usize {
        self.owners.heap_bytes()
    }

    fn free(&mut self, e: &Event) {
        let (obj, s) = (e.object as usize, e.site as usize);
        let t = &mut self.objects[obj];
        t.flow.frees += 1;
        t.free_by_site[s] += 1;
        match self.owners.remove(e.ptr).map(owner_of) {
            Some((owner, owned_obj)) => {
                self.process(owner).flows[obj].frees += 1;
                self.drop_live(owner, owned_obj);
            }
            None => {
                // An allocation still pending (fork failed after dup_mmap)
                // or an object older than start-up.
                let pending = self.pending.get_mut(&e.tid);
                if let Some(pos) = pending
                    .as_ref()
                    .and_then(|v| v.iter().position(|&(p, _)| p == e.ptr))
                    && let Some(v) = pending
                {
                    v.swap_remove(pos);
                    let p = self.process(e.tgid);
                    p.flows[obj].allocs += 1;
                    p.flows[obj].frees += 1;
                } else {
                    self.objects[obj].frees_of_preexisting += 1;
                }
            }
        }
    }

    fn fork(&mut self, e: &Event) {
        let pending = self.pending.remove(&e.tid).unwrap_or_default();
        if e.child_tgid != e.tgid {
            let comm = comm_str(&e.comm);
            let parent = e.tgid;
            // A reused pid starts a new life.
            let child = self.processes.entry(e.child_tgid).or_default();
            if child.exited {
                *child = Process::default();
            }
            child.pid = e.child_tgid;
            child.comm = comm;
            child.ppid = Some(parent);
            self.process(parent);
        }
        for (ptr, obj) in pending {
            self.own(ptr, e.child_tgid, obj);
        }
    }

    fn process(&mut self, tgid: u32) -> &mut Process {
        let unnamed = &mut self.unnamed;
        self.processes.entry(tgid).or_insert_with(|| {
            unnamed.push(tgid);
            Process {
                pid: tgid,
                ..Process::default()
            }
        })
    }

    /// Processes seen since the last call whose name is still unknown.
    pub fn take_unnamed(&mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.unnamed);
        v.retain(|pid| self.processes.get(pid).is_some_and(|p| p.comm.is_empty()));
        v
    }

    /// Sets a process's name (looked up by the daemon).
    pub fn set_comm(&mut self, tgid: u32, comm: String) {
        if let Some(p) = self.processes.get_mut(&tgid) {
            p.comm = comm;
        }
    }
}

fn owner_value(tgid: u32, obj: u32) -> u64 {
    u64::from(tgid) << 1 | u64::from(obj & 1)
}

fn owner_of(v: u64) -> (u32, u32) {
    (u32::try_from(v >> 1).unwrap_or(u32::MAX), (v & 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slab(kind_: u32, obj: u32, s: u32, tgid: u32, ptr: u64, fl: u32) -> Event {
        Event {
            kind: kind_,
            object: obj,
            site: s,
            flags: fl,
            tid: tgid,
            tgid,
            ptr,
            ..Event::default()
        }
    }

    fn fork(parent: u32, child: u32) -> Event {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"kid");
        Event {
            kind: kind::FORK,
            tid: parent,
            tgid: parent,
            child_tid: child,
            child_tgid: child,
            comm,
            ..Event::default()
        }
    }

    #[test]
    fn fork_time_allocations_belong_to_the_child() {
        let mut a = Accounting::default();
        a.apply(&slab(
            kind::ALLOC,
            object::ANON_VMA,
            site::PREPARE,
            10,
            1,
            0,
        ));
        a.apply(&slab(kind::ALLOC, object::AVC, site::PREPARE, 10, 2, 0));
        a.apply(&slab(
            kind::ALLOC,
            object::AVC,
            site::CLONE,
            10,
            3,
            flags::IN_FORK,
        ));
        a.apply(&slab(
            kind::ALLOC,
            object::ANON_VMA,
            site::FORK,
            10,
            4,
            flags::IN_FORK,
        ));
        a.apply(&slab(
            kind::ALLOC,
            object::AVC,
            site::FORK,
            10,
            5,
            flags::IN_FORK,
        ));
        a.apply(&fork(10, 11));
        let parent = &a.processes[&10];
        let child = &a.processes[&11];
        assert_eq!(parent.flows[object::ANON_VMA as usize].allocs, 1);
        assert_eq!(parent.flows[object::AVC as usize].allocs, 1);
        assert_eq!(child.flows[object::ANON_VMA as usize].allocs, 1);
        assert_eq!(child.flows[object::AVC as usize].allocs, 2);
        assert_eq!(child.comm, "kid");
        assert_eq!(child.ppid, Some(10));
        assert_eq!(a.objects[object::AVC as usize].flow.allocs, 3);
        assert_eq!(
            a.objects[object::AVC as usize].alloc_by_site[site::CLONE as usize],
            1
        );
    }

    #[test]
    fn clone_outside_fork_stays_with_the_current_process() {
        let mut a = Accounting::default();
        a.apply(&slab(kind::ALLOC, object::AVC, site::CLONE, 10, 3, 0));
        a.apply(&fork(10, 11));
        assert_eq!(a.processes[&10].flows[object::AVC as usize].allocs, 1);
        assert_eq!(a.processes[&11].flows[object::AVC as usize].allocs, 0);
    }

    #[test]
    fn frees_are_charged_to_the_owner_not_the_freeing_task() {
        let mut a = Accounting::default();
        a.apply(&slab(
            kind::ALLOC,
            object::ANON_VMA,
            site::PREPARE,
            10,
            1,
            0,
        ));
        // freed by a kernel thread (pid 42, e.g. ksmd)
        a.apply(&slab(kind::FREE, object::ANON_VMA, site::PUT, 42, 1, 0));
        assert_eq!(a.processes[&10].flows[0].frees, 1);
        assert!(!a.processes.contains_key(&42));
        // a preexisting object
        a.apply(&slab(kind::FREE, object::ANON_VMA, site::PUT, 42, 99, 0));
        assert_eq!(a.objects[0].frees_of_preexisting, 1);
        assert_eq!(a.objects[0].flow.frees, 2);
        assert!(a.owners.is_empty());
    }

    #[test]
    fn seeded_objects_are_live_charged_on_free_and_never_double_counted() {
        let mut a = Accounting::default();
        a.seed(
            [
                (1, 10, object::ANON_VMA),
                (2, 10, object::AVC),
                (3, 11, object::AVC),
            ],
            [(10, "a".into())],
        );
        assert_eq!(a.processes[&10].live, [1, 1]);
        assert_eq!(a.objects[object::AVC as usize].live, 2);
        // an allocation event queued before the snapshot saw the object
        a.apply(&slab(kind::ALLOC, object::AVC, site::PREPARE, 11, 3, 0));
        assert_eq!(a.objects[object::AVC as usize].live, 2);
        assert_eq!(a.processes[&11].live, [0, 1]);
        // a free by a kernel thread of a seeded object goes to its owner
        a.apply(&slab(kind::FREE, object::AVC, site::UNLINK, 77, 2, 0));
        assert_eq!(a.processes[&10].live, [1, 0]);
        assert_eq!(a.processes[&10].flows[1].frees, 1);
        assert_eq!(a.objects[object::AVC as usize].frees_of_preexisting, 0);
        assert_eq!(a.processes[&10].comm, "a");
    }

    #[test]
    fn a_walk_that_sees_an_addresss_next_life_does_not_take_it_from_the_queued_events() {
        let mut a = Accounting::default();
        let in_fork = |ptr| {
            slab(
                kind::ALLOC,
                object::ANON_VMA,
                site::FORK,
                1,
                ptr,
                flags::IN_FORK,
            )
        };
        a.apply(&in_fork(100));
        a.apply(&fork(1, 20));
        assert_eq!(a.processes[&20].live, [1, 0]);
        // Queued while the walk runs: 20 exits and frees its anon_vma, the
        // parent forks 21, which gets the same address.
        let queued = [
            slab(kind::FREE, object::ANON_VMA, site::PUT, 20, 100, 0),
            in_fork(100),
            fork(1, 21),
        ];
        // The walk saw 21's: not seeded over the owner events gave it.
        a.own_existing(100, 21, object::ANON_VMA);
        for e in &queued {
            a.apply(e);
        }
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
        assert_eq!(a.objects[object::ANON_VMA as usize].live, 1);
    }

    #[test]
    fn a_reused_pid_starts_fresh() {
        let mut a = Accounting::default();
        a.apply(&fork(1, 5));
        a.apply(&slab(kind::ALLOC, object::AVC, site::PREPARE, 5, 1, 0));
        let mut exit = fork(5, 5);
        exit.kind = kind::EXIT;
        a.apply(&exit);
        assert!(a.processes[&5].exited);
        a.apply(&fork(1, 5));
        assert!(!a.processes[&5].exited);
        assert_eq!(a.processes[&5].flows[1].allocs, 0);
    }

    #[test]
    fn unnamed_processes_are_reported_once() {
        let mut a = Accounting::default();
        a.apply(&slab(kind::ALLOC, object::AVC, site::PREPARE, 10, 1, 0));
        a.apply(&fork(10, 11));
        assert_eq!(a.take_unnamed(), vec![10]);
        assert!(a.take_unnamed().is_empty());
    }

    #[test]
    fn rmap_vmas_keep_the_counts_of_removed_entries() {
        let mut r = RmapVmas::default();
        r.update([((10, 0x1000), 3), ((10, 0x5000), 1), ((11, 0x1000), 2)]);
        let gone = r.retire(|tgid| tgid == 11);
        assert_eq!(gone, vec![(11, 0x1000)]);
        // The kernel map no longer has 11's entry; a new one (pid reuse) adds.
        r.update([((10, 0x1000), 4), ((10, 0x5000), 1), ((11, 0x1000), 5)]);
        let by = r.by_process();
        assert_eq!(by[&10][&0x1000], 4);
        assert_eq!(by[&10][&0x5000], 1);
        assert_eq!(by[&11][&0x1000], 7);
        assert!(r.retire(|_| false).is_empty());
    }

    #[test]
    fn reseeding_replaces_live_counts_but_keeps_flows() {
        let mut a = Accounting::default();
        let alloc = |ptr, tgid| Event {
            kind: kind::ALLOC,
            object: object::ANON_VMA,
            site: site::PREPARE,
            tid: tgid,
            tgid,
            ptr,
            ..Event::default()
        };
        a.apply(&alloc(0x100, 7));
        a.apply(&alloc(0x200, 7));
        // Events were lost: the kernel really holds 0x200 (pid 7) and 0x300 (pid 8).
        a.forget_live();
        for (ptr, tgid) in [(0x200, 7), (0x300, 8)] {
            a.own_existing(ptr, tgid, object::ANON_VMA);
        }
        assert_eq!(a.objects[object::ANON_VMA as usize].live, 2);
        assert_eq!(a.processes[&7].live[object::ANON_VMA as usize], 1);
        assert_eq!(a.processes[&8].live[object::ANON_VMA as usize], 1);
        assert_eq!(a.processes[&7].flows[object::ANON_VMA as usize].allocs, 2);
        // A free of the object the snapshot did not have is not charged.
        a.apply(&Event {
            kind: kind::FREE,
            ptr: 0x100,
            ..alloc(0x100, 7)
        });
        assert_eq!(a.objects[object::ANON_VMA as usize].live, 2);
        assert_eq!(a.objects[object::ANON_VMA as usize].frees_of_preexisting, 1);
    }
}
