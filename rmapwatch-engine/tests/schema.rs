//! The JSON contracts `rmapwatch.report/1` and `rmapwatch.inspect/1`, pinned
//! from fixed inputs: a simulated system seeded by one walk, then events
//! (first faults, a fork, an exit), then a second walk. Any change to a
//! field's name, type or value for these inputs shows up as a snapshot diff.
use std::collections::{BTreeMap, HashMap};

use rmapwatch_common::{Event, flags, hook, kind, object, site, stat};
use rmapwatch_engine::{
    account::{Accounting, RmapVmas},
    facts::KernelId,
    hooks::{HookMode, HookStatus, tracepoint_only},
    inspect,
    model::{self, Options, sim::Sim},
    report::{Context, ModelView, ProgramStats, Report, Resync, Sizes, SnapshotStats},
    snapshot::Snapshot,
    walk,
};

const SIZES: Sizes = Sizes {
    anon_vma: 104,
    anon_vma_chain: 64,
};

fn comm(name: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..name.len()].copy_from_slice(name.as_bytes());
    c
}

fn named(mut s: Snapshot, names: &BTreeMap<u32, &str>) -> Snapshot {
    for (pid, p) in &mut s.procs {
        p.pid = *pid;
        p.comm = names.get(pid).copied().unwrap_or("?").to_owned();
    }
    s
}

/// The fixed system: before and after the events.
pub struct Scenario {
    pub before: Snapshot,
    pub after: Snapshot,
    pub events: Vec<Event>,
}

/// Objects of a snapshot: address -> (owner, kind), as the walk digests them.
fn objects(s: &Snapshot) -> HashMap<u64, (u32, u32)> {
    let mut out = HashMap::new();
    let _ = walk::of_snapshot(s, Options::default(), None, |ptr, tgid, k| {
        out.insert(ptr, (tgid, k));
    });
    out
}

pub fn scenario() -> Scenario {
    let names: BTreeMap<u32, &str> = [(100, "zygote"), (101, "app"), (102, "app2"), (200, "shell")]
        .into_iter()
        .collect();
    let mut sim = Sim::default();
    for i in 0..4 {
        let v = sim.map(100, 0x7f00_0000_0000 + i * 0x10_0000);
        sim.fault(v);
    }
    sim.fork(100, 101);
    let a = sim.map(200, 0x5500_0000_0000);
    sim.fault(a);
    let _unfaulted = sim.map(200, 0x5500_0010_0000);
    let before = named(sim.snapshot(), &names);
    // Events: the shell faults a second region, the zygote forks app2,
    // app exits.
    let b = sim.map(200, 0x5500_0020_0000);
    sim.fault(b);
    sim.fork(100, 102);
    sim.exit(101);
    let after = named(sim.snapshot(), &names);
    let (old, new) = (objects(&before), objects(&after));
    let mut events = Vec::new();
    let slab = |k: u32, obj: u32, s: u32, tid: u32, ptr: u64, fl: u32| Event {
        kind: k,
        object: obj,
        site: s,
        flags: fl,
        tid,
        tgid: tid,
        ptr,
        ..Event::default()
    };
    let mut fresh: Vec<(u64, (u32, u32))> = new
        .iter()
        .filter(|(p, _)| !old.contains_key(p))
        .map(|(&p, &o)| (p, o))
        .collect();
    fresh.sort_unstable();
    for &(ptr, (tgid, k)) in fresh.iter().filter(|(_, (t, _))| *t == 200) {
        events.push(slab(kind::ALLOC, k, site::PREPARE, tgid, ptr, 0));
    }
    for &(ptr, (_, k)) in fresh.iter().filter(|(_, (t, _))| *t == 102) {
        let s = if k == object::ANON_VMA {
            site::FORK
        } else {
            site::CLONE
        };
        events.push(slab(kind::ALLOC, k, s, 100, ptr, flags::IN_FORK));
    }
    events.push(Event {
        kind: kind::FORK,
        tid: 100,
        tgid: 100,
        child_tid: 102,
        child_tgid: 102,
        comm: comm("app2"),
        ..Event::default()
    });
    let mut gone: Vec<(u64, (u32, u32))> = old
        .iter()
        .filter(|(p, _)| !new.contains_key(p))
        .map(|(&p, &o)| (p, o))
        .collect();
    gone.sort_unstable();
    for &(ptr, (tgid, k)) in &gone {
        let s = if k == object::ANON_VMA {
            site::PUT
        } else {
            site::UNLINK
        };
        events.push(slab(kind::FREE, k, s, tgid, ptr, 0));
    }
    events.push(Event {
        kind: kind::EXIT,
        tid: 101,
        tgid: 101,
        comm: comm("app"),
        ..Event::default()
    });
    assert!(!fresh.is_empty() && !gone.is_empty());
    Scenario {
        before,
        after,
        events,
    }
}

fn hooks() -> Vec<HookStatus> {
    let mut h =
        tracepoint_only("fentry: load refused by the kernel: Operation not permitted (os error 1)");
    h[hook::PREPARE as usize].mode = HookMode::Kprobe;
    h[hook::RMAP_NEW as usize].mode = HookMode::Kprobe;
    h[hook::RMAP_PMD as usize].symbol = None;
    h[hook::RMAP_PMD as usize].fallbacks =
        vec!["folio_add_anon_rmap_pmd not in this kernel".into()];
    h
}

fn report_of(sc: &Scenario) -> Report {
    let mut acct = Accounting::default();
    let seed = walk::of_snapshot(&sc.before, Options::default(), None, |_, _, _| {});
    let _ = walk::of_snapshot(&sc.before, Options::default(), None, |p, t, k| {
        acct.own_existing(p, t, k);
    });
    acct.name_existing(seed.procs.iter().map(|(&p, i)| (p, i.comm.clone())));
    for e in &sc.events {
        acct.apply(e);
    }
    let w = walk::of_snapshot(&sc.after, Options::default(), None, |_, _, _| {});
    let per_process = w.actual_by_process();
    let vmas = w.vmas_by_process();
    let mut stats = vec![0u64; stat::COUNT as usize];
    stats[(stat::HOOK_CALLS + hook::PREPARE) as usize] = 2;
    stats[(stat::HOOK_CALLS + hook::RMAP_NEW) as usize] = 9;
    stats[stat::RMAP_VMAS_FULL as usize] = 0;
    let programs: BTreeMap<String, ProgramStats> = [
        (
            "kmem_cache_alloc".to_owned(),
            ProgramStats {
                runs: 5000,
                run_time_ns: 500_000,
                recursion_misses: 0,
            },
        ),
        (
            "kmem_cache_free".to_owned(),
            ProgramStats {
                runs: 4000,
                run_time_ns: 360_000,
                recursion_misses: 3,
            },
        ),
        (
            "task_vma".to_owned(),
            ProgramStats {
                runs: 120,
                run_time_ns: 90_000,
                recursion_misses: 0,
            },
        ),
    ]
    .into_iter()
    .collect();
    let mut rmap = RmapVmas::default();
    rmap.update([((200, 0x5500_0020_0000), 1), ((102, 0x7f00_0000_0000), 2)]);
    let retired = rmap.retire(|p| p == 101);
    assert!(retired.is_empty());
    Report::build(
        &acct,
        &Context {
            kernel: &KernelId {
                release: "6.18.44-test".into(),
                arch: "x86_64".into(),
            },
            hooks: &hooks(),
            fork_window: true,
            stats: &stats,
            duration_s: 12.5,
            anon_vma_size: 96,
            avc_size: 64,
            done: true,
            sizes: SIZES,
            model: Some(ModelView {
                estimate: &w.estimate,
                snapshot_actual: w.estimate.system.actual,
                snapshot_processes: &per_process,
                vmas: &vmas,
                age_s: 0.25,
                stats: SnapshotStats {
                    taken: 2,
                    vmas: w.counts.vmas,
                    processes: w.procs.len() as u64,
                    duplicate_vmas: 0,
                    short_chains: 0,
                    truncated_chains: 0,
                    walk_ms: 1.5,
                },
                slab_anon_vma: Some(w.estimate.system.actual.anon_vma + 3),
            }),
            rmap_vmas: Some(&rmap),
            programs: Some(&programs),
            resync: Resync::default(),
        },
    )
}

#[test]
fn report_json_is_pinned() {
    let sc = scenario();
    let r = report_of(&sc);
    insta::assert_snapshot!("report", serde_json::to_string_pretty(&r).unwrap());
    insta::assert_snapshot!("report_text", r.to_text(20));
}

#[test]
fn inspect_json_is_pinned() {
    let sc = scenario();
    let est = model::estimate(&sc.after, Options::default());
    let paths: HashMap<u64, String> = HashMap::new();
    let i = inspect::of_snapshot(&sc.after, &est, 102, &paths, SIZES);
    insta::assert_snapshot!("inspect", serde_json::to_string_pretty(&i).unwrap());
    insta::assert_snapshot!("inspect_text", i.to_text(true));
}
