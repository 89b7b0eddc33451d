//! Recordings replayed without root: the committed fixtures (recorded on
//! this host and in the QEMU guests, `cargo xtask fixtures` and `vm-test
//! --fixtures`) give exactly the numbers the recorder printed, and every
//! kind of bad file is one clear error with its offset and exit code 5,
//! after what could be read.
mod common;

use std::{path::PathBuf, process::Command};

use common::*;
use rmapwatch_engine::report::same_as_older;

fn rmapwatch(args: &[&str]) -> std::process::Output {
    Command::new(RMAPWATCH).args(args).output().unwrap()
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The workload's pids (parent first) from the fixture's `.meta`.
fn workload(fixture: &std::path::Path) -> Vec<u32> {
    let meta = std::fs::read_to_string(fixture.with_extension("meta")).unwrap();
    let ready = meta.lines().find(|l| l.starts_with("ready")).unwrap();
    ready
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn every_fixture_replays_to_the_report_its_recorder_printed() {
    for f in fixtures() {
        let printed = std::fs::read_to_string(f.with_extension("json")).unwrap();
        let out = rmapwatch(&["report", "--from", path(&f), "--json"]);
        assert!(out.status.success(), "{}: {:?}", f.display(), out);
        // Every field the recorder printed, exactly; a recorder older than
        // this rmapwatch did not print the fields added since.
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want: serde_json::Value = serde_json::from_str(&printed).unwrap();
        if let Err(e) = same_as_older(&got, &want) {
            panic!(
                "{}: the replay differs from what the recorder printed: {e}",
                f.display()
            );
        }
        assert_eq!(
            got["designs"].as_array().map(Vec::len),
            Some(4),
            "{}",
            f.display()
        );
        // And what it says is the controlled workload, exactly.
        let r = report(&printed);
        assert!(r.done);
        assert_eq!(r.dropped_events, Some(0));
        let pids = workload(&f);
        let (parent, children) = (pids[0], &pids[1..]);
        assert_eq!(children.len(), 3);
        let kids: Vec<&ProcessReport> = children.iter().map(|&c| process(&r, c)).collect();
        let a = kids[0].live.anon_vma.objects;
        assert!(a >= 40, "{}: child anon_vmas {a}", f.display());
        for k in &kids {
            assert_eq!(k.ppid, Some(parent));
            assert_eq!(objects(&k.live), (a, 2 * a), "{}: {k:?}", f.display());
            assert_eq!(Some(k.live), k.snapshot, "{}: events = walk", f.display());
            assert_eq!(k.anon_vma.allocs, a, "{}: fork-time objects", f.display());
        }
        let m = r.model.as_ref().unwrap();
        assert_eq!((m.drift.anon_vma, m.drift.anon_vma_chain), (0, 0));
    }
}

#[test]
fn inspect_from_a_recording_shows_its_last_walk() {
    for f in fixtures() {
        let pids = workload(&f);
        let printed = report(&std::fs::read_to_string(f.with_extension("json")).unwrap());
        let child = pids[1];
        let out = rmapwatch(&["inspect", "--from", path(&f), &child.to_string(), "--json"]);
        assert!(out.status.success(), "{}: {out:?}", f.display());
        let i: Inspection = serde_json::from_slice(&out.stdout).unwrap();
        let p = process(&printed, child);
        assert_eq!(objects(&i.live), objects(&p.snapshot.unwrap()));
        assert_eq!(i.comm, "rmw-workload");
        assert!(i.family.iter().any(|m| m.pid == pids[0]), "{:?}", i.family);
        let lazy_p = i.vmas.iter().filter(|v| v.lazy_state == "P").count();
        assert!(lazy_p >= 40, "{lazy_p} tree-parent VMAs");
        // Absent from the recording: exit 4, said in one line.
        let out = rmapwatch(&["inspect", "--from", path(&f), "4000000"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn other_model_options_re_run_the_model_on_the_recorded_walks() {
    let f = &fixtures()[0];
    let json = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["report", "--from", path(f), "--json"]);
        let out = rmapwatch(&args);
        assert!(out.status.success(), "{out:?}");
        report(&String::from_utf8_lossy(&out.stdout))
    };
    let keep = json(&[]);
    let drop = json(&["--tree-parent-drops-chain"]);
    let (k, d) = (keep.model.unwrap(), drop.model.unwrap());
    assert!(!d.options.tree_parent_keeps_chain);
    // Each run reports the other's figure alongside its own.
    assert_eq!(
        d.lazy_other_option.anon_vma_chain.objects,
        keep.lazy.unwrap().anon_vma_chain.objects
    );
    assert_eq!(
        k.lazy_other_option.anon_vma_chain.objects,
        drop.lazy.unwrap().anon_vma_chain.objects
    );
    assert_eq!(keep.live, drop.live, "the actual objects do not change");
}

#[test]
fn a_recording_read_through_a_remote_command_gives_the_same_report() {
    // --remote reads any command's stdout as the stream: here a recording.
    let f = &fixtures()[0];
    let printed = std::fs::read_to_string(f.with_extension("json")).unwrap();
    let out = rmapwatch(&[
        "--remote",
        &format!("cat '{}'", path(f)),
        "report",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The same report, plus what the host saw of the link.
    let mut got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = got
        .as_object_mut()
        .and_then(|o| o.remove("link"))
        .expect("a remote report has its link");
    assert!(
        link["via"].as_str().unwrap().starts_with("remote: cat "),
        "{link}"
    );
    assert_eq!(
        link["bytes"].as_u64(),
        Some(std::fs::metadata(f).unwrap().len())
    );
    let want: serde_json::Value = serde_json::from_str(&printed).unwrap();
    same_as_older(&got, &want).unwrap();
}

/// A copy of the first fixture, changed by `f`.
fn damaged(name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(&fixtures()[0]).unwrap();
    f(&mut bytes);
    let p = std::env::temp_dir().join(format!("rmapwatch-test-{}-{name}.rmw", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_files_are_one_clear_line_with_exit_code_5() {
    let header = |b: &[u8]| 20 + u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let cases: Vec<(PathBuf, &str, bool)> = vec![
        (damaged("empty", Vec::clear), "the file is empty", false),
        (
            fixtures()[0].with_extension("json"),
            "not a rmapwatch recording",
            false,
        ),
        (
            damaged("version", |b| b[8] = 7),
            "a rmapwatch.stream/7.0 recording",
            false,
        ),
        (
            damaged("header", |b| b[30] ^= 1),
            "damaged at byte 0",
            false,
        ),
        (
            damaged("cut", |b| b.truncate(b.len() * 2 / 3)),
            "truncated at byte",
            true,
        ),
        (
            damaged("flipped", |b| {
                let n = b.len() / 2;
                b[n] ^= 0x55;
            }),
            "damaged at byte",
            true,
        ),
        (
            damaged("noend", |b| {
                // Keep the header and the first block only.
                let h = header(b);
                let len = u32::from_le_bytes(b[h + 4..h + 8].try_into().unwrap()) as usize;
                b.truncate(h + 20 + len);
            }),
            "cut short at byte",
            true,
        ),
    ];
    for (file, needle, partial) in cases {
        let out = rmapwatch(&["report", "--from", path(&file), "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{}: {err}", file.display());
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{}: {err}", file.display());
        assert!(errors[0].contains(needle), "{}: {err}", file.display());
        assert!(errors[0].contains(path(&file)), "names the file: {err}");
        if partial {
            // What came before the damage is reported, marked unfinished.
            let r = report(&String::from_utf8_lossy(&out.stdout));
            assert!(!r.done, "{}", file.display());
            assert!(r.events > 0 || r.model.is_some(), "{}", file.display());
        } else {
            assert!(out.stdout.is_empty(), "{}", file.display());
        }
        // inspect and replay refuse the same files the same way.
        let out = rmapwatch(&["inspect", "--from", path(&file), "1"]);
        assert!(
            matches!(out.status.code(), Some(4 | 5)),
            "{}: {out:?}",
            file.display()
        );
    }
    let out = rmapwatch(&["report", "--from", "/nonexistent.rmw"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("/nonexistent.rmw"), "{err}");
}

#[test]
fn record_refuses_to_overwrite_and_replay_needs_a_terminal() {
    let existing = damaged("exists", |_| {});
    let out = rmapwatch(&["record", "-o", path(&existing), "--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("exists: pass --force"), "{err}");
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        std::fs::read(&fixtures()[0]).unwrap(),
        "nothing lost"
    );
    let out = rmapwatch(&["replay", path(&fixtures()[0])]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
}

#[test]
fn design_options_re_run_the_designs_on_the_recorded_walks() {
    let f = &fixtures()[0];
    let cow = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["report", "--from", path(f), "--json"]);
        let out = rmapwatch(&args);
        assert!(out.status.success(), "{out:?}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        r["designs"][2].clone()
    };
    let default = cow(&[]);
    let big = cow(&["--design-option", "cow_context_bytes=200"]);
    let contexts = default["objects"]["cow_context"].as_u64().unwrap();
    assert!(contexts > 0, "{default}");
    assert_eq!(big["objects"], default["objects"], "the same objects");
    // A recording without kmalloc buckets: the next power of two, 128 B
    // for 96 and 256 B for 200.
    let bytes = |d: &serde_json::Value| d["bytes"].as_u64().unwrap();
    assert_eq!(bytes(&big) - bytes(&default), contexts * (256 - 128));
    assert!(
        big["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "cow_context_bytes" && o["value"] == "200"),
        "the report says which value the numbers rest on"
    );
}
