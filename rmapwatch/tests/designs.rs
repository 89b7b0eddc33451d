//! The designs on the running kernel, over a workload whose numbers are
//! known by construction (`rmw-workload --zygote --zygote-exit`: an
//! Android-like tree whose zygote exits under its apps), each compared
//! exactly with the report, and with what /proc says independently:
//! contexts (live and the dead zygote's, pinned by the apps it forked
//! without exec), remap entries per process (smaps' COW'd private file
//! mappings, pieces of their pgoff ranges, the stack, the moved region),
//! and the ideal's VMAs (this test's own pagemap reading).
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufReader, Read as _},
    os::unix::fs::FileExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use rmapwatch_engine::report::{ProcessReport, Report};

#[derive(Debug)]
struct Proc {
    pid: u32,
    ppid: u32,
    role: String,
}

/// The tree, once its zygote said `ready` and exited.
struct Tree {
    /// The zygote's stdin: the apps hold on it (`wait` would close it).
    hold: Option<std::process::ChildStdin>,
    zygote: u32,
    procs: Vec<Proc>,
    libs: u64,
    heap: u64,
    moved: (u32, u64),
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

impl Tree {
    fn start() -> Self {
        let mut child = Command::new(&*WORKLOAD)
            .args(["--zygote", "--zygote-exit"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let hold = child.stdin.take();
        let mut out = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_to_string(&mut out)
            .unwrap();
        // The zygote exits after `ready`: its stdout ends there.
        assert!(child.wait().unwrap().success(), "{out}");
        let mut t = Self {
            hold,
            zygote: 0,
            procs: Vec::new(),
            libs: 0,
            heap: 0,
            moved: (0, 0),
        };
        for line in out.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["proc", pid, ppid, role, ..] => t.procs.push(Proc {
                    pid: pid.parse().unwrap(),
                    ppid: ppid.parse().unwrap(),
                    role: (*role).to_owned(),
                }),
                ["moved", pid, from, ..] => t.moved = (pid.parse().unwrap(), hex(from)),
                [
                    "zygote",
                    pid,
                    "apps",
                    _,
                    "helpers",
                    _,
                    "execs",
                    _,
                    "files",
                    l,
                    "heap",
                    h,
                ] => {
                    t.zygote = pid.parse().unwrap();
                    t.libs = l.parse().unwrap();
                    t.heap = h.parse().unwrap();
                }
                _ => {}
            }
        }
        assert!(t.zygote != 0 && t.moved.0 != 0, "{out}");
        t
    }

    fn live(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.role != "zygote")
    }

    /// Releases the apps (they hold on the zygote's stdin) and reaps them:
    /// this test is their subreaper.
    fn finish(mut self) {
        drop(self.hold.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        for p in self.live().filter(|p| p.role != "helper") {
            loop {
                let mut status = 0;
                // SAFETY: waitpid on a child of this process (re-parented).
                let r =
                    unsafe { libc::waitpid(p.pid.cast_signed(), &raw mut status, libc::WNOHANG) };
                if r != 0 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One VMA of /proc/PID/smaps.
#[derive(Debug)]
struct Map {
    start: u64,
    end: u64,
    private: bool,
    offset: u64,
    file: bool,
    name: String,
    anonymous_kb: u64,
}

fn smaps(pid: u32) -> Vec<Map> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out: Vec<Map> = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let Some((a, b)) = w.first().and_then(|r| r.split_once('-'))
            && w.len() >= 5
            && u64::from_str_radix(a, 16).is_ok()
        {
            out.push(Map {
                start: hex(a),
                end: hex(b),
                private: w[1].ends_with('p'),
                offset: hex(w[2]),
                file: w[4] != "0",
                name: w.get(5).copied().unwrap_or("").to_owned(),
                anonymous_kb: 0,
            });
        } else if let (Some(&"Anonymous:"), Some(kb)) = (w.first(), w.get(1))
            && let Some(m) = out.last_mut()
        {
            m.anonymous_kb = kb.parse().unwrap();
        }
    }
    out
}

/// What COW context would hold for one process, read from /proc alone:
/// (remap entries, offset arrays). A private file mapping with COW'd pages
/// is a range of its file offsets; ranges overlapping in pgoff split into
/// pieces, a piece with several offsets holds an array; the stack and the
/// moved region are entries of their own (their pgoff is far above any
/// file's). `forked`: the PoC's fork turns every one-offset piece into an
/// array too.
fn cow_from_proc(maps: &[Map], moved: bool, forked: bool) -> (u64, u64) {
    let page = 4096;
    let mut points: Vec<(u64, i64, u64)> = Vec::new();
    let mut anon = u64::from(moved);
    for m in maps.iter().filter(|m| m.private && m.anonymous_kb > 0) {
        if m.file {
            let (lo, n) = (m.offset / page, (m.end - m.start) / page);
            let key = (m.start / page).wrapping_sub(lo);
            points.push((lo, 1, key));
            points.push((lo + n, -1, key));
        } else if m.name == "[stack]" {
            anon += 1;
        }
    }
    points.sort_unstable();
    let (mut pieces, mut arrays) = (0, 0);
    let mut open: BTreeMap<u64, i64> = BTreeMap::new();
    let mut i = 0;
    while i < points.len() {
        let at = points[i].0;
        while i < points.len() && points[i].0 == at {
            *open.entry(points[i].2).or_default() += points[i].1;
            i += 1;
        }
        open.retain(|_, n| *n > 0);
        if i < points.len() && !open.is_empty() {
            pieces += 1;
            arrays += u64::from(open.len() > 1 || forked);
        }
    }
    // The anonymous entries: one offset each.
    (pieces + anon, arrays + if forked { anon } else { 0 })
}

/// VMAs mapping a present anonymous page that another mapping maps too,
/// by this test's own reading of /proc/PID/pagemap.
fn shared_anon_vmas(pid: u32, maps: &[Map]) -> u64 {
    let pm = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut n = 0;
    for m in maps.iter().filter(|m| m.anonymous_kb > 0) {
        let pages = ((m.end - m.start) / 4096) as usize;
        let mut buf = vec![0u8; pages * 8];
        pm.read_exact_at(&mut buf, m.start / 4096 * 8).unwrap();
        let shared = buf.chunks_exact(8).any(|e| {
            let e = u64::from_le_bytes(e.try_into().unwrap());
            e >> 63 & 1 == 1 && e >> 61 & 1 == 0 && e >> 56 & 1 == 0
        });
        n += u64::from(shared);
    }
    n
}

fn design<'a>(p: &'a ProcessReport, name: &str) -> &'a rmapwatch_engine::design::Share {
    p.designs.iter().find(|d| d.name == name).unwrap()
}

fn count(p: &ProcessReport, d: &str, kind: &str) -> u64 {
    design(p, d).holding.count(kind)
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn designs_on_a_zygote_tree_are_what_it_built_and_what_proc_says() {
    require_root();
    // SAFETY: prctl with plain integers; the apps, re-parented when the
    // zygote exits, come to this process to be reaped.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let rw = Rmapwatch::start(&[]);
    let tree = Tree::start();
    let r: Report = rw.stop();
    assert_eq!(
        r.designs
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["today", "lazy", "cow_context", "ideal"]
    );
    let cow = &r.designs[2];
    // The dead zygote, kept by the apps forked without exec and their
    // helpers (not by the exec'd apps: exec starts a new root).
    let pinners: BTreeSet<u32> = tree
        .live()
        .filter(|p| p.role != "exec")
        .map(|p| p.pid)
        .collect();
    let zygote = cow
        .pinned
        .iter()
        .flatten()
        .find(|p| p.pid == tree.zygote)
        .unwrap_or_else(|| panic!("the zygote is not pinned: {:?}", cow.pinned));
    assert_eq!(zygote.comm, "rmw-zygote");
    assert_eq!(
        zygote.pinned_by.iter().copied().collect::<BTreeSet<_>>(),
        pinners
    );
    for p in tree.live() {
        let pr = process(&r, p.pid);
        let maps = smaps(p.pid);
        assert_eq!(count(pr, "cow_context", "cow_context"), 1, "{p:?}");
        // By construction, inside the printed ranges: L COW'd library
        // pages (not in an exec'd app), the moved region in app 0.
        let cowed_libs = maps
            .iter()
            .filter(|m| m.file && m.private && m.anonymous_kb > 0 && m.name.contains("rmw-zygote"))
            .count() as u64;
        let want_libs = if p.role == "exec" { 0 } else { tree.libs };
        assert_eq!(cowed_libs, want_libs, "{p:?}");
        // Against /proc, exactly.
        // An app that forked a helper (the PoC's fork re-adds its offsets).
        let forked = tree.live().any(|h| h.role == "helper" && h.ppid == p.pid);
        let (remaps, arrays) = cow_from_proc(&maps, tree.moved.0 == p.pid, forked);
        assert_eq!(
            (
                count(pr, "cow_context", "remap_entry"),
                count(pr, "cow_context", "offset_array")
            ),
            (remaps, arrays),
            "{p:?}: remap entries and offset arrays against /proc"
        );
        // The ideal: this test's pagemap reading, and by construction at
        // least the library and heap regions outside an exec'd app.
        let shared = shared_anon_vmas(p.pid, &maps);
        assert_eq!(
            count(pr, "ideal", "rmap_vma"),
            shared,
            "{p:?}: the ideal against pagemap"
        );
        if p.role == "exec" {
            assert_eq!(shared, 0, "{p:?}");
        } else {
            assert!(shared >= tree.libs + tree.heap, "{p:?}: {shared}");
        }
        // No anon_vma, no AVC under COW context; LAZY and today as the
        // snapshot saw them.
        assert_eq!(count(pr, "cow_context", "anon_vma"), 0);
        assert_eq!(
            count(pr, "today", "anon_vma"),
            pr.snapshot.unwrap().anon_vma.objects
        );
    }
    let ideal = r.designs[3].coverage.unwrap();
    assert_eq!(ideal.read, ideal.needed, "report reads pagemap whole");
    tree.finish();
}
