//! Helpers shared by the binary and kernel tests.
#![allow(dead_code, reason = "each test file uses a subset")]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub use rmapwatch_engine::{
    inspect::{Inspection, VmaReport},
    report::{LiveBlock, ProcessReport, Report},
};

pub const RMAPWATCH: &str = env!("CARGO_BIN_EXE_rmapwatch");
/// The controlled workload (crate rmapwatch-tools), built next to
/// rmapwatch by `cargo xtask test` (`cargo build -p rmapwatch-tools`).
pub static WORKLOAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let p = std::path::Path::new(RMAPWATCH).with_file_name("rmw-workload");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p rmapwatch-tools` (cargo xtask test does)",
        p.display()
    );
    p.display().to_string()
});

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Privileged tests call this first: they are `#[ignore]`d so that plain
/// `cargo test` needs no root, and `cargo xtask test` runs them as root.
pub fn require_root() {
    assert!(
        is_root(),
        "this test loads eBPF programs: run it as root (cargo xtask test)"
    );
}

/// Objects in use in a slab cache. SLUB counts objects that sit free in
/// per-CPU slabs and sheaves as in use; shrinking the cache first flushes
/// them, which makes the count exact.
pub fn slab_objects(cache: &str) -> i64 {
    std::fs::write(format!("/sys/kernel/slab/{cache}/shrink"), "1").unwrap();
    let s = std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/objects")).unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// [`slab_objects`] once it holds still: right after many frees (a test
/// before this one ended its processes) slabs wait out an RCU grace period
/// (the anon_vma cache is SLAB_TYPESAFE_BY_RCU) before a shrink can empty
/// them, and the count reads high for a moment.
pub fn settled_slab_objects(cache: &str) -> i64 {
    let mut last = slab_objects(cache);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = slab_objects(cache);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Waits for `child` to exit, at most `limit`: its status, or `None` if
/// it still runs (left running).
pub fn exited_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn send(child: &Child, sig: libc::c_int) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Classic tracepoints (and so bpftrace) need tracefs, which a fresh
/// machine may not have mounted yet: mount it, and say so.
pub fn ensure_tracefs() {
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        return;
    }
    eprintln!("test harness: tracefs is not mounted: mounting it at /sys/kernel/tracing");
    let out = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "mount -t tracefs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads lines of a child's stream on a thread; `wait_for` waits for one.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    /// The peer's other stream, shown when this one ends or times out.
    pub other: Option<Box<Lines>>,
}

impl Lines {
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            other: None,
        }
    }

    /// Lines of `stream`, showing `other` (the peer's stderr) when waiting fails.
    pub fn with_other(stream: impl std::io::Read + Send + 'static, other: Lines) -> Self {
        Self {
            other: Some(Box::new(other)),
            ..Self::new(stream)
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => {
                    let what = if e == mpsc::RecvTimeoutError::Disconnected {
                        "the stream ended (the peer exited?)"
                    } else {
                        "timed out"
                    };
                    let other = self.other.as_mut().map(|o| o.rest()).unwrap_or_default();
                    panic!(
                        "{what} waiting for {needle:?}; saw {:#?}; its other stream said {other:#?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// The next line with `needle` printed after now: what is already
    /// queued (lines printed earlier, not yet read) is read first and
    /// passed over.
    pub fn fresh(&mut self, needle: &str, timeout: Duration) -> String {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        self.wait_for(needle, timeout)
    }

    /// Every line until the stream closes.
    pub fn rest(&mut self) -> Vec<String> {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(30)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

/// What bpftrace prints (stderr before 0.23, stdout after) once its last probe is attached, when
/// this variable is set: bpftrace's own runtime tests wait for it.
/// ("Attaching N probes" comes before the first attach: waiting for it and
/// half a second was a guess.)
const BPFTRACE_ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// Waits until either of a child's streams prints a line with `needle`
/// (bpftrace says its notices on stderr before 0.23, on stdout from 0.23
/// on); fails when it does not within `timeout`, or both streams end.
fn wait_either(
    stdout: &mut Lines,
    stderr: &mut Lines,
    needle: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ended = 0;
        for l in [&mut *stdout, &mut *stderr] {
            loop {
                match l.rx.try_recv() {
                    Ok(line) => {
                        let hit = line.contains(needle);
                        l.seen.push(line);
                        if hit {
                            return Ok(());
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        ended += 1;
                        break;
                    }
                }
            }
        }
        let what = if ended == 2 {
            "both streams ended (it exited?)"
        } else if Instant::now() >= deadline {
            "timed out"
        } else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        return Err(format!(
            "{what} waiting for {needle:?}; stdout said {:#?}; stderr said {:#?}",
            stdout.seen, stderr.seen
        ));
    }
}

/// A running bpftrace script (the independent count), attached.
pub struct Bpftrace {
    child: Child,
    stdout: Lines,
}

impl Bpftrace {
    /// Starts `script` and returns once it attached (its stderr is shown if
    /// it exits before).
    pub fn start(script: &str) -> Self {
        ensure_tracefs();
        let mut child = Command::new("bpftrace")
            .args(["-e", script])
            .env(BPFTRACE_ATTACHED, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bpftrace is installed by cargo xtask setup");
        let mut stdout = Lines::new(child.stdout.take().unwrap());
        let mut stderr = Lines::new(child.stderr.take().unwrap());
        if let Err(e) = wait_either(
            &mut stdout,
            &mut stderr,
            BPFTRACE_ATTACHED,
            Duration::from_secs(60),
        ) {
            // Not left attached beside the next test's counts.
            let _ = child.kill();
            let _ = child.wait();
            panic!("bpftrace did not attach: {e}");
        }
        // Its stdout (the maps at the exit), with its stderr shown on a failure.
        let stdout = Lines {
            other: Some(Box::new(stderr)),
            ..stdout
        };
        Self { child, stdout }
    }

    /// SIGINT until it exits, then every line it printed (its maps).
    pub fn stop(mut self) -> Vec<String> {
        // bpftrace 0.17 can miss a SIGINT that lands just before it sleeps
        // in epoll_wait, and then waits forever (seen once in a CI run: 28
        // minutes, ended by a second SIGINT). Say it again until it exits.
        let start = std::time::Instant::now();
        loop {
            send(&self.child, libc::SIGINT);
            if exited_within(&mut self.child, Duration::from_secs(5)).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "bpftrace did not exit on SIGINT in 120 s"
            );
            eprintln!("bpftrace still runs 5 s after SIGINT: sending it again");
        }
        self.stdout.rest()
    }
}

/// A running `rmapwatch report --json`, attached.
pub struct Rmapwatch {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Rmapwatch {
    pub fn start(args: &[&str]) -> Self {
        let mut c = Command::new(RMAPWATCH);
        c.args(["report", "--json"])
            .args(args)
            .env("RMAPWATCH_LOG", "debug");
        // Not just "attached": "attached; capabilities kept" comes before
        // the source has started, and a SIGINT then cancels the start
        // (no report).
        Self::spawn(c, "attached; counting", Duration::from_secs(60))
    }

    /// `c`, a `report --json` of some source, once its stderr said
    /// `attached`.
    pub fn spawn(mut c: Command, attached: &str, timeout: Duration) -> Self {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Lines::new(child.stdout.take().unwrap());
        let mut stderr = Lines::new(child.stderr.take().unwrap());
        stderr.wait_for(attached, timeout);
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// SIGINT, then the final report.
    pub fn stop(self) -> Report {
        self.stop_all().pop().unwrap()
    }

    /// SIGINT, then every report (interim ones, then the final one).
    pub fn stop_all(self) -> Vec<Report> {
        self.stop_all_with_stderr().0
    }

    /// SIGINT, then the final report and every line of stderr (the log).
    pub fn stop_with_stderr(self) -> (Report, Vec<String>) {
        let (mut all, errs) = self.stop_all_with_stderr();
        (all.pop().unwrap(), errs)
    }

    fn stop_all_with_stderr(mut self) -> (Vec<Report>, Vec<String>) {
        send(&self.child, libc::SIGINT);
        let status = self.child.wait().unwrap();
        let lines = self.stdout.rest();
        let errs = self.stderr.rest();
        assert!(status.success(), "rmapwatch failed: {status:?}\n{errs:#?}");
        let all: Vec<Report> = lines.iter().map(|l| report(l)).collect();
        let last = all
            .last()
            .unwrap_or_else(|| panic!("no report; stderr {errs:#?}"));
        assert!(last.done);
        (all, errs)
    }
}

/// A test that failed leaves no rmapwatch running (it would hold the
/// programs, and the lock of `cargo xtask test`'s callers, for ever).
impl Drop for Rmapwatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            send(&self.child, libc::SIGINT);
            if exited_within(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A running `rmw-workload --hold`, stopped at its `ready` line.
pub struct Workload {
    pub child: Child,
    pub parent: u32,
    pub children: Vec<u32>,
    /// The `CLONE_VM` child of `--vm-child`.
    pub vm_child: Option<u32>,
    /// Address range of the regions.
    pub regions: (u64, u64),
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(&*WORKLOAD), args)
    }

    /// A workload that calls itself `name` as an Android app does: the
    /// first argument of its command line, and its comm (the kernel keeps
    /// the first 15 bytes).
    pub fn start_named(name: &str, args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut c = Command::new(&*WORKLOAD);
        c.arg0(name).args(["--name", name]);
        Self::spawn(c, args)
    }

    fn spawn(mut c: Command, args: &[&str]) -> Self {
        let mut child = c
            .args(args)
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut regions = (0, 0);
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "workload ended early"
            );
            if let Some(r) = line.strip_prefix("regions ") {
                let hex =
                    |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap();
                let (a, b) = r.split_once(' ').unwrap();
                regions = (hex(a), hex(b));
            } else {
                break;
            }
        }
        let (forked, vm) = line.split_once(" vm ").unwrap_or((&line, ""));
        let mut words = forked.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "workload said {line:?}");
        let pids: Vec<u32> = words.map(|w| w.parse().unwrap()).collect();
        Self {
            child,
            parent: pids[0],
            children: pids[1..].to_vec(),
            vm_child: vm.trim().parse().ok(),
            regions,
            stdout,
        }
    }

    /// Writes `line` to its stdin, then reads its stdout up to a line that
    /// starts with `answer`.
    pub fn tell(&mut self, line: &str, answer: &str) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut got = String::new();
        loop {
            got.clear();
            assert!(
                self.stdout.read_line(&mut got).unwrap() > 0,
                "workload ended before {answer:?}"
            );
            if got.starts_with(answer) {
                return;
            }
        }
    }

    /// Releases the children and waits for everything to exit.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(self.child.wait().unwrap().success());
        assert!(rest.contains("done"));
    }
}

/// `rmw-workload --vfork-hold`: a process inside a `CLONE_VFORK` clone
/// until released, holding a fork window (and an entry of the fork
/// window's map) open.
pub struct VforkHold(Child);

impl VforkHold {
    /// A holder whose fork is in the fork window's map: the test's
    /// rmapwatch runs with a map of one entry (`RMAPWATCH_FORK_WINDOW_ENTRIES`
    /// 1), so the holder's entry is what makes every other fork find it
    /// full. A fork elsewhere (a thread rmapwatch or the system starts)
    /// inside its own system call when the holder enters takes the one
    /// entry, and the holder then holds nothing: that is checked in the
    /// map itself, and such a holder is released and another started.
    pub fn start() -> Self {
        for attempt in 1..=10 {
            let h = Self::spawn();
            let keys = fork_window_keys();
            if keys.contains(&h.0.id()) {
                return h;
            }
            eprintln!(
                "vfork hold {attempt}: the fork window's one entry was another thread's \
                 ({keys:?}) when the holder {} forked; again",
                h.0.id()
            );
            h.release();
        }
        panic!("10 vfork holders in a row found the fork window's map taken");
    }

    /// The holder, once its clone's child runs: the parent is then inside
    /// its system call, and the entry program has run (the test forks
    /// nothing before, not even bpftool, which would take the entry).
    fn spawn() -> Self {
        let mut child = Command::new(&*WORKLOAD)
            .arg("--vfork-hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for want in ["vfork", "in"] {
            let mut said = String::new();
            out.read_line(&mut said).unwrap();
            assert_eq!(said.trim(), want, "rmw-workload --vfork-hold said {said:?}");
        }
        child.stdout = Some(out.into_inner());
        Self(child)
    }

    /// Whether it still holds.
    pub fn holds(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Releases it and waits for it.
    pub fn release(mut self) {
        drop(self.0.stdin.take());
        assert!(self.0.wait().unwrap().success());
    }
}

/// The keys (thread ids) of the fork window's map of one entry: the one
/// map named `FORKING` with `max_entries` 1 (the test's rmapwatch), read
/// with bpftool (no BTF for the map: key bytes in memory order, as
/// `["0x88","0x2f","0x00","0x00"]`).
fn fork_window_keys() -> Vec<u32> {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("bpftool")
            .arg("--json")
            .args(args)
            .output()
            .expect("bpftool is installed by cargo xtask setup");
        assert!(out.status.success(), "bpftool {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("bpftool's JSON")
    };
    let maps = json(&["map", "show"]);
    let ids: Vec<u64> = maps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == "FORKING" && m["max_entries"] == 1)
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let [id] = ids[..] else {
        panic!("one fork window map of one entry expected (this test's rmapwatch), found {ids:?}");
    };
    let byte = |b: &serde_json::Value| {
        b.as_str()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| panic!("bpftool's key byte {b}"))
    };
    json(&["map", "dump", "id", &id.to_string()])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["key"].as_array())
        .map(|k| {
            let b: Vec<u8> = k.iter().map(byte).collect();
            let b: [u8; 4] = b
                .try_into()
                .unwrap_or_else(|b| panic!("a 4-byte key, not {b:?}"));
            u32::from_ne_bytes(b)
        })
        .collect()
}

/// Names of loaded BPF programs (from bpftool).
pub fn loaded_programs() -> String {
    let out = Command::new("bpftool")
        .args(["prog", "list"])
        .output()
        .expect("bpftool is installed by cargo xtask setup");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Programs of ours, by the names rmapwatch-ebpf gives them (truncated to
/// the kernel's 15 characters).
pub fn rmapwatch_programs_loaded() -> Vec<String> {
    const OURS: [&str; 6] = [
        "kmem_cache_allo",
        "kmem_cache_free",
        "sched_process_f",
        "fork_enter",
        "fork_exit",
        "fentry_prepare",
    ];
    loaded_programs()
        .lines()
        .filter(|l| OURS.iter().any(|n| l.contains(&format!("name {n}"))))
        .map(str::to_owned)
        .collect()
}

pub fn wait_gone(timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = rmapwatch_programs_loaded();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A JSON report, typed: a renamed or missing field fails here instead of
/// reading as 0.
pub fn report(json: &str) -> Report {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not a rmapwatch.report/1: {e}: {json}"))
}

/// Two reports of the same moment agree on these processes: live, lazy
/// and walked objects, flows, parent.
pub fn same_processes(a: &Report, b: &Report, pids: &[u32]) {
    for pid in pids {
        let (a, b) = (process(a, *pid), process(b, *pid));
        assert_eq!(a.live, b.live, "pid {pid} live");
        assert_eq!(a.lazy, b.lazy, "pid {pid} lazy");
        assert_eq!(a.snapshot, b.snapshot, "pid {pid} walked");
        assert_eq!(
            (a.anon_vma, a.anon_vma_chain),
            (b.anon_vma, b.anon_vma_chain),
            "pid {pid} flows"
        );
        assert_eq!(a.ppid, b.ppid, "pid {pid} parent");
    }
}

/// The report's process `pid`.
pub fn process(r: &Report, pid: u32) -> &ProcessReport {
    r.processes
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in the report"))
}

/// Live, walked and lazy objects of a report's process or system:
/// `(anon_vma, AVC)` objects.
pub fn objects(b: &LiveBlock) -> (u64, u64) {
    (b.anon_vma.objects, b.anon_vma_chain.objects)
}

/// `rmapwatch inspect <pid> --json`.
pub fn inspect(pid: u32) -> Inspection {
    let out = Command::new(RMAPWATCH)
        .args(["inspect", &pid.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The inspected VMAs inside `range`.
pub fn vmas_in(inspection: &Inspection, range: (u64, u64)) -> Vec<VmaReport> {
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
    inspection
        .vmas
        .iter()
        .filter(|v| hex(&v.start) >= range.0 && hex(&v.end) <= range.1)
        .cloned()
        .collect()
}

/// A running `rmapwatch serve`, once it said where it serves.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Lines,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed test's exporter must not outlive it (its programs would
        // count in the next test's checks).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    pub fn start(args: &[&str]) -> Self {
        let mut c = Command::new(RMAPWATCH);
        c.arg("serve").args(args);
        Self::spawn(c)
    }

    pub fn spawn(mut c: Command) -> Self {
        let mut child = c
            .env("RMAPWATCH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = Lines::new(child.stderr.take().unwrap());
        let line = stderr.wait_for("serving http://", Duration::from_secs(90));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// GET /metrics (with an Accept header, or none).
    pub fn scrape(&self, accept: Option<&str>) -> (String, String) {
        get(self.addr, "/metrics", accept)
    }

    /// SIGINT; its exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        send(&self.child, libc::SIGINT);
        let status = self.child.wait().unwrap();
        (status, self.stderr.rest())
    }
}

/// A plain HTTP/1.0 GET (no chunked replies): (content type, body).
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "GET {path}: {head}"
    );
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (ctype, body.to_owned())
}

/// The value of the sample `series` (name and labels as printed, in the
/// encoder's label order) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

/// The committed recordings (`tests/fixtures/*.rmw`), sorted.
pub fn fixtures() -> Vec<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rmw"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

/// A tmux session running a command (the live view is driven in a real
/// terminal: keys sent with send-keys, the screen read with capture-pane).
pub struct Tmux(String);

/// A tmux server of the tests' own: `kill-server` and session names never
/// touch the user's (or a concurrent run's) sessions.
pub const SOCKET: &str = "rmapwatch-test";

pub fn tmux() -> Command {
    let mut c = Command::new("tmux");
    c.args(["-L", SOCKET]);
    c
}

impl Tmux {
    pub fn start(name: &str, cmd: &str) -> Self {
        let _ = tmux().args(["kill-session", "-t", name]).status();
        let ok = tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "160",
                "-y",
                "48",
                cmd,
            ])
            .status()
            .expect("tmux is installed by cargo xtask setup");
        assert!(ok.success());
        Self(name.to_owned())
    }

    /// The rmapwatch of this session: the pane's process, or its child
    /// (never `pgrep` system-wide: other runs may have their own).
    pub fn rmapwatch_pid(&self) -> String {
        let out = tmux()
            .args(["list-panes", "-t", &self.0, "-F", "#{pane_pid}"])
            .output()
            .unwrap();
        let pane = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let comm = std::fs::read_to_string(format!("/proc/{pane}/comm")).unwrap_or_default();
        if comm.trim() == "rmapwatch" {
            return pane;
        }
        let out = Command::new("pgrep")
            .args(["-P", &pane, "-x", "rmapwatch"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn screen(&self) -> String {
        let out = tmux()
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut c = tmux();
        c.args(["send-keys", "-t", &self.0]).args(keys);
        assert!(c.status().unwrap().success());
    }

    pub fn wait_for(&self, what: impl Fn(&str) -> bool, label: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if what(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {label}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux().args(["kill-session", "-t", &self.0]).status();
    }
}

/// How many times the straddling case runs per test (the race it guards
/// was once one in ten): `RMAPWATCH_STRADDLE_RUNS`, 3 by default.
pub fn straddle_runs() -> usize {
    std::env::var("RMAPWATCH_STRADDLE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A fork storm spanning the seeding walk: workloads (a parent holding 40
/// regions, three children) start one after the other from before the
/// source attaches until its first interim report (after its seeding
/// walk), and stay held. `start` starts the report under test (with
/// `--interval`); `reference`, when given, starts beside it a report
/// whose seeding walk came before the storm. Once every workload holds,
/// both are stopped: for every workload process the report's live objects
/// equal what its final walk saw and the reference's, its drift is 0 and
/// nothing was dropped. Returns how many workloads started during the
/// seeding window.
pub fn straddle(start: impl FnOnce() -> Rmapwatch, reference: bool) -> usize {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let reference = reference.then(|| Rmapwatch::start(&[]));
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // As fast as they start; the newest 100 held (400 processes),
            // the older ones released as new ones come, however long the
            // source takes to attach (a phone's agent is pushed first).
            let mut held = std::collections::VecDeque::new();
            let mut started = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let t = Instant::now();
                started.push(t);
                held.push_back(Workload::start(&[
                    "--regions",
                    "40",
                    "--children",
                    "3",
                    "--noise",
                    "0",
                ]));
                if held.len() > 100
                    && let Some(w) = held.pop_front()
                {
                    w.finish();
                }
            }
            (started, held)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut r = start();
    let attached = Instant::now();
    r.stdout.fresh("\"done\":false", Duration::from_secs(60));
    let seeded = Instant::now();
    stop.store(true, Ordering::Release);
    let (started, held) = storm.join().unwrap();
    let during = started
        .iter()
        .filter(|t| **t >= attached && **t <= seeded)
        .count();
    assert!(
        during > 0,
        "no workload started between attach and the first report: the storm did not span the seeding walk"
    );
    // Every later tick's walk sees them held; let two pass.
    std::thread::sleep(Duration::from_secs(2));
    let got = r.stop();
    let reference = reference.map(Rmapwatch::stop);
    assert_eq!(got.dropped_events, Some(0));
    let m = got.model.as_ref().unwrap();
    let differing: Vec<String> = got
        .processes
        .iter()
        .filter(|p| {
            p.snapshot
                .as_ref()
                .is_some_and(|s| objects(s) != objects(&p.live))
        })
        .map(|p| {
            format!(
                "{} {} ppid {:?} exited {}: live {:?} walked {:?}",
                p.pid,
                p.comm,
                p.ppid,
                p.exited,
                objects(&p.live),
                p.snapshot.as_ref().map(objects)
            )
        })
        .collect();
    assert_eq!(
        (
            m.drift.anon_vma,
            m.drift.anon_vma_chain,
            m.drift.processes_differing
        ),
        (0, 0, 0),
        "drift of the final walk; processes whose live objects differ from the walk's: {differing:#?}"
    );
    let pids: Vec<u32> = held
        .iter()
        .flat_map(|w| std::iter::once(w.parent).chain(w.children.clone()))
        .collect();
    for &pid in &pids {
        let p = process(&got, pid);
        let walked = p.snapshot.as_ref().map(objects);
        assert_eq!(
            Some(objects(&p.live)),
            walked,
            "pid {pid}: live vs the final walk"
        );
    }
    // The reference attached before the storm: the flows differ (it saw
    // the allocations the other seeded), the objects may not.
    if let Some(reference) = &reference {
        for &pid in &pids {
            let (a, b) = (process(&got, pid), process(reference, pid));
            assert_eq!(objects(&a.live), objects(&b.live), "pid {pid} live");
            assert_eq!(a.lazy, b.lazy, "pid {pid} lazy");
            assert_eq!(a.snapshot, b.snapshot, "pid {pid} walked");
        }
    }
    for w in held {
        w.finish();
    }
    during
}
