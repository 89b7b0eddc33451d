//! The engine driven by scripts of inputs. The first three are the ordering
//! bugs the live daemon had (07d5305, 455e7a3, bbd657a), replayed as the
//! messages a source delivers; each test also runs the old rule and shows
//! that it gets the numbers wrong.
use rmapwatch_common::{object, site};

use super::*;
use crate::{
    account::Flow,
    event::{Comm, Event},
    input::{KernelCounters, RmapUpdate, SlabRead},
    model::sim::Sim,
    snapshot::Snapshot,
};

const AV: u32 = object::ANON_VMA;
const AVC: u32 = object::AVC;

/// Inputs as a source would deliver them, with a clock.
struct Script {
    t: Nanos,
    inputs: Vec<Input>,
}

impl Script {
    fn new() -> Self {
        let facts = Facts {
            sizes: crate::facts::Sizes {
                anon_vma: 104,
                anon_vma_chain: 64,
            },
            ..Facts::default()
        };
        Self {
            t: 0,
            inputs: vec![Input::Facts(Box::new(facts))],
        }
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.t = self.t.max(ms * 1_000_000);
        self
    }

    fn events(&mut self, events: &[Event]) -> &mut Self {
        self.t += 1000;
        self.inputs.push(Input::Events {
            t: self.t,
            events: events.to_vec(),
        });
        self
    }

    fn begin(&mut self) -> &mut Self {
        self.t += 1000;
        self.inputs.push(Input::WalkBegin { t: self.t });
        self
    }

    /// VMAs of a walk in progress (every process named).
    fn vmas(&mut self, vmas: &[Vma]) -> &mut Self {
        let comms = vmas
            .iter()
            .map(|v| (v.tgid, format!("p{}", v.tgid)))
            .collect();
        self.inputs.push(Input::WalkVmas {
            comms,
            parents: Vec::new(),
            vmas: vmas.to_vec(),
        });
        self
    }

    fn end(&mut self) -> &mut Self {
        self.t += 1000;
        self.inputs.push(Input::WalkEnd {
            t: self.t,
            counts: WalkCounts::default(),
            error: None,
        });
        self
    }

    fn walk(&mut self, snap: &Snapshot) -> &mut Self {
        self.begin().vmas(&snap.vmas).end()
    }

    fn dropped(&mut self, n: u64) -> &mut Self {
        self.t += 1000;
        self.inputs.push(Input::Counters {
            t: self.t,
            counters: Counters {
                kernel: Some(KernelCounters {
                    dropped: n,
                    ..KernelCounters::default()
                }),
                ..Counters::default()
            },
        });
        self
    }

    fn tick(&mut self) -> &mut Self {
        self.t += 1000;
        self.inputs.push(Input::Tick { t: self.t });
        self
    }

    fn run(&self) -> Engine {
        self.run_with(Options::default())
    }

    fn run_with(&self, opts: Options) -> Engine {
        let mut e = Engine::new(opts);
        for i in &self.inputs {
            e.apply(i.clone()).unwrap();
        }
        e
    }
}

/// A VMA of `tgid` whose chain holds `avc`, its own anon_vma `av` (a root
/// with no children).
fn vma(tgid: u32, addr: u64, av: u64, avc: u64) -> Vma {
    Vma {
        tgid,
        mm: u64::from(tgid) << 12,
        addr,
        anon_vma: av,
        av_root: av,
        av_num_children: 1,
        chain: vec![(avc, av)],
        ..Vma::default()
    }
}

fn live(e: &Engine, pid: u32) -> [u64; 2] {
    e.accounting().processes[&pid].live
}

fn flows(e: &Engine, pid: u32, obj: u32) -> (u64, u64) {
    let f = e.accounting().processes[&pid].flows[obj as usize];
    (f.allocs, f.frees)
}

fn drift(e: &Engine) -> [i64; 2] {
    e.walk.as_ref().unwrap().comparison.drift
}

#[test]
fn events_reported_before_a_walk_are_applied_before_it_seeds() {
    // 07d5305: an anon_vma of pid 5 that existed before the attach is freed
    // and its address reused by pid 6, all before the seeding walk, which
    // sees pid 6's.
    let events = [
        Event::free(AV, site::PUT, 5, 0x1000),
        Event::alloc(AV, site::PREPARE, 6, 0x1000, false),
        Event::alloc(AVC, site::PREPARE, 6, 0x2000, false),
    ];
    let snap = [vma(6, 0xa000, 0x1000, 0x2000)];
    let mut s = Script::new();
    s.events(&events).begin().vmas(&snap).end();
    let e = s.run();
    assert_eq!(flows(&e, 6, AV), (1, 0));
    assert_eq!(live(&e, 6), [1, 1]);
    assert_eq!(e.accounting().objects[AV as usize].frees_of_preexisting, 1);
    assert_eq!(drift(&e), [0, 0]);
    // The old rule applied them after the walk had seeded: the earlier
    // life's free was charged to the new owner.
    let mut old = Script::new();
    old.begin().vmas(&snap).end().events(&events);
    let e = old.run();
    assert_eq!(
        flows(&e, 6, AV),
        (1, 1),
        "the old order charges pid 6 a free"
    );
}

#[test]
fn a_fork_straddling_the_attach_is_charged_to_its_own_child() {
    // 455e7a3: allocations of a fork whose end the source never reported
    // (fork's end attached after the allocations) waited for the parent's
    // next fork. The seeding walk sees them in child 20: they stay there.
    let mut s = Script::new();
    s.events(&[
        Event::alloc(AV, site::FORK, 10, 0x1000, true),
        Event::alloc(AVC, site::FORK, 10, 0x2000, true),
    ])
    .begin()
    .vmas(&[vma(20, 0xa000, 0x1000, 0x2000)])
    .end()
    .events(&[
        Event::alloc(AV, site::FORK, 10, 0x3000, true),
        Event::alloc(AVC, site::FORK, 10, 0x4000, true),
        Event::fork(10, 21, "kid"),
    ]);
    let e = s.run();
    assert_eq!(live(&e, 20), [1, 1]);
    assert_eq!(live(&e, 21), [1, 1]);
    assert_eq!(flows(&e, 21, AV), (1, 0));
    // The old rule handed every waiting allocation to the next child.
    let mut a = Accounting::default();
    for e in [
        Event::alloc(AV, site::FORK, 10, 0x1000, true),
        Event::alloc(AV, site::FORK, 10, 0x3000, true),
        Event::fork(10, 21, "kid"),
    ] {
        a.apply(&e);
    }
    assert_eq!(a.processes[&21].live, [2, 0], "the old rule: both to 21");
}

#[test]
fn a_walk_seeing_an_addresss_next_life_leaves_it_to_the_events() {
    // bbd657a: child 20 owns anon_vma 0x1000; while the walk runs it exits
    // and the parent forks 21, which gets the same address; the walk sees
    // 21's life before those events arrive.
    let mut s = Script::new();
    s.events(&[
        Event::alloc(AV, site::FORK, 1, 0x1000, true),
        Event::alloc(AVC, site::FORK, 1, 0x2000, true),
        Event::fork(1, 20, "kid"),
    ])
    .begin()
    .vmas(&[vma(21, 0xb000, 0x1000, 0x3000)])
    .events(&[
        Event::free(AVC, site::UNLINK, 20, 0x2000),
        Event::free(AV, site::PUT, 20, 0x1000),
        Event::alloc(AV, site::FORK, 1, 0x1000, true),
        Event::alloc(AVC, site::FORK, 1, 0x3000, true),
        Event::fork(1, 21, "kid"),
    ])
    .end();
    let e = s.run();
    assert_eq!(flows(&e, 20, AV), (1, 1));
    assert_eq!(flows(&e, 21, AV), (1, 0));
    assert_eq!(live(&e, 20), [0, 0]);
    assert_eq!(live(&e, 21), [1, 1]);
    assert_eq!(drift(&e), [0, 0]);
    // The old rule seeded over the owner events had given the address (as
    // an allocation by 21 would): 20's queued free then came out of 21's
    // life, and 20 never freed its anon_vma.
    let mut a = Accounting::default();
    for e in [
        Event::alloc(AV, site::FORK, 1, 0x1000, true),
        Event::fork(1, 20, "kid"),
        Event::alloc(AV, site::PREPARE, 21, 0x1000, false), // the old seeding
        Event::free(AV, site::PUT, 20, 0x1000),
        Event::alloc(AV, site::FORK, 1, 0x1000, true),
        Event::fork(1, 21, "kid"),
    ] {
        a.apply(&e);
    }
    let f = a.processes[&20].flows[AV as usize];
    assert_eq!((f.allocs, f.frees), (1, 0), "the old rule loses 20's free");
}

#[test]
fn a_leader_exiting_alone_during_the_seeding_walk_leaves_its_process_its_objects() {
    // The zombie-leader root test's flake (events 7 anon_vmas and 9 AVCs
    // short of a fresh walk). Process 10 started before the seeding walk
    // (its objects are events from before WalkBegin). `iter/task_vma`
    // drops the task between two reads of the iterator and looks its tid
    // up again: the leader exited alone in between (no mm), so the
    // iterator went on to child 11, then to 10's surviving thread, which
    // walks the same mm again from its first VMA. The decoder took that
    // visit for a thread's duplicate and dropped it: the walk missed 10's
    // VMAs above the cut, and the seed took their objects from 10 for
    // good (the next walks see them: drift, live short of the walk).
    use crate::snapshot::{Decoder, encode};
    let p = |start: u64, av: u64, avc: u64| Vma {
        tgid: 10,
        mm: 0x1000,
        addr: 0xffff_0000_0000 + start,
        start,
        end: start + 0x1000,
        anon_vma: av,
        av_root: av,
        av_num_children: 1,
        chain: vec![(avc, av)],
        ..Vma::default()
    };
    let low = [p(0x10_000, 0x100, 0x500), p(0x20_000, 0x140, 0x540)];
    let high = [p(0x30_000, 0x180, 0x580), p(0x40_000, 0x1c0, 0x5c0)];
    let child = Vma {
        tgid: 11,
        mm: 0x2000,
        ..vma(11, 0xffff_1000_0000, 0x200, 0x600)
    };
    let mut allocs = Vec::new();
    for v in low.iter().chain(&high).chain([&child]) {
        allocs.push(Event::alloc(AV, site::PREPARE, v.tgid, v.anon_vma, false));
        allocs.push(Event::alloc(
            AVC,
            site::PREPARE,
            v.tgid,
            v.chain[0].0,
            false,
        ));
    }
    // What the kernel writes: the leader's first read, the child, then the
    // thread from the first VMA.
    let mut bytes = Vec::new();
    for v in low.iter().chain([&child]).chain(&low).chain(&high) {
        encode(v, &[0; 16], &mut bytes);
    }
    let mut seeding = Vec::new();
    let mut d = Decoder::new();
    d.feed(&bytes, |v, _| seeding.push(v.clone())).unwrap();
    d.finish().unwrap();
    let whole: Vec<Vma> = low.iter().chain(&high).chain([&child]).cloned().collect();
    let mut s = Script::new();
    s.events(&allocs).begin().vmas(&seeding).end();
    s.begin().vmas(&whole).end();
    let e = s.run();
    assert_eq!(live(&e, 10), [4, 4], "events vs a fresh walk");
    assert_eq!(live(&e, 11), [1, 1]);
    assert_eq!(drift(&e), [0, 0]);
}

#[test]
fn drift_leaves_out_what_changed_during_the_walk() {
    // A fork and a free while the walk runs: the walk sees the parent
    // before the fork, the child after it, and one of the parent's objects
    // before it is freed.
    let mut sim = Sim::default();
    for i in 0..4 {
        let v = sim.map(1, i * 0x10000);
        sim.fault(v);
    }
    let before = sim.snapshot();
    let mut s = Script::new();
    let seed: Vec<Event> = before
        .vmas
        .iter()
        .flat_map(|v| {
            [
                Event::alloc(AV, site::PREPARE, 1, v.anon_vma, false),
                Event::alloc(AVC, site::PREPARE, 1, v.chain[0].0, false),
            ]
        })
        .collect();
    s.events(&seed).walk(&before);
    sim.fork(1, 2);
    let after = sim.snapshot();
    let (parent, child): (Vec<Vma>, Vec<Vma>) =
        after.vmas.iter().cloned().partition(|v| v.tgid == 1);
    let mut fork_events: Vec<Event> = Vec::new();
    for v in &child {
        for &(avc, _) in &v.chain {
            fork_events.push(Event::alloc(AVC, site::FORK, 1, avc, true));
        }
        fork_events.push(Event::alloc(AV, site::FORK, 1, v.anon_vma, true));
    }
    fork_events.push(Event::fork(1, 2, "kid"));
    // The parent's first VMA goes away after the walk saw it.
    let gone = &parent[0];
    let unmap = [Event::free(AVC, site::UNLINK, 1, gone.chain[0].0)];
    s.begin()
        .vmas(&parent)
        .events(&unmap)
        .events(&fork_events)
        .vmas(&child)
        .end();
    let e = s.run();
    assert_eq!(drift(&e), [0, 0]);
    assert!(e.walk.as_ref().unwrap().comparison.by_process.is_empty());
    assert_eq!(e.walk.as_ref().unwrap().comparison.changed_during_walk, 13);
    // The old rule: live now against the walk, whatever changed during it.
    let r = e.report(false);
    let old = r.live.anon_vma_chain.objects.cast_signed()
        - r.model
            .as_ref()
            .unwrap()
            .snapshot
            .actual
            .anon_vma_chain
            .objects
            .cast_signed();
    assert_eq!(
        old, -1,
        "the old rule counts the free during the walk as drift"
    );
}

#[test]
fn a_reseed_after_lost_events_leaves_no_fork_allocation_for_the_wrong_child() {
    let mut s = Script::new();
    s.walk(&Snapshot::default());
    // Fork F1 of thread 10 (child 20): its allocations arrive, its end is
    // lost. An allocation of another fork whose end and free were lost
    // too (0x5000).
    s.events(&[
        Event::alloc(AV, site::FORK, 10, 0x1000, true),
        Event::alloc(AVC, site::FORK, 10, 0x2000, true),
        Event::alloc(AV, site::FORK, 10, 0x5000, true),
    ])
    .dropped(1)
    // The re-seeding walk the engine asks for sees 20's, not 0x5000.
    .walk(&Snapshot {
        vmas: vec![vma(20, 0xa000, 0x1000, 0x2000)],
        ..Snapshot::default()
    })
    // 20 exits; then F2.
    .events(&[
        Event::free(AVC, site::UNLINK, 20, 0x2000),
        Event::free(AV, site::PUT, 20, 0x1000),
        Event::alloc(AV, site::FORK, 10, 0x3000, true),
        Event::fork(10, 21, "kid"),
    ]);
    let e = s.run();
    assert_eq!(live(&e, 20), [0, 0], "its objects were its, and freed");
    assert_eq!(flows(&e, 20, AV), (0, 1));
    assert_eq!(live(&e, 21), [1, 0], "only F2's allocation");
    assert_eq!(flows(&e, 21, AV), (1, 0));
    assert_eq!(
        e.accounting().live(),
        [1, 0],
        "no ghost of 0x5000 or 0x1000"
    );
    assert_eq!(e.accounting().objects[AV as usize].frees_of_preexisting, 0);
    let r = e.report(false);
    assert_eq!(r.resync.resyncs, 1);
    assert!(!r.resync.degraded);
    assert_eq!(r.resync.drift_before_last, Some((0, 0)));
}

#[test]
fn lost_events_degrade_until_the_reseeding_walk_that_is_asked_for_at_once() {
    let mut s = Script::new();
    s.walk(&Snapshot::default()).dropped(0);
    let mut e = s.run();
    let _ = e.take_requests();
    e.apply(Input::Counters {
        t: 1_000_000,
        counters: Counters {
            kernel: Some(KernelCounters {
                dropped: 7,
                ..KernelCounters::default()
            }),
            ..Counters::default()
        },
    })
    .unwrap();
    assert!(e.report(false).resync.degraded);
    assert_eq!(e.report(false).dropped_events, Some(7));
    assert!(
        e.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Walk { .. }))
    );
    // Unreadable counters are unknown, not zero.
    e.apply(Input::Counters {
        t: 2_000_000,
        counters: Counters::default(),
    })
    .unwrap();
    assert_eq!(e.report(false).dropped_events, None);
    assert!(
        serde_json::to_string(&e.report(false))
            .unwrap()
            .contains("\"dropped_events\":null")
    );
}

#[test]
fn fork_windows_dropped_in_user_space_degrade_like_lost_events() {
    let mut s = Script::new();
    s.walk(&Snapshot::default()).dropped(0);
    let mut e = s.run();
    let _ = e.take_requests();
    let counters = |t, windows| Input::Counters {
        t,
        counters: Counters {
            kernel: Some(KernelCounters::default()),
            fork_windows_dropped: windows,
            ..Counters::default()
        },
    };
    e.apply(counters(1_000_000, 0)).unwrap();
    assert!(!e.report(false).resync.degraded);
    e.apply(counters(2_000_000, 3)).unwrap();
    let r = e.report(false);
    assert!(r.resync.degraded);
    assert_eq!(r.fork_windows_dropped, 3);
    assert!(r.to_text(10).contains("3 fork windows dropped"));
    assert!(
        e.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Walk { .. }))
    );
}

/// Counters whose slab program `kmem_cache_free` missed `misses` runs,
/// `seen` of them by the nest watch (`None`: no watch).
fn missed(t: Nanos, misses: u64, seen: Option<u64>) -> Input {
    let programs = std::iter::once((
        "kmem_cache_free".to_owned(),
        crate::input::ProgramStats {
            runs: 1000,
            run_time_ns: 50_000,
            recursion_misses: misses,
        },
    ))
    .collect();
    Input::Counters {
        t,
        counters: Counters {
            kernel: Some(KernelCounters {
                nested: seen.map(|n| {
                    Box::new(crate::input::Nested {
                        per_cpu: vec![n, 0],
                        ours: 0,
                        slab_misses: None,
                    })
                }),
                ..KernelCounters::default()
            }),
            programs: Some(programs),
            ..Counters::default()
        },
    }
}

#[test]
fn slab_misses_degrade_only_where_raw_tracepoints_are_preemptible_and_the_watch_missed_them() {
    let run = |preemptible: bool, inputs: &[Input]| {
        let mut s = Script::new();
        if let Input::Facts(f) = &mut s.inputs[0] {
            f.slab.preemptible = preemptible;
        }
        s.walk(&Snapshot::default()).dropped(0);
        let mut e = s.run();
        let _ = e.take_requests();
        for i in inputs {
            e.apply(i.clone()).unwrap();
        }
        let walk = e
            .take_requests()
            .iter()
            .any(|r| matches!(r, Request::Walk { .. }));
        (e.report(false).resync.degraded, walk)
    };
    // Interrupt-nested misses (a kernel that keeps raw tracepoints
    // non-preemptible): never ours, never a degradation.
    assert_eq!(run(false, &[missed(1_000_000, 40, None)]), (false, false));
    // Preemptible, no watch: a miss may have been ours.
    assert_eq!(run(true, &[missed(1_000_000, 3, None)]), (true, true));
    // Preemptible, every miss seen by the watch (which streamed those at
    // rmap sites): nothing lost.
    assert_eq!(run(true, &[missed(1_000_000, 5, Some(5))]), (false, false));
    // One the watch did not see.
    assert_eq!(run(true, &[missed(1_000_000, 6, Some(5))]), (true, true));
    // The same count again is no new loss.
    let (degraded, _) = run(
        true,
        &[missed(1_000_000, 6, Some(5)), missed(2_000_000, 6, Some(5))],
    );
    assert!(degraded, "still degraded until the walk");
}

#[test]
fn the_facts_ask_for_the_seeding_walk_and_ticks_for_refreshes_within_the_budget() {
    let mut e = Engine::new(Options {
        walk_budget: Some(0.05),
        ..Options::default()
    });
    e.apply(Input::Facts(Box::default())).unwrap();
    assert_eq!(
        e.take_requests(),
        vec![Request::Walk {
            slab: SlabRead::Read,
            paths: Paths::Detail
        }]
    );
    // A tick while the walk is asked for: the frame waits for it.
    assert_eq!(e.apply(Input::Tick { t: 1 }).unwrap(), Step::Nothing);
    let ms = 1_000_000;
    let mut e = Engine::new(Options {
        walk_budget: Some(0.05),
        ..Options::default()
    });
    e.apply(Input::Facts(Box::default())).unwrap();
    e.apply(Input::WalkBegin { t: 0 }).unwrap();
    e.apply(Input::WalkEnd {
        t: 700 * ms,
        counts: WalkCounts::default(),
        error: None,
    })
    .unwrap();
    let _ = e.take_requests();
    // A 700 ms walk at 5 %: not before 14 s have passed since it began.
    assert_eq!(e.apply(Input::Tick { t: 1000 * ms }).unwrap(), Step::Frame);
    assert!(
        e.take_requests()
            .iter()
            .all(|r| !matches!(r, Request::Walk { .. }))
    );
    assert_eq!(
        e.apply(Input::Tick { t: 13_900 * ms }).unwrap(),
        Step::Frame
    );
    assert_eq!(
        e.apply(Input::Tick { t: 14_000 * ms }).unwrap(),
        Step::Nothing
    );
    assert!(
        e.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Walk { .. }))
    );
    e.apply(Input::WalkBegin { t: 14_001 * ms }).unwrap();
    assert_eq!(
        e.apply(Input::WalkEnd {
            t: 14_003 * ms,
            counts: WalkCounts::default(),
            error: None,
        })
        .unwrap(),
        Step::Frame,
        "the frame the tick asked for"
    );
}

#[test]
fn walks_keep_to_their_share_of_the_time_unless_forced() {
    let ms = 1_000_000;
    // Unlimited (report): every refresh walks.
    assert!(walk_due(Some((10 * ms, 700 * ms)), None, false));
    assert!(!walk_due(Some((1000 * ms, 700 * ms)), Some(0.05), false));
    assert!(walk_due(Some((14_000 * ms, 700 * ms)), Some(0.05), false));
    // A 2 ms walk: every second-long refresh walks.
    assert!(walk_due(Some((1000 * ms, 2 * ms)), Some(0.05), false));
    assert!(walk_due(Some((ms, 700 * ms)), Some(0.05), true));
    assert!(walk_due(None, Some(0.05), false));
}

#[test]
fn reservations_do_not_trust_a_merged_avc_cache() {
    assert_eq!(reservation(1000, 2500), (1000, 2500));
    assert_eq!(reservation(1000, 9_000_000), (1000, 4000));
    assert_eq!(reservation(u64::MAX, u64::MAX), (16 << 20, 64 << 20));
    assert_eq!(reservation(0, 0), (0, 0));
}

#[test]
fn finishing_walks_once_more_with_every_path_then_stops() {
    let mut s = Script::new();
    s.walk(&Snapshot::default());
    let mut e = s.run();
    let _ = e.take_requests();
    e.finish();
    assert_eq!(
        e.take_requests(),
        vec![Request::Walk {
            slab: SlabRead::Shrink,
            paths: Paths::All
        }]
    );
    e.apply(Input::WalkBegin { t: 10_000_000 }).unwrap();
    e.apply(Input::WalkEnd {
        t: 11_000_000,
        counts: WalkCounts::default(),
        error: None,
    })
    .unwrap();
    assert_eq!(e.take_requests(), vec![Request::Stop]);
    assert_eq!(
        e.apply(Input::End {
            t: 12_000_000,
            reason: "stopped".into()
        })
        .unwrap(),
        Step::End
    );
    assert_eq!(e.ended(), Some("stopped"));
}

#[test]
fn a_detail_view_is_walked_at_once_and_its_family_found_in_the_next_walk() {
    let mut sim = Sim::default();
    for i in 0..3 {
        let v = sim.map(1, i * 0x10000);
        sim.fault(v);
    }
    sim.fork(1, 2);
    let mut snap = sim.snapshot();
    for (pid, p) in &mut snap.procs {
        p.pid = *pid;
    }
    let mut s = Script::new();
    s.walk(&snap);
    let mut e = s.run();
    let _ = e.take_requests();
    e.want_detail(Some(2));
    let r = e.take_requests();
    assert!(r.contains(&Request::Detail { pid: Some(2) }));
    assert!(r.iter().any(|r| matches!(r, Request::Walk { .. })));
    let walk = |e: &mut Engine, t: Nanos| {
        e.apply(Input::WalkBegin { t }).unwrap();
        e.apply(Input::WalkVmas {
            comms: vec![(1, "parent".into()), (2, "child".into())],
            parents: Vec::new(),
            vmas: snap.vmas.clone(),
        })
        .unwrap();
        e.apply(Input::WalkEnd {
            t: t + 1,
            counts: WalkCounts::default(),
            error: None,
        })
        .unwrap();
    };
    walk(&mut e, 1_000_000);
    let i = e.inspection(2).unwrap();
    assert_eq!(i.vmas.len(), 3);
    assert!(i.family.is_empty());
    assert!(
        e.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Walk { .. })),
        "one more walk for the family"
    );
    walk(&mut e, 2_000_000);
    let i = e.inspection(2).unwrap();
    assert_eq!(i.family.len(), 1);
    assert_eq!(i.family[0].pid, 1);
    assert_eq!(i.family[0].shared_anon_vmas, 3);
    assert_eq!(i.comm, "child");
}

#[test]
fn inputs_that_break_the_rules_are_refused_and_change_nothing() {
    let mut e = Engine::new(Options::default());
    assert!(e.apply(Input::Tick { t: 1 }).is_err());
    e.apply(Input::Facts(Box::default())).unwrap();
    e.apply(Input::Tick { t: 5 }).unwrap();
    assert!(
        e.apply(Input::Events {
            t: 4,
            events: vec![Event::alloc(AV, site::PREPARE, 1, 0x40, false)]
        })
        .is_err()
    );
    assert_eq!(e.accounting().events, 0);
    assert!(
        e.apply(Input::WalkEnd {
            t: 6,
            counts: WalkCounts::default(),
            error: None
        })
        .is_err()
    );
}

#[test]
fn a_frame_is_the_same_state_as_the_report() {
    let mut s = Script::new();
    s.events(&[Event::alloc(AV, site::PREPARE, 3, 0x40, false)])
        .walk(&Snapshot {
            vmas: vec![vma(3, 0xa000, 0x40, 0x80)],
            ..Snapshot::default()
        })
        .at(2000)
        .tick();
    let e = s.run();
    let f = e.frame();
    let r = e.report(false);
    assert_eq!(f.live.anon_vma, r.live.anon_vma.objects);
    assert_eq!(f.live.avc, r.live.anon_vma_chain.objects);
    let w = f.walk.unwrap();
    assert_eq!(w.actual.anon_vma, 1);
    assert_eq!(w.actual.avc, 1);
    assert_eq!(w.lazy, crate::model::Objects::default());
    assert_eq!(f.processes.len(), 1);
    assert_eq!(f.processes[0].comm, "p3");
    assert_eq!(
        f.processes[0].walked,
        Some(crate::model::Objects {
            anon_vma: 1,
            avc: 1
        })
    );
    assert!((f.uptime_s - r.duration_s).abs() < 1e-3);
    assert_eq!(f.totals[0].flow.allocs, 1);
    assert!(f.time.is_some());
    assert_eq!(
        f.time, r.time,
        "the time panel shows the report's time block"
    );
    let _ = Comm::new("x");
}

/// Facts with the rmap hook (per-VMA folio counts), and no walks.
fn churn_facts() -> Facts {
    let mut hooks = crate::hooks::tracepoint_only("fentry: refused");
    hooks[rmapwatch_common::hook::RMAP_NEW as usize].mode = HookMode::Kprobe;
    Facts {
        sizes: crate::facts::Sizes {
            anon_vma: 104,
            anon_vma_chain: 64,
        },
        hooks,
        snapshot_error: Some("none in this test".into()),
        ..Facts::default()
    }
}

/// The fork storm of a server: `n` short-lived children of pid 1 (pids
/// cycling over 30,000 from 1000, so each is reused many times), one every
/// `gap` ns; each gets an anon_vma and an AVC in fork, faults one more
/// AVC, frees all three, exits and leaves 3 new folios in one VMA. Pid 1
/// keeps one anon_vma all along; pid 7 exits at once but owns an anon_vma
/// until the storm's middle. A tick every 100 children, with the rmap
/// map's update (the children exited since are removed from it) before it.
fn churn(n: u64, gap: Nanos, mut put: impl FnMut(Input)) {
    const BASE: u64 = 0xffff_8880_0000_0000;
    put(Input::Facts(Box::new(churn_facts())));
    put(Input::Events {
        t: 1,
        events: vec![
            Event::alloc(AV, site::PREPARE, 1, BASE, false),
            Event::fork(1, 7, "held"),
            Event::alloc(AV, site::PREPARE, 7, BASE + 0x40, false),
            Event::Exit {
                tid: 7,
                tgid: 7,
                comm: Comm::new("held"),
            },
        ],
    });
    let mut retired = Vec::new();
    for i in 0..n {
        let t = 2 + i * gap;
        let pid = 1000 + u32::try_from(i % 30_000).unwrap();
        let at = BASE + 0x1_0000 + u64::from(pid) * 0x100;
        let mut events = vec![
            Event::alloc(AV, site::FORK, 1, at, true),
            Event::alloc(AVC, site::CLONE, 1, at + 0x40, true),
            Event::fork(1, pid, "worker"),
            Event::alloc(AVC, site::PREPARE, pid, at + 0x80, false),
            Event::free(AVC, site::UNLINK, pid, at + 0x40),
            Event::free(AVC, site::UNLINK, pid, at + 0x80),
            Event::free(AV, site::PUT, pid, at),
            Event::Exit {
                tid: pid,
                tgid: pid,
                comm: Comm::new("worker"),
            },
        ];
        if i == n / 2 {
            // The last link to pid 7's anon_vma goes.
            events.push(Event::free(AV, site::PUT, 1, BASE + 0x40));
        }
        put(Input::Events { t, events });
        retired.push(((pid, 0x7f00_0000_0000), 3));
        if i % 100 == 99 {
            put(Input::Rmap(RmapUpdate {
                current: vec![((1, 0x5500_0000_0000), i)],
                retired: std::mem::take(&mut retired),
            }));
            put(Input::Tick { t: t + 1 });
        }
    }
    put(Input::Rmap(RmapUpdate {
        current: vec![((1, 0x5500_0000_0000), n)],
        retired,
    }));
    put(Input::Tick { t: 2 + n * gap });
}

fn run_churn(n: u64, gap: Nanos, retention: Retention, mut check: impl FnMut(&Engine)) -> Engine {
    let mut e = Engine::new(Options {
        source_answers: false,
        walk_on_tick: false,
        retention,
        ..Options::default()
    });
    churn(n, gap, |i| {
        let tick = matches!(i, Input::Tick { .. });
        e.apply(i).unwrap();
        if tick {
            check(&e);
        }
    });
    e
}

#[test]
fn a_fork_storm_keeps_the_state_bounded_and_the_sums_whole() {
    const N: u64 = 100_000;
    let r = Retention::default();
    let mut ticks = 0;
    let mut held_until = None;
    let e = run_churn(N, 1_000_000, r, |e| {
        ticks += 1;
        let a = e.accounting();
        let s = e.state_size();
        // At most the cap of exited processes, plus pid 1 and pid 7 (held
        // by its object).
        assert!(s.accounting.exited_kept <= r.exited_max + 1, "{s:?}");
        assert!(a.processes.len() <= r.exited_max + 2, "{s:?}");
        // The kept processes' retired rmap entries, and pid 1's.
        assert!(s.rmap_entries <= r.exited_max + 1, "{s:?}");
        // pid 7 waits for its anon_vma, then goes at the next tick.
        match a.processes.get(&7) {
            Some(p) => {
                assert!(p.exited);
                assert_eq!(p.live, [1, 0]);
                assert!(held_until.is_none());
            }
            None => {
                held_until.get_or_insert(a.events);
            }
        }
    });
    assert_eq!(ticks, N / 100 + 1);
    // pid 7 went right after the storm's middle.
    let gone_at = held_until.unwrap();
    assert!(gone_at > 4 + 8 * (N / 2) && gone_at <= 4 + 8 * (N / 2 + 100) + 1);
    let a = e.accounting();
    let rep = e.report(true);
    // The aggregate is what the folded processes had, by construction:
    // each child 1/1 anon_vma, 2/2 AVC, 3 folios; pid 7 1/1 anon_vma.
    let kids = rep.exited.processes - 1;
    assert_eq!(a.folded.processes, rep.exited.processes);
    assert_eq!(
        rep.exited.anon_vma,
        Flow {
            allocs: kids + 1,
            frees: kids + 1
        }
    );
    assert_eq!(
        rep.exited.anon_vma_chain,
        Flow {
            allocs: 2 * kids,
            frees: 2 * kids
        }
    );
    assert_eq!(rep.exited.new_anon_folios, Some(3 * kids));
    // Listed + folded = every process that had traffic, and their flows
    // add up to the system's (every object here has an owner).
    let listed: Vec<_> = rep.processes.iter().collect();
    assert_eq!(listed.len() as u64 + rep.exited.processes, N + 2);
    for (k, name) in [(0, "anon_vma"), (1, "anon_vma_chain")] {
        let flow = |p: &crate::report::ProcessReport| {
            if k == 0 { p.anon_vma } else { p.anon_vma_chain }
        };
        let ex = if k == 0 {
            rep.exited.anon_vma
        } else {
            rep.exited.anon_vma_chain
        };
        let allocs: u64 = listed.iter().map(|p| flow(p).allocs).sum::<u64>() + ex.allocs;
        let frees: u64 = listed.iter().map(|p| flow(p).frees).sum::<u64>() + ex.frees;
        assert_eq!(
            (allocs, frees),
            (rep.objects[name].allocs, rep.objects[name].frees)
        );
    }
    let folios: u64 = listed
        .iter()
        .map(|p| p.rmap.as_ref().unwrap().new_anon_folios)
        .sum::<u64>()
        + rep.exited.new_anon_folios.unwrap();
    assert_eq!(folios, 3 * N + N, "every child's 3, and pid 1's");
    // Reused pids started fresh: every listed child has its own life only.
    for p in listed.iter().filter(|p| p.pid >= 1000) {
        assert_eq!(
            p.anon_vma,
            Flow {
                allocs: 1,
                frees: 1
            },
            "{p:?}"
        );
        assert_eq!(
            p.anon_vma_chain,
            Flow {
                allocs: 2,
                frees: 2
            },
            "{p:?}"
        );
        assert_eq!(p.rmap.as_ref().unwrap().new_anon_folios, 3, "{p:?}");
    }
    assert_eq!(rep.state.processes, a.processes.len() as u64);
    assert_eq!(rep.state.exited_with_objects, 0);

    // The system's figures are those of the same storm never folded.
    let all = run_churn(N, 1_000_000, Retention::FOREVER, |_| {});
    let rall = all.report(true);
    assert_eq!(rall.objects, rep.objects);
    assert_eq!(rall.live, rep.live);
    assert_eq!(rall.events, rep.events);
    assert_eq!(all.accounting().objects, a.objects);
    // (Never folded but for reused pids: a new life folds the previous.)
    assert_eq!(rall.processes.len(), 30_000 + 2);
    assert_eq!(rall.exited.processes, N - 30_000);
}

#[test]
fn exited_processes_stay_listed_for_their_time_then_fold() {
    // 100 children a second, the cap far: the time folds them.
    let r = Retention {
        exited_ns: 60_000_000_000,
        exited_max: 100_000,
    };
    let mut max_kept = 0;
    let e = run_churn(30_000, 10_000_000, r, |e| {
        let a = e.accounting();
        // Every exited child listed exited less than 60 s ago.
        for p in a.processes.values().filter(|p| p.pid >= 1000) {
            let at = p.exited_at.unwrap();
            assert!(e.now() - at < r.exited_ns, "{p:?} at {}", e.now());
        }
        max_kept = max_kept.max(a.processes.len());
    });
    // 100 children a second for 60 s, give or take a tick's worth.
    assert!((6000..=6000 + 102).contains(&max_kept), "{max_kept}");
    assert!(e.accounting().folded.processes > 0);
}

#[test]
fn removed_rmap_entries_of_a_process_folded_already_go_to_the_aggregate() {
    let mut e = Engine::new(Options {
        source_answers: false,
        retention: Retention {
            exited_ns: 0,
            exited_max: 1024,
        },
        ..Options::default()
    });
    e.apply(Input::Facts(Box::new(churn_facts()))).unwrap();
    e.apply(Input::Events {
        t: 1,
        events: vec![
            Event::fork(1, 5, "kid"),
            Event::alloc(AV, site::PREPARE, 5, 0x40, false),
            Event::free(AV, site::PUT, 5, 0x40),
            Event::Exit {
                tid: 5,
                tgid: 5,
                comm: Comm::new("kid"),
            },
        ],
    })
    .unwrap();
    e.apply(Input::Rmap(RmapUpdate {
        current: vec![((5, 0x1000), 2)],
        retired: vec![],
    }))
    .unwrap();
    e.apply(Input::Tick { t: 2 }).unwrap();
    assert!(!e.accounting().processes.contains_key(&5));
    // The source removes its entry after the fold.
    e.apply(Input::Rmap(RmapUpdate {
        current: vec![],
        retired: vec![((5, 0x1000), 4)],
    }))
    .unwrap();
    let r = e.report(false);
    assert_eq!(r.exited.processes, 1);
    assert_eq!(r.exited.new_anon_folios, Some(4));
    assert_eq!(r.state.rmap_entries, 0);
    assert!(
        r.to_text(10)
            .contains("exited (folded): 1 processes, anon_vma +1/-1, AVC +0/-0, 4 new anon folios")
    );
}

#[test]
fn the_same_inputs_give_the_same_report() {
    let json = || {
        let e = run_churn(5_000, 1_000_000, Retention::default(), |_| {});
        serde_json::to_string(&e.report(true)).unwrap()
    };
    let (a, b) = (json(), json());
    assert_eq!(a, b);
    assert!(
        a.contains(r#""exited":{"processes":3977,"#),
        "{}",
        &a[..200]
    );
}

#[test]
fn the_perfetto_trace_marks_walks_reseeds_drops_and_zeroes_who_left() {
    let mut s = Script::new();
    s.walk(&Snapshot {
        vmas: vec![vma(30, 0xa000, 0x1000, 0x2000)],
        ..Snapshot::default()
    })
    .tick()
    .dropped(3)
    // The re-seeding walk: 30's objects are gone.
    .walk(&Snapshot::default())
    .tick()
    .dropped(5)
    .tick();
    let mut e = Engine::new(Options {
        walk_on_tick: false,
        source_answers: false,
        ..Options::default()
    });
    let mut b = crate::perfetto::Builder::new(20);
    let mut frames = Vec::new();
    for i in &s.inputs {
        let step = e.apply(i.clone()).unwrap();
        b.step(&e, step);
        if step == Step::Frame {
            frames.push(e.now());
        }
    }
    assert_eq!(
        b.instants(),
        [
            "walk 1",
            "dropped events +3 (total 3)",
            "walk 2",
            "re-seed 1",
            "dropped events +2 (total 5)"
        ]
    );
    assert_eq!(frames.len(), 3);
    // 30 owned an anon_vma and an AVC (lazy: neither), then left the
    // report: 0 from the next frame on, and no sample after that.
    assert_eq!(
        b.samples(30),
        [
            (frames[0], [Some(1), Some(0), Some(1), Some(0)]),
            (frames[1], [Some(0), Some(0), Some(0), Some(0)]),
        ]
    );
    assert!(e.report(false).processes.iter().all(|p| p.pid != 30));
    // Without a ClockRef the trace is on the source's own t.
    let trace = b.encode();
    assert!(!trace.is_empty());
}

#[test]
fn a_process_whose_exit_was_lost_is_folded_after_the_reseed() {
    // 30 is seen by every walk; 50 forks, allocates, frees, and exits
    // among lost events; 60 is forked while the re-seeding walk runs (not
    // in it, but not gone either).
    let mut s = Script::new();
    s.walk(&Snapshot {
        vmas: vec![vma(30, 0xa000, 0x1000, 0x2000)],
        ..Snapshot::default()
    })
    .tick()
    .events(&[
        Event::fork(30, 50, "short"),
        Event::alloc(AV, site::PREPARE, 50, 0x5000, false),
        Event::free(AV, site::PUT, 50, 0x5000),
    ])
    .dropped(7)
    .begin()
    .events(&[Event::fork(30, 60, "new")])
    .vmas(&[vma(30, 0xa000, 0x1000, 0x2000)])
    .end()
    .tick();
    let e = s.run_with(Options {
        source_answers: false,
        walk_on_tick: false,
        retention: Retention {
            exited_ns: 0,
            exited_max: 1024,
        },
        ..Options::default()
    });
    let a = e.accounting();
    assert_eq!(e.report(false).resync.resyncs, 1);
    assert!(!a.processes.contains_key(&50), "{:?}", a.processes.get(&50));
    assert_eq!(a.folded.processes, 1);
    assert_eq!(
        a.folded.flows[AV as usize],
        Flow {
            allocs: 1,
            frees: 1
        }
    );
    // Seen by the walk, or born during it: still listed, not exited.
    assert!(!a.processes[&30].exited);
    assert!(!a.processes[&60].exited);
}

#[test]
fn the_text_report_shows_lock_waits_by_root_and_process_and_fork_cost_per_design() {
    use crate::time::{ForkDesign, ForkObjects, ProcessWaits, RootWaits};
    let mut r = Script::new().run().report(false);
    let mut t = Engine::new(Options::default()).time_report();
    t.anon_vma_lock.source = "tracepoint lock:contention_begin/end".into();
    t.anon_vma_lock.available = true;
    t.anon_vma_lock.waits = 4;
    t.anon_vma_lock.wait_ns = 3_000_000;
    t.anon_vma_lock.read_waits = 3;
    t.anon_vma_lock.write_waits = 1;
    t.anon_vma_lock.by_root = (0..7)
        .map(|i| RootWaits {
            root: format!("{:#x}", 0xffff_8880_0000_0000_u64 + i),
            family: (100..108).collect(),
            family_size: 20,
            waits: 1,
            wait_ns: 1_000_000 - i * 1000,
            write_waits: 0,
            lazy_has_it: true,
        })
        .collect();
    t.anon_vma_lock.by_process = vec![ProcessWaits {
        pid: 42,
        comm: "evil\x1b[2J".into(),
        waits: 4,
        wait_ns: 3_000_000,
    }];
    t.anon_vma_lock.avoided[0].waits = 1;
    t.anon_vma_lock.avoided[0].wait_ns = 500_000;
    t.anon_vma_lock.avoided[1].waits = 4;
    t.anon_vma_lock.avoided[1].wait_ns = 3_000_000;
    t.fork.forks = 2;
    t.fork.syscall_ns = 300_000;
    t.fork.objects = ForkObjects {
        anon_vma: 4,
        anon_vma_chain: 6,
    };
    t.fork.objects_per_fork = Some(5.0);
    t.fork.designs = vec![ForkDesign {
        design: "cow_context".into(),
        objects_not_allocated: t.fork.objects,
        added: [("cow_context".to_owned(), 2)].into(),
        rule: String::new(),
    }];
    r.time = Some(t);
    let text = r.to_text(10);
    for want in [
        "Time\n  anon_vma lock waits: tracepoint lock:contention_begin/end\n  fork work: not \
         recorded",
        "anon_vma lock waits: 4 (read 3, write 1), 3.00 ms in all, mean 750.0 µs",
        "0xffff888000000000          1    1.00 ms       0  100 101 102 103 104 (+15 more)",
        "... 2 more roots",
        "      42 evil?[2J                4    3.00 ms",
        "lazy would not have waited: 1 waits, 500.0 µs\n",
        "cow_context would not have waited: 4 waits, 3.00 ms (its per-context spinlock cost is \
         not modelled)",
        "fork: 2 forks, mean syscall 150.0 µs, 5.0 objects per fork (anon_vma 4, AVC 6 in all)",
        "  cow_context: would not allocate anon_vma 4, AVC 6; adds cow_context 2\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    assert!(!text.contains('\x1b'));
    assert!(!text.contains("0xffff888000000005"), "{text}");
}

#[test]
fn a_waiter_folded_away_before_the_report_keeps_its_name() {
    // CI (stop 29): a sibling's child waited on a shared root, exited and
    // was folded out of the accounts; the report listed it nameless.
    let mut e = Engine::new(Options {
        source_answers: false,
        retention: Retention {
            exited_ns: 0,
            exited_max: 0,
        },
        ..Options::default()
    });
    e.apply(Input::Facts(Box::new(churn_facts()))).unwrap();
    let wait = |tgid: u32| {
        Event::LockWait(crate::event::LockWait {
            tid: tgid,
            tgid,
            anon_vma: 0x40,
            flags: rmapwatch_common::lock::WRITE,
            wait_ns: 1000,
            holder: 0,
        })
    };
    e.apply(Input::Events {
        t: 1,
        events: vec![
            Event::fork(1, 5, "parent"),
            Event::alloc(AV, site::PREPARE, 5, 0x40, false),
            Event::fork(5, 6, "waiter"),
            wait(6),
            Event::Exit {
                tid: 6,
                tgid: 6,
                comm: Comm::new("waiter"),
            },
            wait(5),
        ],
    })
    .unwrap();
    e.apply(Input::Tick { t: 2 }).unwrap();
    assert!(!e.accounting().processes.contains_key(&6), "folded");
    let mut by_process: Vec<(u32, String)> = e
        .time_report()
        .anon_vma_lock
        .by_process
        .into_iter()
        .map(|p| (p.pid, p.comm))
        .collect();
    by_process.sort();
    assert_eq!(
        by_process,
        [(5, "parent".to_owned()), (6, "waiter".to_owned())]
    );
}
