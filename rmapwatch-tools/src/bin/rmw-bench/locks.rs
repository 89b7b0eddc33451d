//! The cost of the lock-contention programs (root): rmapwatch's
//! `contention_begin/end` raw tracepoint programs against an empty raw
//! tracepoint program (the object's `empty`, loaded alone) and empty
//! classic tracepoint programs (bpftrace), attached to the same two tracepoints in
//! the same run, during a storm of siblings forking from one parent's
//! anon_vmas (anon_vma rwsem waits, and every other contended lock of the
//! machine: the non-matching path). Per round: ns per run of each, from
//! `bpf_stats`; the ratio is ours over the empty program's.
use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::stats::{line, stats};

/// bpftrace 0.17 (Debian's) cannot attach raw tracepoints by name: the
/// empty programs are classic tracepoint programs. `bpf_stats` times the
/// program alone in both kinds (the dispatch around it is not counted).
const EMPTY: &str = "tracepoint:lock:contention_begin {} tracepoint:lock:contention_end {}";

fn ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// (runs, run ns) of the programs in `set` (by id) or named `name`.
fn cost(pick: impl Fn(&aya::programs::ProgramInfo) -> bool) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| pick(p))
        .fold((0, 0), |(r, n), p| {
            (
                r + p.run_count(),
                n + u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
            )
        })
}

fn named(p: &aya::programs::ProgramInfo, names: &[&str]) -> bool {
    p.name_as_str().is_some_and(|n| names.contains(&n))
}

/// `rounds` rounds of the sibling storm (8 siblings x `forks` forks of
/// `regions` written VMAs).
///
/// # Errors
/// Not root, bpftrace or the binaries missing, or a storm fails.
pub fn run(rounds: usize, forks: usize, regions: usize) -> anyhow::Result<()> {
    let bin = crate::storm::rmapwatch_bin()?;
    let workload = bin.with_file_name("rmw-workload");
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (root, kernel 5.8+)")?;
    println!(
        "lock contention: 8 siblings x {forks} forks of {regions} written VMAs shared with their \
         parent; rmapwatch's contention_begin/end against empty programs on the same \
         tracepoints, same run, {rounds} rounds"
    );
    let mut ratios = Vec::new();
    let mut raw_ns = Vec::new();
    let mut raw_ratios = Vec::new();
    // [rmapwatch attached first, the floor first].
    let mut by_order: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut begin_ns = Vec::new();
    let mut end_ns = Vec::new();
    let mut ours_ns = Vec::new();
    let mut empty_ns = Vec::new();
    let mut waits = 0u64;
    let mut begins = 0u64;
    let mut dropped = 0u64;
    for round in 0..rounds {
        eprint!("\rrmw-bench: locks: round {}/{rounds} ", round + 1);
        // The floor first on odd rounds, rmapwatch first on even ones:
        // programs on one tracepoint run in attach order, and the first
        // pays for what the tracepoint touches first.
        let floor_first = round % 2 == 1;
        let mut floor = None;
        if floor_first {
            floor = Some(rmapwatch_live::loader::attach_floor(&[
                "contention_begin",
                "contention_end",
            ])?);
        }
        let rw =
            crate::child::rmapwatch_report(&bin, &["--ring-buffer-kb", "131072"], &[], |_| Ok(()))?;
        let before = ids();
        let (bt, _out) = crate::child::bpftrace(EMPTY)?;
        if !floor_first {
            floor = Some(rmapwatch_live::loader::attach_floor(&[
                "contention_begin",
                "contention_end",
            ])?);
        }
        let raw0 = cost(|p| named(p, &[rmapwatch_live::loader::FLOOR_PROGRAM]));
        let ours0 = cost(|p| named(p, &["contention_begi", "contention_end"]));
        let begin0 = cost(|p| named(p, &["contention_begi"]));
        let empty_ids: BTreeSet<u32> = ids().difference(&before).copied().collect();
        let empty0 = cost(|p| empty_ids.contains(&p.id()));
        let st = Command::new(&workload)
            .args(["--siblings", "8", "--storm", &forks.to_string()])
            .args(["--regions", &regions.to_string()])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("rmw-workload --siblings failed: {st}");
        }
        let ours1 = cost(|p| named(p, &["contention_begi", "contention_end"]));
        let raw1 = cost(|p| named(p, &[rmapwatch_live::loader::FLOOR_PROGRAM]));
        drop(floor);
        let (rruns, rns) = (raw1.0 - raw0.0, raw1.1 - raw0.1);
        let begin1 = cost(|p| named(p, &["contention_begi"]));
        let (bruns, bns) = (begin1.0 - begin0.0, begin1.1 - begin0.1);
        let empty1 = cost(|p| empty_ids.contains(&p.id()));
        drop(bt);
        let r = crate::child::report_of(rw)?;
        dropped += r.dropped_events.unwrap_or(0);
        waits += r.time.as_ref().map_or(0, |t| t.anon_vma_lock.waits);
        let (runs, ns) = (ours1.0 - ours0.0, ours1.1 - ours0.1);
        let (eruns, ens) = (empty1.0 - empty0.0, empty1.1 - empty0.1);
        if runs == 0 || eruns == 0 {
            bail!("no contention seen (ours {runs} runs, empty {eruns})");
        }
        begins += runs / 2;
        let (o, e) = (ns as f64 / runs as f64, ens as f64 / eruns as f64);
        ours_ns.push(o);
        if rruns > 0 {
            let r = rns as f64 / rruns as f64;
            raw_ns.push(r);
            raw_ratios.push(o / r);
            by_order[usize::from(floor_first)].push(o / r);
        }
        if bruns > 0 && runs > bruns {
            begin_ns.push(bns as f64 / bruns as f64);
            end_ns.push((ns - bns) as f64 / (runs - bruns) as f64);
        }
        empty_ns.push(e);
        ratios.push(o / e);
    }
    eprintln!();
    line(
        "lock contention: empty (bpftrace, classic)",
        "ns/run",
        stats(empty_ns),
    );
    if !raw_ns.is_empty() {
        line(
            "lock contention: empty (raw, rmapwatch's)",
            "ns/run",
            stats(raw_ns),
        );
    }
    line("lock contention: rmapwatch", "ns/run", stats(ours_ns));
    if !begin_ns.is_empty() {
        line(
            "lock contention: rmapwatch contention_begin",
            "ns/run",
            stats(begin_ns),
        );
        line(
            "lock contention: rmapwatch contention_end",
            "ns/run",
            stats(end_ns),
        );
    }
    line(
        "lock contention: rmapwatch / empty classic",
        "x",
        stats(ratios),
    );
    if !raw_ratios.is_empty() {
        line(
            "lock contention: rmapwatch / empty raw",
            "x",
            stats(raw_ratios),
        );
    }
    println!(
        "{:<44} {waits} anon_vma rwsem waits streamed of ~{begins} contended locks; \
         {dropped} events dropped",
        "lock contention: rmapwatch"
    );
    Ok(())
}
