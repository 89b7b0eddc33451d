//! `cargo xtask designs-table`: every recording at hand (the matrix
//! guests', kept by vm-test next to their serial logs, and this host's
//! fixture) replayed by the host's rmapwatch, its last report's designs
//! laid out as the ANON_VMA_LAZY cover letter's two tables ("after boot":
//! system-wide; "after launching apps": the zygote tree's processes, from
//! the recording's meta), today against each design.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use rmapwatch_engine::{design::Holding, report::Report};

/// The designs in the report's order.
const DESIGNS: [&str; 4] = ["today", "lazy", "cow_context", "ideal"];
/// The series' reported changes (cover letter): anon_vma -92..-97%,
/// anon_vma_chain -50..-57%.
const SERIES_ANON_VMA: (f64, f64) = (-0.97, -0.92);
const SERIES_AVC: (f64, f64) = (-0.57, -0.50);

/// The recordings: the guests' (`.cache/vm/DEB-ARCH/rec-*.rmw`), the
/// committed guest fixtures (`vm-ARCH-SERIES.rmw`) of kernels no guest
/// recorded here (the matrix no longer records on arm64's 6.12 and 6.1),
/// then this host's fixture(s) (`rmapwatch/tests/fixtures/host-*.rmw`).
pub fn recordings(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in [root.join(".cache/vm/arm64"), root.join(".cache/vm/amd64")] {
        out.extend(rmw_files(&dir, "rec-")?);
    }
    let fixtures = root.join("rmapwatch/tests/fixtures");
    let recorded: Vec<String> = out.iter().filter_map(|p| file_name(p)).collect();
    for f in rmw_files(&fixtures, "vm-")? {
        if !file_name(&f).is_some_and(|n| recorded_here(&recorded, &n)) {
            out.push(f);
        }
    }
    out.extend(rmw_files(&fixtures, "host-")?);
    Ok(out)
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned)
}

/// Whether a guest fixture `vm-ARCH-SERIES.rmw` has a recording of its own
/// among `recorded` (`rec-RELEASE-ARCH.rmw`, RELEASE of that series).
fn recorded_here(recorded: &[String], fixture: &str) -> bool {
    let Some((arch, series)) = fixture
        .strip_prefix("vm-")
        .and_then(|r| r.strip_suffix(".rmw"))
        .and_then(|r| r.split_once('-'))
    else {
        return false;
    };
    recorded
        .iter()
        .any(|r| r.starts_with(&format!("rec-{series}.")) && r.ends_with(&format!("-{arch}.rmw")))
}

fn rmw_files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".rmw"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A path with `.rmw` swapped for `ext` (kernel releases have dots).
fn sibling(rmw: &Path, ext: &str) -> PathBuf {
    let name = rmw.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    rmw.with_file_name(format!("{}.{ext}", name.trim_end_matches(".rmw")))
}

/// The zygote tree's pids from a meta's `RMW-ZYG proc PID PPID ROLE EXEC
/// NAME` lines.
fn zygote_pids(meta: &str) -> BTreeSet<u32> {
    meta.lines()
        .filter_map(|l| l.strip_prefix("RMW-ZYG proc "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The last report of `host_bin report --from FILE --json`.
fn replay(host_bin: &Path, rmw: &Path) -> anyhow::Result<Report> {
    let out = Command::new(host_bin)
        .args(["report", "--from"])
        .arg(rmw)
        .arg("--json")
        .output()
        .with_context(|| format!("running {}", host_bin.display()))?;
    if !out.status.success() {
        bail!(
            "replaying {}: {}",
            rmw.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .with_context(|| format!("{}: no report", rmw.display()))?;
    serde_json::from_str(last).with_context(|| format!("{}: the last report", rmw.display()))
}

/// Slot sizes of anon_vma and anon_vma_chain from today's rule ("the slab
/// slots (A B anon_vma, C B anon_vma_chain)").
fn slots(r: &Report) -> Option<(u64, u64)> {
    let rule = r
        .designs
        .iter()
        .find(|d| d.name == "today")?
        .rules
        .iter()
        .find_map(|x| x.split("slab slots (").nth(1))?;
    let mut w = rule.split_whitespace();
    let a = w.next()?.parse().ok()?;
    let c = w.nth(2)?.parse().ok()?;
    Some((a, c))
}

fn kb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

fn pct(before: u64, after: u64) -> Option<f64> {
    (before > 0).then(|| (after as f64 - before as f64) / before as f64)
}

fn pct_s(c: Option<f64>) -> String {
    c.map_or_else(|| "-".to_owned(), |c| format!("{:+.1}%", c * 100.0))
}

/// One scope's table: rows of objects and KB, a column per design.
fn scope_table(h: &BTreeMap<&str, Holding>, slot: Option<(u64, u64)>, blind: &[&str]) -> String {
    let today = h.get("today").cloned().unwrap_or_default();
    let mut kinds: Vec<String> = vec!["anon_vma".into(), "anon_vma_chain".into()];
    for d in DESIGNS {
        for k in h.get(d).map(|x| x.objects.keys()).into_iter().flatten() {
            if !kinds.iter().any(|x| x == k) {
                kinds.push(k.to_string());
            }
        }
    }
    let mut t = String::from(
        "| Object | today | lazy | change | cow_context | change | ideal | change |\n",
    );
    t.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
    let cell =
        |d: &str, f: &dyn Fn(&Holding) -> Option<u64>, today_v: Option<u64>| -> (String, String) {
            if blind.contains(&d) {
                return ("-".into(), "-".into());
            }
            match h.get(d).and_then(f) {
                Some(v) => (
                    v.to_string(),
                    today_v.map_or_else(|| "".into(), |t| pct_s(pct(t, v))),
                ),
                None => ("".into(), "".into()),
            }
        };
    let row = |t: &mut String, label: &str, f: &dyn Fn(&Holding) -> Option<u64>, kbs: bool| {
        let tv = f(&today);
        let fmt = |v: &str| -> String {
            if kbs {
                v.parse::<u64>().map_or_else(|_| v.to_owned(), kb)
            } else {
                v.to_owned()
            }
        };
        let _ = write!(
            t,
            "| {label} | {} ",
            tv.map_or_else(String::new, |v| fmt(&v.to_string()))
        );
        for d in &DESIGNS[1..] {
            let (v, c) = cell(d, f, tv);
            let _ = write!(t, "| {} | {c} ", fmt(&v));
        }
        t.push_str("|\n");
    };
    for k in &kinds {
        let k2 = k.clone();
        row(
            &mut t,
            k,
            &move |x: &Holding| x.objects.get(k2.as_str()).copied(),
            false,
        );
    }
    if let Some((sa, sc)) = slot {
        row(
            &mut t,
            &format!("anon_vma (KB, {sa} B slots)"),
            &move |x: &Holding| Some(x.count("anon_vma") * sa),
            true,
        );
        row(
            &mut t,
            &format!("anon_vma_chain (KB, {sc} B slots)"),
            &move |x: &Holding| Some(x.count("anon_vma_chain") * sc),
            true,
        );
        row(
            &mut t,
            "everything else (KB)",
            &move |x: &Holding| {
                Some(
                    x.bytes
                        .saturating_sub(x.count("anon_vma") * sa + x.count("anon_vma_chain") * sc),
                )
            },
            true,
        );
    }
    row(&mut t, "**total (KB)**", &|x: &Holding| Some(x.bytes), true);
    t
}

/// Whether `c` is within the series' range `r` (both negative).
fn within(c: Option<f64>, r: (f64, f64)) -> bool {
    c.is_some_and(|c| c >= r.0 - 1e-9 && c <= r.1 + 1e-9)
}

/// The generated block: per recording, the two tables and what matches
/// the series.
pub fn generate(root: &Path, host_bin: &Path) -> anyhow::Result<String> {
    let recs = recordings(root)?;
    if recs.is_empty() {
        bail!("no recording: run cargo xtask vm-test (guests) or cargo xtask fixtures (host)");
    }
    let mut out = String::new();
    let mut verdicts = String::new();
    for rmw in &recs {
        let name = rmw
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .trim_end_matches(".rmw")
            .to_owned();
        let r = replay(host_bin, rmw)?;
        let meta = std::fs::read_to_string(sibling(rmw, "meta")).unwrap_or_default();
        let _ = writeln!(
            out,
            "### `{name}`: {} {}\n",
            r.kernel.release, r.kernel.arch
        );
        if r.designs.is_empty() {
            let _ = writeln!(out, "No walk, no designs.\n");
            continue;
        }
        let slot = slots(&r);
        let blind: Vec<&str> = r
            .designs
            .iter()
            .filter(|d| d.blind())
            .map(|d| d.name.as_str())
            .collect();
        let system: BTreeMap<&str, Holding> = r
            .designs
            .iter()
            .map(|d| (d.name.as_str(), d.system.clone()))
            .collect();
        let _ = writeln!(
            out,
            "System-wide at the last walk (the cover letter's \"after boot\"; {} processes):\n",
            r.processes.len()
        );
        out.push_str(&scope_table(&system, slot, &blind));
        let pids = zygote_pids(&meta);
        let mut tree: BTreeMap<&str, Holding> = BTreeMap::new();
        let mut found = 0;
        for p in r.processes.iter().filter(|p| pids.contains(&p.pid)) {
            found += 1;
            for s in &p.designs {
                if let Some(d) = DESIGNS.iter().find(|d| **d == s.name) {
                    tree.entry(d).or_default().merge(&s.holding);
                }
            }
        }
        if pids.is_empty() {
            out.push_str(
                "\nNo zygote tree in this recording (recorded before the guests ran one).\n",
            );
        } else {
            let _ = writeln!(
                out,
                "\nThe zygote tree (`rmw-workload --zygote`: the cover letter's \"after \
                 launching apps\"; {found} of its {} processes in the report):\n",
                pids.len()
            );
            out.push_str(&scope_table(&tree, slot, &blind));
        }
        if let Some(g) = r
            .designs
            .iter()
            .find(|d| d.name == "lazy")
            .and_then(|d| d.rules.iter().find(|x| x.starts_with("vm_area_struct")))
        {
            let _ = writeln!(out, "\nLAZY's `vm_area_struct`: {g}.");
        }
        out.push('\n');
        for (scope, h) in [("system", &system), ("zygote tree", &tree)] {
            let (Some(t), Some(l)) = (h.get("today"), h.get("lazy")) else {
                continue;
            };
            let a = pct(t.count("anon_vma"), l.count("anon_vma"));
            let c = pct(t.count("anon_vma_chain"), l.count("anon_vma_chain"));
            let b = pct(t.bytes, l.bytes);
            let yes = |x| if x { "within" } else { "outside" };
            let _ = writeln!(
                verdicts,
                "| `{name}` | {scope} | {} ({}) | {} ({}) | {} |",
                pct_s(a),
                yes(within(a, SERIES_ANON_VMA)),
                pct_s(c),
                yes(within(c, SERIES_AVC)),
                pct_s(b),
            );
        }
    }
    let mut block = String::from(
        "LAZY against the series' reported changes (anon_vma -92..-97%, anon_vma_chain \
         -50..-57%; objects, which is the slab KB on one kernel), and LAZY's bytes with its \
         `vm_area_struct` growth:\n\n| Recording | Scope | anon_vma | anon_vma_chain | bytes |\n\
         |---|---|--:|--:|--:|\n",
    );
    block.push_str(&verdicts);
    block.push('\n');
    block.push_str(&out);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_tree_is_every_proc_line_of_the_meta() {
        let meta = "regions 0x1 0x2\nready 10 11\nRMW-ZYG proc 20 1 zygote 0 rmw-zygote\n\
                    RMW-ZYG proc 21 20 app 0 rmw-app0\nRMW-ZYG proc 22 20 exec 1 rmw-app2\n\
                    RMW-ZYG ready 20 21 22\n";
        assert_eq!(zygote_pids(meta), BTreeSet::from([20, 21, 22]));
        assert!(zygote_pids("regions 0x1 0x2\nready 10 11\n").is_empty());
    }

    #[test]
    fn a_guest_fixture_stands_in_only_for_a_kernel_not_recorded_here() {
        let recorded = [
            "rec-6.12.118+deb12-cloud-amd64-x86_64.rmw".to_owned(),
            "rec-5.10.0-32-cloud-arm64-aarch64.rmw".to_owned(),
        ];
        assert!(recorded_here(&recorded, "vm-x86_64-6.12.rmw"));
        assert!(recorded_here(&recorded, "vm-aarch64-5.10.rmw"));
        assert!(!recorded_here(&recorded, "vm-aarch64-6.12.rmw"));
        assert!(!recorded_here(&recorded, "vm-x86_64-6.1.rmw"));
        // 6.1 is no prefix of 6.12's release.
        assert!(!recorded_here(
            &["rec-6.12.1-cloud-amd64-x86_64.rmw".to_owned()],
            "vm-x86_64-6.1.rmw"
        ));
        assert!(!recorded_here(&recorded, "host-x86_64.rmw"));
    }

    #[test]
    fn a_recordings_meta_keeps_the_release_dots() {
        assert_eq!(
            sibling(Path::new("/c/rec-6.12.1+deb12-x86_64.rmw"), "meta"),
            Path::new("/c/rec-6.12.1+deb12-x86_64.meta")
        );
    }

    #[test]
    fn the_series_ranges_hold_their_ends() {
        assert!(within(Some(-0.92), SERIES_ANON_VMA));
        assert!(within(Some(-0.97), SERIES_ANON_VMA));
        assert!(!within(Some(-0.46), SERIES_ANON_VMA));
        assert!(!within(None, SERIES_AVC));
        assert_eq!(pct_s(pct(200, 100)), "-50.0%");
    }
}
