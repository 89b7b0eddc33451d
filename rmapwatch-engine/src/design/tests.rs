//! Each design's rules on scripted inputs: events and walks as a source
//! would give them, the outcome checked object by object.
use std::collections::BTreeMap;

use rmapwatch_common::{object, site};

use super::*;
use crate::{
    event::{Comm, Event},
    facts::{Facts, Slots, VmaSlot},
    model::{self, Estimator, sim::Sim},
    snapshot::{AnonPages, Vma},
};

fn facts() -> Facts {
    Facts {
        page_size: 4096,
        sizes: crate::facts::Sizes {
            anon_vma: 104,
            anon_vma_chain: 64,
        },
        slots: Slots {
            vm_area_struct: VmaSlot {
                struct_size: Some(176),
                object_size: Some(176),
                slab_size: Some(192),
                align: Some(64),
            },
            maple_node: Some(256),
            kmalloc: vec![8, 16, 32, 64, 96, 128, 192, 256, 512, 1024],
        },
        ..Facts::default()
    }
}

/// A source in miniature: events, then walks of the VMAs given.
struct Bench {
    d: Designs,
    facts: Facts,
    walks: u64,
}

impl Bench {
    fn new() -> Self {
        Self::with(Options::default())
    }

    fn with(opts: Options) -> Self {
        Self {
            d: Designs::new(opts),
            facts: facts(),
            walks: 0,
        }
    }

    fn events(&mut self, es: &[Event]) {
        for e in es {
            self.d.event(e);
        }
    }

    /// A walk of `vmas`; every process named in `procs` has an mm (a
    /// process without VMAs too), parents as the walk would read them.
    fn walk(&mut self, vmas: &[Vma], procs: &[(u32, u32)]) -> BTreeMap<String, Outcome> {
        self.d.begin(&self.facts);
        let mut est = Estimator::new(model::Options::default());
        let mut by_process: BTreeMap<u32, u64> = BTreeMap::new();
        for v in vmas {
            self.d.vma(v);
            est.add(v, |_, _| {});
            *by_process.entry(v.tgid).or_default() += 1;
        }
        let estimate = est.take_estimate(|_, _| {});
        let names: BTreeMap<u32, String> =
            procs.iter().map(|&(p, _)| (p, format!("p{p}"))).collect();
        let parents: BTreeMap<u32, u32> = procs.iter().copied().collect();
        let out = self.d.end(&Walked {
            estimate: &estimate,
            procs: &names,
            parents: &parents,
            owner: &|a| est.owner(a),
            facts: &self.facts,
            vmas: vmas.len() as u64,
            vmas_by_process: &by_process,
            counts: crate::snapshot::WalkCounts::default(),
            seeding: self.walks == 0,
        });
        self.walks += 1;
        out.into_iter().map(|o| (o.name.clone(), o)).collect()
    }
}

fn fork(parent: u32, child: u32) -> Event {
    Event::fork(parent, child, &format!("p{child}"))
}

fn exec(pid: u32) -> Event {
    Event::Exec {
        tid: pid,
        tgid: pid,
        comm: Comm::new(&format!("x{pid}")),
    }
}

fn exit(pid: u32) -> Event {
    Event::Exit {
        tid: pid,
        tgid: pid,
        comm: Comm::new(&format!("p{pid}")),
    }
}

/// A faulted anonymous VMA at `start` that was never moved.
fn anon(tgid: u32, start: u64, av: u64) -> Vma {
    Vma {
        tgid,
        mm: u64::from(tgid),
        addr: 0xffff_0000_0000 + start,
        start,
        end: start + 0x4000,
        flags: 0x73,
        anon_vma: av,
        av_root: av,
        av_parent: av,
        av_num_children: u64::from(av != 0),
        chain: if av == 0 { vec![] } else { vec![(av + 8, av)] },
        pgoff: Some(start >> 12),
        ..Vma::default()
    }
}

/// A private file mapping at `start` of file page `pgoff`, with COW'd
/// pages when `av` is not 0.
fn file(tgid: u32, start: u64, pgoff: u64, av: u64) -> Vma {
    Vma {
        file: true,
        pgoff: Some(pgoff),
        ..anon(tgid, start, av)
    }
}

fn contexts(o: &BTreeMap<String, Outcome>) -> (u64, Vec<(u32, Vec<u32>)>) {
    let c = &o["cow_context"];
    let pinned = c
        .pinned
        .iter()
        .flatten()
        .map(|p| (p.pid, p.pinned_by.clone()))
        .collect();
    (c.system.count("cow_context"), pinned)
}

#[test]
fn fork_links_contexts_exec_starts_a_root() {
    let mut b = Bench::new();
    b.walk(&[anon(1, 0x1000_0000, 0x100)], &[(1, 0)]);
    // 1 forks 2 (no exec) and 3 (which execs).
    b.events(&[fork(1, 2), fork(1, 3), exec(3)]);
    let procs = [(1, 0), (2, 1), (3, 1)];
    let o = b.walk(&[], &procs);
    assert_eq!(contexts(&o), (3, vec![]));
    // The parent exits: the fork child keeps its context; the exec'd one
    // does not (exec dropped its link with its old context).
    b.events(&[exit(1)]);
    let o = b.walk(&[], &[(2, 1), (3, 1)]);
    assert_eq!(contexts(&o), (3, vec![(1, vec![2])]));
    let pinned = &o["cow_context"].pinned.as_ref().unwrap()[0];
    assert_eq!(pinned.comm, "p1");
    b.events(&[exit(2)]);
    let o = b.walk(&[], &[(3, 1)]);
    assert_eq!(contexts(&o), (1, vec![]), "the last pinner gone frees it");
    // Had 3 not exec'd, 1 would still be pinned by it: checked by the
    // grandchild test below.
}

#[test]
fn a_grandchild_keeps_two_dead_generations() {
    let mut b = Bench::new();
    b.walk(&[], &[(1, 0)]);
    b.events(&[fork(1, 2), fork(2, 3), exit(1), exit(2)]);
    let o = b.walk(&[], &[(3, 1)]);
    let (n, mut pinned) = contexts(&o);
    pinned.sort();
    assert_eq!((n, pinned), (3, vec![(1, vec![3]), (2, vec![3])]));
    let c = &o["cow_context"];
    assert_eq!(c.processes[&3].count("cow_context"), 1, "its own only");
    b.events(&[exit(3)]);
    let o = b.walk(&[], &[]);
    assert_eq!(contexts(&o), (0, vec![]), "the cascade frees both");
}

#[test]
fn an_exec_of_a_process_with_fork_children_pins_its_old_context() {
    let mut b = Bench::new();
    b.walk(&[], &[(1, 0)]);
    b.events(&[fork(1, 2), exec(1)]);
    let o = b.walk(&[], &[(1, 0), (2, 1)]);
    // 1's new root, 2's, and 1's old one kept by 2.
    assert_eq!(contexts(&o), (3, vec![(1, vec![2])]));
}

#[test]
fn vfork_children_share_their_parents_context() {
    let mut b = Bench::new();
    b.walk(&[], &[(1, 0)]);
    // A vfork child: the walk does not list it (it shares 1's mm).
    b.events(&[fork(1, 2)]);
    let o = b.walk(&[], &[(1, 0)]);
    assert_eq!(contexts(&o), (1, vec![]));
    // Its exec makes its own root, and 1's exit pins nothing.
    b.events(&[fork(1, 3), exec(3), exit(1)]);
    let o = b.walk(&[], &[(3, 1)]);
    assert_eq!(contexts(&o), (1, vec![]));
}

#[test]
fn a_reused_pid_ends_the_old_life() {
    let mut b = Bench::new();
    b.walk(&[], &[(1, 0), (5, 0)]);
    // 2 is forked from 1, its exit lost, and the pid comes back as a fork
    // of 5: one context for 2, under 5; 1's exit then pins nothing.
    b.events(&[fork(1, 2), fork(5, 2), exit(1)]);
    let o = b.walk(&[], &[(2, 5), (5, 0)]);
    assert_eq!(contexts(&o), (2, vec![]));
    b.events(&[exit(5)]);
    let o = b.walk(&[], &[(2, 1)]);
    assert_eq!(contexts(&o), (2, vec![(5, vec![2])]));
}

#[test]
fn a_moved_anonymous_vma_is_a_remap_entry() {
    let mut b = Bench::new();
    let v = anon(1, 0x2000_0000, 0x100);
    let o = b.walk(std::slice::from_ref(&v), &[(1, 0)]);
    assert_eq!(o["cow_context"].system.count("remap_entry"), 0);
    // mremap: the start moves, vm_pgoff stays.
    let moved = Vma {
        start: 0x3000_0000,
        end: 0x3000_4000,
        ..v.clone()
    };
    let o = b.walk(std::slice::from_ref(&moved), &[(1, 0)]);
    let c = &o["cow_context"];
    assert_eq!(c.processes[&1].count("remap_entry"), 1);
    assert_eq!(c.processes[&1].count("maple_node"), 1);
    assert_eq!(c.processes[&1].count("offset_array"), 0);
    // One context (kmalloc-96) and one 256 B node.
    assert_eq!(c.processes[&1].bytes, 96 + 256);
    // A never-faulted moved VMA has no anonymous pages: nothing.
    let unfaulted = Vma {
        anon_vma: 0,
        chain: vec![],
        ..moved
    };
    let o = b.walk(&[unfaulted], &[(1, 0)]);
    assert_eq!(o["cow_context"].system.count("remap_entry"), 0);
    assert_eq!(o["today"].system.bytes, 0);
}

#[test]
fn the_main_stack_is_a_remap_entry_of_its_own_kind() {
    let mut b = Bench::new();
    let stack = Vma {
        flags: 0x73 | VM_GROWSDOWN,
        pgoff: Some(0x7fff_f000_0000 >> 12),
        ..anon(1, 0x7fff_ff00_0000, 0x100)
    };
    let o = b.walk(&[stack], &[(1, 0)]);
    let c = &o["cow_context"];
    assert_eq!(c.system.count("remap_entry"), 1);
    assert!(
        c.rules.iter().any(|r| r.contains("1 main stacks")),
        "{:?}",
        c.rules
    );
}

#[test]
fn private_file_mappings_with_cowed_pages_are_remap_entries() {
    let mut b = Bench::with(Options {
        cow: cow_context::Options {
            fork_readd_arrays: false,
            ..cow_context::Options::default()
        },
        ..Options::default()
    });
    let vmas = [
        // COW'd private file pages: an entry.
        file(1, 0x5000_0000, 3, 0x100),
        // Clean private file mapping: no anon_vma, no entry.
        file(1, 0x5100_0000, 3, 0),
        // A shared file mapping never has COW'd pages.
        Vma {
            flags: 0x73 | VM_SHARED,
            ..file(1, 0x5200_0000, 3, 0x200)
        },
        // A second library whose pgoff range overlaps the first's:
        // pieces with two offsets hold an array.
        file(1, 0x6000_0000, 5, 0x300),
    ];
    let o = b.walk(&vmas, &[(1, 0)]);
    let c = &o["cow_context"].processes[&1];
    // Ranges [3, 6] and [5, 8] in pgoff: pieces [3,4], [5,6], [7,8].
    assert_eq!(c.count("remap_entry"), 3);
    assert_eq!(c.count("offset_array"), 1);
    // context 96 + one node 256 + one cap-2 array (24 B: kmalloc-32).
    assert_eq!(c.bytes, 96 + 256 + 32);
    assert_eq!(c.count("anon_vma"), 0, "no anon_vma under COW context");
}

#[test]
fn the_pocs_fork_readd_turns_a_parents_entries_into_arrays() {
    let mut b = Bench::new();
    let v = file(1, 0x5000_0000, 3, 0x100);
    b.walk(std::slice::from_ref(&v), &[(1, 0)]);
    b.events(&[fork(1, 2)]);
    let child = Vma {
        tgid: 2,
        mm: 2,
        ..v.clone()
    };
    let o = b.walk(&[v, child], &[(1, 0), (2, 1)]);
    let c = &o["cow_context"];
    assert_eq!(
        c.processes[&1].count("offset_array"),
        1,
        "the parent forked"
    );
    assert_eq!(c.processes[&2].count("offset_array"), 0);
    assert_eq!(
        c.processes[&2].count("remap_entry"),
        1,
        "the child's own copy"
    );
}

#[test]
fn wipeonfork_and_dontcopy_children_hold_only_what_they_have() {
    // The designs see what the walk shows: a DONTCOPY VMA is not in the
    // child, a WIPEONFORK one is there unfaulted.
    for dontcopy in [true, false] {
        let mut sim = Sim::default();
        let v = sim.map(1, 0x1000_0000);
        sim.fault(v);
        sim.advise(v, !dontcopy, dontcopy);
        sim.fork(1, 2);
        let snap = sim.snapshot();
        let mut b = Bench::new();
        b.events(&[]);
        let o = b.walk(&snap.vmas, &[(1, 0), (2, 1)]);
        let today = &o["today"].system;
        assert_eq!(
            (today.count("anon_vma"), today.count("anon_vma_chain")),
            (1, 1),
            "dontcopy={dontcopy}"
        );
        let lazy = &o["lazy"].system;
        assert_eq!(lazy.count("anon_vma") + lazy.count("anon_vma_chain"), 0);
        assert_eq!(o["cow_context"].system.count("cow_context"), 2);
        assert_eq!(o["ideal"].system.count("rmap_vma"), 0);
    }
}

#[test]
fn lazy_keeps_an_upgrade_after_the_children_exit() {
    let mut sim = Sim::default();
    let v = sim.map(1, 0x1000_0000);
    sim.fault(v);
    sim.fork(1, 2);
    let shared = sim.snapshot();
    sim.exit(2);
    let after = sim.snapshot();
    for sticky in [true, false] {
        let mut b = Bench::with(Options {
            lazy_sticky: sticky,
            ..Options::default()
        });
        let o = b.walk(&shared.vmas, &[(1, 0), (2, 1)]);
        assert_eq!(o["lazy"].processes[&1].count("anon_vma"), 1);
        let o = b.walk(&after.vmas, &[(1, 0)]);
        let want = u64::from(sticky);
        let p = &o["lazy"].processes[&1];
        assert_eq!(
            (p.count("anon_vma"), p.count("anon_vma_chain")),
            (want, want),
            "sticky={sticky}"
        );
        // Its free forgets it: the address may come back as a new one.
        b.events(&[Event::free(
            object::ANON_VMA,
            site::PUT,
            1,
            after.vmas[0].anon_vma,
        )]);
        let o = b.walk(&after.vmas, &[(1, 0)]);
        assert_eq!(o["lazy"].processes[&1].count("anon_vma"), 0);
    }
}

#[test]
fn lazy_counts_the_vm_area_struct_growth_only_past_an_alignment_step() {
    let mut b = Bench::new();
    let vmas: Vec<Vma> = (0..10).map(|i| anon(1, 0x1000_0000 * (i + 1), 0)).collect();
    let o = b.walk(&vmas, &[(1, 0)]);
    assert_eq!(o["lazy"].system.bytes, 0, "176 + 4 fits a 192 B slot");
    b.facts.slots.vm_area_struct = VmaSlot {
        struct_size: Some(192),
        object_size: Some(192),
        slab_size: Some(192),
        align: Some(64),
    };
    let o = b.walk(&vmas, &[(1, 0)]);
    assert_eq!(o["lazy"].system.bytes, 10 * 64, "196 B takes a 256 B slot");
    assert!(o["lazy"].rules.iter().any(|r| r.contains("cross")));
    assert!(
        o["lazy"].change_vs_today.is_none(),
        "today holds nothing here"
    );
}

#[test]
fn the_ideal_counts_vmas_sharing_an_anonymous_page() {
    let mut b = Bench::new();
    let with = |start, pages: Option<(u64, u64)>| Vma {
        anon_pages: pages.map(|(present, shared)| AnonPages { present, shared }),
        ..anon(1, start, 0x100 + start)
    };
    let vmas = [
        with(0x1000_0000, Some((4, 1))),
        with(0x2000_0000, Some((4, 0))),
        with(0x3000_0000, None),
        anon(1, 0x4000_0000, 0),
    ];
    let o = b.walk(&vmas, &[(1, 0)]);
    let i = &o["ideal"];
    assert_eq!(i.system.count("rmap_vma"), 1);
    assert_eq!(i.system.bytes, 64, "the AVC slot by default");
    let c = i.coverage.unwrap();
    assert_eq!((c.needed, c.read), (3, 2));
    assert!(i.blind_spots.iter().any(|s| s.contains("1 of 3")));
}

#[test]
fn seeding_infers_a_dead_zygote_from_its_orphaned_anon_vma_tree() {
    // A zygote (1) faulted two regions, forked apps 2 and 3 and died
    // before the start: the apps' anon_vmas have the zygote's as roots,
    // which no live VMA holds as its own.
    let mut sim = Sim::default();
    for i in 0..2 {
        let v = sim.map(1, 0x1000_0000 * (i + 1));
        sim.fault(v);
    }
    sim.fork(1, 2);
    sim.fork(1, 3);
    let x = sim.map(4, 0x1000_0000);
    sim.fault(x);
    let mut snap = sim.snapshot();
    snap.vmas.retain(|v| v.tgid != 1);
    let mut b = Bench::new();
    let o = b.walk(&snap.vmas, &[(2, 9), (3, 9), (4, 9)]);
    let (n, pinned) = contexts(&o);
    assert_eq!(n, 4, "three live, one inferred");
    assert_eq!(pinned, vec![(0, vec![2, 3])]);
    // Only at seeding: a later walk does not infer it again.
    let o = b.walk(&snap.vmas, &[(2, 9), (3, 9), (4, 9)]);
    assert_eq!(contexts(&o).0, 4);
    let mut off = Bench::with(Options {
        cow: cow_context::Options {
            infer_dead_at_seed: false,
            ..cow_context::Options::default()
        },
        ..Options::default()
    });
    assert_eq!(
        contexts(&off.walk(&snap.vmas, &[(2, 9), (3, 9), (4, 9)])).0,
        3
    );
}

#[test]
fn seeding_links_a_live_child_to_its_parent_by_their_shared_tree() {
    let mut sim = Sim::default();
    let v = sim.map(1, 0x1000_0000);
    sim.fault(v);
    sim.fork(1, 2);
    let snap = sim.snapshot();
    let mut b = Bench::new();
    b.walk(&snap.vmas, &[(1, 0), (2, 1)]);
    // The parent's exit (seen) leaves it pinned by 2: the seed linked them.
    b.events(&[exit(1)]);
    let child: Vec<Vma> = snap.vmas.iter().filter(|v| v.tgid == 2).cloned().collect();
    let o = b.walk(&child, &[(2, 1)]);
    assert_eq!(contexts(&o), (2, vec![(1, vec![2])]));
}

#[test]
fn every_design_names_its_rules_and_blind_spots_and_today_is_the_basis() {
    let mut b = Bench::new();
    let o = b.walk(&[anon(1, 0x1000_0000, 0x100)], &[(1, 0)]);
    assert_eq!(
        o.keys().map(String::as_str).collect::<Vec<_>>(),
        ["cow_context", "ideal", "lazy", "today"]
    );
    for d in o.values() {
        assert!(!d.rules.is_empty(), "{}", d.name);
        assert!(!d.blind_spots.is_empty(), "{}", d.name);
    }
    assert_eq!(o["today"].change_vs_today, Some(0.0));
    assert_eq!(o["lazy"].change_vs_today, Some(-1.0));
    assert_eq!(o["today"].system.bytes, 104 + 64);
}

#[test]
fn design_options_are_set_by_name_and_bad_ones_say_why() {
    let mut o = Options::default();
    o.set("maple_entries_per_node=16").unwrap();
    o.set("fork_readd_arrays=false").unwrap();
    o.set("ideal_object_bytes=32").unwrap();
    assert_eq!(o.cow.entries_per_node, 16);
    assert!(!o.cow.fork_readd_arrays);
    assert_eq!(o.ideal_object_bytes, Some(32));
    for (bad, says) in [
        ("maple_entries_per_node=0", "from 1 to 16"),
        ("maple_entries_per_node=17", "from 1 to 16"),
        ("fork_readd_arrays=maybe", "not true or false"),
        ("no_such=1", "no such design option"),
        ("cow_context_bytes", "expected NAME=VALUE"),
    ] {
        let e = o.set(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    // Every name listed is one `set` takes.
    for (name, _) in OPTION_NAMES {
        let v = if name.ends_with("bytes") || name.ends_with("node") {
            "8"
        } else {
            "true"
        };
        o.set(&format!("{name}={v}")).unwrap();
    }
    // And what is set shows in the outcome's options.
    let mut b = Bench::with(o);
    let out = b.walk(&[], &[(1, 0)]);
    let cow = &out["cow_context"];
    assert!(
        cow.options
            .iter()
            .any(|x| x.name == "maple_entries_per_node" && x.value == "8")
    );
}
