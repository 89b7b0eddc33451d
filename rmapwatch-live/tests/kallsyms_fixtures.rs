//! Symbol lookups on kallsyms excerpts of the real kernels of the matrix
//! (each site, hook and marker symbol and its successor, dumped by the
//! guests of `cargo xtask vm-test --fixtures`).
use std::path::PathBuf;

use rmapwatch_engine::hooks::HOOKS;
use rmapwatch_live::kernel::{Kallsyms, args};

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kallsyms");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_kernel_has_its_sites_and_hooks() {
    let all = fixtures();
    // 4 series x 2 architectures.
    assert_eq!(
        all.len(),
        8,
        "{:?}",
        all.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (name, text) in &all {
        let k = Kallsyms::parse(text, "0").unwrap();
        for site in rmapwatch_common::site::NAMES {
            let r = k.ranges(site);
            assert!(!r.is_empty(), "{name}: no range for {site}");
            assert!(
                r.iter().all(|&(a, b)| a < b && b - a < 1 << 16),
                "{name}: {site} {r:x?}"
            );
        }
        assert!(k.addr("anon_vma_ctor").is_some(), "{name}: anon_vma_ctor");
        // Every hook but the PMD one (added in 6.8) resolves to an entry
        // point, through its older names where it has them.
        for h in HOOKS
            .iter()
            .filter(|h| h.id != rmapwatch_common::hook::RMAP_PMD)
        {
            let found = std::iter::once(h.name)
                .chain(h.aliases.iter().copied())
                .find_map(|n| k.entry(n));
            assert!(found.is_some(), "{name}: no entry for {}", h.name);
        }
    }
}

#[test]
fn the_slab_path_follows_each_kernel() {
    for (name, text) in fixtures() {
        let k = Kallsyms::parse(&text, "0").unwrap();
        let preempt_rcu = k.has("__rcu_read_lock");
        let release = if name.starts_with("7.") {
            "7.3"
        } else {
            "6.12"
        };
        let perf = args::raw_tracepoints_preemptible(release, Some(preempt_rcu));
        // Debian's amd64 cloud kernels are PREEMPT_DYNAMIC (so
        // PREEMPT_RCU) from 6.1, its arm64 ones voluntary; only 7.x runs
        // raw tracepoints preemptible.
        assert_eq!(perf, name.starts_with("7.") && preempt_rcu, "{name}");
        if name.ends_with("x86_64") && name != "5.10-x86_64" {
            assert!(preempt_rcu, "{name}: PREEMPT_RCU");
        }
    }
}

/// `RMAPWATCH_LEAVE_OUT_SITES`: a left-out site has no range in any
/// kernel's `CONFIG`, and what is left still classifies the others.
#[test]
fn a_left_out_site_gets_no_range() {
    use rmapwatch_common::site;
    use rmapwatch_live::kernel::program_config;
    for (name, text) in fixtures() {
        let k = Kallsyms::parse(&text, "0").unwrap();
        let layout = rmapwatch_parse::btf::Layout::default();
        let all = program_config(&k, &layout, &[]).unwrap();
        let less = program_config(&k, &layout, &["__anon_vma_prepare"]).unwrap();
        let prepare = k.ranges("__anon_vma_prepare");
        assert!(!prepare.is_empty(), "{name}");
        assert_eq!(
            less.nr_ranges as usize + prepare.len(),
            all.nr_ranges as usize,
            "{name}"
        );
        for (start, _) in prepare {
            assert_eq!(all.classify(start), Some(site::PREPARE), "{name}");
            assert_eq!(less.classify(start), None, "{name}");
        }
        for (start, _) in k.ranges("anon_vma_fork") {
            assert_eq!(less.classify(start), Some(site::FORK), "{name}");
        }
    }
}
