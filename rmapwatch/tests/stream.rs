//! Privileged tests of recordings and of the agent, on the running kernel:
//! a recording replays to what a report run beside it saw; the agent
//! streams, answers requests, and detaches on every way its host can go.
mod common;

use std::{
    io::BufReader,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use rmapwatch_engine::{
    input::{Input, Paths, Request, SlabRead},
    stream::{Kind, Reader, Writer},
};

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_recording_replays_to_what_a_report_beside_it_saw() {
    require_root();
    let file = std::env::temp_dir().join(format!("rmapwatch-rt-{}.rmw", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let beside = Rmapwatch::start(&[]);
    let mut rec = Command::new(RMAPWATCH)
        .args(["record", "-o", file.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rec_err = Lines::new(rec.stderr.take().unwrap());
    rec_err.wait_for("attached", Duration::from_secs(60));
    let w = Workload::start(&["--regions", "120", "--children", "3", "--noise", "30"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Both stop while the workload holds: their final walks see it.
    send(&rec, libc::SIGINT);
    let printed = rec.wait_with_output().unwrap();
    assert!(printed.status.success(), "{:?}", rec_err.rest());
    let live = beside.stop();
    let pids: Vec<u32> = std::iter::once(w.parent)
        .chain(w.children.clone())
        .collect();
    w.finish();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "recordings are private");
    let out = Command::new(RMAPWATCH)
        .args(["report", "--from", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let replayed = report(&String::from_utf8_lossy(&out.stdout));
    // The replay gives what the recorder printed, to the byte...
    assert_eq!(out.stdout, printed.stdout);
    // ...and the same numbers as the report run beside it: the objects,
    // live and lazy, system-wide and for every process of the workload.
    assert!(replayed.done);
    assert_eq!(replayed.dropped_events, Some(0));
    same_processes(&replayed, &live, &pids);
    // System-wide, but for the two rmapwatch processes (each final walk
    // sees the other one alive or not, depending on who stops first) and
    // for any process the machine changed between the two final walks: a
    // process in one report only, or whose walked objects differ. Those
    // are real changes between two walks, not disagreements; the test
    // names them and allows a few, and every other process and the rest
    // of the system must agree exactly, walked, lazy and live.
    let moved: Vec<u32> = replayed
        .processes
        .iter()
        .chain(live.processes.iter())
        .filter(|p| p.comm != "rmapwatch")
        .filter(|p| {
            let (a, b) = (
                replayed.processes.iter().find(|q| q.pid == p.pid),
                live.processes.iter().find(|q| q.pid == p.pid),
            );
            match (a, b) {
                (Some(a), Some(b)) => a.snapshot != b.snapshot || a.comm != b.comm,
                _ => true,
            }
        })
        .map(|p| p.pid)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        moved.len() <= 3 && !moved.iter().any(|p| pids.contains(p)),
        "the machine was not quiet while the two final walks ran: {moved:?}"
    );
    if !moved.is_empty() {
        eprintln!("processes that changed between the two final walks, left out: {moved:?}");
    }
    let rest = |r: &Report| {
        let m = r.model.as_ref().unwrap();
        let left_out = r
            .processes
            .iter()
            .filter(|p| p.comm == "rmapwatch" || moved.contains(&p.pid));
        let (mut walked, mut lazy, mut live) = (
            objects(&m.snapshot.actual),
            r.lazy
                .map(|l| (l.anon_vma.objects, l.anon_vma_chain.objects))
                .unwrap(),
            objects(&r.live),
        );
        for p in left_out {
            let sub = |t: &mut (u64, u64), o: (u64, u64)| {
                t.0 -= o.0;
                t.1 -= o.1;
            };
            sub(&mut walked, objects(&p.snapshot.unwrap()));
            sub(
                &mut lazy,
                p.lazy
                    .map(|l| (l.anon_vma.objects, l.anon_vma_chain.objects))
                    .unwrap(),
            );
            sub(&mut live, objects(&p.live));
        }
        (walked, lazy, live)
    };
    assert_eq!(
        rest(&replayed),
        rest(&live),
        "system but rmapwatch and {moved:?}: walked, lazy, live"
    );
    let rm = replayed.model.unwrap();
    assert_eq!((rm.drift.anon_vma, rm.drift.anon_vma_chain), (0, 0));
    let _ = std::fs::remove_file(&file);
}

/// A running `rmapwatch agent`: its stream decoded on a thread.
struct Agent {
    child: std::process::Child,
    inputs: mpsc::Receiver<Input>,
    requests: Option<Writer<std::process::ChildStdin>>,
}

impl Agent {
    fn start() -> Self {
        let mut child = Command::new(RMAPWATCH)
            .args(["agent", "--interval", "0.3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, inputs) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = Reader::open(BufReader::new(stdout), Kind::Inputs).unwrap();
            while let Ok(Some(i)) = r.next_input() {
                if tx.send(i).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let requests = Writer::new(stdin, Kind::Requests, "test", None).unwrap();
        let a = Self {
            child,
            inputs,
            requests: Some(requests),
        };
        let first = a.next(Duration::from_secs(60));
        assert!(matches!(first, Input::Facts(_)), "{first:?}");
        a
    }

    fn next(&self, within: Duration) -> Input {
        self.inputs.recv_timeout(within).expect("the agent streams")
    }

    /// Inputs until one matches.
    fn until(&self, what: impl Fn(&Input) -> bool) -> Vec<Input> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let i = self
                .inputs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("not within 30 s; saw {} inputs", seen.len()));
            let done = what(&i);
            seen.push(i);
            if done {
                return seen;
            }
        }
    }

    fn ask(&mut self, r: &Request) {
        let w = self.requests.as_mut().unwrap();
        w.request(r).unwrap();
        w.flush().unwrap();
    }

    /// The agent ended its stream and exited 0, nothing left loaded.
    fn ends(mut self) {
        self.until(|i| matches!(i, Input::End { .. }));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let left = wait_gone(Duration::from_secs(5));
        assert!(left.is_empty(), "programs left loaded: {left:?}");
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_agent_streams_answers_requests_and_stops_at_stdin_eof() {
    require_root();
    let mut a = Agent::start();
    // It ticks by itself.
    a.until(|i| matches!(i, Input::Tick { .. }));
    a.ask(&Request::Walk {
        slab: SlabRead::Read,
        paths: Paths::Detail,
    });
    let walk = a.until(|i| matches!(i, Input::WalkEnd { .. }));
    assert!(walk.iter().any(|i| matches!(i, Input::WalkBegin { .. })));
    let vmas: usize = walk
        .iter()
        .map(|i| match i {
            Input::WalkVmas { vmas, .. } => vmas.len(),
            _ => 0,
        })
        .sum();
    assert!(vmas > 100, "a walk of this system: {vmas} VMAs");
    assert!(walk.iter().any(|i| matches!(i, Input::Slab(_))));
    a.ask(&Request::Names {
        pids: vec![std::process::id()],
    });
    let names = a.until(|i| matches!(i, Input::Names(_)));
    let Some(Input::Names(n)) = names.last() else {
        unreachable!()
    };
    assert_eq!(n[0].0, std::process::id());
    // The host goes away: stdin closes.
    a.requests = None;
    a.ends();
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_agent_detaches_on_sigterm_sighup_and_a_closed_stdout() {
    require_root();
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        let a = Agent::start();
        assert!(!rmapwatch_programs_loaded().is_empty());
        send(&a.child, sig);
        a.ends();
    }
    // Nobody reads its stdout any more (EPIPE at its next write).
    let Agent {
        mut child,
        inputs,
        requests,
    } = Agent::start();
    drop(inputs); // the reading thread ends at its next input, closing the pipe
    let status =
        exited_within(&mut child, Duration::from_secs(20)).expect("the agent did not notice");
    drop(requests);
    assert!(status.success(), "{status:?}");
    let left = wait_gone(Duration::from_secs(5));
    assert!(left.is_empty(), "programs left loaded: {left:?}");
}

/// The report of `source` (with a tick a second), once it said `attached`.
fn report_of(source: &[&str]) -> Rmapwatch {
    let mut c = Command::new(RMAPWATCH);
    c.args(source)
        .args(["report", "--json", "--interval", "1"])
        .env("RMAPWATCH_LOG", "debug");
    Rmapwatch::spawn(c, "attached", Duration::from_secs(60))
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_fork_storm_spanning_the_seeding_walk_is_counted_exactly_here() {
    require_root();
    ensure_tracefs();
    for run in 0..straddle_runs() {
        let n = straddle(|| report_of(&[]), false);
        eprintln!("run {run}: {n} workloads started during the seeding window");
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_fork_storm_spanning_the_seeding_walk_is_counted_exactly_over_a_remote_link() {
    require_root();
    ensure_tracefs();
    let agent = format!("exec {RMAPWATCH} agent");
    for run in 0..straddle_runs() {
        let n = straddle(|| report_of(&["--remote", &agent]), true);
        eprintln!("run {run}: {n} workloads started during the seeding window");
    }
}
