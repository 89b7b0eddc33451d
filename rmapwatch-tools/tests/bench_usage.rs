//! `rmw-bench`'s command line: bad usage is refused before anything runs
//! (exit status 2, one clear line), and `--help` teaches the benchmarks and
//! their options. No root needed: nothing here reaches a benchmark.
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmw-bench"))
        .args(args)
        .output()
        .expect("running rmw-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_usage_exits_2_naming_what_was_wrong() {
    for (args, says) in [
        (&["nosuch"][..], "nosuch"),
        (&["cost", "--rounds", "0"][..], "--rounds"),
        (&["cost", "--rounds", "five"][..], "--rounds"),
        (&["cost", "--ring-kb", "0"][..], "--ring-kb"),
        (&["locks", "--no-such-option"][..], "--no-such-option"),
        (&["soak", "--minutes", "inf"][..], "--minutes"),
    ] {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("error:") && e.contains(says), "{args:?}: {e}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing measured");
    }
}

#[test]
fn help_lists_the_benchmarks_and_each_ones_options() {
    let o = bench(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["cost", "locks", "storms", "soak", "Exit status"] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    let o = bench(&["cost", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--rounds",
        "--split-rounds",
        "--forks",
        "--fault-mib",
        "--ring-kb",
    ] {
        assert!(out.contains(opt), "{opt} missing from:\n{out}");
    }
}
