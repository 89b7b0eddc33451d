//! The JSON contracts `rmapwatch.report/1` and `rmapwatch.inspect/1`, pinned
//! from fixed inputs: a simulated system seeded by one walk, then events
//! (first faults, a fork, an exit), then a second walk. Any change to a
//! field's name, type or value for these inputs shows up as a snapshot diff.
use std::collections::{BTreeMap, HashMap};

use rmapwatch_common::{hook, object, site};
use rmapwatch_engine::{
    design,
    engine::{self, Engine},
    event::{Comm, Event},
    facts::{Facts, KernelId, Sizes},
    hooks::{HookMode, HookStatus, tracepoint_only},
    input::{Counters, Input, KernelCounters, ProgramStats, RmapUpdate, SlabCounts},
    inspect::{self, Inspection},
    model::{self, Options, sim::Sim},
    report::Report,
    snapshot::{Snapshot, WalkCounts},
    walk,
};

const SIZES: Sizes = Sizes {
    anon_vma: 104,
    anon_vma_chain: 64,
};

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

    let mut fresh: Vec<(u64, (u32, u32))> = new
        .iter()
        .filter(|(p, _)| !old.contains_key(p))
        .map(|(&p, &o)| (p, o))
        .collect();
    fresh.sort_unstable();
    for &(ptr, (tgid, k)) in fresh.iter().filter(|(_, (t, _))| *t == 200) {
        events.push(Event::alloc(k, site::PREPARE, tgid, ptr, false));
    }
    for &(ptr, (_, k)) in fresh.iter().filter(|(_, (t, _))| *t == 102) {
        let s = if k == object::ANON_VMA {
            site::FORK
        } else {
            site::CLONE
        };
        events.push(Event::alloc(k, s, 100, ptr, true));
    }
    events.push(Event::fork(100, 102, "app2"));
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
        events.push(Event::free(k, s, tgid, ptr));
    }
    events.push(Event::Exit {
        tid: 101,
        tgid: 101,
        comm: Comm::new("app"),
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

const MS: u64 = 1_000_000;

/// A walk of `snap` from `began` to `ended` (µs), in two batches.
fn walk(inputs: &mut Vec<Input>, snap: &Snapshot, began: u64, ended: u64) {
    inputs.push(Input::WalkBegin { t: began * 1000 });
    let comms: Vec<(u32, String)> = snap
        .procs
        .values()
        .map(|p| (p.pid, p.comm.clone()))
        .collect();
    let (a, b) = snap.vmas.split_at(snap.vmas.len() / 2);
    inputs.push(Input::WalkVmas {
        comms,
        parents: Vec::new(),
        vmas: a.to_vec(),
    });
    inputs.push(Input::WalkVmas {
        comms: vec![],
        parents: Vec::new(),
        vmas: b.to_vec(),
    });
    inputs.push(Input::WalkEnd {
        t: ended * 1000,
        counts: WalkCounts {
            vmas: snap.vmas.len() as u64,
            ..WalkCounts::default()
        },
        error: None,
    });
}

/// The fixed inputs, as a source would deliver them.
fn script(sc: &Scenario) -> Vec<Input> {
    let facts = Facts {
        tool: "rmapwatch 0.1.0".into(),
        kernel: KernelId {
            release: "6.18.44-test".into(),
            arch: "x86_64".into(),
        },
        page_size: 4096,
        anon_vma_size: 96,
        avc_size: 64,
        sizes: SIZES,
        hooks: hooks(),
        fork_window: true,
        ring_bytes: 8 << 20,
        bpf_stats: true,
        source: "live".into(),
        slab: rmapwatch_engine::hooks::SlabEvents {
            path: "raw".into(),
            layout: "cache pointer".into(),
            why: String::new(),
            preemptible: false,
        },
        maps: ["EVENTS", "FORKING", "STATS"]
            .iter()
            .zip([(8 << 20, 8_425_480), (16384, 394_936), (23, 4_096)])
            .map(
                |(name, (max_entries, bytes))| rmapwatch_engine::facts::MapMemory {
                    name: (*name).to_owned(),
                    max_entries,
                    bytes,
                },
            )
            .collect(),
        ..Facts::default()
    };
    let mut inputs = vec![Input::Facts(Box::new(facts))];
    walk(&mut inputs, &sc.before, 100_000, 200_000);
    inputs.push(Input::Events {
        t: 1000 * MS,
        events: sc.events.clone(),
    });
    let mut calls = vec![0u64; hook::COUNT];
    calls[hook::PREPARE as usize] = 2;
    calls[hook::RMAP_NEW as usize] = 9;
    let programs: BTreeMap<String, ProgramStats> = [
        ("kmem_cache_alloc", 5000, 500_000, 0),
        ("kmem_cache_free", 4000, 360_000, 3),
        ("task_vma", 120, 90_000, 0),
    ]
    .into_iter()
    .map(|(name, runs, run_time_ns, recursion_misses)| {
        (
            name.to_owned(),
            ProgramStats {
                runs,
                run_time_ns,
                recursion_misses,
            },
        )
    })
    .collect();
    inputs.push(Input::Counters {
        t: 11_000 * MS,
        counters: Counters {
            kernel: Some(KernelCounters {
                dropped: 0,
                hook_calls: calls,
                rmap_ptes_pages: 0,
                rmap_vmas_full: 0,
                // The inlining detector counting: an anon_vma allocated at a
                // call site outside the rmap functions.
                inlined_anon_vma: 2,
                inlined_sites: [("do_anonymous_page+0x1a0".to_owned(), 2)].into(),
                // Rare conditions the programs count (and log).
                fork_window_full: Some(3),
                walks_torn: Some(1),
                lock_waits_lost: Some(0),
                timing_unpaired: Some(0),
                // The nest watch: 3 skipped runs seen, none at an rmap site.
                nested: Some(Box::new(rmapwatch_engine::input::Nested {
                    per_cpu: vec![2, 1],
                    ours: 0,
                    slab_misses: Some(3),
                })),
            }),
            programs: Some(programs),
            undecodable: 0,
            ring_peak_bytes: 0,
            fork_windows_dropped: 0,
        },
    });
    inputs.push(Input::Rmap(RmapUpdate {
        current: vec![((200, 0x5500_0020_0000), 1), ((102, 0x7f00_0000_0000), 2)],
        retired: vec![],
    }));
    let avs = model::estimate(&sc.after, Options::default())
        .system
        .actual
        .anon_vma;
    inputs.push(Input::Slab(SlabCounts {
        anon_vma: Some(avs + 3),
        anon_vma_chain: None,
        shrunk: true,
    }));
    walk(&mut inputs, &sc.after, 12_248_500, 12_250_000);
    inputs.push(Input::Tick { t: 12_500 * MS });
    inputs
}

fn engine_of(sc: &Scenario) -> Engine {
    let mut e = Engine::new(engine::Options::default());
    for i in script(sc) {
        e.apply(i).unwrap();
    }
    e
}

#[test]
fn report_json_is_pinned() {
    let sc = scenario();
    let r = engine_of(&sc).report(true);
    let json = serde_json::to_string_pretty(&r).unwrap();
    insta::assert_snapshot!("report", json);
    insta::assert_snapshot!("report_text", r.to_text(20));
    // Typed, not Value["..."]: a renamed or missing field fails here.
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.schema, "rmapwatch.report/1");
    // Additive: a report without the fields added since (an older
    // rmapwatch's) still reads, with their defaults.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("t_ns");
    let old: Report = serde_json::from_value(old).unwrap();
    assert_eq!(old.t_ns, 0);
    assert_eq!(r.t_ns, 12_500_000_000, "the engine's clock, exactly");
}

#[test]
fn inspect_json_is_pinned() {
    let sc = scenario();
    let est = model::estimate(&sc.after, Options::default());
    let paths: HashMap<u64, String> = HashMap::new();
    let facts = Facts {
        page_size: 4096,
        sizes: SIZES,
        ..Facts::default()
    };
    let (designs, outcomes) = design::of_snapshot(&sc.after, &facts, design::Options::default());
    let view = inspect::DesignView {
        designs: &designs,
        outcomes: &outcomes,
        facts: &facts,
    };
    let i = inspect::of_snapshot(
        &sc.after,
        102,
        &inspect::Seen {
            est: &est,
            paths: &paths,
            sizes: SIZES,
            designs: Some(view),
        },
    );
    let json = serde_json::to_string_pretty(&i).unwrap();
    insta::assert_snapshot!("inspect", json);
    insta::assert_snapshot!("inspect_text", i.to_text(true));
    let back: Inspection = serde_json::from_str(&json).unwrap();
    assert_eq!(back, i);
}

#[test]
fn exited_processes_fold_into_one_block() {
    // The same inputs, app (101, exited at 1 s) kept 5 s only, and the
    // source removing its rmap entry: folded at the last tick.
    let sc = scenario();
    let mut e = Engine::new(engine::Options {
        retention: engine::Retention {
            exited_ns: 5_000 * MS,
            exited_max: 1024,
        },
        ..engine::Options::default()
    });
    let mut inputs = script(&sc);
    let tick = inputs.pop().unwrap();
    inputs.push(Input::Rmap(RmapUpdate {
        current: vec![((200, 0x5500_0020_0000), 1), ((102, 0x7f00_0000_0000), 2)],
        retired: vec![((101, 0x7f00_0000_0000), 4)],
    }));
    inputs.push(tick);
    for i in inputs {
        e.apply(i).unwrap();
    }
    let r = e.report(true);
    assert!(r.processes.iter().all(|p| p.pid != 101));
    let blocks = serde_json::json!({ "exited": r.exited, "state": r.state });
    insta::assert_snapshot!(
        "report_exited",
        serde_json::to_string_pretty(&blocks).unwrap()
    );
    let line = r.to_text(20).lines().last().unwrap().to_owned();
    insta::assert_snapshot!("report_exited_text", line);
    // The system's figures are the unfolded report's.
    let all = engine_of(&sc).report(true);
    assert_eq!(r.objects, all.objects);
    assert_eq!(r.live, all.live);
}

#[test]
fn a_report_without_the_later_blocks_still_reads() {
    // Written before `exited` and `state` existed: additive fields default.
    let r = engine_of(&scenario()).report(true);
    let mut v = serde_json::to_value(&r).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("exited").unwrap();
    o.remove("state").unwrap();
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(
        back.exited,
        rmapwatch_engine::report::ExitedReport::default()
    );
    assert_eq!(back.processes, r.processes);
}

#[test]
fn a_newer_report_says_what_an_older_one_said_and_only_adds_named_fields() {
    use rmapwatch_engine::report::same_as_older;
    use serde_json::json;
    let old = json!({"a": 1, "p": [{"pid": 2, "x": [1, 2]}]});
    let ok = json!({"a": 1, "designs": [], "p": [{"pid": 2, "x": [1, 2], "designs": []}]});
    assert_eq!(same_as_older(&ok, &old), Ok(()));
    let changed = json!({"a": 1, "p": [{"pid": 2, "x": [1, 3]}]});
    assert_eq!(
        same_as_older(&changed, &old),
        Err(".p[0].x[1]: 3 here, 2 then".into())
    );
    let extra = json!({"a": 1, "b": 0, "p": [{"pid": 2, "x": [1, 2]}]});
    assert_eq!(
        same_as_older(&extra, &old),
        Err(".b: not in the older report".into())
    );
    let missing = json!({"p": [{"pid": 2, "x": [1, 2]}]});
    assert_eq!(same_as_older(&missing, &old), Err(".a: missing".into()));
    let shorter = json!({"a": 1, "p": []});
    assert!(same_as_older(&shorter, &old).is_err());
}
