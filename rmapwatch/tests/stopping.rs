//! A run that is told to stop stops: while its source still starts (a
//! phone's `adb root` may take a minute, an `ssh` may hang), and when the
//! source fails during the final walk the stop asked for. Root: real
//! agents over `--remote`.
mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

/// An agent command that never begins its stream (a duration no other
/// process on the machine sleeps: the test looks for it by command line).
const HANGS: &str = "sleep 60.0427";

/// Waits for `child` at most `limit`; its status, or `None` (then killed).
fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let status = exited_within(child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(RMAPWATCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_signal_stops_a_run_whose_source_is_still_starting() {
    require_root();
    for cmd in [
        &["--remote", HANGS, "serve", "--listen", "127.0.0.1:0"][..],
        &["--remote", HANGS, "report"],
    ] {
        let mut c = spawn(cmd);
        std::thread::sleep(Duration::from_secs(1));
        send(&c, libc::SIGINT);
        let status = wait_at_most(&mut c, Duration::from_secs(10));
        assert!(
            status.is_some(),
            "{cmd:?}: still waiting for its source 10 s after SIGINT"
        );
        // The command it started is gone too.
        let left = Command::new("pgrep")
            .args(["-f", "-x", HANGS])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{cmd:?} left {HANGS:?} running");
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn serve_s_duration_ends_it_while_its_source_is_still_starting() {
    require_root();
    let mut c = spawn(&[
        "--remote",
        HANGS,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "2",
    ]);
    let status = wait_at_most(&mut c, Duration::from_secs(15));
    assert!(status.is_some(), "serve -t 2 still running after 15 s");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn serve_ends_when_its_final_walk_fails_after_a_stop() {
    require_root();
    ensure_tracefs();
    // The stop is given, then the agent is killed during the final walk
    // that the stop asked for (30,000 VMAs held make that walk long).
    let big = Workload::start(&["--regions", "30000", "--children", "0", "--noise", "0"]);
    let s = Serve::start(&["--remote", &format!("exec {RMAPWATCH} agent")]);
    let pid = s.child.id();
    let agent = Command::new("pgrep")
        .args(["-P", &pid.to_string(), "-f", "agent"])
        .output()
        .unwrap();
    let agent = String::from_utf8_lossy(&agent.stdout).trim().to_owned();
    assert!(!agent.is_empty(), "the agent of serve {pid}");
    let mut s = s;
    send(&s.child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(agent.parse().unwrap(), libc::SIGKILL) };
    let status = wait_at_most(&mut s.child, Duration::from_secs(15));
    let err = s.stderr.rest();
    assert!(
        status.is_some(),
        "serve kept running after SIGINT when the source failed: {err:#?}"
    );
    assert!(
        !err.iter().any(|l| l.contains("trying again")),
        "a source lost at the stop is not retried: {err:#?}"
    );
    big.finish();
}
