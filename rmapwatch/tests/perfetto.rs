//! `rmapwatch export --perfetto`: the committed fixtures exported and
//! decoded by an independent implementation (Perfetto's own generated
//! Python bindings, `tests/perfetto_decode.py`, in the venv `cargo xtask
//! setup` makes), every counter compared exactly with the replayed
//! report at the same timestamp; and every kind of bad input.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use common::*;
use serde_json::Value;

fn rmapwatch(args: &[&str]) -> Output {
    Command::new(RMAPWATCH).args(args).output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rmapwatch-perfetto-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// The interpreter with `perfetto` and `protobuf`: `$RMAPWATCH_PYTHON`
/// (set by `cargo xtask test`), else the venv `cargo xtask setup` makes.
fn python() -> PathBuf {
    let p = std::env::var_os("RMAPWATCH_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv/bin/python3"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "no Python for the Perfetto decoder at {}: run `cargo xtask setup` (it makes the venv \
         .cache/venv with perfetto and protobuf) or set RMAPWATCH_PYTHON to a python3 that has \
         them",
        p.display()
    );
    p
}

/// The trace as `perfetto_decode.py` sees it.
fn decode(trace: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_decode.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the decoder failed on {} (is `perfetto` installed? cargo xtask setup): {}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every frame's report of a replay, then the final one.
fn reports(f: &Path) -> Vec<Report> {
    let out = rmapwatch(&[
        "report",
        "--from",
        path(f),
        "--json",
        "--interval",
        "0.000000001",
    ]);
    assert!(out.status.success(), "{}: {out:?}", f.display());
    let v: Vec<Report> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(report)
        .collect();
    assert!(v.len() >= 2, "{}: {} reports", f.display(), v.len());
    assert!(v.last().unwrap().done);
    assert!(v[..v.len() - 1].iter().all(|r| !r.done));
    v
}

/// A counter's value at `ts`: its latest sample at or before (a counter
/// holds its value until the next sample).
fn value_at(samples: Option<&Vec<(u64, i64)>>, ts: u64) -> Option<i64> {
    samples?
        .iter()
        .take_while(|(t, _)| *t <= ts)
        .last()
        .map(|(_, v)| *v)
}

struct Decoded {
    base: u64,
    /// uuid -> samples.
    counters: BTreeMap<u64, Vec<(u64, i64)>>,
    /// pid -> (process track uuid, name).
    processes: BTreeMap<u32, (u64, String)>,
    /// (parent uuid, track name) -> uuid.
    by_name: BTreeMap<(Option<u64>, String), u64>,
    instants: Vec<(u64, String)>,
}

fn parse(d: &Value) -> Decoded {
    let clocks = d["clocks"].as_object().unwrap();
    // The recording's clock is CLOCK_MONOTONIC since its source started:
    // the snapshot holds it (id 3) next to BOOTTIME (6) at t = 0.
    let base = clocks["3"].as_u64().unwrap();
    assert!(clocks["6"].as_u64().unwrap() >= base, "{clocks:?}");
    assert!(clocks.contains_key("1"), "{clocks:?}");
    assert_eq!(
        d["event_clocks"],
        serde_json::json!([3]),
        "events on MONOTONIC"
    );
    assert_eq!(d["sequences"], serde_json::json!([1]));
    assert_eq!(d["first"]["incremental_state_cleared"], true);
    assert_eq!(d["first"]["first_packet_on_sequence"], true);
    let mut counters = BTreeMap::new();
    for (uuid, samples) in d["counters"].as_object().unwrap() {
        let v: Vec<(u64, i64)> = samples
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s[0].as_u64().unwrap(), s[1].as_i64().unwrap()))
            .collect();
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{uuid}: time order");
        counters.insert(uuid.parse().unwrap(), v);
    }
    let mut processes = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    for (uuid, t) in d["tracks"].as_object().unwrap() {
        let uuid: u64 = uuid.parse().unwrap();
        if let Some(pid) = t.get("pid") {
            processes.insert(
                u32::try_from(pid.as_u64().unwrap()).unwrap(),
                (uuid, t["process_name"].as_str().unwrap().to_owned()),
            );
        } else {
            let key = (t["parent"].as_u64(), t["name"].as_str().unwrap().to_owned());
            assert!(by_name.insert(key, uuid).is_none(), "one track per name");
            if t["name"].as_str().unwrap().starts_with("design ") {
                assert_eq!(t["counter_unit"], 3, "UNIT_SIZE_BYTES: {t}");
            } else if t["name"] == "anon_vma lock wait time (system, cumulative)" {
                assert_eq!(t["counter_unit"], 1, "UNIT_TIME_NS: {t}");
            } else if uuid >= 1 << 48 {
                // A waiting thread's track: slices, no counter.
                assert_eq!(t.get("counter_unit"), None, "{t}");
            } else if t["name"] != "rmapwatch" {
                assert_eq!(t["counter_unit"], 2, "UNIT_COUNT: {t}");
            }
        }
    }
    let instants = d["instants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["categories"], serde_json::json!(["rmapwatch"]));
            assert_eq!(
                i["track"].as_u64(),
                by_name.get(&(None, "rmapwatch".into())).copied()
            );
            (
                i["ts"].as_u64().unwrap(),
                i["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Decoded {
        base,
        counters,
        processes,
        by_name,
        instants,
    }
}

/// The four counters of a report block: anon_vma live, lazy, AVC live, lazy.
fn four(live: (u64, u64), lazy: Option<(u64, u64)>) -> [Option<i64>; 4] {
    let i = |v: u64| Some(i64::try_from(v).unwrap());
    [
        i(live.0),
        lazy.and_then(|l| i(l.0)),
        i(live.1),
        lazy.and_then(|l| i(l.1)),
    ]
}

const NAMES: [&str; 4] = [
    "anon_vma live",
    "anon_vma lazy",
    "anon_vma_chain live",
    "anon_vma_chain lazy",
];

/// Checks the trace of `f` (exported with `top`) against its reports.
fn check(f: &Path, trace: &Path, top: usize) -> (usize, usize) {
    let d = parse(&decode(trace));
    let reports = reports(f);
    let last = reports.last().unwrap();
    let what = f.display();

    // System counters: one sample per frame, at the report's time.
    let system: Vec<u64> = NAMES
        .iter()
        .map(|n| d.by_name[&(None, format!("{n} (system)"))])
        .collect();
    let times: BTreeSet<u64> = reports.iter().map(|r| d.base + r.t_ns).collect();
    let sampled: BTreeSet<u64> = d.counters[&system[0]].iter().map(|s| s.0).collect();
    assert_eq!(sampled, times, "{what}: a system sample per report");
    for r in &reports {
        let ts = d.base + r.t_ns;
        let want = four(
            (r.live.anon_vma.objects, r.live.anon_vma_chain.objects),
            r.lazy
                .map(|l| (l.anon_vma.objects, l.anon_vma_chain.objects)),
        );
        for k in 0..4 {
            assert_eq!(
                value_at(d.counters.get(&system[k]), ts),
                want[k],
                "{what}: system {} at t_ns {}",
                NAMES[k],
                r.t_ns
            );
        }
    }

    // A bytes counter per design, system-wide: the report's designs at
    // every frame, none before the first walk; uuids 32 + its place.
    for (i, name) in ["today", "lazy", "cow_context", "ideal"].iter().enumerate() {
        let uuid = d.by_name[&(None, format!("design {name} bytes (system)"))];
        assert_eq!(uuid, 32 + i as u64, "{what}: {name}'s uuid");
        for r in &reports {
            let want = r
                .designs
                .iter()
                .find(|o| o.name == *name)
                .map(|o| i64::try_from(o.system.bytes).unwrap());
            assert_eq!(
                value_at(d.counters.get(&uuid), d.base + r.t_ns),
                want,
                "{what}: design {name} at t_ns {}",
                r.t_ns
            );
        }
    }
    assert!(
        last.designs.len() == 4 && last.designs.iter().any(|o| o.system.bytes > 0),
        "{what}: the designs of the last report"
    );

    // Lock wait time (when measured) and forks: the report's time block
    // at every frame.
    let waited = d.by_name[&(None, "anon_vma lock wait time (system, cumulative)".into())];
    let forks = d.by_name[&(None, "forks (system, cumulative)".into())];
    assert_eq!((waited, forks), (48, 49), "{what}: their uuids");
    for r in &reports {
        let ts = d.base + r.t_ns;
        let t = r
            .time
            .as_ref()
            .expect("a replay's report has its time block");
        let i = |v: u64| Some(i64::try_from(v).unwrap());
        assert_eq!(
            value_at(d.counters.get(&forks), ts),
            i(t.fork.forks),
            "{what}: forks at t_ns {}",
            r.t_ns
        );
        let waits = t.anon_vma_lock.available.then_some(t.anon_vma_lock.wait_ns);
        assert_eq!(
            value_at(d.counters.get(&waited), ts),
            waits.and_then(i),
            "{what}: lock wait time at t_ns {}",
            r.t_ns
        );
    }

    // The processes: the `top` largest peak live footprints (bytes).
    let mut peak: BTreeMap<u32, u64> = BTreeMap::new();
    let mut comm: BTreeMap<u32, String> = BTreeMap::new();
    for r in &reports {
        for p in &r.processes {
            let e = peak.entry(p.pid).or_default();
            *e = (*e).max(p.live.anon_vma.bytes + p.live.anon_vma_chain.bytes);
            if p.comm != "?" || !comm.contains_key(&p.pid) {
                comm.insert(p.pid, p.comm.clone());
            }
        }
    }
    let mut ranked: Vec<(u64, u32)> = peak
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(p, b)| (*b, *p))
        .collect();
    ranked.sort_by_key(|&(b, p)| (std::cmp::Reverse(b), p));
    let chosen: BTreeSet<u32> = ranked.iter().take(top).map(|x| x.1).collect();
    assert_eq!(
        d.processes.keys().copied().collect::<BTreeSet<_>>(),
        chosen,
        "{what}: the top {top} peak footprints"
    );
    for (pid, (uuid, name)) in &d.processes {
        assert_eq!(Some(name), comm.get(pid), "{what}: pid {pid}'s name");
        let tracks: Vec<u64> = NAMES
            .iter()
            .map(|n| d.by_name[&(Some(*uuid), (*n).to_owned())])
            .collect();
        let mut seen = false;
        for r in &reports {
            let ts = d.base + r.t_ns;
            let p = r.processes.iter().find(|p| p.pid == *pid);
            seen |= p.is_some();
            let want = match p {
                Some(p) => four(
                    (p.live.anon_vma.objects, p.live.anon_vma_chain.objects),
                    p.lazy
                        .map(|l| (l.anon_vma.objects, l.anon_vma_chain.objects)),
                ),
                // Out of the report after it was in: owns nothing.
                None if seen => four((0, 0), r.lazy.map(|_| (0, 0))),
                // Not yet seen: no sample yet.
                None => [None; 4],
            };
            for k in 0..4 {
                assert_eq!(
                    value_at(d.counters.get(&tracks[k]), ts),
                    want[k],
                    "{what}: pid {pid} {} at t_ns {}",
                    NAMES[k],
                    r.t_ns
                );
            }
        }
    }

    // Instants: one per walk, re-seed and growth of the dropped events.
    let end = d.base + last.t_ns;
    assert!(d.instants.iter().all(|(t, _)| (d.base..=end).contains(t)));
    let walks: Vec<&str> = d
        .instants
        .iter()
        .filter(|i| i.1.starts_with("walk "))
        .map(|i| i.1.as_str())
        .collect();
    let taken = last.model.as_ref().unwrap().snapshot.stats.taken;
    assert!(taken > 0, "{what}");
    assert_eq!(
        walks.len() as u64,
        taken,
        "{what}: a walk instant per snapshot"
    );
    assert_eq!(
        walks.last().copied(),
        Some(format!("walk {taken}").as_str())
    );
    let reseeds = d
        .instants
        .iter()
        .filter(|i| i.1.starts_with("re-seed "))
        .count();
    assert_eq!(reseeds as u64, last.resync.resyncs, "{what}");
    let dropped: Vec<u64> = d
        .instants
        .iter()
        .filter_map(|i| i.1.strip_prefix("dropped events +"))
        .map(|s| s.split(' ').next().unwrap().parse::<u64>().unwrap())
        .collect();
    assert_eq!(
        Some(dropped.iter().sum::<u64>()),
        last.dropped_events,
        "{what}"
    );
    assert_eq!(
        d.instants.len(),
        walks.len() + reseeds + dropped.len(),
        "{what}: no other instants"
    );
    (d.processes.len(), d.counters.values().map(Vec::len).sum())
}

#[test]
fn every_fixture_exports_to_a_trace_whose_counters_are_the_reports() {
    let mut tracks = 0;
    for f in fixtures() {
        let out = temp("export.pftrace");
        let r = rmapwatch(&["export", "--perfetto", path(&out), "--from", path(&f)]);
        assert!(r.status.success(), "{}: {r:?}", f.display());
        let (procs, samples) = check(&f, &out, 20);
        assert!(procs > 0 && samples > 0, "{}", f.display());
        tracks += procs;
        // --top bounds the process tracks.
        let r = rmapwatch(&[
            "export",
            "--perfetto",
            path(&out),
            "--from",
            path(&f),
            "--top",
            "3",
            "--force",
        ]);
        assert!(r.status.success(), "{}: {r:?}", f.display());
        let (procs, _) = check(&f, &out, 3);
        assert!(procs <= 3, "{}", f.display());
        std::fs::remove_file(&out).unwrap();
    }
    assert!(tracks > 0);
}

#[test]
fn export_from_stdin_is_the_same_trace() {
    let f = &fixtures()[0];
    let a = temp("file.pftrace");
    let b = temp("stdin.pftrace");
    assert!(
        rmapwatch(&["export", "--perfetto", path(&a), "--from", path(f)])
            .status
            .success()
    );
    let mut child = Command::new(RMAPWATCH)
        .args(["export", "--perfetto", path(&b), "--from", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(f).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&a).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for p in [a, b] {
        std::fs::remove_file(p).unwrap();
    }
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("error:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_damaged_recording_exits_5_and_keeps_the_trace_before_the_damage() {
    let mut bytes = std::fs::read(&fixtures()[0]).unwrap();
    bytes.truncate(bytes.len() * 2 / 3);
    let cut = temp("cut.rmw");
    std::fs::write(&cut, bytes).unwrap();
    let out = temp("cut.pftrace");
    let r = rmapwatch(&["export", "--perfetto", path(&out), "--from", path(&cut)]);
    assert_eq!(r.status.code(), Some(5), "{r:?}");
    let errors = error_lines(&r);
    assert_eq!(errors.len(), 1, "{r:?}");
    assert!(errors[0].contains("truncated at byte"), "{errors:?}");
    assert!(
        errors[0].contains(path(&cut)),
        "names the recording: {errors:?}"
    );
    assert!(
        errors[0].contains(&format!("{} holds the trace up to the damage", path(&out))),
        "{errors:?}"
    );
    // The trace is whole, and what came before the damage: the walks the
    // replay of the same file reports.
    let d = parse(&decode(&out));
    let rep = rmapwatch(&["report", "--from", path(&cut), "--json"]);
    assert_eq!(rep.status.code(), Some(5));
    let rep = report(&String::from_utf8_lossy(&rep.stdout));
    let walks = d
        .instants
        .iter()
        .filter(|i| i.1.starts_with("walk "))
        .count();
    assert_eq!(
        walks as u64,
        rep.model.map_or(0, |m| m.snapshot.stats.taken),
        "{:?}",
        d.instants
    );
    assert!(walks > 0);
    for p in [cut, out] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn a_file_that_is_no_recording_exits_5_and_leaves_no_trace() {
    let not = fixtures()[0].with_extension("json");
    let out = temp("not.pftrace");
    for from in [path(&not), "/nonexistent.rmw"] {
        let r = rmapwatch(&["export", "--perfetto", path(&out), "--from", from]);
        assert_eq!(r.status.code(), Some(5), "{r:?}");
        let errors = error_lines(&r);
        assert_eq!(errors.len(), 1, "{r:?}");
        assert!(errors[0].contains(from), "{errors:?}");
        assert!(!out.exists(), "nothing written for {from}");
    }
}

#[test]
fn an_existing_trace_is_kept_without_force() {
    let f = &fixtures()[0];
    let out = temp("exists.pftrace");
    std::fs::write(&out, b"mine").unwrap();
    let r = rmapwatch(&["export", "--perfetto", path(&out), "--from", path(f)]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    let errors = error_lines(&r);
    assert_eq!(errors.len(), 1, "{r:?}");
    assert!(errors[0].contains("exists: pass --force"), "{errors:?}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let r = rmapwatch(&[
        "export",
        "--perfetto",
        path(&out),
        "--from",
        path(f),
        "--force",
    ]);
    assert!(r.status.success(), "{r:?}");
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);
    std::fs::remove_file(out).unwrap();
}

#[test]
fn missing_flags_are_usage_errors() {
    let f = &fixtures()[0];
    for args in [
        vec!["export", "--from", path(f)],
        vec!["export", "--perfetto", "/tmp/x.pftrace"],
        vec!["export"],
        vec![
            "export",
            "--perfetto",
            "/tmp/x.pftrace",
            "--from",
            path(f),
            "--top",
            "x",
        ],
    ] {
        let r = rmapwatch(&args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {r:?}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
    let r = rmapwatch(&["export", "--from", path(f)]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--perfetto <OUT>"), "{err}");
}

#[test]
fn an_unwritable_trace_is_a_failure_that_says_why() {
    let f = &fixtures()[0];
    let out = "/nonexistent-dir/run.pftrace";
    let r = rmapwatch(&["export", "--perfetto", out, "--from", path(f)]);
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    let errors = error_lines(&r);
    assert_eq!(errors.len(), 1, "{r:?}");
    assert!(errors[0].contains(&format!("creating {out}")), "{errors:?}");
    assert!(
        errors[0].contains("No such file or directory"),
        "{errors:?}"
    );
}

#[test]
fn record_refuses_a_trace_that_exists_or_is_the_recording() {
    let rec = temp("refused.rmw");
    let out = temp("refused.pftrace");
    std::fs::write(&out, b"mine").unwrap();
    // Refused before anything is attached (no root needed), and the
    // recording it had created is removed again.
    let r = rmapwatch(&["record", "-o", path(&rec), "--perfetto", path(&out)]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(error_lines(&r)[0].contains("exists: pass --force"), "{r:?}");
    assert!(!rec.exists(), "no empty recording left");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let r = rmapwatch(&["record", "-o", path(&rec), "--perfetto", path(&rec)]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(error_lines(&r)[0].contains("a file of its own"), "{r:?}");
    assert!(!rec.exists());
    std::fs::remove_file(out).unwrap();
}

#[test]
fn help_teaches_export() {
    let top = rmapwatch(&["--help"]);
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains("rmapwatch export --perfetto run.pftrace --from run.rmw"),
        "{top}"
    );
    let help = rmapwatch(&["export", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--perfetto <OUT>",
        "--from <FILE>",
        "--top <N>",
        "ui.perfetto.dev",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let record = rmapwatch(&["record", "--help"]);
    assert!(String::from_utf8_lossy(&record.stdout).contains("--perfetto <OUT>"));
}

#[test]
#[ignore = "root: loads eBPF programs (cargo xtask test runs it)"]
fn record_writes_the_trace_of_its_run() {
    require_root();
    let rec = temp("live.rmw");
    let live = temp("live.pftrace");
    let replayed = temp("replayed.pftrace");
    let out = rmapwatch(&[
        "record",
        "-o",
        path(&rec),
        "-t",
        "3",
        "--perfetto",
        path(&live),
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed = report(&String::from_utf8_lossy(&out.stdout));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&live).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let r = rmapwatch(&[
        "export",
        "--perfetto",
        path(&replayed),
        "--from",
        path(&rec),
    ]);
    assert!(r.status.success(), "{r:?}");
    let (a, b) = (parse(&decode(&live)), parse(&decode(&replayed)));
    // The same clock, walks, re-seeds and drops.
    assert_eq!(a.base, b.base);
    assert_eq!(a.instants, b.instants);
    let walks = a
        .instants
        .iter()
        .filter(|i| i.1.starts_with("walk "))
        .count();
    assert_eq!(
        walks as u64,
        printed.model.as_ref().unwrap().snapshot.stats.taken
    );
    // The last system samples: the final state, the report record printed.
    let want = four(
        (
            printed.live.anon_vma.objects,
            printed.live.anon_vma_chain.objects,
        ),
        printed
            .lazy
            .map(|l| (l.anon_vma.objects, l.anon_vma_chain.objects)),
    );
    for (k, n) in NAMES.iter().enumerate() {
        let name = (None, format!("{n} (system)"));
        let last = a.counters[&a.by_name[&name]].last().copied();
        assert_eq!(last, b.counters[&b.by_name[&name]].last().copied(), "{n}");
        assert_eq!(last, want[k].map(|v| (a.base + printed.t_ns, v)), "{n}");
    }
    for p in [rec, live, replayed] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn export_refuses_to_write_over_the_recording_it_reads() {
    let copy = temp("self.rmw");
    std::fs::copy(&fixtures()[0], &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let o = rmapwatch(&[
        "export",
        "--perfetto",
        path(&copy),
        "--from",
        path(&copy),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the recording itself"));
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the recording is untouched"
    );
    let _ = std::fs::remove_file(&copy);
}
