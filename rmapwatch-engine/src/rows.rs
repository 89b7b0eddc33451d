//! The one per-process projection of the engine's state: what each
//! process owns now (the accounting) beside what the latest walk saw and
//! what each design would hold. The live view's rows, the report's
//! processes and Perfetto's process counters are all made from it.
use std::collections::BTreeMap;

use rmapwatch_common::object;

use crate::{
    account::{Accounting, Flow},
    facts::Sizes,
    model::{Estimate, Objects},
    walk::ProcInfo,
};

/// One process as every sink sees it: the row of the live view, a
/// process of the report, the source of Perfetto's process counters.
/// [`process_rows`] is the one projection that makes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcRow {
    /// tgid.
    pub pid: u32,
    /// Name (`?` until known).
    pub comm: String,
    /// Parent tgid, when its fork was seen.
    pub ppid: Option<u32>,
    /// Whether it exited.
    pub exited: bool,
    /// Allocations and frees per object kind since attach.
    pub flows: [Flow; object::COUNT],
    /// VMAs at the latest walk.
    pub vmas: Option<u64>,
    /// Objects it owns now (events).
    pub live: Objects,
    /// Objects the latest walk saw it own (`None`: no walk yet).
    pub walked: Option<Objects>,
    /// What lazy would hold for it at the latest walk.
    pub lazy: Option<Objects>,
}

/// The latest walk as the per-process projection reads it.
#[derive(Clone, Copy, Debug)]
pub struct WalkOf<'a> {
    /// The model's estimate (actual and lazy per process).
    pub estimate: &'a Estimate,
    /// The processes the walk saw.
    pub procs: &'a BTreeMap<u32, ProcInfo>,
}

/// The processes with anon_vma/AVC traffic or objects, by pid: what they
/// own now (events) and, once there is a walk, what it saw them own and
/// what lazy would hold for them (0 for a process the walk did not see).
pub fn process_rows<'a>(
    acct: &'a Accounting,
    walk: Option<WalkOf<'a>>,
) -> impl Iterator<Item = ProcRow> + 'a {
    acct.processes
        .values()
        .filter(|p| p.is_active())
        .map(move |p| {
            let pair = walk.map(|w| {
                w.estimate
                    .processes
                    .get(&p.pid)
                    .copied()
                    .unwrap_or_default()
            });
            ProcRow {
                pid: p.pid,
                comm: if p.comm.is_empty() {
                    "?".into()
                } else {
                    p.comm.clone()
                },
                ppid: p.ppid,
                exited: p.exited,
                flows: p.flows,
                vmas: walk.and_then(|w| w.procs.get(&p.pid).map(|i| i.vmas)),
                live: Objects::from(p.live),
                walked: pair.map(|x| x.actual),
                lazy: pair.map(|x| x.lazy),
            }
        })
}

impl ProcRow {
    /// Live bytes.
    #[must_use]
    pub fn live_bytes(&self, sizes: Sizes) -> u64 {
        sizes.bytes(self.live)
    }

    /// Lazy bytes.
    #[must_use]
    pub fn lazy_bytes(&self, sizes: Sizes) -> Option<u64> {
        self.lazy.map(|l| sizes.bytes(l))
    }

    /// Bytes lazy would save (walk actual minus lazy: one basis).
    #[must_use]
    pub fn saving_bytes(&self, sizes: Sizes) -> i128 {
        match (self.walked, self.lazy) {
            (Some(a), Some(l)) => i128::from(sizes.bytes(a)) - i128::from(sizes.bytes(l)),
            _ => 0,
        }
    }
}
