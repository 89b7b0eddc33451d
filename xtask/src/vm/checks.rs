//! Ground truth: the guest's serial output read back (its `RMW-...`
//! markers) and each cell checked against what the VM measured: the probe
//! modes, live objects against a fresh walk, the slab counters, the
//! workload's exact per-process counts, the hooks against their call sites,
//! the recording replayed on the host, the refusals a phone can produce,
//! and the host phase's cells.
use std::{fmt::Write as _, path::Path, process::Command};

use rmapwatch_engine::report::{FLOOR_PROGRAM, ProcessReport, Report};

use super::{
    Cell,
    guest::{F, K, STORM, fixture_files},
};

/// The guest's `uname -r` and `uname -m` (its `RMW-KERNEL` line): the
/// cells' kernel column.
#[must_use]
pub fn kernel(log: &str) -> Option<&str> {
    log.lines().find_map(|l| l.split("RMW-KERNEL ").nth(1))
}

/// Where a boot's time went, from the guest's `RMW-T <uptime> <phase>`
/// stamps (each phase runs until the next stamp; the first stamp's uptime
/// is the kernel's boot): `"kernel 9 s, mode fentry 31 s, ..."`, for
/// fitting the matrix into CI's budget. `None` without stamps.
#[must_use]
pub fn phases(log: &str) -> Option<String> {
    let stamps: Vec<(f64, &str)> = log
        .lines()
        .filter_map(|l| {
            // Anywhere in the line: the first follows the console's reset.
            let (up, phase) = l.split("RMW-T ").nth(1)?.split_once(' ')?;
            Some((up.parse::<f64>().ok()?, phase.trim()))
        })
        .collect();
    let (first, _) = *stamps.first()?;
    let mut out = format!("kernel {first:.0} s");
    for w in stamps.windows(2) {
        let _ = write!(out, ", {} {:.0} s", w[0].1, w[1].0 - w[0].0);
    }
    // A boot that never finished: the phase it stopped in.
    if let Some((_, last)) = stamps.last().filter(|(_, p)| *p != "end") {
        let _ = write!(out, ", {last} (unfinished)");
    }
    Some(out)
}

/// What the guest's watchdog said of a phase that hung (its `RMW-HUNG`
/// lines): the phase, then each user process (pid, command line, state,
/// wait channel), without the threads' stacks and the kernel's messages,
/// which stay in the saved log. `None`: no phase hung.
#[must_use]
pub fn hung(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("RMW-HUNG ").nth(1))
        .filter(|l| l.starts_with("phase ") || l.starts_with("pid "))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Kernel functions that wait for every other CPU (live code patching's
/// syncs and its `stop_machine`, cross-CPU calls): a thread hung in one
/// waits for a vCPU that never answers, a guest fluke of multi-threaded
/// TCG of the kind of `matrix`'s int3 oops, not a hang of ours.
const WAITS_FOR_CPUS: &[&str] = &[
    "text_poke",
    "insn_patch_text",
    "stop_machine",
    "smp_call_function",
    "on_each_cpu",
    "ftrace_run_update",
    "ftrace_modify_all",
];

/// Frames of a sleeping lock's wait: a thread whose stack reaches one
/// before any of [`WAITS_FOR_CPUS`] waits for a lock (perhaps one of
/// ours), not for other CPUs.
const LOCK_WAITS: &[&str] = &[
    "mutex_lock",
    "rwsem_down",
    "percpu_rwsem",
    "down_read",
    "down_write",
];

/// Spinning waits for other CPUs, as a running CPU's backtrace shows them
/// (`sysrq l`, in the kernel's messages): a running thread's own stack is
/// empty in procfs.
const SPINS_FOR_CPUS: &[&str] = &["csd_lock_wait", "multi_cpu_stop"];

/// The frame of a hung guest that waits for every other CPU, or `None`: a
/// sleeping thread's (its `RMW-HUNG   task TID:` lines, top frame first)
/// whose stack reaches one of [`WAITS_FOR_CPUS`] before any lock wait
/// ([`LOCK_WAITS`]), or a running CPU's backtrace spinning in one of
/// [`SPINS_FOR_CPUS`] (`RMW-HUNG dmesg:` lines).
#[must_use]
pub fn hung_waiting_for_cpus(log: &str) -> Option<&str> {
    let mut task = "";
    let mut locked = false;
    for l in log.lines() {
        if let Some(frame) = l.split("RMW-HUNG   task ").nth(1) {
            let tid = frame.split(':').next().unwrap_or("");
            if tid != task {
                (task, locked) = (tid, false);
            }
            if locked {
                continue;
            }
            if LOCK_WAITS.iter().any(|f| frame.contains(f)) {
                locked = true;
            } else if WAITS_FOR_CPUS.iter().any(|f| frame.contains(f)) {
                return Some(frame);
            }
        } else if let Some(m) = l.split("RMW-HUNG dmesg: ").nth(1)
            && SPINS_FOR_CPUS.iter().any(|f| m.contains(f))
        {
            return Some(m);
        }
    }
    None
}

/// The seconds of a guest kernel's soft lockup line (`watchdog: BUG: soft
/// lockup - CPU#1 stuck for 164s! [init:1]`), or `None`.
#[must_use]
pub fn soft_lockup_secs(line: &str) -> Option<u64> {
    let rest = line.split("soft lockup - CPU#").nth(1)?;
    let secs = rest.split(" stuck for ").nth(1)?.split('s').next()?;
    secs.parse().ok()
}

/// One cell per probe mode of a boot (`label` appended to each mode),
/// each checked against the guest's ground truth (its `RMW-MODE` line),
/// with the mode's fork storm. A mode whose report does not parse fails
/// its own cell.
#[must_use]
pub fn modes(log: &str, kernel: &str, modes: &[&str], label: &str) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &mode in modes {
        let meta = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-MODE {mode} ")).nth(1))
            .unwrap_or("");
        let errs: Vec<&str> = section(log, mode, "RMW-ERR ");
        // A report that does not parse fails its mode's cell, not the boot:
        // the other modes' cells still say what they measured.
        let json: Result<Vec<Report>, String> = section(log, mode, "RMW-JSON ")
            .into_iter()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| {
                    let start: String = l.chars().take(200).collect();
                    format!("a report that does not parse ({e}): {start}")
                })
            })
            .collect();
        let hold_lines = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-HOLD {mode} ")).nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let pre_lines = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-PRE {mode} ")).nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let (result, detail) = match json {
            Err(e) => (Err(e), String::new()),
            Ok(json) => {
                let (result, mut detail) = check(mode, meta, pre_lines, hold_lines, &errs, &json);
                if result.is_ok() {
                    detail.push_str(&storm_detail(log, mode, json.last()));
                }
                (result, detail)
            }
        };
        cells.push(Cell {
            kernel: kernel.to_owned(),
            mode: format!("{mode}{label}"),
            result,
            detail,
        });
    }
    cells
}

/// The report's process `pid`.
fn find(r: &Report, pid: u64) -> Option<&ProcessReport> {
    r.processes.iter().find(|p| u64::from(p.pid) == pid)
}

/// The report's block of an object kind.
fn object<'a>(
    r: &'a Report,
    name: &str,
) -> Result<&'a rmapwatch_engine::report::ObjectReport, String> {
    r.objects.get(name).ok_or(format!("no {name} block"))
}

/// How a mode's failure starts when, between two reports, the guest kernel
/// ran neither our `kmem_cache_alloc` program nor the empty program beside
/// it (`RMAPWATCH_FLOOR`) for most allocations, while it ran the frees:
/// the tracepoint itself was silent, not our program (the kernel counts
/// every program's runs, whatever the program does). Seen once on arm64
/// 7.3 under TCG, a run of 40 s: most likely the static branch of
/// `trace_kmem_cache_alloc`, patched when the first program attached, left
/// stale in a vCPU's translation (as the int3 oops of `matrix`'s retry).
pub const ALLOC_TRACEPOINT_SILENT: &str =
    "the guest kernel ran its kmem_cache_alloc tracepoint for no program: ";

/// Runs of `program` (kernel-counted, `bpf_stats`) from report `a` to `b`.
fn runs_between(a: &Report, b: &Report, program: &str) -> u64 {
    let runs = |r: &Report| {
        r.cost
            .as_ref()
            .and_then(|c| c.programs.get(program))
            .map_or(0, |s| s.runs)
    };
    runs(b).saturating_sub(runs(a))
}

/// [`ALLOC_TRACEPOINT_SILENT`]'s test between reports `a` and `b`: our
/// alloc program ran less than a quarter as often as our free program, and
/// the empty program's runs on alloc (its runs less our free program's)
/// are ours within 10 % (or 16 runs): both were skipped alike.
fn alloc_tracepoint_silent(a: &Report, b: &Report) -> bool {
    let d = |p: &str| runs_between(a, b, p);
    let (alloc, free, empty) = (
        d("kmem_cache_alloc"),
        d("kmem_cache_free"),
        d(FLOOR_PROGRAM),
    );
    let empty_alloc = empty.saturating_sub(free);
    empty > 0
        && free >= 100
        && alloc * 4 < free
        && empty_alloc.abs_diff(alloc) <= (alloc / 10).max(16)
}

/// What the slab programs saw between two reports, for a drift's failure:
/// runs of ours and of the empty program beside them (`RMAPWATCH_FLOOR`;
/// on both tracepoints), allocations and frees seen, and the rmap hooks'
/// calls. Seen once on arm64 7.3 under TCG (fentry mode): our alloc
/// program and the empty one ran ~3,500 times where the frees ran 59,000,
/// so the kernel, not our program, skipped the alloc tracepoint.
fn slab_runs(a: &Report, b: &Report) -> String {
    let d = |p: &str| runs_between(a, b, p);
    let objects = |r: &Report, f: fn(&rmapwatch_engine::report::ObjectReport) -> u64| -> u64 {
        r.objects.values().map(f).sum()
    };
    let calls = |r: &Report| -> u64 { r.hooks.values().filter_map(|h| h.calls).sum() };
    format!(
        "between the two reports: runs of kmem_cache_alloc {}, kmem_cache_free {}, the empty \
         program (both) {}; allocations seen {}, frees {}; rmap hook calls {}",
        d("kmem_cache_alloc"),
        d("kmem_cache_free"),
        d(FLOOR_PROGRAM),
        objects(b, |o| o.allocs).saturating_sub(objects(a, |o| o.allocs)),
        objects(b, |o| o.frees).saturating_sub(objects(a, |o| o.frees)),
        calls(b).saturating_sub(calls(a))
    )
}

/// Checks one mode's output against the VM's ground truth.
pub fn check(
    mode: &str,
    meta: &str,
    pre_lines: usize,
    hold_lines: usize,
    errs: &[&str],
    json: &[Report],
) -> (Result<(), String>, String) {
    let field = |k: &str| -> i64 {
        meta.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    let mut detail = String::new();
    let r = (|| -> Result<(), String> {
        if field("rc") != 0 {
            // A forced mode this kernel refuses must say so in one line
            // (arm64 6.1 has no BPF trampoline: fentry attach is ENOTSUPP).
            let refused =
                format!("--probe-mode {mode} was forced but this kernel accepts no such hook");
            if let Some(e) = errs.iter().find(|e| e.contains(&refused)) {
                let _ = write!(
                    detail,
                    "kernel cannot: {}",
                    e.trim_start_matches("rmapwatch: error: ")
                );
                return Ok(());
            }
            return Err(format!(
                "rmapwatch exited {}: {}",
                field("rc"),
                errs.join(" | ")
            ));
        }
        let last = json.last().ok_or("no final report")?;
        // Interim reports from quiet moments: a report is built from the
        // event stream drained so far and a fresh walk; if a process forks
        // while that happens (the init shell runs `wc` at the markers), the
        // walk sees objects whose events are still in the ring (seen on
        // arm64 6.12: drift 4). A report is quiet when the one before and
        // the one after it counted the same: nothing was in flight.
        // The per-page rmap hooks count every fault, rmapwatch's own too
        // (its walk's tables are mapped and unmapped each time): they are
        // not anon_vma traffic, and left out.
        let anon_hooks = |r: &Report| {
            r.hooks
                .iter()
                .filter(|(name, _)| !name.starts_with("folio_"))
                .map(|(name, h)| (name.clone(), h.calls))
                .collect::<Vec<_>>()
        };
        let same =
            |a: &Report, b: &Report| anon_hooks(a) == anon_hooks(b) && a.objects == b.objects;
        let quiet_before = |lines: usize, what: &str| -> Result<&Report, String> {
            let upto = lines.min(json.len());
            (1..upto)
                .rev()
                .find(|&i| {
                    same(&json[i], &json[i - 1])
                        && json.get(i + 1).is_none_or(|n| same(n, &json[i]))
                })
                .or_else(|| upto.checked_sub(1))
                .map(|i| &json[i])
                .ok_or(format!("no interim report {what}"))
        };
        // At the hold point (the workload's children exist and have written).
        let hold = quiet_before(hold_lines, "at the hold point")?;
        // Before the workload: the hooks and the slab tracepoints are
        // compared over [pre, hold], where both were attached (under TCG the
        // hooks attach seconds after the tracepoints).
        let pre = quiet_before(pre_lines, "before the workload")?;
        // 1. probe modes
        if last.probes.is_empty() {
            return Err("no probes".into());
        }
        for (hook, m) in &last.probes {
            let m = m.as_str();
            let slab = !hook.starts_with("folio_");
            let want = match mode {
                "tracepoint" if slab => "tracepoint",
                "tracepoint" => "unavailable",
                // Auto takes fentry where the kernel allows it, else kprobe.
                "auto" if m == "kprobe" => "kprobe",
                "auto" => "fentry",
                m => m,
            };
            // A function this kernel does not have (6.1 has no
            // folio_add_anon_rmap_pmd) is reported as such, not hooked.
            let absent = last.hooks.get(hook).is_some_and(|h| {
                h.fallbacks
                    .iter()
                    .any(|x| x.ends_with("not in this kernel"))
            });
            if absent {
                let _ = write!(detail, "{hook} absent from this kernel; ");
                continue;
            }
            if m != want {
                return Err(format!("{hook} is {m}, not {want}: {}", errs.join(" | ")));
            }
        }
        // 2. At the hold point, the event-maintained live objects equal a
        //    fresh iterator walk exactly (drift 0), and the anon_vma slab
        //    counter agrees with what SLUB can hide: `objects` counts the
        //    free slots of the per-CPU slabs (and per-CPU partial slabs) as
        //    in use, and on 6.1 and 6.12 a shrink does not empty those (on
        //    6.18 it does: `cpu_slabs` is then 0 and the check is exact). So
        //    in use is in [objects - cpu_slabs * objs_per_slab, objects] at
        //    both points, and the true delta in [D - slack1, D + slack0].
        // Objects whose lives straddled the attach were mis-charged now and
        // then (an exited process kept 2-7 objects, or one moved between
        // processes) until fork's end was attached before the allocations
        // and what was reported while attaching was applied before seeding.
        let model = |r: &Report, what: &str| r.model.clone().ok_or(format!("no walk {what}"));
        let drift = model(hold, "at the hold point")?.drift;
        if drift.anon_vma != 0 || drift.anon_vma_chain != 0 {
            return Err(format!(
                "{}events vs a fresh walk at the hold point: drift {drift:?} (before the workload \
                 {:?}); {}",
                if alloc_tracepoint_silent(pre, hold) {
                    ALLOC_TRACEPOINT_SILENT
                } else {
                    ""
                },
                model(pre, "before the workload")?.drift,
                slab_runs(pre, hold)
            ));
        }
        for &pid in &workload_pids(meta)? {
            let p = find(hold, pid)
                .ok_or(format!("workload process {pid} missing at the hold point"))?;
            if Some(p.live) != p.snapshot {
                return Err(format!(
                    "workload process {pid}: events {:?} vs fresh walk {:?}",
                    p.live, p.snapshot
                ));
            }
        }
        let av = object(hold, "anon_vma")?;
        let net = av.allocs.cast_signed() - av.frees.cast_signed();
        let slab = field("s1") - field("s0");
        // 7.x's sheaves (per-CPU arrays of objects, a main and a spare per
        // CPU, `sheaf_capacity` each) hold free objects that `objects`
        // counts as in use, and a shrink does not empty them.
        let sheaves = |cap: i64| cap.max(0) * 2 * field("cpus").max(1);
        let (slack0, slack1) = (
            field("c0") * field("ops") + sheaves(field("sheaf")),
            field("c1") * field("ops") + sheaves(field("sheaf")),
        );
        let live = hold.live.anon_vma.objects;
        let _ = write!(
            detail,
            "live anon_vma {live}, AVC {} vs a fresh walk (workload processes exact); anon_vma net {net}, slab delta {slab} \
             (per-CPU slab slots{} {slack0} / {slack1})",
            hold.live.anon_vma_chain.objects,
            if field("sheaf") > 0 {
                " and sheaves"
            } else {
                ""
            }
        );
        if slack0 < 0 || slack1 < 0 || !(slab - slack1..=slab + slack0).contains(&net) {
            return Err(format!(
                "anon_vma: rmapwatch net {net}, slab delta {slab}, per-CPU slab slots {slack0} / {slack1}"
            ));
        }
        // With slab_nomerge the AVC cache is its own, and checked the same way.
        if field("a0") >= 0 && field("a1") >= 0 {
            let avc = object(hold, "anon_vma_chain")?;
            let net = avc.allocs.cast_signed() - avc.frees.cast_signed();
            let slab = field("a1") - field("a0");
            let (slack0, slack1) = (
                field("ac0") * field("aops") + sheaves(field("asheaf")),
                field("ac1") * field("aops") + sheaves(field("asheaf")),
            );
            let _ = write!(
                detail,
                "; unmerged AVC cache: net {net}, slab delta {slab} (per-CPU slab slots {slack0} / {slack1})"
            );
            if slack0 < 0 || slack1 < 0 || !(slab - slack1..=slab + slack0).contains(&net) {
                return Err(format!(
                    "AVC (unmerged cache): rmapwatch net {net}, slab delta {slab}, per-CPU slab slots {slack0} / {slack1}"
                ));
            }
        }
        // 3. per process: every child A anon_vmas and 2A AVCs, A >= K
        let kids: Vec<&ProcessReport> = last
            .processes
            .iter()
            .filter(|p| p.comm == "rmw-workload")
            .filter(|p| {
                p.ppid.is_some_and(|ppid| {
                    last.processes
                        .iter()
                        .any(|q| q.pid == ppid && q.comm == "rmw-workload")
                })
            })
            .collect();
        if kids.len() as u64 != F {
            return Err(format!(
                "{} workload children in the report, expected {F}",
                kids.len()
            ));
        }
        let a = kids[0].anon_vma.allocs;
        for k in &kids {
            if k.anon_vma.allocs != a || k.anon_vma_chain.allocs != 2 * a || a < K {
                return Err(format!("child counts differ from A={a}, 2A AVCs: {k:?}"));
            }
        }
        let _ = write!(detail, "; {F} children x {a} anon_vma / {} AVC", 2 * a);
        // 4. function hooks against the slab call sites, and the rmap pages
        if mode != "tracepoint" {
            let delta = |f: &dyn Fn(&Report) -> u64| f(hold).saturating_sub(f(pre));
            // A hook this mode attached has counted calls; an absent site
            // has no events (the JSON leaves empty sites out).
            let calls =
                |h: &str| delta(&|j: &Report| j.hooks.get(h).and_then(|x| x.calls).unwrap_or(0));
            let site = |s: &str| {
                delta(&|j: &Report| {
                    j.objects
                        .get("anon_vma_chain")
                        .and_then(|o| o.allocs_by_site.get(s).copied())
                        .unwrap_or(0)
                })
            };
            let prepare_avcs = site("__anon_vma_prepare");
            if calls("__anon_vma_prepare") != prepare_avcs {
                return Err(format!(
                    "__anon_vma_prepare calls {} != AVCs allocated there {prepare_avcs}",
                    calls("__anon_vma_prepare")
                ));
            }
            let fork_avcs = site("anon_vma_fork");
            if calls("anon_vma_fork") < fork_avcs || calls("anon_vma_fork") < F * a {
                return Err(format!(
                    "anon_vma_fork calls {} < {fork_avcs} / {}",
                    calls("anon_vma_fork"),
                    F * a
                ));
            }
            if hold.rmap.is_none() {
                return Err("no rmap counters with function hooks".into());
            }
            let folios = delta(&|j: &Report| j.rmap.as_ref().map_or(0, |r| r.new_anon_folios));
            if folios < K * (1 + F) {
                return Err(format!(
                    "new anon folios {folios} < the workload's {} touched pages",
                    K * (1 + F)
                ));
            }
            // Per VMA, exactly: the parent and each child mapped one new
            // anonymous folio per region page (first touch, then
            // copy-on-write), whatever else they faulted elsewhere.
            let per_process = region_folios(meta, hold)?;
            if per_process.len() as u64 != 1 + F || per_process.iter().any(|&(_, n)| n != K) {
                return Err(format!(
                    "new anon folios in the {K} region VMAs per process (parent first): {per_process:?}"
                ));
            }
            let _ = write!(
                detail,
                "; prepare calls {} = AVCs there; fork calls {}; new anon folios {folios}, \
                 in the regions exactly {K} for the parent and each of {F} children",
                calls("__anon_vma_prepare"),
                calls("anon_vma_fork"),
            );
        }
        if field("left") != 0 {
            return Err(format!(
                "{} rmapwatch programs still loaded after exit",
                field("left")
            ));
        }
        let _ = write!(detail, "; nothing loaded after exit");
        if last.dropped_events != Some(0) {
            return Err(format!("dropped events: {:?}", last.dropped_events));
        }
        match &last.inlined {
            Some(i) if i.anon_vma_allocs == 0 => {
                let _ = write!(detail, "; inlining detector 0");
            }
            other => return Err(format!("inlining detector: {other:?}")),
        }
        let _ = write!(detail, "; {}", last.slab.line());
        if last.model.is_none() {
            return Err("no snapshot in the VM".into());
        }
        Ok(())
    })();
    (r, detail)
}

/// The host phase's cells, failed with the guest's `RMW-NET` lines where
/// they fail, and a `host phase` cell when the phase never ran or did not
/// release the guest.
pub fn host_phase_cells(log: &str, kernel: &str, phase: Option<Vec<Cell>>) -> Vec<Cell> {
    let net: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("RMW-NET "))
        .collect();
    let said = if net.is_empty() {
        String::new()
    } else {
        format!(" (the guest: {})", net.join("; "))
    };
    let failed = |why: String| Cell {
        kernel: kernel.to_owned(),
        mode: "host phase".to_owned(),
        result: Err(format!("{why}{said}")),
        detail: String::new(),
    };
    let Some(mut cells) = phase else {
        return vec![failed("the guest never printed RMW-NET-READY".to_owned())];
    };
    for c in &mut cells {
        if let Err(e) = &mut c.result {
            e.push_str(&said);
        }
    }
    let released = log
        .lines()
        .find_map(|l| l.strip_prefix("RMW-NET-RELEASED "))
        .unwrap_or("(no RMW-NET-RELEASED line)");
    if released.trim() != "rc=0" {
        cells.push(failed(format!(
            "the host did not release the guest: {released}"
        )));
    }
    cells
}

/// The refusals a phone can produce, tried in the guest: each one line
/// with its remedy and exit code 3, or handled (and said) where rmapwatch
/// can handle it.
pub fn refusals(log: &str, kernel: &str) -> Cell {
    let line = |what: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("RMW-REFUSE {what} ")))
            .unwrap_or("")
    };
    let rc = |l: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("rc="))
            .unwrap_or("?")
            .to_owned()
    };
    let mut detail = Vec::new();
    let result = (|| -> Result<(), String> {
        let l = line("nobtf");
        if rc(l) != "3" || !l.contains("--btf") {
            return Err(format!("no BTF: {l}"));
        }
        detail.push("no BTF: exit 3, says --btf".to_owned());
        let l = line("btf-file");
        if rc(l) != "0" || !l.contains("reports=1") {
            return Err(format!("--btf FILE: {l}"));
        }
        detail.push("--btf FILE: runs".to_owned());
        let l = line("kptr");
        if rc(l) != "0" || !l.contains("after=2") || !l.contains("lowered to 1") {
            return Err(format!("kptr_restrict 2: {l}"));
        }
        detail.push("kptr_restrict 2: lowered to 1 for the read, set back, said".to_owned());
        let l = line("memlock");
        if rc(l) != "0" || !l.contains("raised RLIMIT_MEMLOCK from 64 KiB") {
            return Err(format!("memlock 64 KiB: {l}"));
        }
        detail.push("RLIMIT_MEMLOCK 64 KiB: raised, said".to_owned());
        let l = line("lockdown");
        if rc(l) != "3" || !l.contains("confidentiality") {
            return Err(format!("lockdown=confidentiality: {l}"));
        }
        detail.push("lockdown confidentiality: exit 3, one line".to_owned());
        Ok(())
    })();
    Cell {
        kernel: kernel.to_owned(),
        mode: "refusals".to_owned(),
        result,
        detail: detail.join("; "),
    }
}

/// A process whose main thread exited (`rmw-workload --zombie-leader`, its
/// leader a zombie without an mm, another thread holding its VMAs), with
/// rmapwatch attached before the leader's exit: it is not exited, a fresh
/// walk finds it with what the events say it owns (on kernels before 5.12
/// the walk visits thread-group leaders only), and `inspect` finds its
/// regions: K anon_vmas, each a root with F children.
pub fn zombie(log: &str, kernel: &str) -> Cell {
    let mut detail = String::new();
    let result = (|| -> Result<(), String> {
        let meta = log
            .lines()
            .find_map(|l| l.strip_prefix("RMW-ZOMBIE "))
            .ok_or("no zombie-leader run in the guest")?;
        let errs: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("RMW-ZOMBIE-ERR "))
            .collect();
        let word = |k: &str| {
            meta.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or("?")
        };
        if word("rc") != "0" {
            return Err(format!("{meta}; stderr: {errs:?}"));
        }
        if word("leader") != "Z" {
            return Err(format!("the leader was not a zombie: {meta}"));
        }
        let pids = workload_pids(meta)?;
        let (&parent, children) = pids.split_first().ok_or("no workload pid")?;
        let report: Report = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RMW-ZOMBIE-JSON "))
            .ok_or("no report")
            .and_then(|l| serde_json::from_str(l).map_err(|_| "a report that does not parse"))?;
        let p = find(&report, parent).ok_or(format!("process {parent} missing from the report"))?;
        let objs = |b: &rmapwatch_engine::report::LiveBlock| {
            (b.anon_vma.objects, b.anon_vma_chain.objects)
        };
        if p.exited {
            return Err(format!(
                "its main thread exited, not the process: exited, live {:?}, a fresh walk {:?}",
                objs(&p.live),
                p.snapshot.as_ref().map(objs)
            ));
        }
        let walked = p.snapshot.as_ref().map(objs);
        if walked != Some(objs(&p.live)) || objs(&p.live).0 < K {
            return Err(format!(
                "live {:?} vs a fresh walk {walked:?} (at least {K} anon_vmas)",
                objs(&p.live)
            ));
        }
        for &c in children {
            let q = find(&report, c).ok_or(format!("child {c} missing from the report"))?;
            if q.snapshot.as_ref().map(objs) != Some(objs(&q.live)) {
                return Err(format!("child {c}: {q:?}"));
            }
        }
        let drift = report.model.as_ref().ok_or("no walk")?.drift;
        if (drift.anon_vma, drift.anon_vma_chain) != (0, 0) {
            return Err(format!("drift {drift:?}"));
        }
        if word("inspect") != "0" {
            return Err(format!("inspect {parent}: {meta}; stderr: {errs:?}"));
        }
        let inspection: rmapwatch_engine::inspect::Inspection = log
            .lines()
            .find_map(|l| l.strip_prefix("RMW-ZOMBIE-INSPECT "))
            .ok_or("no inspection")
            .and_then(|l| {
                serde_json::from_str(l).map_err(|_| "an inspection that does not parse")
            })?;
        let words: Vec<&str> = meta.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let range = words
            .iter()
            .position(|w| *w == "regions")
            .and_then(|i| Some((hex(words.get(i + 1)?)?, hex(words.get(i + 2)?)?)))
            .ok_or(format!("no regions line: {meta}"))?;
        let roots = inspection
            .vmas
            .iter()
            .filter(|v| {
                hex(&v.start).is_some_and(|a| a >= range.0)
                    && hex(&v.end).is_some_and(|b| b <= range.1)
            })
            .filter(|v| v.lazy_state == "R" && v.avc == 1)
            .count() as u64;
        if roots != K {
            return Err(format!(
                "inspect {parent}: {roots} region VMAs rooting an anon_vma, not {K} ({} VMAs)",
                inspection.vmas.len()
            ));
        }
        let _ = write!(
            detail,
            "main thread exited, leader a zombie: not exited; live anon_vma {}, AVC {} = a fresh \
             walk; inspect: {K} regions rooting their anon_vma (R, {F} children); drift 0",
            p.live.anon_vma.objects, p.live.anon_vma_chain.objects
        );
        Ok(())
    })();
    Cell {
        kernel: kernel.to_owned(),
        mode: "zombie leader".to_owned(),
        result,
        detail,
    }
}

/// Decodes standard base64 (as busybox writes it: lines of 76).
fn base64(text: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", char::from(c))),
        })
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// The guest's recording: kept next to the serial log, replayed by the
/// host's rmapwatch (x86_64: another architecture for arm64 guests) to the
/// report the guest's recorder printed; and the committed fixtures
/// replayed in the guest to theirs.
pub fn recording(log: &str, kernel: &str, initrd: &Path, host_bin: &Path) -> Cell {
    let mut detail = String::new();
    let result = (|| -> Result<(), String> {
        let meta = log
            .lines()
            .find_map(|l| l.strip_prefix("RMW-REC "))
            .ok_or("no recording in the guest")?;
        let errs: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("RMW-REC-ERR "))
            .collect();
        if !meta.starts_with("rc=0") {
            return Err(format!(
                "the guest's recorder failed: {meta}: {}",
                errs.join(" | ")
            ));
        }
        let printed: String = log
            .lines()
            .filter_map(|l| l.strip_prefix("RMW-REC-JSON "))
            .map(|l| format!("{l}\n"))
            .collect();
        let b64: String = log
            .split("RMW-REC-B64-START\n")
            .nth(1)
            .and_then(|r| r.split("RMW-REC-B64-END").next())
            .ok_or("no recording bytes in the serial log")?
            .to_owned();
        let bytes = base64(&b64)?;
        // Kernel releases have dots: extensions are appended, not replaced.
        let file = |ext: &str| initrd.with_file_name(format!("{}.{ext}", recording_name(kernel)));
        let rmw = file("rmw");
        std::fs::write(&rmw, &bytes).map_err(|e| e.to_string())?;
        std::fs::write(file("json"), &printed).map_err(|e| e.to_string())?;
        let ready: String = meta
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ready", "\nready");
        // The zygote tree's lines, as the guest printed them (RMW-ZYG ...).
        let zyg: String = log
            .lines()
            .filter(|l| l.starts_with("RMW-ZYG "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(file("meta"), format!("{ready}\n{zyg}")).map_err(|e| e.to_string())?;
        let out = Command::new(host_bin)
            .args(["report", "--from"])
            .arg(&rmw)
            .arg("--json")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "the host could not replay the guest's recording: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if out.stdout != printed.as_bytes() {
            return Err(
                "the host's replay of the guest's recording differs from what the guest printed"
                    .into(),
            );
        }
        let r: Report =
            serde_json::from_str(&printed).map_err(|e| format!("the guest's report: {e}"))?;
        let _ = write!(
            detail,
            "recorded here ({} KiB, {} events, {} walks), replayed on the host: the same report",
            bytes.len() / 1024,
            r.events,
            r.model.as_ref().map_or(0, |m| m.snapshot.stats.taken)
        );
        let _ = write!(detail, "; {}", zygote_designs(log, &r)?);
        // The fixtures, replayed in the guest.
        let mut replayed = Vec::new();
        for line in log.lines().filter_map(|l| l.strip_prefix("RMW-REPLAY ")) {
            let (name, json) = line.split_once(' ').ok_or("a bad replay line")?;
            let want = fixture_files()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|f| f.file_name().is_some_and(|n| n == name))
                .ok_or(format!("no fixture {name}"))?
                .with_extension("json");
            let want = std::fs::read_to_string(&want).map_err(|e| e.to_string())?;
            let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s.trim_end());
            let (got, want) = parse(json)
                .and_then(|g| parse(&want).map(|w| (g, w)))
                .map_err(|e| format!("fixture {name} replayed in the guest: {e}"))?;
            // Every field its recorder printed; fields added since may
            // come besides.
            rmapwatch_engine::report::same_as_older(&got, &want).map_err(|e| {
                format!("fixture {name} replayed in the guest: another report: {e}")
            })?;
            replayed.push(name.to_owned());
        }
        if replayed.is_empty() {
            return Err("no fixture replayed in the guest".into());
        }
        let _ = write!(detail, "; fixtures replayed here: {}", replayed.join(", "));
        Ok(())
    })();
    Cell {
        kernel: kernel.to_owned(),
        mode: "record/replay".to_owned(),
        result,
        detail,
    }
}

/// The designs block of the recording's last report, against the zygote
/// tree (`rmw-workload --zygote`, its lines `RMW-ZYG ...`) recorded beside
/// the workload: the four designs; under the COW context every process of
/// the tree forked without exec (apps, helpers) has a context of its own
/// and at least a remap entry per preloaded library (a private file
/// mapping whose page 0 was written in the zygote); the ideal read every
/// VMA it needs (`record` reads pagemap without a budget).
fn zygote_designs(log: &str, r: &Report) -> Result<String, String> {
    let names: Vec<&str> = r.designs.iter().map(|d| d.name.as_str()).collect();
    if names != ["today", "lazy", "cow_context", "ideal"] {
        return Err(format!("the report's designs: {names:?}"));
    }
    let zyg: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("RMW-ZYG "))
        .collect();
    let summary = zyg
        .iter()
        .find_map(|l| l.strip_prefix("zygote "))
        .ok_or("no zygote tree in the guest's recording")?;
    let field = |name: &str| -> Result<u64, String> {
        let w: Vec<&str> = summary.split_whitespace().collect();
        w.iter()
            .position(|x| *x == name)
            .and_then(|i| w.get(i + 1)?.parse().ok())
            .ok_or(format!("no {name} in the zygote's line: {summary}"))
    };
    let libs = field("files")?;
    // proc <pid> <ppid> <role> <exec> <name>
    let forked: Vec<(u64, &str)> = zyg
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&"proc") && w.len() >= 6 && w[4] == "0" && w[3] != "zygote")
                .then(|| Some((w[1].parse().ok()?, w[5])))
                .flatten()
        })
        .collect();
    if forked.is_empty() {
        return Err(format!(
            "no app forked without exec in the zygote tree: {zyg:?}"
        ));
    }
    let cow = |pid: u64| -> Result<(u64, u64), String> {
        let p = find(r, pid).ok_or(format!("zygote tree process {pid} missing from the report"))?;
        let s = p
            .designs
            .iter()
            .find(|s| s.name == "cow_context")
            .ok_or(format!("no cow_context design for {pid}"))?;
        Ok((
            s.holding.count("cow_context"),
            s.holding.count("remap_entry"),
        ))
    };
    let mut least = u64::MAX;
    for &(pid, name) in &forked {
        let (ctx, remap) = cow(pid)?;
        if ctx != 1 || remap < libs {
            return Err(format!(
                "cow_context for {name} ({pid}): {ctx} contexts, {remap} remap entries; \
                 want 1 and at least {libs} (one per library)"
            ));
        }
        least = least.min(remap);
    }
    let ideal = r
        .designs
        .iter()
        .find(|d| d.name == "ideal")
        .and_then(|d| d.coverage)
        .ok_or("the ideal has no coverage")?;
    if ideal.read != ideal.needed {
        return Err(format!(
            "the ideal read {} of the {} VMAs it needs (record has no pagemap budget)",
            ideal.read, ideal.needed
        ));
    }
    let pct = |n: &str| {
        r.designs
            .iter()
            .find(|d| d.name == n)
            .and_then(|d| d.change_vs_today)
            .map_or_else(|| "-".to_owned(), |c| format!("{:+.0}%", c * 100.0))
    };
    Ok(format!(
        "designs today, lazy {}, cow_context {}, ideal {} (bytes vs today); zygote tree: {} \
         processes forked without exec, each 1 COW context and >= {libs} remap entries \
         (min {least}); ideal read {}/{} VMAs",
        pct("lazy"),
        pct("cow_context"),
        pct("ideal"),
        forked.len(),
        ideal.read,
        ideal.needed
    ))
}

/// The name (without extension) of a guest's recording next to its
/// serial log.
#[must_use]
pub fn recording_name(kernel: &str) -> String {
    format!("rec-{}", kernel.replace(' ', "-"))
}

/// The workload's pids (parent first) from its `ready PARENT CHILD...` line.
fn workload_pids(meta: &str) -> Result<Vec<u64>, String> {
    let mut words = meta.split_whitespace().skip_while(|w| *w != "ready");
    words.next().ok_or("no ready line from the workload")?;
    Ok(words.map_while(|p| p.parse().ok()).collect())
}

/// From the workload's `regions START END ready PARENT CHILD...` and a
/// report: per workload process (parent first), the new anonymous folios
/// counted in VMAs that start inside the regions.
fn region_folios(meta: &str, report: &Report) -> Result<Vec<(u64, u64)>, String> {
    let words: Vec<&str> = meta.split_whitespace().collect();
    let after = |w: &str| words.iter().position(|x| *x == w).map(|i| &words[i + 1..]);
    let hex = |s: &&str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let r = after("regions").ok_or("no regions line from the workload")?;
    let (Some(start), Some(end)) = (r.first().and_then(hex), r.get(1).and_then(hex)) else {
        return Err(format!("bad regions line: {meta}"));
    };
    let pids = workload_pids(meta)?;
    pids.iter()
        .map(|&pid| {
            let p = find(report, pid)
                .ok_or(format!("workload process {pid} missing from the report"))?;
            let by_vma = &p
                .rmap
                .as_ref()
                .ok_or(format!("no per-VMA rmap counts for {pid}"))?
                .by_vma;
            let n = by_vma
                .iter()
                .filter(|(k, _)| hex(&k.as_str()).is_some_and(|a| (start..end).contains(&a)))
                .map(|(_, v)| *v)
                .sum();
            Ok((pid, n))
        })
        .collect()
}

/// The fork storm timed in this mode, untraced and traced (reported, not
/// checked: TCG wall time says little), with rmapwatch's cost per event.
fn storm_detail(log: &str, mode: &str, last: Option<&Report>) -> String {
    let secs = |phase: &str| -> Option<f64> {
        let l = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-STORM {mode} {phase} ")).nth(1))?;
        // "storm 200 forks 1.234 s"
        l.split_whitespace().nth(3)?.parse().ok()
    };
    let (Some(base), Some(traced)) = (secs("base"), secs("traced")) else {
        return String::new();
    };
    let ns = last
        .and_then(|j| j.cost.as_ref()?.ns_per_event)
        .map_or_else(String::new, |n| format!(", {n:.0} ns/event (bpf_stats)"));
    // Our slab programs against the empty raw program beside them.
    let ratio = last
        .and_then(|j| {
            let c = j.cost.as_ref()?;
            let f = c.floor.as_ref()?;
            Some(format!(
                ", slab programs {:.0} ns/run = {:.2}x the empty program's {:.0}",
                c.slab_ns_per_run?, f.ratio?, f.ns_per_run
            ))
        })
        .unwrap_or_default();
    // The cost split's variants, in the boot that attaches them.
    let split = last
        .and_then(|j| j.cost.as_ref())
        .filter(|c| !c.split.is_empty())
        .map(|c| format!("; {}", c.split_words()))
        .unwrap_or_default();
    format!(
        "; fork storm ({STORM} forks): untraced {base:.2} s, traced {traced:.2} s ({:+.1}%){ns}{ratio}{split}",
        (traced / base - 1.0) * 100.0
    )
}

/// Lines with `prefix` between this mode's RMW-MODE line and the next one.
fn section<'a>(log: &'a str, mode: &str, prefix: &str) -> Vec<&'a str> {
    let start = log.find(&format!("RMW-MODE {mode} ")).unwrap_or(log.len());
    let rest = &log[start..];
    let end = rest[1..].find("RMW-MODE ").map_or(rest.len(), |e| e + 1);
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// Forks and rmap walks rmapwatch may count beyond the guest's own count
/// (the kprobe events' window lies inside rmapwatch's): the forks of the
/// shell's wait loop between rmapwatch's "attached" and the triggers (at
/// most one `sleep` and one `grep`), and kernel work (kcompactd) in those
/// two gaps. The only commands in the window are the storm and the
/// compaction.
pub const TIME_SLACK: u64 = 4;

/// One cell per probe mode of a boot: fork work and rmap walks against
/// the guest's tracefs kprobe counts (its `RMW-TIME` lines).
#[must_use]
pub fn time(log: &str, kernel: &str, modes: &[&str], label: &str) -> Vec<Cell> {
    modes
        .iter()
        .map(|&mode| {
            let cell = |result, detail| Cell {
                kernel: kernel.to_owned(),
                mode: format!("{mode}{label} time"),
                result,
                detail,
            };
            let Some(meta) = log
                .lines()
                .find_map(|l| l.split(&format!("RMW-TIME {mode} ")).nth(1))
            else {
                return cell(
                    Err("the guest printed no RMW-TIME line for this mode".to_owned()),
                    String::new(),
                );
            };
            let errs = section(log, mode, "RMW-TIME-ERR ");
            let json: Vec<Report> = section(log, mode, "RMW-TIME-JSON ")
                .into_iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let (result, detail) = time_check(mode, meta, &errs, json.last());
            cell(result, detail)
        })
        .collect()
}

/// Checks one mode's time report against the guest's counts: `dm` and
/// `rw`, the hits of tracefs kprobe events on `dup_mmap` (or, inlined,
/// `uprobe_start_dup_mmap`, which only it calls) and `rmap_walk_anon` (-1:
/// no such event), in a window inside rmapwatch's; `lost`, the trace
/// buffer's overruns.
fn time_check(
    mode: &str,
    meta: &str,
    errs: &[&str],
    last: Option<&Report>,
) -> (Result<(), String>, String) {
    let mut detail = String::new();
    if let Some(why) = meta.strip_prefix("skipped") {
        return (Ok(()), format!("not checked{why}"));
    }
    let field = |k: &str| -> Option<&str> {
        meta.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
    };
    let num = |k: &str| field(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
    let r = (|| -> Result<(), String> {
        if num("rc") != 0 {
            let refused =
                format!("--probe-mode {mode} was forced but this kernel accepts no such hook");
            if errs.iter().any(|e| e.contains(&refused)) {
                let _ = write!(detail, "kernel cannot: {mode}");
                return Ok(());
            }
            return Err(format!(
                "rmapwatch exited {}: {}",
                num("rc"),
                errs.join(" | ")
            ));
        }
        let last = last.ok_or("no final report")?;
        let time = last.time.as_ref().ok_or("no time block")?;
        let fork = &time.fork;
        let walks: u64 = time.rmap_walks.by_caller.iter().map(|c| c.walks).sum();
        let (dm, rw) = (num("dm"), num("rw"));
        if num("lost") != 0 {
            return Err(format!(
                "the guest's trace buffer lost {} events",
                num("lost")
            ));
        }
        let hooked = mode != "tracepoint";
        let _ = write!(
            detail,
            "forks {} (syscall path); dup_mmap: rmapwatch {:?}, tracefs kprobe on {} {dm}",
            fork.forks,
            fork.dup_mmaps,
            field("dmsym").unwrap_or("?")
        );
        if fork.forks < STORM {
            return Err(format!("{} forks timed < the storm's {STORM}", fork.forks));
        }
        if dm < STORM.cast_signed() {
            return Err(format!(
                "the guest's dup_mmap event ({}) counted {dm} < the storm's {STORM}",
                field("dmsym").unwrap_or("?")
            ));
        }
        if !hooked {
            if fork.dup_mmaps.is_some() || !time.rmap_walks.by_caller.is_empty() {
                return Err(format!(
                    "function-hook numbers in --probe-mode tracepoint: {fork:?}"
                ));
            }
            let _ = write!(
                detail,
                "; rmap walks unavailable: {}",
                time.rmap_walks.source
            );
            return Ok(());
        }
        // auto: fentry where the kernel takes it, else kprobe.
        let want: &[&str] = match mode {
            "fentry" => &["fentry/fexit dup_mmap"],
            "kprobe" => &["kprobe/kretprobe dup_mmap"],
            _ => &["fentry/fexit dup_mmap", "kprobe/kretprobe dup_mmap"],
        };
        if !want.iter().any(|w| fork.source.starts_with(w)) {
            return Err(format!(
                "fork work is not {}...: {}",
                want.join("... or "),
                fork.source
            ));
        }
        let n = fork
            .dup_mmaps
            .ok_or("no dup_mmap count with function hooks")?;
        // A run of a dup_mmap program the kernel skipped (its recursion
        // guard: on 7.x a program can be preempted inside and the next
        // fork's run on that CPU is dropped) loses that dup_mmap; the
        // kernel counts those misses and the report shows them.
        let misses_of = |suffix: &str| -> u64 {
            last.cost.as_ref().map_or(0, |c| {
                c.programs
                    .iter()
                    .filter(|(name, _)| name.ends_with(suffix))
                    .map(|(_, p)| p.recursion_misses)
                    .sum()
            })
        };
        // A fork whose syscall entry or exit program the kernel skipped (7.x
        // runs syscall tracepoint programs preemptible: seen once on arm64
        // 7.3, fork_exit 1 miss, 305 forks vs 306 dup_mmaps) is no timed
        // fork either; nor is one whose `sched_process_fork` run was skipped
        // (a raw tracepoint, preemptible on 7.x): its record names the child,
        // and the engine counts the dup_mmap only at a fork to a child it
        // saw (x86_64 7.3 once: 303 vs 306, 2 misses of the others counted).
        let missed = misses_of("dup_mmap")
            + misses_of("fork_enter")
            + misses_of("fork_exit")
            + misses_of("sched_process_fork");
        let extra = n.cast_signed() - dm;
        if !(-missed.cast_signed()..=TIME_SLACK.cast_signed()).contains(&extra) {
            return Err(format!(
                "dup_mmap: rmapwatch {n} vs the guest's kprobe event {dm}: not within \
                 [-{missed} (recursion misses of its dup_mmap, fork syscall and \
                 sched_process_fork programs), {TIME_SLACK}] more"
            ));
        }
        if missed > 0 {
            let _ = write!(detail, " ({missed} runs missed by recursion, counted)");
        }
        if n > fork.forks {
            return Err(format!("{n} dup_mmaps timed > {} forks", fork.forks));
        }
        let (d, a) = (fork.dup_mmap_ns.unwrap_or(0), fork.anon_vma_ns.unwrap_or(0));
        let calls = fork.anon_vma_calls.unwrap_or(0);
        // Each storm fork copies the K written regions: anon_vma_fork per
        // region (and the anon_vma_clone it calls).
        if d == 0 || a == 0 || a > d || calls < STORM * K {
            return Err(format!(
                "dup_mmap {d} ns, of it anon_vma {a} ns, {calls} anon_vma calls (want > 0, \
                 anon <= dup_mmap, calls >= {})",
                STORM * K
            ));
        }
        let _ = write!(
            detail,
            " (within [-{missed}, {TIME_SLACK}]); {:.1} us per dup_mmap, {:.0}% in anon_vma_fork/clone \
             ({calls} calls); unpaired exits {:?}; recursion misses (all programs) {:?}",
            d as f64 / n as f64 / 1000.0,
            a as f64 * 100.0 / d as f64,
            last.timing_unpaired,
            last.cost.as_ref().map(|c| c.recursion_misses)
        );
        let _ = write!(
            detail,
            "; rmap walks: rmapwatch {walks}, tracefs kprobe on rmap_walk_anon {rw}"
        );
        if rw < 0 {
            if time.rmap_walks.source.starts_with("unavailable") {
                let _ = write!(detail, " ({})", time.rmap_walks.source);
                return Ok(());
            }
            return Err("no rmap_walk_anon event in the guest".into());
        }
        let callers: Vec<String> = time
            .rmap_walks
            .by_caller
            .iter()
            .map(|c| format!("{} {}", c.caller, c.walks))
            .collect();
        let callers = if callers.is_empty() {
            " (compaction walked nothing)".to_owned()
        } else {
            format!(": {}", callers.join(", "))
        };
        // DAMON's kdamond threads (7.x's damon_stat, on by default) sample
        // folios all the time, in the gaps between the two windows too (seen:
        // 20 more on arm64 7.3 under TCG): their walks are compared apart,
        // where the guest counted them apart (`rwd`, its kdamond hits).
        let rwd = num("rwd");
        let damon: u64 = time
            .rmap_walks
            .by_caller
            .iter()
            .filter(|c| c.caller.starts_with("damon_"))
            .map(|c| c.walks)
            .sum();
        let (ours, theirs) = if rwd >= 0 {
            (walks - damon, rw - rwd)
        } else {
            (walks, rw)
        };
        let extra = ours.cast_signed() - theirs;
        let slack = TIME_SLACK + ours / 100;
        // As for dup_mmap: a walk whose program run the kernel skipped.
        let walk_missed = misses_of("rmap_walk");
        let but_damon = if rwd >= 0 { " but DAMON's" } else { "" };
        if !(-walk_missed.cast_signed()..=slack.cast_signed()).contains(&extra) {
            return Err(format!(
                "rmap walks{but_damon}: rmapwatch {ours} vs the guest's kprobe event {theirs}: not \
                 within [-{walk_missed} (recursion misses of its rmap walk programs), {slack}] more \
                 ({}){callers}",
                time.rmap_walks.source
            ));
        }
        if rwd >= 0 && damon.cast_signed() + walk_missed.cast_signed() < rwd {
            return Err(format!(
                "DAMON's rmap walks: rmapwatch {damon} < the guest's kdamond hits {rwd} (a window \
                 inside rmapwatch's) less {walk_missed} missed{callers}"
            ));
        }
        if walk_missed > 0 {
            let _ = write!(
                detail,
                " ({walk_missed} walks missed by recursion, counted)"
            );
        }
        let _ = write!(
            detail,
            " ({}{ours} vs {theirs}: within [-{walk_missed}, {slack}]: {TIME_SLACK} + 1%, kcompactd \
             may walk in the gaps{}){callers}",
            if rwd >= 0 { "but DAMON's: " } else { "" },
            if rwd >= 0 {
                format!("; DAMON's {damon} vs kdamond's {rwd}: at least as many")
            } else {
                String::new()
            }
        );
        if last.dropped_events != Some(0) {
            return Err(format!("dropped events: {:?}", last.dropped_events));
        }
        // Kernels without lock tracepoints (5.10, 5.15): the rwsem slow
        // paths are kprobed (auto and kprobe modes).
        let lock = &time.anon_vma_lock;
        if mode == "kprobe"
            && !lock.source.starts_with("tracepoint")
            && !lock
                .source
                .starts_with("kprobe rwsem_down_{read,write}_slowpath")
        {
            return Err(format!("lock waits without tracepoints: {}", lock.source));
        }
        let _ = write!(
            detail,
            "; lock waits {} ({} ns): {}",
            lock.waits, lock.wait_ns, lock.source
        );
        // Every wait rmapwatch measures began in an rwsem slow path: the
        // guest's count of those (all rwsems) bounds them.
        let (sr, sw) = (num("sr"), num("sw"));
        if sr >= 0 && sw >= 0 {
            let slow = (sr + sw).cast_unsigned();
            let _ = write!(
                detail,
                "; rwsem slow paths in the guest (every rwsem) {sr} read + {sw} write"
            );
            if lock.waits > slow + TIME_SLACK {
                return Err(format!(
                    "{} anon_vma rwsem waits > the guest's {slow} rwsem slow paths + {TIME_SLACK}",
                    lock.waits
                ));
            }
        }
        Ok(())
    })();
    (r, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_that_does_not_parse_fails_its_mode_only() {
        // A kernel message written into the middle of a report line.
        let log = "RMW-MODE fentry rc=0 s0=1 s1=2\nRMW-JSON {\"schema\":\"rmapwatch.re[ 41.2] rcu: \
                   INFO: stall\nRMW-MODE kprobe rc=0 s0=1 s1=2\n";
        let cells = modes(log, "6.1 x86_64", &["fentry", "kprobe"], "");
        assert_eq!(cells.len(), 2);
        let e = cells[0]
            .result
            .as_ref()
            .expect_err("fentry's report is cut");
        assert!(e.contains("a report that does not parse"), "{e}");
        assert_eq!(cells[1].mode, "kprobe");
        assert!(
            !cells[1]
                .result
                .as_ref()
                .is_err_and(|e| e.contains("does not parse")),
            "{:?}",
            cells[1].result
        );
    }

    #[test]
    fn a_soft_lockup_line_says_how_long_its_cpu_was_stuck() {
        assert_eq!(
            soft_lockup_secs(
                "[  280.700483] watchdog: BUG: soft lockup - CPU#1 stuck for 164s! [init:1]"
            ),
            Some(164)
        );
        assert_eq!(soft_lockup_secs("RMW-T 98.52 time tracepoint"), None);
        assert_eq!(soft_lockup_secs("soft lockup - CPU#0 stuck for xs!"), None);
    }

    #[test]
    fn a_hung_phase_is_said_with_its_processes_not_their_stacks() {
        let log = "RMW-T 8.5 start\nRMW-T 20.1 mode kprobe\n\
                   RMW-HUNG phase 'mode kprobe' ran past its 300 s\n\
                   RMW-HUNG pid 1: /bin/sh /init ; state S, wchan do_wait\n\
                   RMW-HUNG   task 1: [<0>] do_wait+0x5c/0x70\n\
                   RMW-HUNG pid 97: rmapwatch --probe-mode kprobe report ; state D, wchan rwsem\n\
                   RMW-HUNG dmesg: [  340.1] INFO: task rmapwatch:97 blocked\n";
        assert_eq!(
            hung(log).as_deref(),
            Some(
                "phase 'mode kprobe' ran past its 300 s\n\
                 pid 1: /bin/sh /init ; state S, wchan do_wait\n\
                 pid 97: rmapwatch --probe-mode kprobe report ; state D, wchan rwsem"
            )
        );
        assert_eq!(hung("RMW-T 8.5 start\nRMW-END\n"), None);
        assert_eq!(
            hung_waiting_for_cpus(log),
            None,
            "do_wait is ours to explain"
        );
        let patching =
            format!("{log}RMW-HUNG   task 97: [<0>] smp_text_poke_batch_finish+0x2f0/0x3a0\n");
        assert_eq!(
            hung_waiting_for_cpus(&patching),
            Some("97: [<0>] smp_text_poke_batch_finish+0x2f0/0x3a0")
        );
        // Waiting for a lock taken on the way to patching: a lock's wait.
        let locked = format!(
            "{log}RMW-HUNG   task 98: [<0>] __mutex_lock.constprop.0+0x1/0x2\n\
             RMW-HUNG   task 98: [<0>] text_poke_copy+0x1/0x2\n\
             RMW-HUNG   task 99: [<0>] do_wait+0x1/0x2\n"
        );
        assert_eq!(hung_waiting_for_cpus(&locked), None);
        // A running CPU spinning for the others' answers (sysrq l).
        let spinning = format!(
            "{log}RMW-HUNG dmesg: [  400.1]  csd_lock_wait+0x1/0x2\n\
             RMW-HUNG dmesg: [  400.1]  smp_call_function_many_cond+0x1/0x2\n"
        );
        assert_eq!(
            hung_waiting_for_cpus(&spinning),
            Some("[  400.1]  csd_lock_wait+0x1/0x2")
        );
        // The sysrq's own cross-CPU call in the messages is no spin.
        let sysrq = format!("{log}RMW-HUNG dmesg: [  400.1]  on_each_cpu_cond_mask+0x1/0x2\n");
        assert_eq!(hung_waiting_for_cpus(&sysrq), None);
    }

    #[test]
    fn phases_run_from_stamp_to_stamp() {
        let log = "[ 1.0] x\n\x1b[2JRMW-T 8.50 start\nRMW-KERNEL 6.1 x\nRMW-T 10.00 mode fentry\n\
                   RMW-T 40.25 time fentry\nRMW-TIME fentry rc=0\nRMW-T 52.00 end\n";
        assert_eq!(
            phases(log).as_deref(),
            Some("kernel 8 s, start 2 s, mode fentry 30 s, time fentry 12 s")
        );
        assert_eq!(phases("RMW-T x y\nnothing\n"), None);
        assert_eq!(
            phases("RMW-T 3.0 start\nRMW-T 5.5 record\n").as_deref(),
            Some("kernel 3 s, start 2 s, record (unfinished)")
        );
    }

    /// A real time cell (Debian's arm64 7.3 under TCG, fentry mode; the
    /// report's processes left out): the guest's kprobe counted 306
    /// dup_mmaps, rmapwatch timed 305 forks, and the kernel counted one
    /// recursion miss of the `fork_exit` program (7.x runs syscall
    /// tracepoint programs preemptible).
    const META: &str = "rc=0 dm=306 rw=253 sr=8 sw=76 lost=0 dmsym=dup_mmap \
                        rwsym=rmap_walk_anon storm 200 forks 5.122 s  contend 4 siblings 25 \
                        forks 1.567 s";

    fn report() -> Report {
        serde_json::from_str(include_str!("testdata/time-7.3-arm64-fentry.json"))
            .expect("the fixture is a report")
    }

    #[test]
    fn a_fork_skipped_by_the_syscall_programs_recursion_guard_is_allowed_for() {
        let r = report();
        let (result, detail) = time_check("fentry", META, &[], Some(&r));
        assert_eq!(result, Ok(()), "{detail}");
        assert!(detail.contains("1 runs missed by recursion"), "{detail}");
        assert!(detail.contains("(within [-1, 4])"), "{detail}");
    }

    /// Two reports of a mode with the given runs (alloc, free, empty) of
    /// the slab programs and the floor between them.
    fn with_runs(alloc: u64, free: u64, empty: u64) -> (Report, Report) {
        let mut a = report();
        let mut b = report();
        for (r, k) in [(&mut a, 0), (&mut b, 1)] {
            if let Some(c) = r.cost.as_mut() {
                let Some(mut base) = c.programs.get("kmem_cache_free").cloned() else {
                    continue;
                };
                for (name, n) in [
                    ("kmem_cache_alloc", alloc),
                    ("kmem_cache_free", free),
                    (FLOOR_PROGRAM, empty),
                ] {
                    base.runs = 1_000 + k * n;
                    c.programs.insert(name.to_owned(), base);
                }
            }
        }
        (a, b)
    }

    #[test]
    fn a_silent_alloc_tracepoint_is_told_from_a_skipping_program() {
        // The arm64 7.3 run, from the workload's start to the hold point:
        // ours 286 allocs and 2,492 frees, the empty program 2,777 on both.
        let (a, b) = with_runs(286, 2_492, 2_777);
        assert!(alloc_tracepoint_silent(&a, &b));
        // Ours skipped where the empty program ran: ours to blame.
        let (a, b) = with_runs(286, 2_492, 2_492 + 2_600);
        assert!(!alloc_tracepoint_silent(&a, &b));
        // A normal run: allocations about as many as frees.
        let (a, b) = with_runs(2_600, 2_492, 5_092);
        assert!(!alloc_tracepoint_silent(&a, &b));
        // No floor beside ours: nothing to tell it by.
        let (a, b) = with_runs(286, 2_492, 0);
        assert!(!alloc_tracepoint_silent(&a, &b));
    }

    #[test]
    fn a_drift_names_what_the_slab_programs_saw() {
        // As seen once on arm64 7.3 (fentry): the alloc tracepoint ran for
        // neither program while the frees went on.
        let mut a = report();
        let mut b = report();
        for r in [&mut a, &mut b] {
            // The fixture's run had no floor program beside ours.
            if let Some(c) = r.cost.as_mut()
                && let Some(mut empty) = c.programs.get("kmem_cache_free").cloned()
            {
                empty.runs = 1_000;
                c.programs.insert(FLOOR_PROGRAM.to_owned(), empty);
            }
        }
        if let Some(c) = b.cost.as_mut() {
            for (name, more) in [
                ("kmem_cache_alloc", 3_119),
                ("kmem_cache_free", 54_221),
                (FLOOR_PROGRAM, 57_354),
            ] {
                if let Some(p) = c.programs.get_mut(name) {
                    p.runs += more;
                }
            }
        }
        if let Some(o) = b.objects.get_mut("anon_vma") {
            o.frees += 9_536;
        }
        let s = slab_runs(&a, &b);
        assert!(
            s.contains("runs of kmem_cache_alloc 3119, kmem_cache_free 54221, the empty program (both) 57354; allocations seen 0, frees 9536"),
            "{s}"
        );
    }

    /// The fixture's walks: 126 + 126 by compaction, 3 by DAMON (2 + 1).
    fn set_walks(r: &mut Report, caller: &str, walks: impl Fn(u64) -> u64) {
        if let Some(t) = r.time.as_mut() {
            for c in &mut t.rmap_walks.by_caller {
                if c.caller == caller {
                    c.walks = walks(c.walks);
                }
            }
        }
    }

    #[test]
    fn damon_walks_in_the_gaps_are_compared_apart() {
        // As on arm64 7.3 in CI: kdamond walked 20 more while only
        // rmapwatch was watching. Without the guest's kdamond count the
        // cell fails as it did there; with it, the rest is exact.
        let mut r = report();
        set_walks(&mut r, "damon_folio_young_one", |_| 22);
        let (result, _) = time_check("fentry", META, &[], Some(&r));
        let e = result.expect_err("275 vs 253 without kdamond's count");
        assert!(
            e.contains("rmapwatch 275 vs the guest's kprobe event 253"),
            "{e}"
        );
        assert!(e.contains("damon_folio_young_one 22"), "{e}");
        let meta = META.replace("rw=253", "rw=253 rwd=1");
        let (result, detail) = time_check("fentry", &meta, &[], Some(&r));
        assert_eq!(result, Ok(()), "{detail}");
        assert!(detail.contains("but DAMON's: 252 vs 252"), "{detail}");
        assert!(detail.contains("DAMON's 23 vs kdamond's 1"), "{detail}");
    }

    #[test]
    fn fewer_damon_walks_than_kdamond_hits_fail() {
        let r = report();
        let meta = META.replace("rw=253", "rw=253 rwd=4");
        let (result, _) = time_check("fentry", &meta, &[], Some(&r));
        let e = result.expect_err("3 DAMON walks < 4 kdamond hits");
        assert!(
            e.contains("rmapwatch 3 < the guest's kdamond hits 4"),
            "{e}"
        );
    }

    #[test]
    fn a_compaction_walk_too_many_still_fails_beside_damon() {
        let mut r = report();
        set_walks(&mut r, "try_to_migrate_one", |w| w + 10);
        let meta = META.replace("rw=253", "rw=253 rwd=1");
        let (result, _) = time_check("fentry", &meta, &[], Some(&r));
        let e = result.expect_err("262 vs 252 with slack 6");
        assert!(
            e.contains("rmap walks but DAMON's: rmapwatch 262 vs the guest's kprobe event 252"),
            "{e}"
        );
    }

    /// The fixture's report with the programs' recursion misses set: those
    /// of `missed`, and 0 for every other program.
    fn with_misses(missed: &[(&str, u64)]) -> Report {
        let mut r = report();
        if let Some(c) = r.cost.as_mut() {
            for (name, p) in &mut c.programs {
                p.recursion_misses = missed
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |&(_, m)| m);
            }
        }
        r
    }

    #[test]
    fn a_fork_whose_sched_process_fork_run_was_missed_is_counted_as_missed() {
        let r = with_misses(&[("sched_process_fork", 1)]);
        let (result, detail) = time_check("fentry", META, &[], Some(&r));
        assert_eq!(result, Ok(()), "{detail}");
        assert!(
            detail.contains("(1 runs missed by recursion, counted)"),
            "{detail}"
        );
    }

    #[test]
    fn a_fork_missed_without_a_counted_recursion_miss_fails() {
        let r = with_misses(&[]);
        let (result, _) = time_check("fentry", META, &[], Some(&r));
        let e = result.expect_err("one dup_mmap short with no miss counted");
        assert!(
            e.contains("rmapwatch 305 vs the guest's kprobe event 306"),
            "{e}"
        );
    }
}
