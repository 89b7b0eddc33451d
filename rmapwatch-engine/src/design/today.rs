//! Today: the anon_vma and AVC objects the kernel holds, as the walk saw
//! them (each anon_vma charged to the first VMA holding it as its own).
use super::base::{Design, Holding, Outcome, Walked};
use crate::{facts::Facts, model::Objects, snapshot::Vma};

/// The eager kernel.
#[derive(Debug)]
pub struct Today;

/// Objects in the kernel's slots.
pub(super) fn holding(o: Objects, facts: &Facts) -> Holding {
    let mut h = Holding::default();
    h.add("anon_vma", o.anon_vma, u64::from(facts.sizes.anon_vma));
    h.add(
        "anon_vma_chain",
        o.avc,
        u64::from(facts.sizes.anon_vma_chain),
    );
    h
}

impl Design for Today {
    fn name(&self) -> &'static str {
        "today"
    }

    fn end(&mut self, w: &Walked<'_>) -> Outcome {
        Outcome {
            name: self.name().into(),
            system: holding(w.estimate.system.actual, w.facts),
            rules: vec![format!(
                "every anon_vma and AVC reachable from a VMA, as the walk saw them; \
                 bytes: the slab slots ({} B anon_vma, {} B anon_vma_chain)",
                w.facts.sizes.anon_vma, w.facts.sizes.anon_vma_chain
            )],
            blind_spots: vec![
                "objects pinned only by a reference (KSM, migration, RCU-delayed frees) \
                 are not reachable from a VMA: the live counts (events) include them"
                    .into(),
            ],
            processes: w
                .estimate
                .processes
                .iter()
                .map(|(&pid, p)| (pid, holding(p.actual, w.facts)))
                .collect(),
            ..Outcome::default()
        }
    }

    fn verdict(&self, v: &Vma, facts: &Facts) -> (Holding, String) {
        let own = u64::from(v.anon_vma != 0);
        let o = Objects {
            anon_vma: own,
            avc: v.chain.len() as u64,
        };
        let why = if v.anon_vma == 0 {
            "unfaulted".to_owned()
        } else {
            format!("{} AVC{}", o.avc, if o.avc == 1 { "" } else { "s" })
        };
        (holding(o, facts), why)
    }
}
