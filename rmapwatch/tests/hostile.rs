//! Hostile strings never reach a terminal raw. Any process can name itself
//! with escape sequences (`prctl(PR_SET_NAME)`), file names can hold them,
//! and a remote agent or a phone says what it wants: every text output
//! (report, inspect, an agent's notices, the log, the dashboard) shows
//! control characters as `?`, as `ps` does. Root: the real programs, a real
//! process with such a name and such a mapped file.
mod common;

use std::{process::Command, time::Duration};

use common::*;

/// ESC ] 0 ; ... BEL retitles a terminal; CR and a newline fake lines.
const NAME: &str = "ev\x1b]0;pwn\x07\r\nil";
/// ESC [ 2 J clears the screen.
const FILE: &str = "f\x1b[2J\x07\r\nx";
/// What the name and the file look like once shown.
const NAME_SHOWN: &str = "ev?]0;pwn???il";
/// The kernel writes a newline in a path as `\012` in /proc/PID/maps.
const FILE_SHOWN: &str = "f?[2J??\\012x";

/// The control bytes of `out`, but the newlines and tabs that lay text out.
fn controls(out: &[u8]) -> Vec<(usize, u8)> {
    out.iter()
        .copied()
        .enumerate()
        .filter(|&(_, b)| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f)
        .collect()
}

fn assert_clean(what: &str, o: &std::process::Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let bad = controls(bytes);
        assert!(
            bad.is_empty(),
            "{what}: control bytes on {stream} at {bad:?}:\n{}",
            String::from_utf8_lossy(bytes).escape_debug()
        );
    }
}

fn hostile_workload(dir: &std::path::Path) -> Workload {
    let file = dir.join(FILE);
    Workload::start(&[
        "--regions",
        "4",
        "--children",
        "1",
        "--noise",
        "0",
        "--name",
        NAME,
        "--file",
        file.to_str().unwrap(),
    ])
}

fn scratch() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rmapwatch-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn hostile_names_and_paths_reach_report_and_inspect_as_ps_shows_them() {
    require_root();
    ensure_tracefs();
    let dir = scratch();
    let w = hostile_workload(&dir);
    let comm = std::fs::read(format!("/proc/{}/comm", w.parent)).unwrap();
    assert!(comm.contains(&0x1b), "the kernel kept the escape: {comm:?}");

    let o = Command::new(RMAPWATCH)
        .args(["report", "-t", "2", "--top", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_clean("report", &o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(NAME_SHOWN),
        "the process is listed, its name shown as ps does:\n{text}"
    );

    for args in [
        vec!["inspect".to_owned(), w.parent.to_string()],
        vec![
            "inspect".to_owned(),
            w.parent.to_string(),
            "--all".to_owned(),
        ],
    ] {
        let o = Command::new(RMAPWATCH).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_clean("inspect", &o);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(NAME_SHOWN), "{text}");
        assert!(
            text.contains(FILE_SHOWN),
            "the COW'd file mapping is listed with its path shown as ps does:\n{text}"
        );
    }
    // An ambiguous or unknown name in an error line.
    let o = Command::new(RMAPWATCH)
        .args(["inspect", &format!("x{NAME}")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert_clean("inspect's error", &o);

    // JSON stays exact: serde escapes the name.
    let o = Command::new(RMAPWATCH)
        .args(["inspect", &w.parent.to_string(), "--json"])
        .output()
        .unwrap();
    assert_clean("inspect --json", &o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["comm"], NAME);
    w.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A remote agent that says hostile things on its stderr first.
fn hostile_remote() -> String {
    format!("printf 'say \\033]0;pwn\\007\\r\\n' >&2; exec {RMAPWATCH} agent")
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn an_agents_hostile_notices_reach_stderr_as_ps_shows_them() {
    require_root();
    ensure_tracefs();
    let dir = scratch();
    let w = hostile_workload(&dir);
    let o = Command::new(RMAPWATCH)
        .args([
            "--remote",
            &hostile_remote(),
            "report",
            "-t",
            "3",
            "--top",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_clean("report --remote", &o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("remote: say ?]0;pwn?"), "{err}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(NAME_SHOWN), "{text}");
    w.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_dashboard_and_its_log_keep_hostile_strings_off_the_terminal() {
    require_root();
    ensure_tracefs();
    let dir = scratch();
    let w = hostile_workload(&dir);
    let log = dir.join("log");
    let cmd = format!(
        "{RMAPWATCH} -d 0.3 --remote '{}' --log-file {}; sleep 30",
        hostile_remote().replace('\'', "'\\''"),
        log.display()
    );
    let t = Tmux::start("rmapwatch-hostile", &cmd);
    let title = || {
        let o = tmux()
            .args([
                "display-message",
                "-p",
                "-t",
                "rmapwatch-hostile",
                "#{pane_title}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    t.wait_for(|s| s.contains("actual vs ANON_VMA_LAZY"), "the dashboard");
    t.keys(&["/", "ev", "Enter"]);
    let screen = t.wait_for(|s| s.contains(&w.parent.to_string()), "the workload");
    // The name's escape never reached the terminal: no retitle.
    assert!(!title().contains("pwn"), "retitled: {}", title());
    assert!(!screen.contains('\x1b'), "{screen}");
    t.keys(&["q"]);
    std::thread::sleep(Duration::from_secs(2));
    let bytes = std::fs::read(&log).unwrap();
    assert!(
        controls(&bytes).is_empty(),
        "control bytes in the log: {}",
        String::from_utf8_lossy(&bytes).escape_debug()
    );
    assert!(
        String::from_utf8_lossy(&bytes).contains("remote: say ?]0;pwn?"),
        "the notice is logged: {}",
        String::from_utf8_lossy(&bytes)
    );
    drop(t);
    w.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
