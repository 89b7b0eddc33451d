//! Privileged tests of the walk's pagemap reading, on the running kernel: a
//! process writes every page of one region and forks a child that writes
//! some of them again (copy-on-write); a recorded walk gives each of the
//! two VMAs exactly its present anonymous pages and those the other one
//! maps too. `--no-pagemap` reads none.
mod common;

use std::process::Command;

use common::*;
use rmapwatch_engine::{
    input::Input,
    snapshot::{AnonPages, Vma, WalkCounts},
    stream,
};

/// Pages of the region the parent writes.
const PAGES: u64 = 64;
/// Of those, the pages the child writes again (its own copies).
const COW: u64 = 16;

/// The workload: one region of [`PAGES`] pages, written, and one child
/// that writes the first [`COW`] of them.
fn workload() -> Workload {
    Workload::start(&[
        "--regions",
        "1",
        "--pages",
        &PAGES.to_string(),
        "--cow-pages",
        &COW.to_string(),
        "--children",
        "1",
        "--noise",
        "0",
    ])
}

/// `rmapwatch record` for 2 s with `args`: the recording's inputs.
fn record(args: &[&str]) -> Vec<Input> {
    let file = std::env::temp_dir().join(format!("rmapwatch-pagemap-{}.rmw", std::process::id()));
    let out = Command::new(RMAPWATCH)
        .args(["record", "--force", "-t", "2", "-o"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    stream::decode_all(&bytes).unwrap_or_else(|(_, e)| panic!("the recording: {e}"))
}

/// The last whole walk of a recording: its VMAs and its counts.
fn last_walk(inputs: &[Input]) -> (Vec<Vma>, WalkCounts) {
    let mut walk = Vec::new();
    let mut last = None;
    for i in inputs {
        match i {
            Input::WalkBegin { .. } => walk.clear(),
            Input::WalkVmas { vmas, .. } => walk.extend(vmas.iter().cloned()),
            Input::WalkEnd { counts, error, .. } => {
                assert_eq!(error, &None);
                last = Some((std::mem::take(&mut walk), *counts));
            }
            _ => {}
        }
    }
    last.expect("the recording has a walk")
}

/// The region's VMA in process `pid`.
fn region(vmas: &[Vma], pid: u32, w: &Workload) -> Vma {
    let found: Vec<&Vma> = vmas
        .iter()
        .filter(|v| v.tgid == pid && v.start >= w.regions.0 && v.end <= w.regions.1)
        .collect();
    assert_eq!(found.len(), 1, "one region VMA in {pid}: {found:#?}");
    assert_ne!(found[0].anon_vma, 0, "written: it has an anon_vma");
    found[0].clone()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_walk_reads_the_pages_a_process_shares_with_its_fork_from_pagemap() {
    require_root();
    let w = workload();
    let inputs = record(&[]);
    let (vmas, counts) = last_walk(&inputs);
    let parent = region(&vmas, w.parent, &w);
    let child = region(&vmas, w.children[0], &w);
    w.finish();
    // Both map all PAGES; the child's COW copies and the parent's
    // originals of them are each mapped once, the rest by both.
    let expected = Some(AnonPages {
        present: PAGES,
        shared: PAGES - COW,
    });
    eprintln!(
        "parent {:?}, child {:?}; walk: {} VMAs read, {} failed, {} pages, {:.1} ms",
        parent.anon_pages,
        child.anon_pages,
        counts.pagemap_vmas,
        counts.pagemap_failed,
        counts.pagemap_pages,
        counts.pagemap_ns as f64 / 1e6
    );
    assert_eq!(parent.anon_pages, expected, "the parent's region");
    assert_eq!(child.anon_pages, expected, "the child's region");
    // `record` reads every VMA, without a budget.
    assert_eq!(counts.pagemap_skipped, 0);
    let read = vmas.iter().filter(|v| v.anon_pages.is_some()).count() as u64;
    assert_eq!(read, counts.pagemap_vmas);
    assert!(counts.pagemap_pages >= 2 * PAGES && counts.pagemap_ns > 0);
    // Only VMAs with an anon_vma are read.
    assert!(
        vmas.iter()
            .all(|v| v.anon_vma != 0 || v.anon_pages.is_none())
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn no_pagemap_leaves_every_vmas_pages_unread() {
    require_root();
    let w = workload();
    let inputs = record(&["--no-pagemap"]);
    let (vmas, counts) = last_walk(&inputs);
    let parent = region(&vmas, w.parent, &w);
    w.finish();
    assert_eq!(parent.anon_pages, None);
    assert!(vmas.iter().all(|v| v.anon_pages.is_none()));
    assert_eq!(
        (
            counts.pagemap_vmas,
            counts.pagemap_skipped,
            counts.pagemap_failed,
            counts.pagemap_pages,
            counts.pagemap_ns
        ),
        (0, 0, 0, 0, 0)
    );
}
