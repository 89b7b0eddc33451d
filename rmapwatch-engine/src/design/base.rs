//! What every design shares: the outcome's shape, the trait, the walk as
//! the designs see it, and the slots objects take. The designs import this
//! module, never their parent (which lists them).
use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

use crate::{event::Event, facts::Facts, model::Estimate, snapshot::Vma};

/// `VM_SHARED`.
pub const VM_SHARED: u64 = 0x8;
/// `VM_GROWSDOWN` (a main stack).
pub const VM_GROWSDOWN: u64 = 0x100;

/// Objects by type and what they take in this kernel's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// Objects by type (`anon_vma`, `cow_context`, ...): the designs' own
    /// names are borrowed, not allocated per process.
    pub objects: BTreeMap<Cow<'static, str>, u64>,
    /// Bytes: each object's slot on this kernel, plus what the design
    /// adds elsewhere (LAZY's `vm_area_struct` growth).
    pub bytes: u64,
}

impl Holding {
    /// Adds `n` objects of `kind` taking `slot` bytes each (a kind with
    /// none is listed at 0).
    pub fn add(&mut self, kind: &'static str, n: u64, slot: u64) {
        *self.objects.entry(Cow::Borrowed(kind)).or_default() += n;
        self.bytes += n * slot;
    }

    /// Adds another holding.
    pub fn merge(&mut self, o: &Self) {
        for (k, n) in &o.objects {
            *self.objects.entry(k.clone()).or_default() += n;
        }
        self.bytes += o.bytes;
    }

    /// Objects of `kind`.
    #[must_use]
    pub fn count(&self, kind: &str) -> u64 {
        self.objects.get(kind).copied().unwrap_or(0)
    }
}

/// A choice a source does not settle: its name, the value used, and what
/// it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOption {
    /// Name.
    pub name: String,
    /// The value used (the inferred default unless set).
    pub value: String,
    /// Which numbers rest on it.
    pub affects: String,
}

/// A dead context a live one keeps (COW context).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// The dead mm's last process (0: it exited before rmapwatch started
    /// and was inferred from the walk).
    pub pid: u32,
    /// Its name (`?` when inferred).
    pub comm: String,
    /// Live processes below it that keep it (at most [`PINNERS_SHOWN`]).
    pub pinned_by: Vec<u32>,
    /// All of them.
    pub pinners: u64,
}

/// Pinning processes listed per dead context.
pub const PINNERS_SHOWN: usize = 16;

/// How much of the walk a design could see (the ideal's pagemap reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// VMAs the design needs a fact of.
    pub needed: u64,
    /// Of those, VMAs whose fact was read.
    pub read: u64,
    /// VMAs left unread because the walk's time budget was spent.
    #[serde(default)]
    pub skipped: u64,
    /// VMAs whose facts could not be read (the process gone, refused).
    #[serde(default)]
    pub failed: u64,
    /// Milliseconds the reading took.
    #[serde(default)]
    pub ms: f64,
}

/// One design's result for a walk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `today`, `lazy`, `cow_context`, `ideal`.
    pub name: String,
    /// System-wide.
    #[serde(flatten)]
    pub system: Holding,
    /// Bytes against today's, as a fraction (-0.5: half); `None` when
    /// today holds nothing.
    pub change_vs_today: Option<f64>,
    /// The rules that produced the numbers, each with what it counted.
    pub rules: Vec<String>,
    /// What the design's numbers cannot see.
    pub blind_spots: Vec<String>,
    /// The named options the numbers rest on.
    pub options: Vec<ModelOption>,
    /// Dead contexts kept alive (COW context only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Vec<Pinned>>,
    /// What the design could read (the ideal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// Per process (tgid).
    #[serde(skip)]
    pub processes: BTreeMap<u32, Holding>,
}

impl Outcome {
    /// A design that could read none of what it needs: it has no figure
    /// to compare.
    #[must_use]
    pub fn blind(&self) -> bool {
        self.coverage.is_some_and(|c| c.read == 0 && c.needed > 0)
    }

    /// The outcome without its per-process numbers (what the report's
    /// `designs` block holds; processes carry theirs).
    #[must_use]
    pub fn summary(&self) -> Self {
        Self {
            name: self.name.clone(),
            system: self.system.clone(),
            change_vs_today: self.change_vs_today,
            rules: self.rules.clone(),
            blind_spots: self.blind_spots.clone(),
            options: self.options.clone(),
            pinned: self.pinned.clone(),
            coverage: self.coverage,
            processes: BTreeMap::new(),
        }
    }
}

/// One design's numbers for one process or VMA, as `processes[].designs`
/// and `inspect` list them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// The design.
    pub name: String,
    /// Its objects and bytes.
    #[serde(flatten)]
    pub holding: Holding,
    /// Bytes against today's.
    pub change_vs_today: Option<f64>,
}

/// `(after - before) / before`.
#[must_use]
pub fn change(before: u64, after: u64) -> Option<f64> {
    (before > 0).then(|| (after as f64 - before as f64) / before as f64)
}

/// The walk as the designs see it at its end.
pub struct Walked<'a> {
    /// The snapshot model's estimate (today's objects, LAZY's snapshot
    /// verdicts).
    pub estimate: &'a Estimate,
    /// Processes the walk saw (tgid -> name).
    pub procs: &'a BTreeMap<u32, String>,
    /// Parents as the walk saw them.
    pub parents: &'a BTreeMap<u32, u32>,
    /// Who holds an anon_vma: (tgid, whether as a VMA's own).
    pub owner: &'a dyn Fn(u64) -> Option<(u32, bool)>,
    /// The machine.
    pub facts: &'a Facts,
    /// VMAs walked.
    pub vmas: u64,
    /// VMAs walked per process.
    pub vmas_by_process: &'a BTreeMap<u32, u64>,
    /// What the walk counted besides (pagemap's reads).
    pub counts: crate::snapshot::WalkCounts,
    /// The first walk (the seeding one).
    pub seeding: bool,
}

/// A design: hears events and walks, yields an [`Outcome`] per walk.
pub trait Design: std::fmt::Debug + Send {
    /// Its name in every sink.
    fn name(&self) -> &'static str;
    /// A kernel event (between or during walks).
    fn event(&mut self, _e: &Event) {}
    /// A walk begins on the machine of `facts`.
    fn begin(&mut self, _facts: &Facts) {}
    /// One VMA of the walk.
    fn vma(&mut self, _v: &Vma) {}
    /// The walk ended.
    fn end(&mut self, w: &Walked<'_>) -> Outcome;
    /// One VMA's verdict, in a few words (`inspect`).
    fn verdict(&self, v: &Vma, facts: &Facts) -> (Holding, String);
}

/// The slot of a kmalloc'd object of `size` bytes on this kernel: its
/// bucket, else the next power of two (buckets unknown: an older
/// recording).
#[must_use]
pub fn kmalloc_slot(facts: &Facts, size: u32) -> u64 {
    u64::from(
        facts
            .slots
            .kmalloc_bucket(size)
            .unwrap_or_else(|| size.next_power_of_two()),
    )
}
