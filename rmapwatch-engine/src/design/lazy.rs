//! ANON_VMA_LAZY (the NAKed series): the snapshot model of `model.rs`,
//! made history-aware (an upgrade stays: an anon_vma a walk saw shared
//! counts as shared while it lives), and with the series' other cost: 4
//! more bytes in every `vm_area_struct` (`rcuref_t vm_rcuref`), which cost
//! a whole alignment step where the cache's slot has no room for them.
use std::collections::BTreeMap;

use rmapwatch_common::object;

use super::{
    base::{Design, Holding, ModelOption, Outcome, Walked},
    today,
};
use crate::{
    event::Event,
    facts::Facts,
    hash::{FastMap, FastSet},
    model::{self, LazyState, Objects},
    snapshot::Vma,
};

/// The LAZY design.
#[derive(Debug)]
pub struct Lazy {
    opts: model::Options,
    sticky_on: bool,
    /// anon_vmas a walk saw with children, while they live: the walk that
    /// last saw a VMA hold each.
    sticky: FastMap<u64, u64>,
    /// Walks begun.
    walk: u64,
    /// This walk: anon_vmas counted again by stickiness, objects added.
    counted: FastSet<u64>,
    extra: BTreeMap<u32, Objects>,
    sticky_vmas: u64,
}

impl Lazy {
    /// With the snapshot model's options; `sticky`: upgrades stay.
    #[must_use]
    pub fn new(opts: model::Options, sticky: bool) -> Self {
        Self {
            opts,
            sticky_on: sticky,
            sticky: FastMap::default(),
            walk: 0,
            counted: FastSet::default(),
            extra: BTreeMap::new(),
            sticky_vmas: 0,
        }
    }
}

/// Bytes one `vm_area_struct` grows by with 4 more bytes, and why: the
/// slot grows only where the object crosses an alignment step.
#[must_use]
pub fn vma_growth(facts: &Facts) -> (Option<u64>, String) {
    let s = &facts.slots;
    let c = s.vm_area_struct;
    match (c.object_size, c.slab_size) {
        (Some(object_size), Some(slab_size)) if object_size > 0 && slab_size >= object_size => {
            let align = u64::from(c.align.unwrap_or(8).max(8));
            let round = |n: u64| n.div_ceil(align) * align;
            let obj = u64::from(object_size);
            // The slot past the object (red zone, free pointer, metadata)
            // stays as it is.
            let over = u64::from(slab_size).saturating_sub(round(obj));
            let grown = round(obj + 4) + over;
            let g = grown.saturating_sub(u64::from(slab_size));
            let why = if g == 0 {
                format!(
                    "vm_area_struct: object {obj} B, slot {} B (align {align}): 4 more bytes fit \
                     in the slot, so the series costs no memory here",
                    slab_size
                )
            } else {
                format!(
                    "vm_area_struct: object {obj} B, slot {} B (align {align}): 4 more bytes cross \
                     an alignment step, every VMA's slot grows by {g} B",
                    slab_size
                )
            };
            (Some(g), why)
        }
        _ => (
            None,
            "vm_area_struct's slab sizes were not read (an older recording, or no \
             /sys/kernel/slab): its +4 B growth is not counted"
                .into(),
        ),
    }
}

impl Design for Lazy {
    fn name(&self) -> &'static str {
        "lazy"
    }

    fn event(&mut self, e: &Event) {
        if let Event::Free(s) = e
            && s.object == object::ANON_VMA
        {
            self.sticky.remove(&s.ptr);
        }
    }

    fn begin(&mut self, _facts: &Facts) {
        self.walk += 1;
        self.counted.clear();
        self.extra.clear();
        self.sticky_vmas = 0;
    }

    fn vma(&mut self, v: &Vma) {
        if v.anon_vma == 0 || !self.sticky_on {
            return;
        }
        if v.has_children() {
            self.sticky.insert(v.anon_vma, self.walk);
            return;
        }
        match self.sticky.get_mut(&v.anon_vma) {
            Some(seen) => *seen = self.walk,
            None => return,
        }
        // Shared once, childless now: the snapshot says L or P, the series
        // keeps it R (its own anon_vma, every chain link).
        let verdict = model::verdict(v, self.opts);
        if verdict.state == LazyState::R {
            return;
        }
        self.sticky_vmas += 1;
        let e = self.extra.entry(v.tgid).or_default();
        e.avc += v.chain.len() as u64 - verdict.lazy_avc;
        if self.counted.insert(v.anon_vma) {
            e.anon_vma += 1;
        }
    }

    fn end(&mut self, w: &Walked<'_>) -> Outcome {
        // An anon_vma no VMA holds any more (its free lost with events, or
        // held only in chains) is forgotten: its address may come back.
        let walk = self.walk;
        self.sticky.retain(|_, seen| *seen == walk);
        let (growth, growth_why) = vma_growth(w.facts);
        let growth = growth.unwrap_or(0);
        let mut system = Holding::default();
        let mut processes = BTreeMap::new();
        let mut pids: Vec<u32> = w.estimate.processes.keys().copied().collect();
        pids.extend(w.vmas_by_process.keys());
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let mut o = w
                .estimate
                .processes
                .get(&pid)
                .map(|p| p.lazy)
                .unwrap_or_default();
            if let Some(x) = self.extra.get(&pid) {
                o.anon_vma += x.anon_vma;
                o.avc += x.avc;
            }
            let mut h = today::holding(o, w.facts);
            h.bytes += growth * w.vmas_by_process.get(&pid).copied().unwrap_or(0);
            system.merge(&h);
            processes.insert(pid, h);
        }
        let states = &w.estimate.vmas_by_state;
        let n = |s| states.get(&s).copied().unwrap_or(0);
        let other = w.estimate.lazy_other_option;
        Outcome {
            name: self.name().into(),
            system,
            rules: vec![
                format!(
                    "never shared (L): {} VMAs hold no anon_vma and no AVC",
                    n(LazyState::L)
                ),
                format!(
                    "fork leaf (P): {} VMAs hold no anon_vma of their own, {} chain links",
                    n(LazyState::P),
                    if self.opts.tree_parent_keeps_chain {
                        "keep their ancestors'"
                    } else {
                        "and no"
                    }
                ),
                format!(
                    "shared (R): {} VMAs hold what they hold today",
                    n(LazyState::R)
                ),
                format!(
                    "sticky upgrades: {} VMAs a past walk saw shared count as shared \
                     (the series does not undo an upgrade)",
                    self.sticky_vmas
                ),
                format!(
                    "{growth_why}; {} VMAs x {growth} B = {} B counted",
                    w.vmas,
                    growth * w.vmas
                ),
            ],
            blind_spots: vec![
                "a fork whose children exited before any walk saw them: the upgrade is \
                 not seen (function hooks on anon_vma_fork would close this; not used), \
                 so the saving is overstated for those VMAs"
                    .into(),
                "anon_vma reuse (a neighbour's at first fault, a childless one at fork) \
                 is the kernel's: the model counts the objects the kernel holds"
                    .into(),
                format!(
                    "whether tree-parent VMAs keep their chain links is inferred: the other \
                     value gives {} AVCs system-wide (snapshot rules)",
                    other.avc
                ),
            ],
            options: vec![
                ModelOption {
                    name: "tree_parent_keeps_chain".into(),
                    value: self.opts.tree_parent_keeps_chain.to_string(),
                    affects: "AVCs of fork-leaf (P) VMAs".into(),
                },
                ModelOption {
                    name: "lazy_sticky_upgrades".into(),
                    value: self.sticky_on.to_string(),
                    affects: "objects of VMAs shared at an earlier walk, childless now".into(),
                },
            ],
            processes,
            ..Outcome::default()
        }
    }

    fn verdict(&self, v: &Vma, facts: &Facts) -> (Holding, String) {
        let verdict = model::verdict(v, self.opts);
        let sticky = self.sticky_on
            && v.anon_vma != 0
            && verdict.state != LazyState::R
            && self.sticky.contains_key(&v.anon_vma);
        let (o, state) = if sticky {
            (
                Objects {
                    anon_vma: 1,
                    avc: v.chain.len() as u64,
                },
                "R (sticky)",
            )
        } else {
            (
                Objects {
                    anon_vma: u64::from(verdict.state == LazyState::R),
                    avc: verdict.lazy_avc,
                },
                verdict.state.as_str(),
            )
        };
        let mut h = today::holding(o, facts);
        h.bytes += vma_growth(facts).0.unwrap_or(0);
        (h, state.to_owned())
    }
}
