//! The Prometheus / OpenMetrics presenter: one [`Report`] (the latest
//! frame) and the exporter's own state as metric families, encoded by
//! `prometheus-client` in either text format.
//!
//! Every series comes from one report, so a scrape never sees half of an
//! update (e.g. a re-seed): the engine publishes whole reports, a scrape
//! encodes the latest one. Cardinality is bounded: per-process series
//! only for the top N by footprint.
use std::{fmt::Write as _, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use rmapwatch_engine::{
    design::Holding,
    report::{LazyBlock, LiveBlock, ProcessReport, Report},
    time::{Histogram, TimeReport},
};

/// The exporter's state at a scrape, besides the report.
#[derive(Clone, Debug, Default)]
pub struct Exporter {
    /// Whether the source (the kernel here, a phone) is delivering now;
    /// `false` once it went away (the report is then the last one it gave).
    pub up: bool,
    /// Seconds since the report was published.
    pub report_age_s: f64,
    /// Times the source was (re)connected.
    pub connects: u64,
    /// Times it went away.
    pub losses: u64,
    /// Scrapes served before this one.
    pub scrapes: u64,
    /// How long the previous scrape's encoding took (s).
    pub last_scrape_s: f64,
    /// This process's CPU time (s) and resident memory (bytes), when
    /// readable.
    pub cpu_s: Option<f64>,
    /// Resident set size.
    pub rss_bytes: Option<u64>,
    /// Per-process series for this many processes.
    pub top: usize,
}

/// One scrape's content.
#[derive(Debug)]
struct Scrape {
    report: Option<Arc<Report>>,
    exporter: Exporter,
}

type Labels = Vec<(&'static str, String)>;

/// One family with its series: counters (u64) or gauges (f64).
fn family<V: Copy>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    series: &[(Labels, V)],
    mut put: impl FnMut(prometheus_client::encoding::MetricEncoder<'_>, V) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, v) in series {
        put(m.encode_family(labels)?, *v)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> std::fmt::Result {
    family(
        enc,
        name,
        help,
        None,
        MetricType::Counter,
        series,
        |m, v| ConstCounter::new(v).encode(m),
    )
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: &[(Labels, f64)],
) -> std::fmt::Result {
    family(enc, name, help, unit, MetricType::Gauge, series, |m, v| {
        ConstGauge::new(v).encode(m)
    })
}

fn one(v: f64) -> [(Labels, f64); 1] {
    [(Vec::new(), v)]
}

const TYPES: [&str; 2] = ["anon_vma", "anon_vma_chain"];

/// (type, objects, bytes) of a live block.
fn live_rows(b: &LiveBlock) -> [(&'static str, u64, u64); 2] {
    [
        (TYPES[0], b.anon_vma.objects, b.anon_vma.bytes),
        (TYPES[1], b.anon_vma_chain.objects, b.anon_vma_chain.bytes),
    ]
}

/// Calls `add(basis, type, objects, bytes)` for the live rows and, when
/// there is one, the lazy rows.
fn live_and_lazy(
    live: &LiveBlock,
    lazy: Option<&LazyBlock>,
    add: &mut impl FnMut(&str, &'static str, u64, u64),
) {
    for (t, o, b) in live_rows(live) {
        add("live", t, o, b);
    }
    if let Some(l) = lazy {
        add("lazy", TYPES[0], l.anon_vma.objects, l.anon_vma.bytes);
        add(
            "lazy",
            TYPES[1],
            l.anon_vma_chain.objects,
            l.anon_vma_chain.bytes,
        );
    }
}

/// What the designs' families say of every design, and of every type it
/// holds.
const DESIGNS_HELP: &str = "today (the anon_vma and AVC objects the kernel holds, as the walk saw \
     them), lazy (ANON_VMA_LAZY), cow_context (the COW context redesign), ideal (a lower bound: \
     one rmap object per VMA mapping an anonymous page another mapping maps too); each design's \
     own types (anon_vma, anon_vma_chain; cow_context, remap_entry, offset_array, maple_node; \
     rmap_vma). As of the latest walk; report --json's designs[] gives each one's rules, options \
     and blind spots.";

/// Adds `h`'s objects by type and its bytes under `labels` plus
/// `design` and `type`.
fn design_series(
    labels: &Labels,
    design: &str,
    h: &Holding,
    objects: &mut Vec<(Labels, f64)>,
    bytes: &mut Vec<(Labels, f64)>,
) {
    let mut l = labels.clone();
    l.push(("design", design.to_owned()));
    for (t, n) in &h.objects {
        let mut lt = l.clone();
        lt.push(("type", t.to_string()));
        objects.push((lt, *n as f64));
    }
    bytes.push((l, h.bytes as f64));
}

/// One unlabelled histogram of seconds from a log2 histogram of ns: the
/// buckets' `le` (in seconds) as [`Histogram::cumulative`] gives them, then
/// `+Inf`; `sum_ns` and `count` as counted.
fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &Histogram,
    sum_ns: u64,
    count: u64,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    // The encoders cumulate the counts they are given: hand them each
    // bucket's own, and the values past the last bucket under +Inf.
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = h
        .cumulative()
        .into_iter()
        .map(|(le_ns, n)| {
            let own = n - below;
            below = n;
            (le_ns as f64 / 1e9, own)
        })
        .collect();
    buckets.push((f64::INFINITY, count.saturating_sub(below)));
    m.encode_family(&Labels::new())?
        .encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &buckets, None)
}

/// What anon_vma costs in time: lock waits (when they are measured), what
/// each design would not have waited, forks and their objects.
fn encode_time(enc: &mut DescriptorEncoder<'_>, t: &TimeReport) -> std::fmt::Result {
    let l = &t.anon_vma_lock;
    if l.available {
        counter(
            enc,
            "rmapwatch_anon_vma_lock_waits",
            "Waits on the rwsems of anon_vmas rmapwatch tracks (lock:contention_begin/end \
             matched to the root's lock), by kind: read (down_read: rmap walks), write \
             (down_write: fork, unlink, merge, split, mremap).",
            &[
                (vec![("kind", "read".to_owned())], l.read_waits),
                (vec![("kind", "write".to_owned())], l.write_waits),
            ],
        )?;
        if !l.by_holder.is_empty() {
            let by: Vec<_> = l
                .by_holder
                .iter()
                .map(|h| {
                    let path = h.path.split([' ', ',']).next().unwrap_or("unknown");
                    (vec![("holder", path.to_owned())], h.waits)
                })
                .collect();
            counter(
                enc,
                "rmapwatch_anon_vma_lock_waits_by_holder",
                "The same waits by what the rwsem's owner was doing at the begin: fork (inside a \
                 fork system call), reader (reader-owned: rmap walks), writer (not forking: \
                 unlink, merge, split, mremap, exec), unknown.",
                &by,
            )?;
        }
        histogram(
            enc,
            "rmapwatch_anon_vma_lock_wait",
            "How long each of those waits took (log2 buckets).",
            &l.histogram,
            l.wait_ns,
            l.waits,
        )?;
        let avoided: Vec<(Labels, u64)> = l
            .avoided
            .iter()
            .map(|a| (vec![("design", a.design.clone())], a.waits))
            .collect();
        counter(
            enc,
            "rmapwatch_anon_vma_lock_avoided_waits",
            "Of those waits, the ones each design would not have had: lazy (every VMA of the \
             root's family lazy at the last walk: no anon_vma to lock), cow_context (no \
             anon_vma rwsem at all; its per-context spinlocks are not modelled).",
            &avoided,
        )?;
        let avoided_s: Vec<(Labels, f64)> = l
            .avoided
            .iter()
            .map(|a| (vec![("design", a.design.clone())], a.wait_ns as f64 / 1e9))
            .collect();
        family(
            enc,
            "rmapwatch_anon_vma_lock_avoided_wait",
            "The time of the waits each design would not have had.",
            Some(Unit::Seconds),
            MetricType::Counter,
            &avoided_s,
            |m, v| ConstCounter::new(v).encode(m),
        )?;
    }
    let f = &t.fork;
    counter(
        enc,
        "rmapwatch_forks",
        "Process forks timed (fork-family syscalls that made a process; threads are not \
         counted).",
        &[(Vec::new(), f.forks)],
    )?;
    histogram(
        enc,
        "rmapwatch_fork",
        "How long those fork syscalls took, entry to return in the parent (log2 buckets).",
        &f.syscall_histogram,
        f.syscall_ns,
        f.forks,
    )?;
    counter(
        enc,
        "rmapwatch_fork_objects",
        "Objects those forks allocated, by type.",
        &[
            (vec![("type", TYPES[0].to_owned())], f.objects.anon_vma),
            (
                vec![("type", TYPES[1].to_owned())],
                f.objects.anon_vma_chain,
            ),
        ],
    )
}

/// A process's footprint: the bytes of the objects it owns now.
fn footprint(p: &ProcessReport) -> u64 {
    p.live.bytes()
}

/// The top `n` live processes by footprint (ties: lower pid first).
#[must_use]
pub fn top_processes(r: &Report, n: usize) -> Vec<&ProcessReport> {
    let mut v: Vec<&ProcessReport> = r
        .processes
        .iter()
        .filter(|p| !p.exited && footprint(p) > 0)
        .collect();
    v.sort_by_key(|p| (std::cmp::Reverse(footprint(p)), p.pid));
    v.truncate(n);
    v
}

#[allow(clippy::too_many_lines)] // one family after the other
fn encode_report(enc: &mut DescriptorEncoder<'_>, r: &Report, top: usize) -> std::fmt::Result {
    let mut hook_modes: Vec<String> = r
        .probes
        .iter()
        .map(|(h, m)| format!("{h}={}", m.as_str()))
        .collect();
    hook_modes.sort();
    let mut info = enc.encode_descriptor(
        "rmapwatch_build",
        "The measured machine and how it is hooked (value 1).",
        None,
        MetricType::Info,
    )?;
    let via = r
        .link
        .as_ref()
        .map_or_else(|| "local".to_owned(), |l| l.via.clone());
    let device = r
        .link
        .as_ref()
        .and_then(|l| l.device.get("model").cloned())
        .unwrap_or_default();
    info.encode_info(&vec![
        ("kernel", r.kernel.release.clone()),
        ("arch", r.kernel.arch.clone()),
        ("via", via),
        ("device", device),
        ("hooks", hook_modes.join(",")),
        (
            "slab_path",
            if r.slab.path.is_empty() {
                "raw".to_owned()
            } else {
                r.slab.path.clone()
            },
        ),
        ("slab_layout", r.slab.layout.clone()),
        ("fork_window", r.fork_window.to_string()),
    ])?;
    let hooks: Vec<(Labels, f64)> = r
        .hooks
        .iter()
        .map(|(name, h)| {
            (
                vec![
                    ("hook", name.clone()),
                    ("mode", h.mode.as_str().to_owned()),
                    ("symbol", h.symbol.clone().unwrap_or_default()),
                ],
                1.0,
            )
        })
        .collect();
    gauge(
        enc,
        "rmapwatch_hook",
        "Each function hook and the mode it runs in: fentry, kprobe, tracepoint (left to the \
         slab tracepoints) or unavailable (value 1).",
        None,
        &hooks,
    )?;
    let hook_calls: Vec<(Labels, u64)> = r
        .hooks
        .iter()
        .filter_map(|(name, h)| Some((vec![("hook", name.clone())], h.calls?)))
        .collect();
    counter(
        enc,
        "rmapwatch_hook_calls",
        "Calls counted by the fentry/kprobe hooks.",
        &hook_calls,
    )?;

    // Objects and bytes, by basis.
    let mut objects: Vec<(Labels, f64)> = Vec::new();
    let mut bytes: Vec<(Labels, f64)> = Vec::new();
    let mut add = |basis: &str, t: &'static str, o: u64, b: u64| {
        let l = vec![("type", t.to_owned()), ("basis", basis.to_owned())];
        objects.push((l.clone(), o as f64));
        bytes.push((l, b as f64));
    };
    live_and_lazy(&r.live, r.lazy.as_ref(), &mut add);
    if let Some(m) = &r.model {
        for (t, o, b) in live_rows(&m.snapshot.actual) {
            add("snapshot", t, o, b);
        }
    }
    gauge(
        enc,
        "rmapwatch_objects",
        "Objects by type and basis: live (exist now: seeded by a walk, kept by events), lazy \
         (what ANON_VMA_LAZY would hold, as of the latest walk), snapshot (what the latest walk \
         found).",
        None,
        &objects,
    )?;
    gauge(
        enc,
        "rmapwatch_objects",
        "Bytes of those objects (objects times the slab's object size).",
        Some(Unit::Bytes),
        &bytes,
    )?;

    // Flows by call site.
    let mut allocs: Vec<(Labels, u64)> = Vec::new();
    let mut frees: Vec<(Labels, u64)> = Vec::new();
    let mut preexisting: Vec<(Labels, u64)> = Vec::new();
    for (t, o) in &r.objects {
        for (site, n) in &o.allocs_by_site {
            allocs.push((vec![("type", t.clone()), ("site", site.clone())], *n));
        }
        for (site, n) in &o.frees_by_site {
            frees.push((vec![("type", t.clone()), ("site", site.clone())], *n));
        }
        preexisting.push((vec![("type", t.clone())], o.frees_of_preexisting));
    }
    counter(
        enc,
        "rmapwatch_allocations",
        "Objects allocated, by type and call site (the rmap function that allocated them).",
        &allocs,
    )?;
    counter(
        enc,
        "rmapwatch_frees",
        "Objects freed, by type and call site.",
        &frees,
    )?;
    counter(
        enc,
        "rmapwatch_frees_of_preexisting",
        "Frees of objects allocated before rmapwatch started and not seen by its first walk.",
        &preexisting,
    )?;
    counter(
        enc,
        "rmapwatch_events",
        "Events decoded.",
        &[(Vec::new(), r.events)],
    )?;
    counter(
        enc,
        "rmapwatch_dropped_events",
        "Events lost in the ring buffer (the live counts are re-seeded from the next walk).",
        &[(Vec::new(), r.dropped_events.unwrap_or(0))],
    )?;
    counter(
        enc,
        "rmapwatch_fork_windows_dropped",
        "Fork windows user space dropped, over 65,536 threads seemingly inside a fork at once (their \
         closing records were lost): a loss like dropped events, re-seeded from the next walk.",
        &[(Vec::new(), r.fork_windows_dropped)],
    )?;
    counter(
        enc,
        "rmapwatch_reseeds",
        "Re-seeds of the live counts from a walk after lost events.",
        &[(Vec::new(), r.resync.resyncs)],
    )?;
    gauge(
        enc,
        "rmapwatch_degraded",
        "1 while events were lost since the last re-seed (live figures uncertain until the next \
         walk).",
        None,
        &one(f64::from(u8::from(r.resync.degraded))),
    )?;
    if let Some(m) = &r.model {
        gauge(
            enc,
            "rmapwatch_drift_objects",
            "Live objects (events) minus the latest walk's: 0 when the events account for every \
             object.",
            None,
            &[
                (vec![("type", TYPES[0].to_owned())], m.drift.anon_vma as f64),
                (
                    vec![("type", TYPES[1].to_owned())],
                    m.drift.anon_vma_chain as f64,
                ),
            ],
        )?;
        gauge(
            enc,
            "rmapwatch_drift_processes",
            "Processes whose live counts differ from the latest walk's.",
            None,
            &one(m.drift.processes_differing as f64),
        )?;
        counter(
            enc,
            "rmapwatch_walks",
            "Walks of every VMA (snapshots) taken.",
            &[(Vec::new(), m.snapshot.stats.taken)],
        )?;
        gauge(
            enc,
            "rmapwatch_walk_age",
            "Seconds since the latest walk ended.",
            Some(Unit::Seconds),
            &one(m.snapshot.age_s),
        )?;
        gauge(
            enc,
            "rmapwatch_walk_duration",
            "How long the latest walk and its decoding took.",
            Some(Unit::Seconds),
            &one(m.snapshot.stats.walk_ms / 1000.0),
        )?;
        gauge(
            enc,
            "rmapwatch_walk_vmas",
            "VMAs the latest walk saw.",
            None,
            &one(m.snapshot.stats.vmas as f64),
        )?;
        let saved: Vec<(Labels, f64)> = m
            .saved_by_rule
            .iter()
            .flat_map(|(rule, o)| {
                let rule = serde_json::to_value(rule)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{rule:?}"));
                [
                    (
                        vec![("type", TYPES[0].to_owned()), ("rule", rule.clone())],
                        o.anon_vma as f64,
                    ),
                    (
                        vec![("type", TYPES[1].to_owned()), ("rule", rule)],
                        o.avc as f64,
                    ),
                ]
            })
            .collect();
        gauge(
            enc,
            "rmapwatch_lazy_saved_objects",
            "Objects ANON_VMA_LAZY would not hold, by the rule that saves them.",
            None,
            &saved,
        )?;
    }
    // Every design at the latest walk.
    let mut objects: Vec<(Labels, f64)> = Vec::new();
    let mut bytes: Vec<(Labels, f64)> = Vec::new();
    for d in &r.designs {
        design_series(&Vec::new(), &d.name, &d.system, &mut objects, &mut bytes);
    }
    gauge(
        enc,
        "rmapwatch_design_objects",
        &format!("Objects each design would hold system-wide, by design and type: {DESIGNS_HELP}"),
        None,
        &objects,
    )?;
    gauge(
        enc,
        "rmapwatch_design",
        "Bytes each design would hold system-wide: its objects in this kernel's slab and kmalloc \
         slots, plus what it adds elsewhere (LAZY's vm_area_struct growth).",
        Some(Unit::Bytes),
        &bytes,
    )?;
    if let Some(t) = &r.time {
        encode_time(enc, t)?;
    }
    if let Some(c) = &r.cost {
        counter(
            enc,
            "rmapwatch_recursion_misses",
            "Program runs the kernel skipped because one was already running on that CPU.",
            &[(Vec::new(), c.recursion_misses)],
        )?;
        let runs: Vec<(Labels, u64)> = c
            .programs
            .iter()
            .map(|(p, s)| (vec![("program", p.clone())], s.runs))
            .collect();
        counter(
            enc,
            "rmapwatch_bpf_runs",
            "Runs of each eBPF program.",
            &runs,
        )?;
        let time: Vec<(Labels, f64)> = c
            .programs
            .iter()
            .map(|(p, s)| (vec![("program", p.clone())], s.run_time_ns as f64 / 1e9))
            .collect();
        family(
            enc,
            "rmapwatch_bpf_run",
            "Time spent in each eBPF program (the kernel's bpf_stats): rmapwatch's cost in the \
             kernel.",
            Some(Unit::Seconds),
            MetricType::Counter,
            &time,
            |m, v| ConstCounter::new(v).encode(m),
        )?;
    }
    if let Some(rm) = &r.rmap {
        counter(
            enc,
            "rmapwatch_new_anon_folios",
            "New anonymous folios mapped (folio_add_new_anon_rmap calls).",
            &[(Vec::new(), rm.new_anon_folios)],
        )?;
    }
    if let Some(i) = &r.inlined {
        counter(
            enc,
            "rmapwatch_inlined_allocations",
            "anon_vma allocations at call sites outside every rmap function (inlined elsewhere): \
             missing from the counts.",
            &[(Vec::new(), i.anon_vma_allocs)],
        )?;
    }
    if let Some(n) = r.fork_window_full {
        counter(
            enc,
            "rmapwatch_fork_window_full",
            "Fork-family syscalls that found the fork window's timing map full: those forks were \
             not timed (their AVCs are counted right).",
            &[(Vec::new(), n)],
        )?;
    }
    if let Some(n) = r.walks_torn {
        counter(
            enc,
            "rmapwatch_walks_torn",
            "iter/task walks (before 5.12) of a process that ended early: its VMA list changed \
             under them.",
            &[(Vec::new(), n)],
        )?;
    }
    if let Some(l) = &r.link {
        counter(
            enc,
            "rmapwatch_link_received",
            "Stream bytes received from the remote agent (a phone over adb).",
            &[(Vec::new(), l.bytes)],
        )?;
        gauge(
            enc,
            "rmapwatch_link_lag",
            "How late the newest tick arrived over the link, above the quickest tick.",
            Some(Unit::Seconds),
            &one(l.lag_ms / 1000.0),
        )?;
    }

    // The top N processes.
    let top = top_processes(r, top);
    let mut objects: Vec<(Labels, f64)> = Vec::new();
    let mut bytes: Vec<(Labels, f64)> = Vec::new();
    for p in &top {
        let mut add = |basis: &str, t: &'static str, o: u64, b: u64| {
            let l = vec![
                ("pid", p.pid.to_string()),
                ("comm", p.comm.clone()),
                ("type", t.to_owned()),
                ("basis", basis.to_owned()),
            ];
            objects.push((l.clone(), o as f64));
            bytes.push((l, b as f64));
        };
        live_and_lazy(&p.live, p.lazy.as_ref(), &mut add);
    }
    let mut design_objects: Vec<(Labels, f64)> = Vec::new();
    let mut design_bytes: Vec<(Labels, f64)> = Vec::new();
    for p in &top {
        let l = vec![("pid", p.pid.to_string()), ("comm", p.comm.clone())];
        for d in &p.designs {
            design_series(
                &l,
                &d.name,
                &d.holding,
                &mut design_objects,
                &mut design_bytes,
            );
        }
    }
    gauge(
        enc,
        "rmapwatch_process_objects",
        "Objects a process owns (live) and would own under ANON_VMA_LAZY (lazy), for the top \
         processes by footprint only (--top).",
        None,
        &objects,
    )?;
    gauge(
        enc,
        "rmapwatch_process_objects",
        "Bytes of those objects.",
        Some(Unit::Bytes),
        &bytes,
    )?;
    gauge(
        enc,
        "rmapwatch_process_design_objects",
        &format!(
            "Objects each design would hold for a process (0 for one the walk did not see), for \
             the top processes by footprint only (--top): {DESIGNS_HELP}"
        ),
        None,
        &design_objects,
    )?;
    gauge(
        enc,
        "rmapwatch_process_design",
        "Bytes each design would hold for a process, for the top processes by footprint only.",
        Some(Unit::Bytes),
        &design_bytes,
    )?;
    gauge(
        enc,
        "rmapwatch_processes",
        "Processes with anon_vma/AVC traffic or objects that the report holds.",
        None,
        &one(r.processes.len() as f64),
    )?;
    let e = &r.exited;
    counter(
        enc,
        "rmapwatch_exited_folded",
        "Exited processes folded into the exited aggregate (kept a while after exit, then \
         folded: the state stays bounded under fork churn).",
        &[(Vec::new(), e.processes)],
    )?;
    let flows = |f: fn(&rmapwatch_engine::account::Flow) -> u64| -> Vec<(Labels, u64)> {
        vec![
            (vec![("type", TYPES[0].to_owned())], f(&e.anon_vma)),
            (vec![("type", TYPES[1].to_owned())], f(&e.anon_vma_chain)),
        ]
    };
    counter(
        enc,
        "rmapwatch_exited_allocations",
        "Objects allocated by the processes folded into the exited aggregate.",
        &flows(|f| f.allocs),
    )?;
    counter(
        enc,
        "rmapwatch_exited_frees",
        "Objects freed by the processes folded into the exited aggregate.",
        &flows(|f| f.frees),
    )?;
    let st = &r.state;
    gauge(
        enc,
        "rmapwatch_state_entries",
        "Entries of rmapwatch's own state: processes listed (live and recently exited), \
         exited ones kept, per-VMA folio counts.",
        None,
        &[
            (vec![("table", "processes".to_owned())], st.processes as f64),
            (
                vec![("table", "exited_kept".to_owned())],
                st.exited_kept as f64,
            ),
            (
                vec![("table", "rmap_vmas".to_owned())],
                st.rmap_entries as f64,
            ),
        ],
    )?;
    gauge(
        enc,
        "rmapwatch_state_owner_table",
        "Bytes of the owner table (one slot per live anon_vma and AVC).",
        Some(Unit::Bytes),
        &one(st.owner_table_bytes as f64),
    )?;
    gauge(
        enc,
        "rmapwatch_duration",
        "Seconds since the programs were attached (the source's clock).",
        Some(Unit::Seconds),
        &one(r.duration_s),
    )
}

fn encode_exporter(enc: &mut DescriptorEncoder<'_>, e: &Exporter) -> std::fmt::Result {
    gauge(
        enc,
        "rmapwatch_source_up",
        "1 while the source (this kernel, or the phone over adb) delivers; 0 once it went away: \
         the other series are then its last state, kept (stale) until it is back.",
        None,
        &one(f64::from(u8::from(e.up))),
    )?;
    gauge(
        enc,
        "rmapwatch_report_age",
        "Seconds since the report behind these series was made.",
        Some(Unit::Seconds),
        &one(e.report_age_s),
    )?;
    counter(
        enc,
        "rmapwatch_source_connects",
        "Times the source was started (again, after it went away).",
        &[(Vec::new(), e.connects)],
    )?;
    counter(
        enc,
        "rmapwatch_source_losses",
        "Times the source went away (a phone unplugged, a link dropped).",
        &[(Vec::new(), e.losses)],
    )?;
    counter(
        enc,
        "rmapwatch_scrapes",
        "Scrapes served before this one.",
        &[(Vec::new(), e.scrapes)],
    )?;
    gauge(
        enc,
        "rmapwatch_scrape_encode",
        "How long encoding the previous scrape took.",
        Some(Unit::Seconds),
        &one(e.last_scrape_s),
    )?;
    if let Some(cpu) = e.cpu_s {
        family(
            enc,
            "process_cpu",
            "User and system CPU time of the exporter itself.",
            Some(Unit::Seconds),
            MetricType::Counter,
            &[(Vec::new(), cpu)],
            |m, v| ConstCounter::new(v).encode(m),
        )?;
    }
    if let Some(rss) = e.rss_bytes {
        gauge(
            enc,
            "process_resident_memory",
            "Resident memory of the exporter itself.",
            Some(Unit::Bytes),
            &one(rss as f64),
        )?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        encode_exporter(&mut enc, &self.exporter)?;
        if let Some(r) = &self.report {
            encode_report(&mut enc, r, self.exporter.top)?;
        }
        Ok(())
    }
}

/// The two text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (what Prometheus asks for first).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (curl, older scrapers).
    Prometheus,
}

impl Format {
    /// By the request's `Accept` header.
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The response's content type.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Encodes one scrape.
///
/// # Errors
/// Never in practice (writing to a String).
pub fn encode(
    report: Option<Arc<Report>>,
    exporter: Exporter,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { report, exporter }));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
    }
    Ok(out)
}

/// This process's CPU seconds and resident bytes, from /proc/self/stat.
#[must_use]
pub fn own_usage() -> (Option<f64>, Option<u64>) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (None, None);
    };
    // After the command's closing parenthesis: field 3 onwards.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (None, None);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14, 15; rss (pages) is 24: indices 11, 12, 21.
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let cpu = match (num(11), num(12)) {
        (Some(u), Some(s)) if tick > 0 => Some((u + s) as f64 / tick as f64),
        _ => None,
    };
    let rss = num(21).and_then(|p| u64::try_from(page).ok().map(|pg| p * pg));
    (cpu, rss)
}

/// A one-line description of the families (for `serve --help` and the
/// index page).
#[must_use]
pub fn index_page(listen: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rmapwatch exporter\n\n/metrics  OpenMetrics or Prometheus text (by Accept)\n\n\
         Scrape it with:\n  - job_name: rmapwatch\n    static_configs:\n      - targets: \
         ['{listen}']"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let s = include_str!("../../rmapwatch-engine/tests/snapshots/schema__report.snap");
        // The snapshot file has a YAML header, then the JSON.
        let json = s.splitn(3, "---").nth(2).unwrap_or(s);
        serde_json::from_str(json).expect("the schema snapshot is a report")
    }

    #[test]
    fn both_formats_carry_the_live_lazy_and_snapshot_series() {
        let r = Arc::new(report());
        for f in [Format::OpenMetrics, Format::Prometheus] {
            let text = encode(
                Some(r.clone()),
                Exporter {
                    up: true,
                    top: 20,
                    ..Exporter::default()
                },
                f,
            )
            .unwrap();
            let live = format!(
                "rmapwatch_objects{{type=\"anon_vma\",basis=\"live\"}} {}",
                r.live.anon_vma.objects
            );
            assert!(text.contains(&live), "{f:?}: no {live} in\n{text}");
            assert!(text.contains("rmapwatch_source_up 1"), "{text}");
            assert!(text.contains("basis=\"lazy\""), "{text}");
            assert!(text.contains("basis=\"snapshot\""), "{text}");
            assert_eq!(f == Format::OpenMetrics, text.ends_with("# EOF\n"), "{f:?}");
        }
    }

    /// The report with designs: system-wide and for its first process,
    /// numbers chosen to be told apart.
    fn report_with_designs() -> Report {
        use rmapwatch_engine::design::{self, Outcome};
        let mut r = report();
        let holding = |objects: &[(&str, u64)], bytes: u64| Holding {
            objects: objects
                .iter()
                .map(|&(k, n)| (k.to_owned().into(), n))
                .collect(),
            bytes,
        };
        let outcome = |name: &str, system: Holding, pid: u32, process: Holding| Outcome {
            name: name.to_owned(),
            system,
            processes: [(pid, process)].into_iter().collect(),
            ..Outcome::default()
        };
        let pid = r.processes[0].pid;
        r.designs = vec![
            outcome(
                "today",
                holding(&[("anon_vma", 10), ("anon_vma_chain", 14)], 1936),
                pid,
                holding(&[("anon_vma", 3), ("anon_vma_chain", 5)], 632),
            ),
            outcome(
                "lazy",
                holding(&[("anon_vma", 4), ("anon_vma_chain", 8)], 928),
                pid,
                holding(&[("anon_vma", 1), ("anon_vma_chain", 2)], 232),
            ),
            outcome(
                "cow_context",
                holding(
                    &[
                        ("cow_context", 3),
                        ("maple_node", 1),
                        ("offset_array", 2),
                        ("remap_entry", 7),
                    ],
                    1171,
                ),
                pid,
                holding(
                    &[
                        ("cow_context", 1),
                        ("maple_node", 0),
                        ("offset_array", 0),
                        ("remap_entry", 2),
                    ],
                    177,
                ),
            ),
            outcome(
                "ideal",
                holding(&[("rmap_vma", 6)], 384),
                pid,
                Holding::default(),
            ),
        ];
        r.processes[0].designs = design::shares(&r.designs, pid);
        r
    }

    /// The value of the series `name{labels}` in `text` (labels as
    /// written, in order).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn both_formats_carry_every_design_system_wide_and_per_process() {
        let r = Arc::new(report_with_designs());
        let p = &r.processes[0];
        let (pid, comm) = (p.pid, p.comm.clone());
        for f in [Format::OpenMetrics, Format::Prometheus] {
            let text = encode(
                Some(r.clone()),
                Exporter {
                    up: true,
                    top: 20,
                    ..Exporter::default()
                },
                f,
            )
            .unwrap();
            let v = |s: &str| value(&text, s);
            assert_eq!(
                v(r#"rmapwatch_design_objects{design="cow_context",type="remap_entry"}"#),
                Some(7.0),
                "{f:?}:\n{text}"
            );
            assert_eq!(
                v(r#"rmapwatch_design_objects{design="today",type="anon_vma_chain"}"#),
                Some(14.0),
                "{f:?}"
            );
            assert_eq!(
                v(r#"rmapwatch_design_objects{design="ideal",type="rmap_vma"}"#),
                Some(6.0),
                "{f:?}"
            );
            for (d, b) in [
                ("today", 1936.0),
                ("lazy", 928.0),
                ("cow_context", 1171.0),
                ("ideal", 384.0),
            ] {
                assert_eq!(
                    v(&format!(r#"rmapwatch_design_bytes{{design="{d}"}}"#)),
                    Some(b),
                    "{f:?}: {d}\n{text}"
                );
            }
            let proc = |name: &str, rest: &str| {
                v(&format!(
                    r#"{name}{{pid="{pid}",comm="{comm}",design={rest}}}"#
                ))
            };
            assert_eq!(
                proc("rmapwatch_process_design_bytes", r#""cow_context""#),
                Some(177.0),
                "{f:?}:\n{text}"
            );
            assert_eq!(
                proc("rmapwatch_process_design_bytes", r#""today""#),
                Some(632.0),
                "{f:?}"
            );
            assert_eq!(
                proc(
                    "rmapwatch_process_design_objects",
                    r#""lazy",type="anon_vma_chain""#
                ),
                Some(2.0),
                "{f:?}"
            );
            // A design that holds nothing for the process: its types at 0.
            assert_eq!(
                proc("rmapwatch_process_design_bytes", r#""ideal""#),
                Some(0.0),
                "{f:?}"
            );
            assert!(
                text.contains("# HELP rmapwatch_design_objects Objects each design would hold"),
                "{f:?}:\n{text}"
            );
            assert!(
                text.contains("# HELP rmapwatch_design_bytes Bytes each design would hold"),
                "{f:?}:\n{text}"
            );
        }
        // Before a walk: no design series.
        let mut none = report_with_designs();
        none.designs.clear();
        for p in &mut none.processes {
            p.designs.clear();
        }
        let text = encode(
            Some(Arc::new(none)),
            Exporter::default(),
            Format::Prometheus,
        )
        .unwrap();
        assert!(!text.contains("rmapwatch_design_bytes{"), "{text}");
        assert!(!text.contains("rmapwatch_process_design_bytes{"), "{text}");
    }

    /// The report with lock waits (1.5 µs, 3 x 1 ms, 5 ms) and two forks.
    fn report_with_time() -> Report {
        let mut r = report();
        let mut t = r.time.clone().unwrap_or_default();
        let l = &mut t.anon_vma_lock;
        l.available = true;
        for ns in [1_500, 1_000_000, 1_000_000, 1_000_000, 5_000_000] {
            l.histogram.add(ns);
            l.waits += 1;
            l.wait_ns += ns;
        }
        l.read_waits = 3;
        l.write_waits = 2;
        l.by_holder = rmapwatch_engine::time::HOLDER_PATHS
            .iter()
            .zip([2, 1, 1, 1])
            .map(|(p, waits)| rmapwatch_engine::time::HolderWaits {
                path: (*p).to_owned(),
                waits,
                wait_ns: 0,
            })
            .collect();
        l.avoided = vec![
            rmapwatch_engine::time::Avoided {
                design: "lazy".into(),
                waits: 1,
                wait_ns: 1_000_000,
                rule: String::new(),
            },
            rmapwatch_engine::time::Avoided {
                design: "cow_context".into(),
                waits: 5,
                wait_ns: l.wait_ns,
                rule: String::new(),
            },
        ];
        let f = &mut t.fork;
        f.forks = 2;
        f.syscall_ns = 300_000;
        f.syscall_histogram.add(100_000);
        f.syscall_histogram.add(200_000);
        f.objects.anon_vma = 4;
        f.objects.anon_vma_chain = 6;
        r.time = Some(t);
        r
    }

    /// A histogram's `_bucket` series in `text`: (le, cumulative count).
    fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let (le, v) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn both_formats_carry_lock_waits_and_forks_with_their_histograms() {
        let r = Arc::new(report_with_time());
        for f in [Format::OpenMetrics, Format::Prometheus] {
            let text = encode(Some(r.clone()), Exporter::default(), f).unwrap();
            let v = |s: &str| value(&text, s);
            assert_eq!(
                v(r#"rmapwatch_anon_vma_lock_waits_total{kind="read"}"#),
                Some(3.0),
                "{f:?}:\n{text}"
            );
            assert_eq!(
                v(r#"rmapwatch_anon_vma_lock_waits_total{kind="write"}"#),
                Some(2.0),
                "{f:?}"
            );
            for (holder, n) in [
                ("fork", 2.0),
                ("reader", 1.0),
                ("writer", 1.0),
                ("unknown", 1.0),
            ] {
                assert_eq!(
                    v(&format!(
                        r#"rmapwatch_anon_vma_lock_waits_by_holder_total{{holder="{holder}"}}"#
                    )),
                    Some(n),
                    "{f:?}:\n{text}"
                );
            }
            assert_eq!(
                v(r#"rmapwatch_anon_vma_lock_avoided_waits_total{design="lazy"}"#),
                Some(1.0),
                "{f:?}"
            );
            assert_eq!(
                v(r#"rmapwatch_anon_vma_lock_avoided_waits_total{design="cow_context"}"#),
                Some(5.0),
                "{f:?}"
            );
            assert_eq!(
                v(r#"rmapwatch_anon_vma_lock_avoided_wait_seconds_total{design="lazy"}"#),
                Some(0.001),
                "{f:?}"
            );
            assert_eq!(v("rmapwatch_forks_total"), Some(2.0), "{f:?}");
            assert_eq!(
                v(r#"rmapwatch_fork_objects_total{type="anon_vma_chain"}"#),
                Some(6.0),
                "{f:?}"
            );
            assert!(
                text.contains("# TYPE rmapwatch_anon_vma_lock_wait_seconds histogram"),
                "{f:?}:\n{text}"
            );
            assert!(
                text.contains("# TYPE rmapwatch_fork_seconds histogram"),
                "{f:?}"
            );
            // Lock waits: le in seconds at each log2 bucket's upper bound
            // up to the last one with a wait, cumulative, then +Inf.
            let b = buckets(&text, "rmapwatch_anon_vma_lock_wait_seconds");
            assert_eq!(b.len(), 24, "{f:?}: {b:?}");
            assert!((b[0].0 - 2e-9).abs() < 1e-15, "{b:?}");
            assert_eq!(b[10], (2048e-9, 1.0), "1.5 µs below 2.048 µs");
            assert_eq!(b[18].1, 1.0, "1 ms is not below 524 µs");
            assert_eq!(b[19], (1_048_576e-9, 4.0), "{b:?}");
            assert_eq!(b[22], (8_388_608e-9, 5.0), "{b:?}");
            assert_eq!(b[23], (f64::INFINITY, 5.0), "{b:?}");
            assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            assert_eq!(
                v("rmapwatch_anon_vma_lock_wait_seconds_count"),
                Some(5.0),
                "{f:?}"
            );
            assert_eq!(
                v("rmapwatch_anon_vma_lock_wait_seconds_sum"),
                Some(0.0080015),
                "{f:?}"
            );
            let b = buckets(&text, "rmapwatch_fork_seconds");
            assert_eq!(b.last(), Some(&(f64::INFINITY, 2.0)), "{f:?}: {b:?}");
            assert_eq!(b.iter().filter(|x| x.0.is_infinite()).count(), 1);
            assert_eq!(v("rmapwatch_fork_seconds_sum"), Some(0.0003), "{f:?}");
            assert_eq!(v("rmapwatch_fork_seconds_count"), Some(2.0), "{f:?}");
            assert_eq!(f == Format::OpenMetrics, text.ends_with("# EOF\n"), "{f:?}");
        }
        // Lock waits not measured: no lock series; forks still.
        let mut off = report_with_time();
        off.time.as_mut().unwrap().anon_vma_lock.available = false;
        let text = encode(
            Some(Arc::new(off)),
            Exporter::default(),
            Format::OpenMetrics,
        )
        .unwrap();
        assert!(!text.contains("rmapwatch_anon_vma_lock"), "{text}");
        assert!(text.contains("rmapwatch_forks_total 2"), "{text}");
    }

    #[test]
    fn per_process_series_are_bounded_by_top() {
        let mut r = report();
        let p = r.processes[0].clone();
        r.processes = (0..100u32)
            .map(|i| {
                let mut q = p.clone();
                q.pid = 1000 + i;
                q.exited = false;
                q.live.anon_vma.objects = u64::from(i) + 1;
                q.live.anon_vma.bytes = (u64::from(i) + 1) * 88;
                q
            })
            .collect();
        let top = top_processes(&r, 20);
        assert_eq!(top.len(), 20);
        assert_eq!(top[0].pid, 1099, "the biggest first");
        let text = encode(
            Some(Arc::new(r)),
            Exporter {
                top: 20,
                ..Exporter::default()
            },
            Format::Prometheus,
        )
        .unwrap();
        let pids: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("rmapwatch_process_objects{"))
            .filter_map(|l| l.split("pid=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(pids.len(), 20, "{pids:?}");
        assert!(!pids.contains("1000"), "the smallest is not among them");
    }

    #[test]
    fn a_lost_source_still_serves_its_last_report_marked_down() {
        let text = encode(
            Some(Arc::new(report())),
            Exporter {
                up: false,
                losses: 1,
                ..Exporter::default()
            },
            Format::OpenMetrics,
        )
        .unwrap();
        assert!(text.contains("rmapwatch_source_up 0"), "{text}");
        assert!(text.contains("rmapwatch_source_losses_total 1"), "{text}");
        assert!(text.contains("rmapwatch_objects{"), "{text}");
        // Before the first report, only the exporter's own series.
        let empty = encode(None, Exporter::default(), Format::Prometheus).unwrap();
        assert!(!empty.contains("rmapwatch_objects"), "{empty}");
        assert!(empty.contains("rmapwatch_source_up 0"), "{empty}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }

    #[test]
    fn own_usage_reads_this_process() {
        let (cpu, rss) = own_usage();
        assert!(cpu.is_some());
        assert!(rss.is_some_and(|r| r > 0));
    }
}
