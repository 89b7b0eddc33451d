use rmapwatch_common::lock;

use super::*;
use crate::event::Comm;

const ROOT: u64 = 0xffff_8880_0001_0000;
const OTHER: u64 = 0xffff_8880_0002_0000;

fn wait(tgid: u32, anon_vma: u64, write: bool, ns: u64) -> Event {
    Event::LockWait(LockWait {
        tid: tgid,
        tgid,
        anon_vma,
        flags: if write { lock::WRITE } else { lock::READ },
        wait_ns: ns,
        holder: 0,
    })
}

fn vma(tgid: u32, anon_vma: u64, root: u64, children: u64, chain: &[u64]) -> Vma {
    Vma {
        tgid,
        start: 0x1000 * u64::from(tgid),
        end: 0x1000 * u64::from(tgid) + 0x4000,
        anon_vma,
        av_root: root,
        av_num_children: children,
        av_refcount: 1,
        chain: chain
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as u64 + 1, a))
            .collect(),
        ..Vma::default()
    }
}

fn known(p: u64) -> Option<(u32, u32)> {
    match p {
        ROOT => Some((10, object::ANON_VMA)),
        OTHER => Some((20, object::ANON_VMA)),
        _ => None,
    }
}

fn report(b: &TimeBook) -> TimeReport {
    b.report(
        &Sources {
            lock: (true, "tracepoint".into()),
            fork: "syscall tracepoints".into(),
            rmap: String::new(),
        },
        3,
        &|p| format!("p{p}"),
        &|a| (a == 0x77).then(|| "try_to_unmap_one".to_owned()),
    )
}

#[test]
fn waits_are_split_by_root_process_and_kind_and_unknown_ones_kept_apart() {
    let mut b = TimeBook::default();
    b.begin_walk();
    // ROOT: a parent with two children sharing it (not lazy); OTHER: one
    // process's own, never forked (lazy).
    b.vma(&vma(10, ROOT, ROOT, 3, &[ROOT]));
    b.vma(&vma(11, ROOT + 0x100, ROOT, 1, &[ROOT, ROOT + 0x100]));
    b.vma(&vma(12, ROOT + 0x200, ROOT, 1, &[ROOT, ROOT + 0x200]));
    b.vma(&vma(20, OTHER, OTHER, 1, &[OTHER]));
    b.end_walk(BTreeMap::new());
    b.event(&wait(11, ROOT, true, 1000), &known);
    b.event(&wait(12, ROOT, true, 3000), &known);
    b.event(&wait(10, ROOT, false, 100), &known);
    b.event(&wait(20, OTHER, true, 50), &known);
    b.event(&wait(20, 0xdead_0000, true, 50), &known);
    let r = report(&b).anon_vma_lock;
    assert_eq!((r.waits, r.wait_ns), (4, 4150));
    assert_eq!((r.read_waits, r.write_waits), (1, 3));
    assert_eq!(r.unknown, 1);
    assert_eq!(r.lost, 3);
    assert_eq!(r.histogram.0.iter().sum::<u64>(), 4);
    assert_eq!(r.histogram.0[Histogram::bucket(1000)], 1);
    assert_eq!(r.by_root.len(), 2);
    assert_eq!(r.by_root[0].root, format!("{ROOT:#x}"));
    assert_eq!(r.by_root[0].family, vec![10, 11, 12]);
    assert_eq!(r.by_root[1].family, vec![20]);
    assert_eq!((r.by_root[0].waits, r.by_root[0].write_waits), (3, 2));
    assert!(r.by_root[0].lazy_has_it);
    assert!(!r.by_root[1].lazy_has_it);
    assert_eq!(r.by_process[0].pid, 12);
    assert_eq!(r.by_process[0].comm, "p12");
    // LAZY: only OTHER's wait (every VMA of its family lazy); COW: all.
    assert_eq!(
        (
            r.avoided[0].design.as_str(),
            r.avoided[0].waits,
            r.avoided[0].wait_ns
        ),
        ("lazy", 1, 50)
    );
    assert_eq!((r.avoided[1].waits, r.avoided[1].wait_ns), (4, 4150));
}

#[test]
fn waits_are_split_by_what_the_holder_was_doing() {
    let mut b = TimeBook::default();
    b.begin_walk();
    b.vma(&vma(10, ROOT, ROOT, 3, &[ROOT]));
    b.end_walk(BTreeMap::new());
    let held = |holder: u32, flags: u32, ns: u64| {
        let Event::LockWait(mut w) = wait(11, ROOT, true, ns) else {
            unreachable!()
        };
        w.holder = holder;
        w.flags |= flags;
        Event::LockWait(w)
    };
    b.event(&held(12, lock::HOLDER_FORKING, 1000), &known);
    b.event(
        &held(13, lock::HOLDER_FORKING | lock::HOLDER_READERS, 10),
        &known,
    );
    b.event(&held(14, lock::HOLDER_READERS, 200), &known);
    b.event(&held(15, 0, 30), &known);
    b.event(&held(0, 0, 4), &known);
    // Reader-owned, every reader gone by the time the owner was read.
    b.event(&held(0, lock::HOLDER_READERS, 5), &known);
    // An unknown anon_vma: in no split.
    b.event(&wait(20, 0xdead_0000, true, 50), &known);
    let r = report(&b).anon_vma_lock;
    let split: Vec<(&str, u64, u64)> = r
        .by_holder
        .iter()
        .map(|h| (h.path.as_str(), h.waits, h.wait_ns))
        .collect();
    assert_eq!(
        split,
        [
            (HOLDER_PATHS[0], 2, 1010),
            (HOLDER_PATHS[1], 1, 200),
            (HOLDER_PATHS[2], 1, 30),
            (HOLDER_PATHS[3], 2, 9),
        ]
    );
    assert_eq!(split.iter().map(|s| s.1).sum::<u64>(), r.waits);
    let text = crate::report::time_text(&report(&b));
    assert!(text.contains("the lock's holder at the begin:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("fork") && l.contains(" 2 ")),
        "{text}"
    );
}

#[test]
fn a_root_younger_than_the_last_walk_has_its_owner_and_waiters_as_family() {
    let mut b = TimeBook::default();
    b.event(&wait(11, ROOT, true, 10), &known);
    b.event(&wait(12, ROOT, true, 10), &known);
    let r = report(&b).anon_vma_lock;
    assert_eq!(r.by_root[0].family, vec![10, 11, 12]);
    assert!(
        r.by_root[0].lazy_has_it,
        "not walked: not counted as avoided"
    );
    assert_eq!(r.avoided[0].waits, 0);
}

#[test]
fn a_fork_is_counted_once_with_its_objects_and_threads_are_not() {
    let mut b = TimeBook::default();
    b.begin_walk();
    b.end_walk(BTreeMap::from([(5, 7)]));
    let alloc = |obj, site_id| {
        Event::Alloc(crate::event::Slab {
            object: obj,
            site: site_id,
            in_fork: true,
            tid: 5,
            tgid: 5,
            ptr: 0x10,
        })
    };
    for e in [
        alloc(object::AVC, site::CLONE),
        alloc(object::AVC, site::CLONE),
        alloc(object::ANON_VMA, site::FORK),
        alloc(object::AVC, site::FORK),
    ] {
        b.event(&e, &known);
    }
    b.event(&Event::fork(5, 6, "kid"), &known);
    b.event(
        &Event::ForkTime {
            tid: 5,
            tgid: 5,
            child: 6,
            ns: 40_000,
        },
        &known,
    );
    // A thread: its fork event names the same process.
    b.event(
        &Event::Fork {
            tid: 5,
            tgid: 5,
            child_tid: 9,
            child_tgid: 5,
            comm: Comm::new("t"),
        },
        &known,
    );
    b.event(
        &Event::ForkTime {
            tid: 5,
            tgid: 5,
            child: 9,
            ns: 10_000,
        },
        &known,
    );
    // A time without its fork event (attached mid-fork): not counted.
    b.event(
        &Event::ForkTime {
            tid: 8,
            tgid: 8,
            child: 10,
            ns: 1,
        },
        &known,
    );
    let f = report(&b).fork;
    assert_eq!((f.forks, f.syscall_ns), (1, 40_000));
    assert_eq!(
        f.objects,
        ForkObjects {
            anon_vma: 1,
            anon_vma_chain: 3
        }
    );
    assert_eq!(f.objects_per_fork, Some(4.0));
    assert_eq!(f.dup_mmap_ns, None, "no function hooks");
    assert_eq!(
        f.designs[0].objects_not_allocated,
        ForkObjects {
            anon_vma: 1,
            anon_vma_chain: 1
        }
    );
    assert_eq!(f.designs[1].objects_not_allocated, f.objects);
    assert_eq!(f.designs[1].added["remap_entries_copied"], 7);
    assert_eq!(f.designs[1].added["cow_context"], 1);
}

#[test]
fn function_hook_fork_work_joins_its_fork() {
    let mut b = TimeBook::default();
    b.event(
        &Event::ForkWork {
            tid: 5,
            tgid: 5,
            dup_mmap_ns: 30_000,
            anon_ns: 12_000,
            anon_calls: 9,
        },
        &known,
    );
    b.event(&Event::fork(5, 6, "kid"), &known);
    b.event(
        &Event::ForkTime {
            tid: 5,
            tgid: 5,
            child: 6,
            ns: 50_000,
        },
        &known,
    );
    let f = report(&b).fork;
    assert_eq!(
        (f.dup_mmap_ns, f.anon_vma_ns, f.anon_vma_calls, f.dup_mmaps),
        (Some(30_000), Some(12_000), Some(9), Some(1))
    );
}

#[test]
fn a_failed_fork_leaves_nothing_to_the_threads_next_fork() {
    let mut b = TimeBook::default();
    let alloc = |obj| {
        Event::Alloc(crate::event::Slab {
            object: obj,
            site: site::FORK,
            in_fork: true,
            tid: 5,
            tgid: 5,
            ptr: 0x10,
        })
    };
    let work = |ns| Event::ForkWork {
        tid: 5,
        tgid: 5,
        dup_mmap_ns: ns,
        anon_ns: 1_000,
        anon_calls: 2,
    };
    let time = |child| Event::ForkTime {
        tid: 5,
        tgid: 5,
        child,
        ns: 50_000,
    };
    // dup_mmap allocated and returned, then the fork failed (pids.max).
    for e in [
        alloc(object::ANON_VMA),
        alloc(object::AVC),
        alloc(object::AVC),
    ] {
        b.event(&e, &known);
    }
    b.event(&work(90_000), &known);
    b.event(&time(0), &known);
    // The next fork of the same thread.
    b.event(&alloc(object::AVC), &known);
    b.event(&work(30_000), &known);
    b.event(&Event::fork(5, 6, "kid"), &known);
    b.event(&time(6), &known);
    let f = report(&b).fork;
    assert_eq!((f.forks, f.failed), (1, 1));
    assert_eq!(
        f.objects,
        ForkObjects {
            anon_vma: 0,
            anon_vma_chain: 1
        }
    );
    assert_eq!(f.dup_mmap_ns, Some(30_000));
    assert!(
        crate::report::time_text(&report(&b)).contains("1 fork syscalls failed"),
        "{}",
        crate::report::time_text(&report(&b))
    );
}

#[test]
fn rmap_walks_are_named_by_caller_with_what_each_design_visits() {
    let mut b = TimeBook::default();
    b.begin_walk();
    b.vma(&vma(10, ROOT, ROOT, 3, &[ROOT]));
    b.vma(&vma(11, ROOT + 0x100, ROOT, 1, &[ROOT, ROOT + 0x100]));
    b.vma(&vma(12, ROOT + 0x200, ROOT, 1, &[ROOT, ROOT + 0x200]));
    b.end_walk(BTreeMap::new());
    let walk = |anon_vma, rmap_one| Event::RmapWalk {
        tid: 1,
        tgid: 1,
        anon_vma,
        rmap_one,
    };
    b.event(&walk(ROOT, 0x77), &known);
    b.event(&walk(ROOT, 0x77), &known);
    b.event(&walk(ROOT + 0x100, 0x99), &known);
    let r = report(&b).rmap_walks;
    assert_eq!(r.by_caller[0].caller, "try_to_unmap_one");
    assert_eq!(
        r.by_caller[0].purpose,
        "reclaim (unmap), or migration before 5.16"
    );
    assert_eq!((r.by_caller[0].walks, r.by_caller[0].avcs), (2, 6));
    assert_eq!(r.by_caller[0].cow_context_visits, 6);
    assert_eq!(r.by_caller[1].caller, "0x99");
    // The child's own anon_vma: one AVC; its VMA is lazy (L) under LAZY.
    assert_eq!((r.by_caller[1].avcs, r.by_caller[1].lazy_avcs), (1, 1));
    let text = crate::report::time_text(&report(&b));
    assert!(text.contains("rmap walks: 3 of anonymous folios"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "try_to_unmap_one",
                    "2",
                    "6",
                    "6",
                    "6",
                    "reclaim",
                    "(unmap),",
                    "or",
                    "migration",
                    "before",
                    "5.16"
                ]),
        "{text}"
    );
}

#[test]
fn the_histogram_buckets_are_log2_and_cumulate_for_openmetrics() {
    assert_eq!(Histogram::bucket(0), 0);
    assert_eq!(Histogram::bucket(1), 0);
    assert_eq!(Histogram::bucket(2), 1);
    assert_eq!(Histogram::bucket(1023), 9);
    assert_eq!(Histogram::bucket(1024), 10);
    assert_eq!(Histogram::bucket(u64::MAX), BUCKETS - 1);
    let mut h = Histogram::default();
    h.add(3);
    h.add(1000);
    h.add(1000);
    let c = h.cumulative();
    assert_eq!(c.last(), Some(&(1024, 3)));
    assert_eq!(c[1], (4, 1));
}
