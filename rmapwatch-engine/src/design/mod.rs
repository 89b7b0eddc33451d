//! The designs on the table, side by side: what the kernel holds today,
//! what ANON_VMA_LAZY, Lorenzo Stoakes' COW context and the ideal lower
//! bound would hold for the same processes. Each design is one file with
//! one [`Design`]: it hears the same events and the same walks, and yields
//! an [`Outcome`] per walk (objects by type, bytes in this kernel's slots,
//! the same per process, the rules behind the numbers and the blind spots).
//! Adding a design is one file and one line in [`Designs::new`].
//!
//! Sources and the rules each design follows: `docs/designs.md`.
use std::collections::BTreeMap;

pub use base::{
    Coverage, Design, Holding, ModelOption, Outcome, PINNERS_SHOWN, Pinned, Share, VM_GROWSDOWN,
    VM_SHARED, Walked, change, kmalloc_slot,
};

use crate::{event::Event, facts::Facts, snapshot::Vma};

pub mod base;
pub mod cow_context;
pub mod ideal;
pub mod lazy;
pub mod today;

/// The designs' options (the rules the sources do not settle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// LAZY: tree-parent VMAs keep their chain links (`model.rs`).
    pub lazy: crate::model::Options,
    /// LAZY: an upgrade seen at a walk stays while its anon_vma lives.
    pub lazy_sticky: bool,
    /// COW context: see [`cow_context::Options`].
    pub cow: cow_context::Options,
    /// The ideal: bytes per rmap object (`None`: the AVC slot).
    pub ideal_object_bytes: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lazy: crate::model::Options::default(),
            lazy_sticky: true,
            cow: cow_context::Options::default(),
            ideal_object_bytes: None,
        }
    }
}

/// The names [`Options::set`] takes, with what each sets.
pub const OPTION_NAMES: [(&str, &str); 6] = [
    (
        "lazy_sticky_upgrades",
        "true|false: an anon_vma a walk saw shared stays shared under LAZY",
    ),
    (
        "cow_context_bytes",
        "bytes: sizeof(struct cow_context) (96 in the PoC on 64-bit)",
    ),
    (
        "maple_entries_per_node",
        "1..=16: remap entries per 256 B maple node",
    ),
    (
        "fork_readd_arrays",
        "true|false: the PoC's fork turns a parent's one-offset entries into arrays",
    ),
    (
        "infer_dead_at_seed",
        "true|false: infer ancestors dead before the start from orphaned anon_vma trees",
    ),
    (
        "ideal_object_bytes",
        "bytes: the ideal's object (default: the AVC slot)",
    ),
];

impl Options {
    /// Sets one option from `NAME=VALUE` (`--design-option`).
    ///
    /// # Errors
    /// An unknown name or a value out of its range, in one line.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let names = || {
            OPTION_NAMES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected NAME=VALUE (names: {})", names()))?;
        let flag = || match value {
            "true" | "on" | "1" => Ok(true),
            "false" | "off" | "0" => Ok(false),
            _ => Err(format!("{name}: {value:?} is not true or false")),
        };
        let bytes = |lo: u32, hi: u32| {
            value
                .parse::<u32>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| format!("{name}: {value:?} is not a number from {lo} to {hi}"))
        };
        match name {
            "lazy_sticky_upgrades" => self.lazy_sticky = flag()?,
            "cow_context_bytes" => self.cow.context_bytes = bytes(1, 1 << 20)?,
            "maple_entries_per_node" => self.cow.entries_per_node = bytes(1, 16)?,
            "fork_readd_arrays" => self.cow.fork_readd_arrays = flag()?,
            "infer_dead_at_seed" => self.cow.infer_dead_at_seed = flag()?,
            "ideal_object_bytes" => self.ideal_object_bytes = Some(bytes(1, 1 << 20)?),
            _ => {
                return Err(format!(
                    "{name:?}: no such design option (names: {})",
                    names()
                ));
            }
        }
        Ok(())
    }
}

/// Every design, fed together.
#[derive(Debug)]
pub struct Designs {
    list: Vec<Box<dyn Design>>,
}

impl Designs {
    /// today, lazy, cow_context, ideal.
    #[must_use]
    pub fn new(opts: Options) -> Self {
        Self {
            list: vec![
                Box::new(today::Today),
                Box::new(lazy::Lazy::new(opts.lazy, opts.lazy_sticky)),
                Box::new(cow_context::CowContext::new(opts.cow)),
                Box::new(ideal::Ideal::new(opts.ideal_object_bytes)),
            ],
        }
    }

    /// The designs' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.list.iter().map(|d| d.name())
    }

    /// A kernel event.
    pub fn event(&mut self, e: &Event) {
        for d in &mut self.list {
            d.event(e);
        }
    }

    /// A walk begins on the machine of `facts`.
    pub fn begin(&mut self, facts: &Facts) {
        for d in &mut self.list {
            d.begin(facts);
        }
    }

    /// One VMA of the walk.
    pub fn vma(&mut self, v: &Vma) {
        for d in &mut self.list {
            d.vma(v);
        }
    }

    /// The walk ended: every design's outcome, with its change against
    /// today's (the first design).
    pub fn end(&mut self, w: &Walked<'_>) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = self.list.iter_mut().map(|d| d.end(w)).collect();
        let today = out.first().map_or(0, |o| o.system.bytes);
        for o in &mut out {
            o.change_vs_today = if o.blind() {
                None
            } else {
                change(today, o.system.bytes)
            };
        }
        out
    }

    /// The end of a digested walk (`walk::Digest::finish_with`): every
    /// design's outcome, from the walk's estimate, processes and counts.
    pub fn end_walk(
        &mut self,
        walked: &crate::walk::Walked,
        owner: &dyn Fn(u64) -> Option<(u32, bool)>,
        facts: &Facts,
        parents: &BTreeMap<u32, u32>,
        seeding: bool,
    ) -> Vec<Outcome> {
        let procs = walked
            .procs
            .iter()
            .map(|(&p, i)| (p, i.comm.clone()))
            .collect();
        self.end(&Walked {
            estimate: &walked.estimate,
            procs: &procs,
            parents,
            owner,
            facts,
            vmas: walked.counts.vmas,
            vmas_by_process: &walked.vmas_by_process(),
            counts: walked.counts,
            seeding,
        })
    }

    /// One VMA under every design (`inspect`).
    #[must_use]
    pub fn verdicts(&self, v: &Vma, facts: &Facts) -> Vec<(Share, String)> {
        let all: Vec<(Holding, String)> = self.list.iter().map(|d| d.verdict(v, facts)).collect();
        let today = all.first().map_or(0, |(h, _)| h.bytes);
        self.list
            .iter()
            .zip(all)
            .map(|(d, (holding, why))| {
                (
                    Share {
                        name: d.name().to_owned(),
                        change_vs_today: change(today, holding.bytes),
                        holding,
                    },
                    why,
                )
            })
            .collect()
    }
}

/// Every design over one walk held in memory, as the first (seeding)
/// walk: what `inspect` shows of a single walk.
#[must_use]
pub fn of_snapshot(
    snap: &crate::snapshot::Snapshot,
    facts: &Facts,
    opts: Options,
) -> (Designs, Vec<Outcome>) {
    let mut d = Designs::new(opts);
    d.begin(facts);
    let mut est = crate::model::Estimator::new(opts.lazy);
    let mut by_process: BTreeMap<u32, u64> = BTreeMap::new();
    let mut parents: BTreeMap<u32, u32> = BTreeMap::new();
    for v in &snap.vmas {
        d.vma(v);
        est.add(v, |_, _| {});
        *by_process.entry(v.tgid).or_default() += 1;
        if v.ppid != 0 {
            parents.insert(v.tgid, v.ppid);
        }
    }
    let estimate = est.take_estimate(|_, _| {});
    let procs: BTreeMap<u32, String> = snap
        .procs
        .iter()
        .map(|(&p, x)| (p, x.comm.clone()))
        .collect();
    let out = d.end(&Walked {
        estimate: &estimate,
        procs: &procs,
        parents: &parents,
        owner: &|a| est.owner(a),
        facts,
        vmas: snap.vmas.len() as u64,
        vmas_by_process: &by_process,
        counts: snap.counts,
        seeding: true,
    });
    (d, out)
}

/// The text table of designs (`report`, `inspect`): Design | KB | Change |
/// objects, a row per `(name, holding, change_vs_today)`.
#[must_use]
pub fn table<'a>(rows: impl IntoIterator<Item = (&'a str, &'a Holding, Option<f64>)>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} | {:>10} | {:>8} | objects",
        "Design", "KB", "Change"
    );
    for (name, h, change) in rows {
        let objects: Vec<String> = h.objects.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "{name:<12} | {:>10.1} | {:>8} | {}",
            h.bytes as f64 / 1024.0,
            change.map_or_else(|| "-".to_owned(), |c| format!("{:+.1}%", c * 100.0)),
            objects.join(", ")
        );
    }
    s
}

/// Each design's share of one process.
#[must_use]
pub fn shares(outcomes: &[Outcome], pid: u32) -> Vec<Share> {
    let today = outcomes
        .first()
        .and_then(|o| o.processes.get(&pid))
        .map_or(0, |h| h.bytes);
    outcomes
        .iter()
        .map(|o| {
            let holding = o.processes.get(&pid).cloned().unwrap_or_else(|| Holding {
                objects: o.system.objects.keys().map(|k| (k.clone(), 0)).collect(),
                bytes: 0,
            });
            Share {
                name: o.name.clone(),
                change_vs_today: if o.blind() {
                    None
                } else {
                    change(today, holding.bytes)
                },
                holding,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
