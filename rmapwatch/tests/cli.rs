//! The binary's answers to bad input, without root where possible.
mod common;

use std::process::Command;

use common::*;

fn run_as_nobody(args: &[&str]) -> std::process::Output {
    if is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                RMAPWATCH,
            ])
            .args(args)
            .output()
            .expect("setpriv (util-linux)")
    } else {
        Command::new(RMAPWATCH).args(args).output().unwrap()
    }
}

#[test]
fn not_root_is_refused_with_what_to_do() {
    let out = run_as_nobody(&["report", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(stderr.contains("sudo"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = Command::new(RMAPWATCH)
        .args(["--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--frobnicate'"));
}

#[test]
fn bad_values_are_usage_errors() {
    for (args, needle) in [
        (
            &["report", "--duration", "soon"][..],
            "not a number of seconds",
        ),
        (
            &["report", "--duration", "-1"][..],
            "expected seconds greater than 0",
        ),
        (&["--ring-buffer-kb", "1000", "report"][..], "power of two"),
        (
            &["--probe-mode", "uprobe", "report"][..],
            "invalid value 'uprobe'",
        ),
        (
            &["--design-option", "maple_entries_per_node=0", "report"][..],
            "maple_entries_per_node: \"0\" is not a number from 1 to 16",
        ),
        (
            &["--design-option", "colour=blue", "report"][..],
            "no such design option (names: lazy_sticky_upgrades,",
        ),
    ] {
        let out = Command::new(RMAPWATCH).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn help_teaches_commands_modes_and_exit_codes() {
    let out = Command::new(RMAPWATCH).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "report",
        "--probe-mode",
        "fentry",
        "Exit codes",
        "sudo rmapwatch",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}

#[test]
fn the_live_view_without_a_terminal_says_what_to_use() {
    let out = Command::new(RMAPWATCH).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs a terminal"), "{stderr}");
    assert!(stderr.contains("rmapwatch report"), "{stderr}");
}
