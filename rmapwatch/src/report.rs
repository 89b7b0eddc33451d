//! The headless report: a stable JSON contract (`rmapwatch.report/1`,
//! documented in the README; additive changes only) and a text rendering.
use std::{collections::BTreeMap, fmt::Write as _};

use rmapwatch_common::{hook, object, site, stat};
use serde::Serialize;

use crate::{
    account::{Accounting, Flow, ObjectTotals},
    hooks::{HookMode, HookStatus},
    kernel::KernelId,
};

/// JSON schema name.
pub const SCHEMA: &str = "rmapwatch.report/1";

/// Inputs of a report besides the accounting.
pub struct Context<'a> {
    /// Kernel identity.
    pub kernel: &'a KernelId,
    /// Hook statuses.
    pub hooks: &'a [HookStatus],
    /// Whether fork windows were seen (syscall tracepoints attached).
    pub fork_window: bool,
    /// Kernel-side counters (`rmapwatch_common::stat`), summed over CPUs.
    pub stats: &'a [u64],
    /// Seconds since attach.
    pub duration_s: f64,
    /// `sizeof(struct anon_vma)`.
    pub anon_vma_size: u32,
    /// `sizeof(struct anon_vma_chain)`.
    pub avc_size: u32,
    /// Whether the run ended (final report) or is an interim line.
    pub done: bool,
}

/// Per-object block.
#[derive(Debug, Serialize)]
pub struct ObjectReport {
    /// Allocations seen.
    pub allocs: u64,
    /// Frees seen.
    pub frees: u64,
    /// `sizeof` from BTF, in bytes.
    pub object_size: u32,
    /// Events per call site (allocations at alloc sites plus frees at free sites).
    pub by_site: BTreeMap<&'static str, u64>,
    /// Allocations per call site.
    pub allocs_by_site: BTreeMap<&'static str, u64>,
    /// Frees per call site.
    pub frees_by_site: BTreeMap<&'static str, u64>,
    /// Frees of objects allocated before rmapwatch started (owner unknown).
    pub frees_of_preexisting: u64,
}

/// Per-process block.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    /// tgid.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// Parent tgid if its fork was seen.
    pub ppid: Option<u32>,
    /// Whether it has exited.
    pub exited: bool,
    /// anon_vma flow.
    pub anon_vma: Flow,
    /// AVC flow.
    pub anon_vma_chain: Flow,
}

/// A function hook's mode and call count.
#[derive(Debug, Serialize)]
pub struct HookReport {
    /// fentry | kprobe | tracepoint | unavailable.
    pub mode: HookMode,
    /// The symbol hooked (an older alias on older kernels).
    pub symbol: Option<String>,
    /// Calls counted (null unless fentry or kprobe).
    pub calls: Option<u64>,
    /// Why better modes were not used.
    pub fallbacks: Vec<String>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Kernel identity.
    pub kernel: KernelId,
    /// Mode per hook.
    pub probes: BTreeMap<&'static str, HookMode>,
    /// Detail per hook.
    pub hooks: BTreeMap<&'static str, HookReport>,
    /// Whether fork-time allocations are attributed to children exactly.
    pub fork_window: bool,
    /// Seconds since attach.
    pub duration_s: f64,
    /// Events lost in the ring buffer.
    pub dropped_events: u64,
    /// Events decoded.
    pub events: u64,
    /// Whether this is the final report.
    pub done: bool,
    /// Per-page rmap counters (null when the rmap hooks are unavailable).
    pub rmap: Option<RmapReport>,
    /// anon_vma and anon_vma_chain blocks.
    pub objects: BTreeMap<&'static str, ObjectReport>,
    /// Processes with any anon_vma or AVC traffic, biggest first.
    pub processes: Vec<ProcessReport>,
}

/// Per-page rmap counters from the function hooks.
#[derive(Debug, Serialize)]
pub struct RmapReport {
    /// `folio_add_new_anon_rmap` calls: new anonymous folios mapped.
    pub new_anon_folios: u64,
    /// `folio_add_anon_rmap_ptes` calls.
    pub ptes_calls: u64,
    /// Pages those calls mapped.
    pub ptes_pages: u64,
    /// `folio_add_anon_rmap_pmd` calls.
    pub pmd_calls: u64,
}

fn object_report(t: &ObjectTotals, size: u32) -> ObjectReport {
    let named = |v: &[u64; site::COUNT]| -> BTreeMap<&'static str, u64> {
        site::NAMES
            .iter()
            .copied()
            .zip(v.iter().copied())
            .filter(|&(_, n)| n > 0)
            .collect()
    };
    let mut by_site = named(&t.alloc_by_site);
    for (name, n) in named(&t.free_by_site) {
        *by_site.entry(name).or_default() += n;
    }
    ObjectReport {
        allocs: t.flow.allocs,
        frees: t.flow.frees,
        object_size: size,
        by_site,
        allocs_by_site: named(&t.alloc_by_site),
        frees_by_site: named(&t.free_by_site),
        frees_of_preexisting: t.frees_of_preexisting,
    }
}

/// Object names in JSON, indexed by `rmapwatch_common::object`.
pub const OBJECT_NAMES: [&str; object::COUNT] = ["anon_vma", "anon_vma_chain"];

impl Report {
    /// Builds a report.
    #[must_use]
    pub fn build(acct: &Accounting, ctx: &Context<'_>) -> Self {
        let stat_at = |i: u32| ctx.stats.get(i as usize).copied().unwrap_or(0);
        let hooked = |h: &HookStatus| matches!(h.mode, HookMode::Fentry | HookMode::Kprobe);
        let hooks = ctx
            .hooks
            .iter()
            .map(|h| {
                let calls = hooked(h).then(|| stat_at(stat::HOOK_CALLS + h.id));
                let r = HookReport {
                    mode: h.mode,
                    symbol: h.symbol.clone(),
                    calls,
                    fallbacks: h.fallbacks.clone(),
                };
                (h.name, r)
            })
            .collect();
        let rmap_hooked = ctx
            .hooks
            .get(hook::RMAP_NEW as usize..=hook::RMAP_PMD as usize)
            .is_some_and(|hs| hs.iter().any(hooked));
        let rmap = rmap_hooked.then(|| RmapReport {
            new_anon_folios: stat_at(stat::HOOK_CALLS + hook::RMAP_NEW),
            ptes_calls: stat_at(stat::HOOK_CALLS + hook::RMAP_PTES),
            ptes_pages: stat_at(stat::RMAP_PTES_PAGES),
            pmd_calls: stat_at(stat::HOOK_CALLS + hook::RMAP_PMD),
        });
        let sizes = [ctx.anon_vma_size, ctx.avc_size];
        let objects = OBJECT_NAMES
            .iter()
            .zip(acct.objects.iter().zip(sizes))
            .map(|(&name, (t, size))| (name, object_report(t, size)))
            .collect();
        let mut processes: Vec<ProcessReport> = acct
            .processes
            .values()
            .filter(|p| p.flows.iter().any(|f| f.allocs + f.frees > 0))
            .map(|p| ProcessReport {
                pid: p.pid,
                comm: if p.comm.is_empty() {
                    "?".into()
                } else {
                    p.comm.clone()
                },
                ppid: p.ppid,
                exited: p.exited,
                anon_vma: p.flows[object::ANON_VMA as usize],
                anon_vma_chain: p.flows[object::AVC as usize],
            })
            .collect();
        processes.sort_by_key(|p| std::cmp::Reverse(p.anon_vma.allocs + p.anon_vma_chain.allocs));
        Self {
            schema: SCHEMA,
            kernel: ctx.kernel.clone(),
            probes: ctx.hooks.iter().map(|h| (h.name, h.mode)).collect(),
            hooks,
            fork_window: ctx.fork_window,
            duration_s: (ctx.duration_s * 1000.0).round() / 1000.0,
            dropped_events: stat_at(stat::DROPPED),
            events: acct.events,
            done: ctx.done,
            rmap,
            objects,
            processes,
        }
    }

    /// Human-readable rendering; `top` limits the process list.
    #[must_use]
    pub fn to_text(&self, top: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rmapwatch: kernel {} {}, {:.1} s, {} events, {} dropped",
            self.kernel.release,
            self.kernel.arch,
            self.duration_s,
            self.events,
            self.dropped_events
        );
        let modes: Vec<String> = self
            .probes
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str()))
            .collect();
        let _ = writeln!(s, "probes: {}", modes.join(" "));
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>10} {:>10} {:>9}  by call site",
            "object", "allocs", "frees", "net", "net KB"
        );
        for (name, o) in &self.objects {
            let net = o.allocs.cast_signed() - o.frees.cast_signed();
            let kb = net as f64 * f64::from(o.object_size) / 1024.0;
            let sites: Vec<String> = o.by_site.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "{name:<16} {:>10} {:>10} {net:>10} {kb:>9.1}  {}",
                o.allocs,
                o.frees,
                sites.join(" ")
            );
        }
        if let Some(r) = &self.rmap {
            let _ = writeln!(
                s,
                "rmap: {} new anon folios, {} pte calls ({} pages), {} pmd calls",
                r.new_anon_folios, r.ptes_calls, r.ptes_pages, r.pmd_calls
            );
        }
        if !self.processes.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9}",
                "pid", "comm", "av+", "av-", "avc+", "avc-"
            );
            for p in self.processes.iter().take(top) {
                let _ = writeln!(
                    s,
                    "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9}{}",
                    p.pid,
                    p.comm,
                    p.anon_vma.allocs,
                    p.anon_vma.frees,
                    p.anon_vma_chain.allocs,
                    p.anon_vma_chain.frees,
                    if p.exited { "  (exited)" } else { "" }
                );
            }
            if self.processes.len() > top {
                let _ = writeln!(
                    s,
                    "... {} more processes (use --json for all)",
                    self.processes.len() - top
                );
            }
        }
        s
    }
}
