//! A Perfetto trace of a run (`rmapwatch export --perfetto`, `record
//! --perfetto`): Perfetto's native protobuf format (a `Trace`, repeated
//! `TracePacket`s), for ui.perfetto.dev.
//!
//! [`Builder`] is fed after every input (from the driver's `on_step`), so a
//! live run and a replay of its recording give the same trace. It keeps the
//! samples until the end: the processes that get tracks (the `top` largest
//! peak footprints of the whole run) are known only then.
//!
//! Tracks: counters of live and lazy objects per object type, system-wide
//! and per process (under a process track named by a `ProcessDescriptor`);
//! a counter of bytes per design (today, lazy, cow_context, ideal),
//! system-wide, as of the latest walk; instants on a "rmapwatch" track for
//! walks, re-seeds and dropped events; counters of the cumulative anon_vma
//! lock wait time (in ns, Perfetto's time unit: shown as ms, µs; when waits
//! are measured) and of the process forks
//! timed; a slice for each anon_vma lock wait of 1 ms or more on a track
//! per waiting thread (`<comm> <tid>`), fed the inputs ([`Builder::input`]):
//! a wait has no time of its own, so its slice ends at its batch's time
//! (the drain), after the same thread's earlier waits of that batch,
//! and starts no earlier than its previous slice's end. A system counter has a sample at
//! every frame (a design's and lazy's from the first walk on); a process's
//! counters have one where a value changed (a counter holds its value
//! until the next sample), 0 when the process left the report.
//!
//! Track uuids are fixed, so traces of different runs line up: 1 the
//! "rmapwatch" track; 16 + k the system object counters (k: anon_vma live,
//! lazy, anon_vma_chain live, lazy); 32 + i the design counters (i: the
//! design's place in [`DESIGNS`]); 48 the lock wait counter, 49 the fork
//! counter; `1 << 32 | pid` a process; `1 << 40 | pid << 2 | k` its object
//! counters; `1 << 48 | tid` a waiting thread. Timestamps are the
//! recording's own: its clock is `CLOCK_MONOTONIC` since the source
//! started, so packets are on `BUILTIN_CLOCK_MONOTONIC` at the source's
//! `ClockRef` plus `t`, with a `ClockSnapshot` of the source's clocks at
//! `t = 0` that lets the trace processor place them on its boot-time axis.
//! Without a `ClockRef` (all zero) `t` itself is used, on the default clock.
use std::collections::BTreeMap;

use crate::{
    design::Outcome,
    engine::{Engine, Step},
    event::{Event, LockWait},
    facts::{ClockRef, Sizes},
    input::{Input, Nanos},
    model::Objects,
    rows::ProcRow,
};

pub mod proto;
use proto::Msg;

/// Field numbers and enum values, from Perfetto's protos
/// (`protos/perfetto/trace/...`).
mod f {
    pub const TRACE_PACKET: u32 = 1;

    // TracePacket.
    pub const CLOCK_SNAPSHOT: u32 = 6;
    pub const TIMESTAMP: u32 = 8;
    pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
    pub const TRACK_EVENT: u32 = 11;
    pub const SEQUENCE_FLAGS: u32 = 13;
    pub const TIMESTAMP_CLOCK_ID: u32 = 58;
    pub const TRACK_DESCRIPTOR: u32 = 60;
    pub const FIRST_PACKET_ON_SEQUENCE: u32 = 87;
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;

    // ClockSnapshot, ClockSnapshot.Clock, BuiltinClock.
    pub const CLOCKS: u32 = 1;
    pub const PRIMARY_TRACE_CLOCK: u32 = 2;
    pub const CLOCK_ID: u32 = 1;
    pub const CLOCK_TIMESTAMP: u32 = 2;
    pub const REALTIME: u64 = 1;
    pub const MONOTONIC: u64 = 3;
    pub const BOOTTIME: u64 = 6;

    // TrackDescriptor.
    pub const UUID: u32 = 1;
    pub const NAME: u32 = 2;
    pub const PROCESS: u32 = 3;
    pub const PARENT_UUID: u32 = 5;
    pub const COUNTER: u32 = 8;
    pub const DESCRIPTION: u32 = 14;

    // ProcessDescriptor.
    pub const PID: u32 = 1;
    pub const PROCESS_NAME: u32 = 6;

    // CounterDescriptor.
    pub const UNIT: u32 = 3;
    pub const Y_AXIS_SHARE_KEY: u32 = 7;
    pub const UNIT_TIME_NS: u64 = 1;
    pub const UNIT_COUNT: u64 = 2;
    pub const UNIT_SIZE_BYTES: u64 = 3;

    // TrackEvent.
    pub const TYPE: u32 = 9;
    pub const TRACK_UUID: u32 = 11;
    pub const CATEGORIES: u32 = 22;
    pub const EVENT_NAME: u32 = 23;
    pub const COUNTER_VALUE: u32 = 30;
    pub const TYPE_SLICE_BEGIN: u64 = 1;
    pub const TYPE_SLICE_END: u64 = 2;
    pub const TYPE_INSTANT: u64 = 3;
    pub const TYPE_COUNTER: u64 = 4;
}

/// The one packet sequence of the trace.
const SEQUENCE: u64 = 1;
/// The "rmapwatch" track (instants).
const ROOT_UUID: u64 = 1;
/// System counters: `SYSTEM_UUID + k`.
const SYSTEM_UUID: u64 = 16;
/// Design counters: `DESIGN_UUID + i`, `i` the design's place in
/// [`DESIGNS`].
const DESIGN_UUID: u64 = 32;

/// The cumulative anon_vma lock wait time (ns).
const LOCK_WAIT_UUID: u64 = 48;
/// The process forks timed (cumulative).
const FORKS_UUID: u64 = 49;
/// A waiting thread's track: `THREAD_UUID | tid`.
const THREAD_UUID: u64 = 1 << 48;

/// Waits this long or longer get a slice.
pub const SLICE_MIN_NS: u64 = 1_000_000;
/// Slices kept at most (the later ones are counted, not kept).
pub const MAX_SLICES: usize = 1 << 18;

/// One lock wait's slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slice {
    begin: Nanos,
    end: Nanos,
    tid: u32,
    write: bool,
}

/// The designs with a counter, in the order of their uuids: a design is
/// only ever appended here, so each keeps its uuid (a test checks that
/// every design of the engine has one).
pub const DESIGNS: [&str; 4] = ["today", "lazy", "cow_context", "ideal"];

/// One sample of the designs' bytes (`None`: before the first walk, or a
/// design the walk did not yield).
type DesignSample = [Option<u64>; DESIGNS.len()];

fn design_sample(outcomes: Option<&[Outcome]>) -> DesignSample {
    let mut s = [None; DESIGNS.len()];
    for o in outcomes.unwrap_or_default() {
        if let Some(i) = DESIGNS.iter().position(|&n| n == o.name) {
            s[i] = Some(o.system.bytes);
        }
    }
    s
}
/// Process tracks: `PROCESS_UUID | pid`; their counters:
/// `PROCESS_COUNTER_UUID | pid << 2 | k`.
const PROCESS_UUID: u64 = 1 << 32;
const PROCESS_COUNTER_UUID: u64 = 1 << 40;

/// The counters, `k` in the uuids: object type and live or lazy.
const COUNTERS: [(&str, &str); 4] = [
    ("anon_vma", "live"),
    ("anon_vma", "lazy"),
    ("anon_vma_chain", "live"),
    ("anon_vma_chain", "lazy"),
];

/// One sample of the four counters (lazy is `None` before the first walk).
type Sample = [Option<u64>; 4];

/// A process's samples.
#[derive(Debug, Default)]
struct Series {
    comm: String,
    /// The largest live footprint (bytes of both types) of the run.
    peak: u64,
    /// Changes only.
    samples: Vec<(Nanos, Sample)>,
}

/// Builds the trace of a run; see the module.
#[derive(Debug)]
pub struct Builder {
    top: usize,
    clock: Option<ClockRef>,
    system: Vec<(Nanos, Sample)>,
    designs: Vec<(Nanos, DesignSample)>,
    procs: BTreeMap<u32, Series>,
    instants: Vec<(Nanos, String)>,
    walks: u64,
    resyncs: u64,
    dropped: u64,
    /// Cumulative lock wait ns (`None`: waits not measured) and forks.
    time: Vec<(Nanos, Option<u64>, u64)>,
    /// Waits of 1 ms or more of the inputs not yet laid out (their batch's
    /// time), until the step after them names their threads.
    waits: Vec<(Nanos, LockWait)>,
    slices: Vec<Slice>,
    /// Slices past [`MAX_SLICES`].
    slices_dropped: u64,
    /// tid -> its track's name and its latest slice's end.
    threads: BTreeMap<u32, (String, Nanos)>,
}

fn sample_of(live: Objects, lazy: Option<Objects>) -> Sample {
    [
        Some(live.anon_vma),
        lazy.map(|l| l.anon_vma),
        Some(live.avc),
        lazy.map(|l| l.avc),
    ]
}

impl Builder {
    /// A trace with per-process tracks for the `top` processes of largest
    /// peak footprint.
    #[must_use]
    pub fn new(top: usize) -> Self {
        Self {
            top,
            clock: None,
            system: Vec::new(),
            designs: Vec::new(),
            procs: BTreeMap::new(),
            instants: Vec::new(),
            walks: 0,
            resyncs: 0,
            dropped: 0,
            time: Vec::new(),
            waits: Vec::new(),
            slices: Vec::new(),
            slices_dropped: 0,
            threads: BTreeMap::new(),
        }
    }

    /// Takes an input before the engine applies it: its lock waits of
    /// [`SLICE_MIN_NS`] or more, for slices.
    pub fn input(&mut self, input: &Input) {
        if let Input::Events { t, events } = input {
            for e in events {
                if let Event::LockWait(w) = e
                    && w.wait_ns >= SLICE_MIN_NS
                {
                    self.waits.push((*t, *w));
                }
            }
        }
    }

    /// Lays out the waits taken since the last step: per thread, one
    /// after the other, the last ending at its batch's time.
    fn lay_out_waits(&mut self, engine: &Engine) {
        let waits = std::mem::take(&mut self.waits);
        // (batch time, tid) -> the waits' total, to start the first.
        let mut total: BTreeMap<(Nanos, u32), u64> = BTreeMap::new();
        for (t, w) in &waits {
            *total.entry((*t, w.tid)).or_default() += w.wait_ns;
        }
        let mut cursor: BTreeMap<(Nanos, u32), Nanos> = BTreeMap::new();
        for (t, w) in waits {
            let comm = engine
                .accounting()
                .processes
                .get(&w.tgid)
                .map_or("?", |p| p.comm.as_str());
            let thread = self
                .threads
                .entry(w.tid)
                .or_insert_with(|| (String::new(), 0));
            if thread.0.is_empty() || comm != "?" {
                thread.0 = format!("{comm} {}", w.tid);
            }
            let begin = *cursor
                .entry((t, w.tid))
                .or_insert_with(|| t.saturating_sub(total[&(t, w.tid)]).max(thread.1));
            let end = begin.saturating_add(w.wait_ns).min(t).max(begin);
            cursor.insert((t, w.tid), end);
            thread.1 = end;
            if self.slices.len() < MAX_SLICES {
                self.slices.push(Slice {
                    begin,
                    end,
                    tid: w.tid,
                    write: w.write(),
                });
            } else {
                self.slices_dropped += 1;
            }
        }
    }

    /// Takes what `engine` shows after an input that led to `step`: the
    /// instants at every step, the counters at frames and at the end.
    pub fn step(&mut self, engine: &Engine, step: Step) {
        let t = engine.now();
        if self.clock.is_none()
            && let Some(facts) = engine.facts()
        {
            self.clock = Some(facts.clock);
        }
        if engine.walks() > self.walks {
            self.walks = engine.walks();
            self.instants.push((t, format!("walk {}", self.walks)));
        }
        let resyncs = engine.resync().resyncs;
        if resyncs > self.resyncs {
            self.resyncs = resyncs;
            self.instants.push((t, format!("re-seed {resyncs}")));
        }
        if let Some(dropped) = engine.dropped_events()
            && dropped > self.dropped
        {
            self.instants.push((
                t,
                format!(
                    "dropped events +{} (total {dropped})",
                    dropped - self.dropped
                ),
            ));
            self.dropped = dropped;
        }
        if !self.waits.is_empty() {
            self.lay_out_waits(engine);
        }
        if matches!(step, Step::Frame | Step::End) {
            let time = engine.time_report();
            let lock = &time.anon_vma_lock;
            let sample = (t, lock.available.then_some(lock.wait_ns), time.fork.forks);
            match self.time.last_mut() {
                Some(last) if last.0 == t => *last = sample,
                _ => self.time.push(sample),
            }
            let sizes = engine.facts().map(|f| f.sizes).unwrap_or_default();
            self.sample(t, engine.live(), engine.lazy(), engine.rows(), sizes);
            let designs = design_sample(engine.designs());
            match self.designs.last_mut() {
                Some(last) if last.0 == t => last.1 = designs,
                _ => self.designs.push((t, designs)),
            }
        }
    }

    /// Counter samples at `t`: the system's live and lazy objects and the
    /// processes (the engine's per-process projection, as the report's).
    fn sample(
        &mut self,
        t: Nanos,
        live: Objects,
        lazy: Option<Objects>,
        rows: impl Iterator<Item = ProcRow>,
        sizes: Sizes,
    ) {
        let system = sample_of(live, lazy);
        match self.system.last_mut() {
            Some(last) if last.0 == t => last.1 = system,
            _ => self.system.push((t, system)),
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in rows {
            seen.insert(p.pid);
            let s = self.procs.entry(p.pid).or_default();
            if p.comm != "?" || s.comm.is_empty() {
                s.comm = p.comm;
            }
            s.peak = s.peak.max(sizes.bytes(p.live));
            push_change(&mut s.samples, t, sample_of(p.live, p.lazy));
        }
        // A process that left the report owns nothing now.
        let gone = [Some(0), system[1].map(|_| 0), Some(0), system[3].map(|_| 0)];
        for (pid, s) in &mut self.procs {
            if !seen.contains(pid) {
                push_change(&mut s.samples, t, gone);
            }
        }
        // Bounded as the engine's state is: once the series of processes
        // that are gone outnumber the tracks, those outside the `top`
        // peaks go. A gone process's peak no longer grows, so its rank
        // only falls: it could never get a track.
        if self.procs.len() > seen.len() + 2 * self.top + 64 {
            let keep: std::collections::BTreeSet<u32> = self.chosen().into_iter().collect();
            self.procs
                .retain(|pid, _| seen.contains(pid) || keep.contains(pid));
        }
    }

    /// How many process series it holds.
    #[must_use]
    pub fn series(&self) -> usize {
        self.procs.len()
    }

    /// Samples at `t` of processes given as rows (what [`Self::step`]
    /// takes from the engine at a frame).
    #[cfg(test)]
    pub(crate) fn sample_rows(&mut self, t: Nanos, rows: Vec<ProcRow>) {
        let live = rows.iter().fold(Objects::default(), |mut a, r| {
            a.anon_vma += r.live.anon_vma;
            a.avc += r.live.avc;
            a
        });
        let sizes = Sizes {
            anon_vma: 104,
            anon_vma_chain: 64,
        };
        self.sample(t, live, None, rows.into_iter(), sizes);
    }

    /// The instants so far.
    #[cfg(test)]
    pub(crate) fn instants(&self) -> Vec<&str> {
        self.instants.iter().map(|(_, n)| n.as_str()).collect()
    }

    /// A process's samples (changes only).
    #[cfg(test)]
    pub(crate) fn samples(&self, pid: u32) -> Vec<(Nanos, Sample)> {
        self.procs
            .get(&pid)
            .map(|s| s.samples.clone())
            .unwrap_or_default()
    }

    /// The processes that get tracks: the `top` largest peak footprints
    /// (ties: lower pid first), by pid.
    fn chosen(&self) -> Vec<u32> {
        let mut by_peak: Vec<(u64, u32)> = self
            .procs
            .iter()
            .filter(|(_, s)| s.peak > 0)
            .map(|(&pid, s)| (s.peak, pid))
            .collect();
        by_peak.sort_by_key(|&(peak, pid)| (std::cmp::Reverse(peak), pid));
        let mut pids: Vec<u32> = by_peak.into_iter().take(self.top).map(|x| x.1).collect();
        pids.sort_unstable();
        pids
    }

    /// The packet's timestamp fields for the source's time `t`.
    fn stamp(&self, p: &mut Msg, t: Nanos) {
        match self.clock.filter(|c| *c != ClockRef::default()) {
            Some(c) => {
                p.uint(f::TIMESTAMP, c.monotonic_ns.saturating_add(t));
                p.uint(f::TIMESTAMP_CLOCK_ID, f::MONOTONIC);
            }
            None => {
                p.uint(f::TIMESTAMP, t);
            }
        }
    }

    /// The encoded trace.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut packets: Vec<Msg> = Vec::new();
        // The first packet: the clocks at t = 0 (when known), and the
        // sequence's state cleared.
        let mut first = Msg::new();
        if let Some(c) = self.clock.filter(|c| *c != ClockRef::default()) {
            let mut snap = Msg::new();
            for (id, ts) in [
                (f::BOOTTIME, c.boottime_ns),
                (f::MONOTONIC, c.monotonic_ns),
                (f::REALTIME, c.unix_ns),
            ] {
                let mut clock = Msg::new();
                clock.uint(f::CLOCK_ID, id).uint(f::CLOCK_TIMESTAMP, ts);
                snap.message(f::CLOCKS, &clock);
            }
            snap.uint(f::PRIMARY_TRACE_CLOCK, f::BOOTTIME);
            first
                .uint(f::TIMESTAMP, c.boottime_ns)
                .message(f::CLOCK_SNAPSHOT, &snap);
        }
        first
            .uint(f::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE)
            .uint(f::SEQUENCE_FLAGS, f::SEQ_INCREMENTAL_STATE_CLEARED)
            .bool(f::FIRST_PACKET_ON_SEQUENCE, true);
        packets.push(first);

        // Tracks.
        let track = |desc: &Msg| {
            let mut p = Msg::new();
            p.uint(f::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE)
                .message(f::TRACK_DESCRIPTOR, desc);
            p
        };
        let mut root = Msg::new();
        root.uint(f::UUID, ROOT_UUID)
            .string(f::NAME, "rmapwatch")
            .string(
                f::DESCRIPTION,
                "rmapwatch: walks of every process's VMAs, re-seeds after lost events, \
                 dropped events",
            );
        packets.push(track(&root));
        let counter = |uuid: u64, parent: Option<u64>, k: usize, scope: &str| {
            let (object, which) = COUNTERS[k];
            let mut cd = Msg::new();
            cd.uint(f::UNIT, f::UNIT_COUNT)
                .string(f::Y_AXIS_SHARE_KEY, &format!("{scope} {object}"));
            let mut d = Msg::new();
            d.uint(f::UUID, uuid);
            if let Some(parent) = parent {
                d.uint(f::PARENT_UUID, parent);
                d.string(f::NAME, &format!("{object} {which}"));
            } else {
                d.string(f::NAME, &format!("{object} {which} (system)"));
            }
            d.string(
                f::DESCRIPTION,
                if which == "live" {
                    "objects that exist now (rmapwatch live: walk-seeded, event-maintained)"
                } else {
                    "objects ANON_VMA_LAZY would hold (rmapwatch's model, as of the latest walk)"
                },
            )
            .message(f::COUNTER, &cd);
            track(&d)
        };
        for k in 0..COUNTERS.len() {
            packets.push(counter(SYSTEM_UUID + k as u64, None, k, "system"));
        }
        for (i, name) in DESIGNS.iter().enumerate() {
            let mut cd = Msg::new();
            cd.uint(f::UNIT, f::UNIT_SIZE_BYTES)
                .string(f::Y_AXIS_SHARE_KEY, "system design bytes");
            let mut d = Msg::new();
            d.uint(f::UUID, DESIGN_UUID + i as u64)
                .string(f::NAME, &format!("design {name} bytes (system)"))
                .string(
                    f::DESCRIPTION,
                    &format!(
                        "bytes the {name} design would hold system-wide, as of the latest walk \
                         (rmapwatch report: the designs table; report --json: designs[])"
                    ),
                )
                .message(f::COUNTER, &cd);
            packets.push(track(&d));
        }
        for (uuid, name, unit, description) in [
            (
                LOCK_WAIT_UUID,
                "anon_vma lock wait time (system, cumulative)",
                f::UNIT_TIME_NS,
                "time threads waited on the rwsems of anon_vmas since the start \
                 (rmapwatch report: Time; report --json: time.anon_vma_lock)",
            ),
            (
                FORKS_UUID,
                "forks (system, cumulative)",
                f::UNIT_COUNT,
                "process forks timed since the start (report --json: time.fork)",
            ),
        ] {
            let mut cd = Msg::new();
            cd.uint(f::UNIT, unit);
            let mut d = Msg::new();
            d.uint(f::UUID, uuid)
                .string(f::NAME, name)
                .string(f::DESCRIPTION, description)
                .message(f::COUNTER, &cd);
            packets.push(track(&d));
        }
        for (tid, (name, _)) in &self.threads {
            let mut d = Msg::new();
            d.uint(f::UUID, THREAD_UUID | u64::from(*tid))
                .string(f::NAME, name)
                .string(
                    f::DESCRIPTION,
                    "this thread's anon_vma lock waits of 1 ms or more, each ending at the \
                     time its batch of events was drained (a wait carries no time of its own)",
                );
            packets.push(track(&d));
        }
        let chosen = self.chosen();
        for &pid in &chosen {
            let comm = self.procs.get(&pid).map_or("?", |s| s.comm.as_str());
            let mut pd = Msg::new();
            pd.int(f::PID, i64::from(pid)).string(f::PROCESS_NAME, comm);
            let mut d = Msg::new();
            d.uint(f::UUID, PROCESS_UUID | u64::from(pid))
                .message(f::PROCESS, &pd);
            packets.push(track(&d));
            for k in 0..COUNTERS.len() {
                packets.push(counter(
                    process_counter_uuid(pid, k),
                    Some(PROCESS_UUID | u64::from(pid)),
                    k,
                    &format!("pid {pid}"),
                ));
            }
        }

        // Events, in time order (counters before instants at one time).
        let mut events: Vec<(Nanos, Msg)> = Vec::new();
        let counter_event = |uuid: u64, v: u64| {
            let mut e = Msg::new();
            e.uint(f::TYPE, f::TYPE_COUNTER)
                .uint(f::TRACK_UUID, uuid)
                .int(f::COUNTER_VALUE, i64::try_from(v).unwrap_or(i64::MAX));
            e
        };
        for (t, s) in &self.system {
            for (k, v) in s.iter().enumerate() {
                if let Some(v) = v {
                    events.push((*t, counter_event(SYSTEM_UUID + k as u64, *v)));
                }
            }
        }
        for (t, s) in &self.designs {
            for (i, v) in s.iter().enumerate() {
                if let Some(v) = v {
                    events.push((*t, counter_event(DESIGN_UUID + i as u64, *v)));
                }
            }
        }
        for &pid in &chosen {
            let Some(series) = self.procs.get(&pid) else {
                continue;
            };
            let mut last: Sample = [None; 4];
            for (t, s) in &series.samples {
                for k in 0..4 {
                    if let Some(v) = s[k]
                        && last[k] != s[k]
                    {
                        events.push((*t, counter_event(process_counter_uuid(pid, k), v)));
                    }
                }
                last = *s;
            }
        }
        for &(t, ns, forks) in &self.time {
            if let Some(ns) = ns {
                events.push((t, counter_event(LOCK_WAIT_UUID, ns)));
            }
            events.push((t, counter_event(FORKS_UUID, forks)));
        }
        // A thread's slices in order, each end before the next begin.
        for s in &self.slices {
            let uuid = THREAD_UUID | u64::from(s.tid);
            let mut b = Msg::new();
            b.uint(f::TYPE, f::TYPE_SLICE_BEGIN)
                .uint(f::TRACK_UUID, uuid)
                .string(f::CATEGORIES, "rmapwatch")
                .string(
                    f::EVENT_NAME,
                    if s.write {
                        "anon_vma write wait"
                    } else {
                        "anon_vma read wait"
                    },
                );
            events.push((s.begin, b));
            let mut e = Msg::new();
            e.uint(f::TYPE, f::TYPE_SLICE_END).uint(f::TRACK_UUID, uuid);
            events.push((s.end, e));
        }
        if self.slices_dropped > 0 {
            let t = self.slices.last().map_or(0, |s| s.end);
            self.note_dropped_slices(&mut events, t);
        }
        for (t, name) in &self.instants {
            let mut e = Msg::new();
            e.uint(f::TYPE, f::TYPE_INSTANT)
                .uint(f::TRACK_UUID, ROOT_UUID)
                .string(f::CATEGORIES, "rmapwatch")
                .string(f::EVENT_NAME, name);
            events.push((*t, e));
        }
        events.sort_by_key(|(t, _)| *t);
        for (t, e) in events {
            let mut p = Msg::new();
            self.stamp(&mut p, t);
            p.uint(f::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE)
                .message(f::TRACK_EVENT, &e);
            packets.push(p);
        }

        let mut trace = Msg::new();
        for p in &packets {
            trace.message(f::TRACE_PACKET, p);
        }
        trace.as_bytes().to_vec()
    }

    /// An instant saying how many slices were not kept.
    fn note_dropped_slices(&self, events: &mut Vec<(Nanos, Msg)>, t: Nanos) {
        let mut e = Msg::new();
        e.uint(f::TYPE, f::TYPE_INSTANT)
            .uint(f::TRACK_UUID, ROOT_UUID)
            .string(f::CATEGORIES, "rmapwatch")
            .string(
                f::EVENT_NAME,
                &format!(
                    "{} anon_vma lock wait slices not kept (more than {MAX_SLICES})",
                    self.slices_dropped
                ),
            );
        events.push((t, e));
    }
}

fn process_counter_uuid(pid: u32, k: usize) -> u64 {
    PROCESS_COUNTER_UUID | u64::from(pid) << 2 | k as u64
}

/// Appends `s` at `t` unless it equals the last sample; a second sample
/// at the same `t` replaces the first.
fn push_change(samples: &mut Vec<(Nanos, Sample)>, t: Nanos, s: Sample) {
    match samples.last_mut() {
        Some(last) if last.0 == t => last.1 = s,
        Some(last) if last.1 == s => {}
        _ => samples.push((t, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, anon_vma: u64) -> ProcRow {
        ProcRow {
            pid,
            comm: format!("p{pid}"),
            live: Objects {
                anon_vma,
                avc: anon_vma,
            },
            ..ProcRow::default()
        }
    }

    /// A protobuf value, as the wire has it.
    #[derive(Debug)]
    enum V<'a> {
        Int(u64),
        Bytes(&'a [u8]),
    }

    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().expect("a varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }

    /// A message's fields, in order: a reader of its own, so that the
    /// test does not read the trace with the writer's code.
    fn fields(mut b: &[u8]) -> Vec<(u32, V<'_>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let field = u32::try_from(key >> 3).unwrap();
            let v = match key & 7 {
                0 => V::Int(varint(&mut b)),
                1 => {
                    let (x, rest) = b.split_at(8);
                    b = rest;
                    V::Int(u64::from_le_bytes(x.try_into().unwrap()))
                }
                2 => {
                    let n = usize::try_from(varint(&mut b)).unwrap();
                    let (x, rest) = b.split_at(n);
                    b = rest;
                    V::Bytes(x)
                }
                5 => {
                    let (x, rest) = b.split_at(4);
                    b = rest;
                    V::Int(u64::from(u32::from_le_bytes(x.try_into().unwrap())))
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, v));
        }
        out
    }

    fn int(fs: &[(u32, V<'_>)], n: u32) -> Option<u64> {
        fs.iter().find_map(|(f, v)| match v {
            V::Int(x) if *f == n => Some(*x),
            _ => None,
        })
    }

    fn bytes<'a>(fs: &[(u32, V<'a>)], n: u32) -> Option<&'a [u8]> {
        fs.iter().find_map(|(f, v)| match v {
            V::Bytes(x) if *f == n => Some(*x),
            _ => None,
        })
    }

    /// An engine (walking only when told, as a replay) fed a parent with
    /// 20 regions and 3 children: a tick, then `walks` walks each followed
    /// by a tick (a frame each), every input and step given to `b`; and
    /// an anon_vma the walks saw.
    fn run(b: &mut Builder, walks: u64) -> (Engine, u64) {
        use crate::{
            engine,
            facts::{Facts, KernelId},
            input::{Counters, Input, KernelCounters},
            model::sim::Sim,
            snapshot::WalkCounts,
        };
        let mut sim = Sim::default();
        for i in 0..20 {
            let v = sim.map(100, i * 0x10000);
            sim.fault(v);
        }
        for c in 0..3 {
            sim.fork(100, 101 + c);
        }
        let snap = sim.snapshot();
        let comms: Vec<(u32, String)> = snap.procs.keys().map(|&p| (p, format!("p{p}"))).collect();
        let mut e = Engine::new(engine::Options {
            walk_on_tick: false,
            source_answers: false,
            ..engine::Options::default()
        });
        let mut apply = |e: &mut Engine, i: Input| {
            b.input(&i);
            let step = e.apply(i).unwrap();
            b.step(e, step);
        };
        apply(
            &mut e,
            Input::Facts(Box::new(Facts {
                kernel: KernelId {
                    release: "6.18.0-test".into(),
                    arch: "x86_64".into(),
                },
                sizes: Sizes {
                    anon_vma: 104,
                    anon_vma_chain: 64,
                },
                time: crate::hooks::TimeHooks {
                    lock_mode: "tracepoint".into(),
                    ..crate::hooks::TimeHooks::default()
                },
                ..Facts::default()
            })),
        );
        apply(
            &mut e,
            Input::Counters {
                t: 0,
                counters: Counters {
                    kernel: Some(KernelCounters::default()),
                    ..Counters::default()
                },
            },
        );
        let s = 1_000_000_000;
        apply(&mut e, Input::Tick { t: s / 2 });
        for t in 1..=walks {
            apply(&mut e, Input::WalkBegin { t: t * s });
            apply(
                &mut e,
                Input::WalkVmas {
                    comms: comms.clone(),
                    parents: Vec::new(),
                    vmas: snap.vmas.clone(),
                },
            );
            apply(
                &mut e,
                Input::WalkEnd {
                    t: t * s + 1_000,
                    counts: WalkCounts {
                        vmas: snap.vmas.len() as u64,
                        ..WalkCounts::default()
                    },
                    error: None,
                },
            );
            apply(&mut e, Input::Tick { t: t * s + 2_000 });
        }
        let av = snap.vmas.iter().map(|v| v.anon_vma).find(|&a| a != 0);
        (e, av.expect("a VMA with an anon_vma"))
    }

    #[test]
    fn every_design_has_a_system_bytes_track_sampled_at_each_frame() {
        let mut b = Builder::new(5);
        let (e, _) = run(&mut b, 3);
        let outcomes = e.designs().expect("walked");
        let trace = b.encode();
        // name -> (uuid, unit); uuid -> counter values.
        let mut tracks = BTreeMap::new();
        let mut values: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (field, packet) in fields(&trace) {
            assert_eq!(field, f::TRACE_PACKET);
            let V::Bytes(packet) = packet else {
                panic!("a packet is a message")
            };
            let p = fields(packet);
            if let Some(d) = bytes(&p, f::TRACK_DESCRIPTOR) {
                let d = fields(d);
                let name = String::from_utf8(bytes(&d, f::NAME).unwrap_or_default().to_vec());
                let unit = bytes(&d, f::COUNTER).and_then(|c| int(&fields(c), f::UNIT));
                tracks.insert(name.unwrap(), (int(&d, f::UUID).unwrap(), unit));
            }
            if let Some(ev) = bytes(&p, f::TRACK_EVENT) {
                let ev = fields(ev);
                if int(&ev, f::TYPE) == Some(f::TYPE_COUNTER) {
                    values
                        .entry(int(&ev, f::TRACK_UUID).unwrap())
                        .or_default()
                        .push(int(&ev, f::COUNTER_VALUE).unwrap());
                }
            }
        }
        assert_eq!(outcomes.len(), DESIGNS.len());
        for o in outcomes {
            let name = format!("design {} bytes (system)", o.name);
            let Some(&(uuid, unit)) = tracks.get(&name) else {
                panic!("no track {name}: {:?}", tracks.keys())
            };
            let i = DESIGNS.iter().position(|&n| n == o.name).unwrap();
            assert_eq!(uuid, DESIGN_UUID + i as u64, "{name}: a stable uuid");
            assert_eq!(unit, Some(f::UNIT_SIZE_BYTES), "{name}");
            // A sample per frame but the one before the first walk, each
            // the design's bytes at the walk (the same walk every time).
            assert_eq!(values[&SYSTEM_UUID].len(), 4, "a frame per tick");
            assert_eq!(values.get(&uuid), Some(&vec![o.system.bytes; 3]), "{name}");
        }
        let bytes_of = |n: &str| outcomes.iter().find(|o| o.name == n).unwrap().system.bytes;
        assert!(
            bytes_of("cow_context") < bytes_of("lazy") && bytes_of("lazy") < bytes_of("today"),
            "the designs are told apart"
        );
        // The object counters keep their uuids.
        assert_eq!(tracks["anon_vma live (system)"].0, SYSTEM_UUID);
        assert_eq!(tracks["rmapwatch"].0, ROOT_UUID);
    }

    /// A packet's track event: (timestamp, its fields).
    fn track_events(trace: &[u8]) -> Vec<(u64, Vec<(u32, V<'_>)>)> {
        fields(trace)
            .into_iter()
            .filter_map(|(_, p)| {
                let V::Bytes(p) = p else { return None };
                let p = fields(p);
                let ev = bytes(&p, f::TRACK_EVENT)?;
                Some((int(&p, f::TIMESTAMP)?, fields(ev)))
            })
            .collect()
    }

    #[test]
    fn lock_wait_time_and_forks_are_counters_and_long_waits_slices_on_their_thread() {
        use crate::event::LockWait;
        use rmapwatch_common::lock;
        let mut b = Builder::new(5);
        let (mut e, av) = run(&mut b, 1);
        let wait = |tid: u32, anon_vma: u64, write: bool, ns: u64| {
            Event::LockWait(LockWait {
                tid,
                tgid: tid,
                anon_vma,
                flags: if write { lock::WRITE } else { lock::READ },
                wait_ns: ns,
                holder: 0,
            })
        };
        let mut apply = |e: &mut Engine, i: Input| {
            b.input(&i);
            let step = e.apply(i).unwrap();
            b.step(e, step);
        };
        let ms = 1_000_000;
        let t1 = 2_000_005_000;
        apply(
            &mut e,
            Input::Events {
                t: t1,
                events: vec![
                    wait(101, av, true, 2 * ms),
                    wait(101, av, false, 3 * ms),
                    // Too short for a slice; counted.
                    wait(100, av, false, ms / 2),
                    // Not a tracked anon_vma: a slice, not counted.
                    wait(102, 0xdead_0000, true, 4 * ms),
                    Event::fork(100, 300, "kid"),
                    Event::ForkTime {
                        tid: 100,
                        tgid: 100,
                        child: 300,
                        ns: 50_000,
                    },
                ],
            },
        );
        // Waited 2 ms but drained 1 ms after the last slice ended: it
        // starts there.
        let t2 = t1 + ms;
        apply(
            &mut e,
            Input::Events {
                t: t2,
                events: vec![wait(101, av, true, 2 * ms)],
            },
        );
        apply(&mut e, Input::Tick { t: 3_000_000_000 });
        let t3 = 3_000_000_000 + 10 * ms;
        apply(
            &mut e,
            Input::Events {
                t: t3,
                events: vec![wait(101, av, false, 2 * ms)],
            },
        );
        apply(&mut e, Input::Tick { t: 4_000_000_000 });
        assert_eq!(e.time_report().anon_vma_lock.wait_ns, 9_500_000);
        let trace = b.encode();
        let mut tracks = BTreeMap::new();
        let mut units = BTreeMap::new();
        for (_, p) in fields(&trace) {
            let V::Bytes(p) = p else { continue };
            if let Some(d) = bytes(&fields(p), f::TRACK_DESCRIPTOR) {
                let d = fields(d);
                // (Process tracks are named by their descriptor.)
                if let Some(name) = bytes(&d, f::NAME) {
                    let name = String::from_utf8(name.to_vec()).unwrap();
                    tracks.insert(name.clone(), int(&d, f::UUID).unwrap());
                    let unit = bytes(&d, f::COUNTER).map(|c| int(&fields(c), f::UNIT));
                    units.insert(name, unit);
                }
            }
        }
        assert_eq!(
            tracks["anon_vma lock wait time (system, cumulative)"],
            LOCK_WAIT_UUID
        );
        assert_eq!(tracks["forks (system, cumulative)"], FORKS_UUID);
        assert_eq!(
            units["anon_vma lock wait time (system, cumulative)"],
            Some(Some(f::UNIT_TIME_NS))
        );
        assert_eq!(
            units["forks (system, cumulative)"],
            Some(Some(f::UNIT_COUNT))
        );
        assert_eq!(units["p101 101"], None, "a thread's track is no counter");
        let events = track_events(&trace);
        let on = |uuid: u64| -> Vec<(u64, &Vec<(u32, V<'_>)>)> {
            events
                .iter()
                .filter(|(_, ev)| int(ev, f::TRACK_UUID) == Some(uuid))
                .map(|(t, ev)| (*t, ev))
                .collect()
        };
        // One sample per frame: the first tick, the walk's, then ours.
        let wait_ns: Vec<u64> = on(LOCK_WAIT_UUID)
            .iter()
            .map(|(_, ev)| int(ev, f::COUNTER_VALUE).unwrap())
            .collect();
        assert_eq!(wait_ns, [0, 0, 7_500_000, 9_500_000]);
        let forks: Vec<u64> = on(FORKS_UUID)
            .iter()
            .map(|(_, ev)| int(ev, f::COUNTER_VALUE).unwrap())
            .collect();
        assert_eq!(forks, [0, 0, 1, 1]);
        // Slices: begin and end, named by kind, on "<comm> <tid>".
        let slices = |uuid: u64| -> Vec<(u64, u64, Option<String>)> {
            on(uuid)
                .iter()
                .map(|(t, ev)| {
                    let name =
                        bytes(ev, f::EVENT_NAME).map(|n| String::from_utf8(n.to_vec()).unwrap());
                    (*t, int(ev, f::TYPE).unwrap(), name)
                })
                .collect()
        };
        let begin = |t: u64, n: &str| (t, f::TYPE_SLICE_BEGIN, Some(n.to_owned()));
        let end = |t: u64| (t, f::TYPE_SLICE_END, None);
        let (r, w) = ("anon_vma read wait", "anon_vma write wait");
        assert_eq!(
            slices(tracks["p101 101"]),
            [
                begin(t1 - 5 * ms, w),
                end(t1 - 3 * ms),
                begin(t1 - 3 * ms, r),
                end(t1),
                begin(t1, w),
                end(t2),
                begin(t3 - 2 * ms, r),
                end(t3),
            ]
        );
        assert_eq!(tracks["p101 101"], THREAD_UUID | 101);
        assert_eq!(slices(tracks["p102 102"]), [begin(t1 - 4 * ms, w), end(t1)]);
        assert!(!tracks.contains_key("p100 100"), "{tracks:?}");
        // Time order holds across the trace.
        assert!(events.windows(2).all(|x| x[0].0 <= x[1].0));
    }

    #[test]
    fn every_design_of_the_engine_has_a_uuid() {
        let d = crate::design::Designs::new(crate::design::Options::default());
        for name in d.names() {
            assert!(DESIGNS.contains(&name), "{name} has no counter uuid");
        }
    }

    /// A day of short-lived processes: the series held stay bounded by
    /// the live processes and the tracks, and the trace still gives its
    /// tracks to the largest peaks of the whole run.
    #[test]
    fn series_of_gone_processes_are_bounded_and_the_largest_peaks_kept() {
        let top = 5;
        let mut b = Builder::new(top);
        let mut most = 0;
        // Two long-lived processes; 20,000 short-lived ones, three at a
        // time; pids 1000 and 7777 have the run's largest peaks.
        for i in 0..20_000u32 {
            let pid = 1000 + i;
            let peak = match pid {
                1000 => 10_000,
                7777 => 9_000,
                _ => u64::from(i % 97) + 1,
            };
            let rows = vec![row(1, 500), row(2, 600), row(pid, peak), row(pid + 1, 1)];
            b.sample_rows(u64::from(i) * 1000, rows);
            most = most.max(b.series());
        }
        assert!(most <= 4 + 2 * top + 64 + 1, "held {most} series");
        let chosen = b.chosen();
        assert!(
            chosen.contains(&1000) && chosen.contains(&7777),
            "{chosen:?}"
        );
        assert!(chosen.contains(&1) && chosen.contains(&2), "{chosen:?}");
        assert_eq!(chosen.len(), top);
    }
}
