//! The one ordered input type at the engine's boundary: what every source
//! (the live kernel, a recording, a phone's agent) yields, and the requests
//! that flow back to it.
//!
//! # Ordering rules
//! A source's inputs obey these rules; [`Order`] checks them, the engine
//! relies on them, and a recording is simply a log of inputs.
//!
//! 1. [`Input::Facts`] comes first, once.
//! 2. Timestamps (`t`, nanoseconds since the source started, on its
//!    monotonic clock) never go back.
//! 3. Events are delivered in the order the kernel reported them. Every
//!    event the kernel reported before a walk began is delivered before
//!    that walk's [`Input::WalkBegin`] (the source drains its ring first).
//! 4. A walk is [`Input::WalkBegin`], zero or more [`Input::WalkVmas`],
//!    then [`Input::WalkEnd`]; walks do not nest. [`Input::Events`] may
//!    come between them: those events happened *during* the walk, which may
//!    or may not reflect them (the source keeps draining its ring while a
//!    walk runs, so that a long walk does not overflow it). Every event the
//!    kernel reported before the walk ended is delivered before its
//!    [`Input::WalkEnd`].
//! 5. Within a walk, a VMA's process has been named (`comms` of this or an
//!    earlier batch of the same walk) by the time the VMA comes.
//! 6. Counters are cumulative since attach and never decrease; `None` means
//!    unreadable, never zero.
//! 7. Every allocation flagged "in fork" is followed by the end of its fork
//!    ([`crate::event::Event::Fork`] from the same thread) or by its free: the
//!    live source attaches the end of a fork before the allocations inside it.
//! 8. [`Input::End`] comes last.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    event::Event,
    facts::Facts,
    snapshot::{Vma, WalkCounts},
};

/// Nanoseconds since the source started, on its monotonic clock.
pub type Nanos = u64;

/// One eBPF program's run statistics (the kernel's `bpf_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    /// Runs counted.
    pub runs: u64,
    /// Time spent in the program, summed over runs.
    pub run_time_ns: u64,
    /// Runs skipped because the program was already running on that CPU.
    pub recursion_misses: u64,
}

impl ProgramStats {
    /// Mean run time, or `None` before the first run.
    #[must_use]
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// The programs' kernel-side counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounters {
    /// Events lost because the ring buffer was full.
    pub dropped: u64,
    /// Calls per function hook (`rmapwatch_common::hook` order).
    pub hook_calls: Vec<u64>,
    /// Pages mapped through `folio_add_anon_rmap_ptes`.
    pub rmap_ptes_pages: u64,
    /// New anonymous folios not counted per VMA (map full).
    pub rmap_vmas_full: u64,
    /// anon_vma allocations at call sites outside every rmap function's
    /// range (an rmap function inlined elsewhere, e.g. by LTO): those
    /// objects are missing from the counts.
    #[serde(default)]
    pub inlined_anon_vma: u64,
    /// The inlining detector's call sites (`function+0xoffset`) and counts.
    #[serde(default)]
    pub inlined_sites: BTreeMap<String, u64>,
    /// Fork-family syscalls that found the fork window's timing map full:
    /// those forks were not timed (before ABI 9, their `anon_vma_clone`
    /// AVCs also went to the parent; `None` in recordings made before it
    /// was counted).
    #[serde(default)]
    pub fork_window_full: Option<u64>,
    /// `iter/task` walks (before 5.12) of a process that ended early
    /// because its VMA list changed under them (`None` in recordings made
    /// before it was counted).
    #[serde(default)]
    pub walks_torn: Option<u64>,
    /// anon_vma rwsem waits lost in the kernel (the anon_vma freed between
    /// begin and end, or the wait map full; `None` in recordings made before
    /// they were counted).
    #[serde(default)]
    pub lock_waits_lost: Option<u64>,
    /// Function-hook exits whose entry was not seen (not timed).
    #[serde(default)]
    pub timing_unpaired: Option<u64>,
    /// The nest watch's counts (`--watch-nesting`), `None` without it.
    #[serde(default)]
    pub nested: Option<Box<Nested>>,
}

/// What the nest watch saw: slab events the kernel skipped for our slab
/// program of the same tracepoint, running on that CPU (recursion misses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nested {
    /// Per CPU (index: CPU number), all call sites.
    pub per_cpu: Vec<u64>,
    /// Of them, at an rmap call site: events ours would have streamed,
    /// streamed by the watch instead.
    pub ours: u64,
    /// Recursion misses of our slab programs, read with the watch's counts
    /// (with or without `bpf_stats`).
    #[serde(default)]
    pub slab_misses: Option<u64>,
}

impl KernelCounters {
    /// Calls of a hook (0 for an unknown id).
    #[must_use]
    pub fn calls(&self, hook: u32) -> u64 {
        self.hook_calls.get(hook as usize).copied().unwrap_or(0)
    }
}

/// Counters, cumulative since attach.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// The programs' counters; `None` when they could not be read.
    pub kernel: Option<KernelCounters>,
    /// Per-program run statistics (`bpf_stats`); `None` when the kernel
    /// keeps none or they could not be read.
    pub programs: Option<BTreeMap<String, ProgramStats>>,
    /// Ring-buffer records that did not decode (an ABI mismatch).
    pub undecodable: u64,
    /// The most bytes that waited in the ring buffer at one drain since
    /// attach (its size is in the facts): how close it came to dropping.
    #[serde(default)]
    pub ring_peak_bytes: u64,
    /// Fork windows user space dropped because too many were open at once
    /// ([`crate::event::ForkWindows`]; only after closing records were
    /// lost): a loss like a dropped event, re-seeded by the next walk.
    #[serde(default)]
    pub fork_windows_dropped: u64,
}

/// Slab object counters of the measured machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabCounts {
    /// `/sys/kernel/slab/anon_vma/objects` (after a shrink when `shrunk`).
    pub anon_vma: Option<u64>,
    /// `/sys/kernel/slab/anon_vma_chain/objects` (usually a merged cache).
    pub anon_vma_chain: Option<u64>,
    /// Whether the anon_vma cache was shrunk first (exact count).
    pub shrunk: bool,
}

/// New anonymous folios per (process, VMA start) from the kernel's map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmapUpdate {
    /// The map's entries now.
    pub current: Vec<((u32, u64), u64)>,
    /// Entries the source removed from the map since the last update (their
    /// processes exited), with their last values.
    pub retired: Vec<((u32, u64), u64)>,
}

/// A line for the user from the source (where it runs: on a phone, the
/// host shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Whether it is a warning (else information).
    pub warning: bool,
    /// The text.
    pub text: String,
}

/// One input of the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The measured machine (first input).
    Facts(Box<Facts>),
    /// Events, with the time of the batch (the source's drain).
    Events {
        /// When the batch was drained.
        t: Nanos,
        /// The events, in ring order.
        events: Vec<Event>,
    },
    /// A walk of every process's VMAs begins.
    WalkBegin {
        /// When.
        t: Nanos,
    },
    /// VMAs of the walk, in iterator order (threads deduplicated by mm).
    WalkVmas {
        /// Names of the processes first seen in this batch.
        comms: Vec<(u32, String)>,
        /// Parents (tgid) of processes first seen in this batch, as the
        /// walk saw them (empty in recordings made before they were kept).
        parents: Vec<(u32, u32)>,
        /// The VMAs.
        vmas: Vec<Vma>,
    },
    /// The walk ended.
    WalkEnd {
        /// When.
        t: Nanos,
        /// What it counted besides.
        counts: WalkCounts,
        /// Why it failed, if it did (its VMAs are then discarded).
        error: Option<String>,
    },
    /// Counters.
    Counters {
        /// When they were read.
        t: Nanos,
        /// The counters.
        counters: Counters,
    },
    /// Per-VMA new anonymous folio counts.
    Rmap(RmapUpdate),
    /// Names of processes (answers to [`Request::Names`]).
    Names(Vec<(u32, String)>),
    /// File paths of a process's mappings, by start address.
    MapPaths {
        /// The process.
        pid: u32,
        /// Start address -> path.
        paths: Vec<(u64, String)>,
    },
    /// Slab counters.
    Slab(SlabCounts),
    /// A line for the user.
    Notice(Notice),
    /// The source's refresh tick.
    Tick {
        /// When.
        t: Nanos,
    },
    /// The source stopped.
    End {
        /// When.
        t: Nanos,
        /// Why.
        reason: String,
    },
}

impl Input {
    /// The input's timestamp, for those that carry one.
    #[must_use]
    pub fn time(&self) -> Option<Nanos> {
        match self {
            Self::Events { t, .. }
            | Self::WalkBegin { t }
            | Self::WalkEnd { t, .. }
            | Self::Counters { t, .. }
            | Self::Tick { t }
            | Self::End { t, .. } => Some(*t),
            _ => None,
        }
    }
}

/// Which processes' mapping paths a walk should send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Paths {
    /// None besides the detail process's.
    Detail,
    /// Every process the walk saw (the end of a recording, for `inspect
    /// --from`).
    All,
}

/// Which slab counters to read before a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlabRead {
    /// None.
    No,
    /// The counters as they are (sizing the seeding walk's tables).
    Read,
    /// Shrink the anon_vma cache first, for an exact count (the final
    /// report: a side effect the user is told of).
    Shrink,
}

/// What the engine (or a sink) asks of the source. Sources that cannot do
/// it (a recording) ignore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Walk every process's VMAs now.
    Walk {
        /// Slab counters to read first.
        slab: SlabRead,
        /// Mapping paths to send.
        paths: Paths,
    },
    /// The process the user inspects: send its mapping paths with every
    /// walk (`None`: none).
    Detail {
        /// Its pid.
        pid: Option<u32>,
    },
    /// Look up these processes' names.
    Names {
        /// Their pids.
        pids: Vec<u32>,
    },
    /// Stop reading (a recording being replayed: pause or resume).
    Pause {
        /// Paused.
        paused: bool,
    },
    /// Stop: drain, detach, and end with [`Input::End`].
    Stop,
}

/// A broken ordering rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Something came before the facts, or the facts came twice.
    #[error("rule 1: {0}")]
    Facts(&'static str),
    /// A timestamp went back.
    #[error("rule 2: time went back from {0} to {1} ns")]
    TimeWentBack(Nanos, Nanos),
    /// Walk records outside a walk, or a walk inside a walk.
    #[error("rule 4: {0}")]
    Walk(&'static str),
    /// A VMA of an unnamed process.
    #[error("rule 5: a VMA of process {0}, not named in its walk")]
    Unnamed(u32),
    /// A counter went down.
    #[error("rule 6: counter {0} went down")]
    CounterDown(&'static str),
    /// Something after the end.
    #[error("rule 8: input after the end")]
    AfterEnd,
}

/// Checks inputs against the ordering rules, one at a time.
#[derive(Debug, Default)]
pub struct Order {
    facts: bool,
    last_t: Nanos,
    in_walk: Option<crate::hash::FastSet<u32>>,
    dropped: u64,
    fork_windows_dropped: u64,
    ended: bool,
}

impl Order {
    /// Checks the next input.
    ///
    /// # Errors
    /// The rule it breaks.
    pub fn check(&mut self, input: &Input) -> Result<(), OrderError> {
        if self.ended {
            return Err(OrderError::AfterEnd);
        }
        match (self.facts, input) {
            (false, Input::Facts(_)) => self.facts = true,
            (true, Input::Facts(_)) => return Err(OrderError::Facts("the facts came twice")),
            (false, _) => return Err(OrderError::Facts("an input before the facts")),
            _ => {}
        }
        if let Some(t) = input.time() {
            if t < self.last_t {
                return Err(OrderError::TimeWentBack(self.last_t, t));
            }
            self.last_t = t;
        }
        match input {
            Input::WalkBegin { .. } => {
                if self.in_walk.is_some() {
                    return Err(OrderError::Walk("a walk began inside a walk"));
                }
                self.in_walk = Some(crate::hash::FastSet::default());
            }
            Input::WalkVmas { comms, vmas, .. } => {
                let Some(named) = self.in_walk.as_mut() else {
                    return Err(OrderError::Walk("walk records outside a walk"));
                };
                named.extend(comms.iter().map(|(p, _)| *p));
                if let Some(v) = vmas.iter().find(|v| !named.contains(&v.tgid)) {
                    return Err(OrderError::Unnamed(v.tgid));
                }
            }
            Input::WalkEnd { .. } if self.in_walk.take().is_none() => {
                return Err(OrderError::Walk("a walk ended that had not begun"));
            }
            Input::Counters { counters, .. } => {
                if let Some(k) = &counters.kernel {
                    if k.dropped < self.dropped {
                        return Err(OrderError::CounterDown("dropped"));
                    }
                    self.dropped = k.dropped;
                }
                if counters.fork_windows_dropped < self.fork_windows_dropped {
                    return Err(OrderError::CounterDown("fork_windows_dropped"));
                }
                self.fork_windows_dropped = counters.fork_windows_dropped;
            }
            Input::End { .. } => self.ended = true,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Input {
        Input::Facts(Box::default())
    }

    #[test]
    fn the_rules_are_checked() {
        let mut o = Order::default();
        assert!(matches!(
            o.check(&Input::Tick { t: 1 }),
            Err(OrderError::Facts(_))
        ));
        let mut o = Order::default();
        o.check(&facts()).unwrap();
        assert!(o.check(&facts()).is_err());
        o.check(&Input::Tick { t: 5 }).unwrap();
        assert_eq!(
            o.check(&Input::Tick { t: 4 }),
            Err(OrderError::TimeWentBack(5, 4))
        );
        let vma = Vma {
            tgid: 7,
            ..Vma::default()
        };
        assert!(matches!(
            o.check(&Input::WalkVmas {
                comms: vec![],
                parents: vec![],
                vmas: vec![vma.clone()]
            }),
            Err(OrderError::Walk(_))
        ));
        o.check(&Input::WalkBegin { t: 6 }).unwrap();
        assert!(o.check(&Input::WalkBegin { t: 6 }).is_err());
        assert_eq!(
            o.check(&Input::WalkVmas {
                comms: vec![],
                parents: vec![],
                vmas: vec![vma.clone()]
            }),
            Err(OrderError::Unnamed(7))
        );
        o.check(&Input::WalkVmas {
            comms: vec![(7, "x".into())],
            parents: vec![],
            vmas: vec![vma.clone()],
        })
        .unwrap();
        o.check(&Input::WalkVmas {
            comms: vec![],
            parents: Vec::new(),
            vmas: vec![vma],
        })
        .unwrap();
        o.check(&Input::WalkEnd {
            t: 7,
            counts: WalkCounts::default(),
            error: None,
        })
        .unwrap();
        let counters = |dropped| Input::Counters {
            t: 8,
            counters: Counters {
                kernel: Some(KernelCounters {
                    dropped,
                    ..KernelCounters::default()
                }),
                ..Counters::default()
            },
        };
        o.check(&counters(3)).unwrap();
        assert_eq!(
            o.check(&counters(2)),
            Err(OrderError::CounterDown("dropped"))
        );
        let windows = |n| Input::Counters {
            t: 8,
            counters: Counters {
                fork_windows_dropped: n,
                ..Counters::default()
            },
        };
        o.check(&windows(4)).unwrap();
        assert_eq!(
            o.check(&windows(1)),
            Err(OrderError::CounterDown("fork_windows_dropped"))
        );
        o.check(&Input::End {
            t: 9,
            reason: "done".into(),
        })
        .unwrap();
        assert_eq!(o.check(&Input::Tick { t: 10 }), Err(OrderError::AfterEnd));
    }
}
