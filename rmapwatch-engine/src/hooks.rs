//! The function hooks and how each was attached. Pure data: presenters use
//! it without knowing about aya.
use rmapwatch_common::hook;

/// How a hook ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// fentry (BTF trampoline): cheapest.
    Fentry,
    /// kprobe: where fentry is refused or absent.
    Kprobe,
    /// Not hooked; its allocations and frees are still seen by the slab
    /// tracepoints, classified by call site.
    Tracepoint,
    /// Not hooked and not covered by the tracepoint path (the per-page rmap
    /// hooks in tracepoint-only mode).
    Unavailable,
}

impl HookMode {
    /// The name used in JSON and the UI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The `--probe-mode` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Probe at start-up: fentry, else kprobe, else tracepoint-only, per hook.
    #[default]
    Auto,
    /// Only fentry for function hooks (for testing a kernel's fentry support).
    Fentry,
    /// Only kprobes for function hooks.
    Kprobe,
    /// No function hooks: slab and sched tracepoints only.
    Tracepoint,
}

/// The `--slab-path` choice: where the slab events come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlabPath {
    /// Raw tracepoints, unless this kernel runs them preemptible (7.0+ with
    /// `CONFIG_PREEMPT_RCU`, where their recursion guard drops events):
    /// then classic (perf) tracepoints.
    #[default]
    Auto,
    /// Raw tracepoints (arguments by position).
    Raw,
    /// Classic tracepoints (fields at their tracefs format's offsets).
    Perf,
}

/// How the slab events are taken on this kernel (facts, report, UI).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlabEvents {
    /// `raw` or `perf` tracepoints (empty in recordings made before this
    /// was recorded: raw).
    pub path: String,
    /// The tracepoints' argument layout: `cache` (6.1+: the cache pointer
    /// tells an anon_vma from an AVC), `sizes` (before 6.0: `bytes_req`),
    /// with the free's `name` (5.12 .. 6.0) or `call site` (5.10).
    pub layout: String,
    /// Why this path (auto's reason, or "forced").
    pub why: String,
    /// Raw tracepoints forced on a kernel that runs them preemptible (7.0+
    /// with `PREEMPT_RCU`): a recursion miss of our slab programs can be an
    /// anon_vma or AVC event of a preempting task, so the engine treats
    /// misses the nest watch did not see as lost events (false in
    /// recordings made before this was recorded).
    #[serde(default)]
    pub preemptible: bool,
}

impl SlabEvents {
    /// One line for the text report and the UI.
    #[must_use]
    pub fn line(&self) -> String {
        let path = if self.path.is_empty() {
            "raw"
        } else {
            &self.path
        };
        let mut s = format!("slab events: {path} tracepoints");
        if !self.layout.is_empty() {
            s.push_str(&format!(", kind by {}", self.layout));
        }
        if !self.why.is_empty() {
            s.push_str(&format!(" ({})", self.why));
        }
        s
    }
}

/// How the time sources were attached: lock waits, fork work, rmap walks
/// (facts, report, UI).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeHooks {
    /// anon_vma rwsem waits: `tracepoint`, `kprobe` or `unavailable`.
    pub lock_mode: String,
    /// In one line: what is attached, or why nothing is.
    pub lock: String,
    /// Fork work: `fentry`, `kprobe` (dup_mmap and the anon_vma functions,
    /// entry and exit) or `tracepoint` (the fork syscalls).
    pub fork_mode: String,
    /// In one line.
    pub fork: String,
    /// rmap walks: `fentry`, `kprobe` or `unavailable`.
    pub rmap_mode: String,
    /// In one line.
    pub rmap: String,
    /// Addresses of the `rmap_one` functions this kernel has (they name an
    /// rmap walk's caller).
    pub rmap_one: std::collections::BTreeMap<String, u64>,
}

impl TimeHooks {
    /// Whether lock waits are measured.
    #[must_use]
    pub fn lock_on(&self) -> bool {
        matches!(self.lock_mode.as_str(), "tracepoint" | "kprobe" | "fentry")
    }

    /// The three lines (UI, text report).
    #[must_use]
    pub fn lines(&self) -> [String; 3] {
        let or = |s: &str| {
            if s.is_empty() {
                "not recorded (an older recording)".to_owned()
            } else {
                s.to_owned()
            }
        };
        [
            format!("anon_vma lock waits: {}", or(&self.lock)),
            format!("fork work: {}", or(&self.fork)),
            format!("rmap walks: {}", or(&self.rmap)),
        ]
    }
}

/// A function hook.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    /// Index into the per-hook counters (`rmapwatch_common::hook`).
    pub id: u32,
    /// Current kernel name.
    pub name: &'static str,
    /// Older names of the same function, tried in order when `name` is absent.
    pub aliases: &'static [&'static str],
    /// Whether the slab tracepoints see this function's allocations and frees.
    pub slab_covered: bool,
    /// eBPF program names.
    pub fentry_prog: &'static str,
    /// eBPF program names.
    pub kprobe_prog: &'static str,
}

/// Every function hook, in `rmapwatch_common::hook` order.
pub const HOOKS: [HookSpec; hook::COUNT] = [
    spec(
        hook::PREPARE,
        "__anon_vma_prepare",
        &["anon_vma_prepare"],
        true,
        "prepare",
    ),
    spec(hook::FORK, "anon_vma_fork", &[], true, "fork"),
    spec(hook::CLONE, "anon_vma_clone", &[], true, "clone"),
    spec(hook::UNLINK, "unlink_anon_vmas", &[], true, "unlink"),
    spec(hook::PUT, "__put_anon_vma", &[], true, "put"),
    spec(
        hook::RMAP_NEW,
        "folio_add_new_anon_rmap",
        &["page_add_new_anon_rmap", "__page_add_new_anon_rmap"],
        false,
        "rmap_new",
    ),
    spec(
        hook::RMAP_PTES,
        "folio_add_anon_rmap_ptes",
        &["page_add_anon_rmap"],
        false,
        "rmap_ptes",
    ),
    spec(
        hook::RMAP_PMD,
        "folio_add_anon_rmap_pmd",
        &[],
        false,
        "rmap_pmd",
    ),
];

const fn spec(
    id: u32,
    name: &'static str,
    aliases: &'static [&'static str],
    slab_covered: bool,
    short: &'static str,
) -> HookSpec {
    // Program names are "fentry_<short>" / "kprobe_<short>" in rmapwatch-ebpf.
    let (fentry_prog, kprobe_prog) = match short.as_bytes() {
        b"prepare" => ("fentry_prepare", "kprobe_prepare"),
        b"fork" => ("fentry_fork", "kprobe_fork"),
        b"clone" => ("fentry_clone", "kprobe_clone"),
        b"unlink" => ("fentry_unlink", "kprobe_unlink"),
        b"put" => ("fentry_put", "kprobe_put"),
        b"rmap_new" => ("fentry_rmap_new", "kprobe_rmap_new"),
        b"rmap_ptes" => ("fentry_rmap_ptes", "kprobe_rmap_ptes"),
        _ => ("fentry_rmap_pmd", "kprobe_rmap_pmd"),
    };
    HookSpec {
        id,
        name,
        aliases,
        slab_covered,
        fentry_prog,
        kprobe_prog,
    }
}

/// How one hook was attached, and why not better.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookStatus {
    /// Index into the per-hook counters.
    pub id: u32,
    /// The hook's current kernel name.
    pub name: String,
    /// The symbol actually hooked (an alias on older kernels).
    pub symbol: Option<String>,
    /// The mode it ended up in.
    pub mode: HookMode,
    /// Why better modes were not used.
    pub fallbacks: Vec<String>,
}

/// The statuses of a kernel that allows no function hook (tests and
/// benchmarks that build reports without a kernel).
#[must_use]
pub fn tracepoint_only(fallback: &str) -> Vec<HookStatus> {
    HOOKS
        .iter()
        .map(|h| HookStatus {
            id: h.id,
            name: h.name.to_owned(),
            symbol: Some(h.name.to_owned()),
            mode: if h.slab_covered {
                HookMode::Tracepoint
            } else {
                HookMode::Unavailable
            },
            fallbacks: vec![fallback.to_owned()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_in_counter_order() {
        for (i, h) in HOOKS.iter().enumerate() {
            assert_eq!(h.id as usize, i, "{}", h.name);
            assert!(h.fentry_prog.starts_with("fentry_"));
            assert_eq!(&h.fentry_prog[7..], &h.kprobe_prog[7..]);
        }
        assert_eq!(
            HOOKS[hook::RMAP_PMD as usize].fentry_prog,
            "fentry_rmap_pmd"
        );
    }
}
