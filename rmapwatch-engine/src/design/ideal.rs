//! The ideal lower bound: a reverse-mapping object only where one is
//! needed across processes: one per VMA that maps an anonymous page another
//! mapping maps too (pagemap's "exclusively mapped" bit clear), read just
//! after the walk. How far each real design is from what is needed at all.
use std::collections::BTreeMap;

use super::base::{Coverage, Design, Holding, ModelOption, Outcome, Walked};
use crate::{facts::Facts, snapshot::Vma};

/// The ideal.
#[derive(Debug)]
pub struct Ideal {
    bytes: Option<u32>,
    procs: BTreeMap<u32, u64>,
    /// The process whose shared VMAs are being counted.
    cur: Option<(u32, u64)>,
    coverage: Coverage,
    pages: (u64, u64),
}

impl Ideal {
    /// `bytes`: per object (`None`: the AVC slot).
    #[must_use]
    pub fn new(bytes: Option<u32>) -> Self {
        Self {
            bytes,
            procs: BTreeMap::new(),
            cur: None,
            coverage: Coverage::default(),
            pages: (0, 0),
        }
    }

    fn flush(&mut self) {
        if let Some((t, n)) = self.cur.take() {
            *self.procs.entry(t).or_default() += n;
        }
    }

    fn slot(&self, facts: &Facts) -> u64 {
        u64::from(self.bytes.unwrap_or(facts.sizes.anon_vma_chain))
    }
}

impl Design for Ideal {
    fn name(&self) -> &'static str {
        "ideal"
    }

    fn begin(&mut self, _facts: &Facts) {
        self.procs.clear();
        self.cur = None;
        self.coverage = Coverage::default();
        self.pages = (0, 0);
    }

    fn vma(&mut self, v: &Vma) {
        // Anonymous pages need an anon_vma: a VMA without one has none.
        if v.anon_vma == 0 {
            return;
        }
        self.coverage.needed += 1;
        if let Some(a) = v.anon_pages {
            self.coverage.read += 1;
            self.pages.0 += a.present;
            self.pages.1 += a.shared;
            if a.shared > 0 {
                // A process's VMAs come together: one lookup per process.
                match self.cur {
                    Some((t, ref mut n)) if t == v.tgid => *n += 1,
                    _ => {
                        self.flush();
                        self.cur = Some((v.tgid, 1));
                    }
                }
            }
        }
    }

    fn end(&mut self, w: &Walked<'_>) -> Outcome {
        self.flush();
        let slot = self.slot(w.facts);
        let mut system = Holding::default();
        let processes = w
            .procs
            .keys()
            .map(|&pid| {
                let mut h = Holding::default();
                h.add("rmap_vma", self.procs.get(&pid).copied().unwrap_or(0), slot);
                system.merge(&h);
                (pid, h)
            })
            .collect();
        system.objects.entry("rmap_vma".into()).or_default();
        let mut c = self.coverage;
        c.skipped = w.counts.pagemap_skipped;
        c.failed = w.counts.pagemap_failed;
        c.ms = (w.counts.pagemap_ns as f64 / 1e4).round() / 100.0;
        let mut blind_spots = vec![
            "swapped-out and migrating pages are not present in pagemap: a VMA sharing \
             only such pages is not counted"
                .to_owned(),
            "pages are read just after the walk, not at its instant: a page COW'd or \
             faulted in between moves a VMA in or out"
                .to_owned(),
        ];
        if c.read < c.needed {
            blind_spots.push(format!(
                "{} of {} faulted VMAs were not read ({} past the time budget ({}), {} \
                 unreadable, the rest without pagemap facts: not read, or a recording \
                 before stream 1.2): they count as needing nothing",
                c.needed - c.read,
                c.needed,
                c.skipped,
                if w.facts.pagemap.is_empty() {
                    "unknown"
                } else {
                    &w.facts.pagemap
                },
                c.failed
            ));
        }
        blind_spots.push(
            "the shared zero page (an anonymous page only read, never written) is \
             present and not exclusive: a VMA holding only such pages counts as \
             sharing (its frame number would tell it, which needs CAP_SYS_ADMIN)"
                .to_owned(),
        );
        Outcome {
            name: self.name().into(),
            system,
            rules: vec![format!(
                "one rmap object per VMA mapping an anonymous page another mapping maps \
                 too: {} VMAs of {} read ({} of {} present anonymous pages shared), \
                 {slot} B each",
                self.procs.values().sum::<u64>(),
                c.read,
                self.pages.1,
                self.pages.0
            )],
            blind_spots,
            options: vec![ModelOption {
                name: "ideal_object_bytes".into(),
                value: self
                    .bytes
                    .map_or_else(|| format!("{slot} (the AVC slot)"), |b| b.to_string()),
                affects: "bytes of the ideal".into(),
            }],
            coverage: Some(c),
            processes,
            ..Outcome::default()
        }
    }

    fn verdict(&self, v: &Vma, facts: &Facts) -> (Holding, String) {
        let mut h = Holding::default();
        let why = match v.anon_pages {
            _ if v.anon_vma == 0 => "nothing: no anonymous pages".to_owned(),
            None => "unknown: pagemap not read".to_owned(),
            Some(a) if a.shared > 0 => {
                h.add("rmap_vma", 1, self.slot(facts));
                format!("one: {} of {} anonymous pages shared", a.shared, a.present)
            }
            Some(a) => format!("nothing: {} anonymous pages, none shared", a.present),
        };
        h.objects.entry("rmap_vma".into()).or_default();
        (h, why)
    }
}
