//! What the live view shows, typed: built by the engine from its state, not
//! from the JSON report (whose field names a renamed field would silently
//! break).
use crate::{
    account::{Folded, ObjectTotals},
    facts::Facts,
    inspect::Inspection,
    model::Objects,
    report::{CostReport, Resync},
    rows::ProcRow,
};

/// The latest walk, system-wide: actual and lazy on the same basis (the
/// walk), with the events' live counts beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalkView {
    /// What the kernel held at the walk.
    pub actual: Objects,
    /// What ANON_VMA_LAZY would have held.
    pub lazy: Objects,
    /// Lazy under the other value of the inferred option.
    pub lazy_other_option: Objects,
    /// Seconds since the walk ended.
    pub age_s: f64,
    /// Milliseconds the walk took.
    pub walk_ms: f64,
    /// Walks so far.
    pub walks: u64,
    /// Events' live minus the walk's, over the objects that did not change
    /// during it (anon_vma, AVC).
    pub drift: [i64; 2],
    /// Every design's outcome at the walk (per process:
    /// [`crate::design::shares`]).
    pub designs: std::sync::Arc<Vec<crate::design::Outcome>>,
}

/// One refresh of the live view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    /// The measured machine.
    pub facts: Facts,
    /// Seconds since attach.
    pub uptime_s: f64,
    /// Events applied.
    pub events: u64,
    /// Events lost (`None`: counters unreadable).
    pub dropped: Option<u64>,
    /// The fullest the ring buffer was at a drain, in percent of its size.
    pub ring_peak_pct: Option<f64>,
    /// Lost events and recovery.
    pub resync: Resync,
    /// The tool's own cost, from `bpf_stats`.
    pub cost: Option<CostReport>,
    /// Allocations and frees per object kind and call site.
    pub totals: [ObjectTotals; 2],
    /// Live objects now (events).
    pub live: Objects,
    /// The latest walk.
    pub walk: Option<WalkView>,
    /// Processes with traffic or objects.
    pub processes: Vec<ProcRow>,
    /// Exited processes folded away past their retention, summed.
    pub exited: Folded,
    /// The inspection of the process the user opened.
    pub detail: Option<Inspection>,
    /// The inlining detector's warning (anon_vma allocations outside every
    /// rmap function), if it counted any.
    pub inlined_warning: Option<String>,
    /// The link to a remote agent (set by the host, not the engine).
    pub link: Option<crate::report::LinkReport>,
    /// What anon_vma costs in time (lock waits, fork work, rmap walks) and
    /// what each design would not have spent: the report's `time` block.
    pub time: Option<crate::time::TimeReport>,
}
