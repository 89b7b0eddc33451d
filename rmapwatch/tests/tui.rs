//! The live view, driven for real: the binary as root in tmux, a workload,
//! keys sent with send-keys, the screen read with capture-pane.
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;

/// The numbers of a process row: [VMAs, anon_vma, AVC].
fn row(screen: &str, pid: u32) -> Option<Vec<u64>> {
    screen.lines().find_map(|l| {
        let l = l.trim_matches(|c| c == '│' || c == ' ');
        let mut f = l.split_whitespace();
        (f.next()? == pid.to_string()).then(|| {
            f.next();
            f.take(3).filter_map(|x| x.parse().ok()).collect()
        })
    })
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_dashboard_shows_a_workload_with_its_exact_numbers_and_quits_cleanly() {
    require_root();
    let cmd = format!(
        "{RMAPWATCH} -d 0.3 --log-file /tmp/rmapwatch-tui-test.log; echo EXITED $?; sleep 30"
    );
    let t = Tmux::start("rmapwatch-test", &cmd);
    t.wait_for(|s| s.contains("actual vs ANON_VMA_LAZY"), "the dashboard");
    let w = Workload::start(&["--regions", "150", "--children", "2", "--noise", "0"]);
    let child = w.children[0];
    t.keys(&["/", "rmw-wo", "Enter"]);
    t.wait_for(
        |s| row(s, child).is_some_and(|r| r.len() == 3 && r[1] > 0),
        "the workload's child",
    );
    let expected = inspect(child);
    let (av, avc) = objects(&expected.live);
    // The dashboard refreshes; wait for the row to settle on the inspected numbers.
    let screen = t.wait_for(
        |s| row(s, child).is_some_and(|r| r[1] == av && r[2] == avc),
        "exact numbers",
    );
    let r = row(&screen, child).unwrap();
    assert_eq!(r[0], expected.vmas.len() as u64, "VMAs\n{screen}");
    assert!(
        av >= 150 && avc == 2 * av,
        "a fork child: one own AVC and one cloned per VMA"
    );
    assert!(screen.contains("[filter: rmw-wo]"), "{screen}");
    // Enter opens the detail of the selected (first) process.
    t.keys(&["Enter"]);
    t.wait_for(
        |s| s.contains("VMAs with an anon_vma") && s.contains("anon_vma family"),
        "the detail view",
    );
    t.keys(&["Escape", "q"]);
    let end = t.wait_for(|s| s.contains("EXITED"), "exit");
    assert!(end.contains("EXITED 0"), "{end}");
    assert!(end.contains("programs detached"), "{end}");
    assert!(
        wait_gone(Duration::from_secs(5)).is_empty(),
        "programs left loaded"
    );
    w.finish();
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn sigterm_restores_the_terminal_and_detaches() {
    require_root();
    let cmd = format!(
        "{RMAPWATCH} -d 0.3 --log-file /tmp/rmapwatch-tui-test.log; echo EXITED $?; sleep 30"
    );
    let t = Tmux::start("rmapwatch-term", &cmd);
    t.wait_for(|s| s.contains("actual vs ANON_VMA_LAZY"), "the dashboard");
    let pid = t.rmapwatch_pid();
    assert!(
        Command::new("kill")
            .args(["-TERM", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let end = t.wait_for(|s| s.contains("EXITED"), "exit");
    assert!(end.contains("EXITED 0"), "{end}");
    assert!(
        !end.contains("actual vs ANON_VMA_LAZY"),
        "the alternate screen is gone:\n{end}"
    );
    assert!(wait_gone(Duration::from_secs(5)).is_empty());
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_terminal_that_hangs_up_ends_the_dashboard_instead_of_spinning() {
    // Regression: crossterm's poll spins forever on a hung-up tty; killing
    // the tmux server left rmapwatch at 100% CPU after it had detached.
    require_root();
    // exec: the pane's process is rmapwatch itself.
    let cmd = format!("exec {RMAPWATCH} -d 0.3 --log-file /tmp/rmapwatch-tui-test.log");
    let t = Tmux::start("rmapwatch-hup", &cmd);
    t.wait_for(|s| s.contains("actual vs ANON_VMA_LAZY"), "the dashboard");
    let pid = t.rmapwatch_pid();
    let _ = tmux().args(["kill-server"]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rmapwatch {pid} still running after its terminal hung up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wait_gone(Duration::from_secs(5)).is_empty());
}

#[test]
#[ignore = "needs tmux: run by cargo xtask test"]
fn a_recording_replays_on_the_dashboard_pauses_and_ends_on_screen() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host-x86_64.rmw");
    let cmd = format!(
        "{RMAPWATCH} replay --speed 0.5 {} --log-file /tmp/rmapwatch-replay-test.log; echo EXITED $?; sleep 30",
        fixture.display()
    );
    let t = Tmux::start("rmapwatch-replay", &cmd);
    let screen = t.wait_for(|s| s.contains("actual vs ANON_VMA_LAZY"), "the dashboard");
    assert!(screen.contains("replay of"), "{screen}");
    assert!(screen.contains("6.18"), "the recorded kernel: {screen}");
    let up = |s: &str| {
        s.split("up ")
            .nth(1)
            .map(|r| r.chars().take(8).collect::<String>())
            .unwrap_or_default()
    };
    // Paused: the recording's clock stands still.
    t.keys(&["p"]);
    let paused = t.wait_for(|s| s.contains("PAUSED"), "paused");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        up(&t.screen()),
        up(&paused),
        "the replay went on while paused"
    );
    t.keys(&["p"]);
    // The end of the recording stays on the screen until q.
    let end = t.wait_for(|s| s.contains("the recording ended"), "the end");
    assert!(end.contains("rmw-workload"), "{end}");
    t.keys(&["q"]);
    let done = t.wait_for(|s| s.contains("EXITED"), "exit");
    assert!(done.contains("EXITED 0"), "{done}");
}
