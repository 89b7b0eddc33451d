//! Least privilege, proved on the running kernel: after attaching, every
//! thread of rmapwatch holds only the capabilities the rest of the run
//! uses; a setuid rmapwatch refuses to start; a `kill -9` at any moment
//! leaves no program loaded (links are owned by file descriptors); an
//! agent writes nothing but its own pushed file (and the kernel knobs it
//! says it touches). Root.
mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const CAP_SYS_PTRACE: u64 = 1 << 19;
const CAP_BPF: u64 = 1 << 39;

/// Every thread's effective, permitted, inheritable and bounding sets.
fn thread_caps(pid: u32) -> Vec<(String, [u64; 4])> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let f = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap()
        };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        out.push((
            format!("{tid} ({name})"),
            [f("CapEff:"), f("CapPrm:"), f("CapInh:"), f("CapBnd:")],
        ));
    }
    out
}

fn kernel_has_cap_bpf() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap()
        >= 39
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn after_attaching_every_thread_keeps_only_what_the_run_uses() {
    require_root();
    let kept = if kernel_has_cap_bpf() {
        CAP_BPF | CAP_SYS_PTRACE
    } else {
        (1 << 21) | CAP_SYS_PTRACE
    };
    // report: the main thread, the source's; serve: its HTTP thread too,
    // started before the source.
    // Started once it said `attached; capabilities kept: ...`.
    let rw = Rmapwatch::start(&[]);
    let threads = thread_caps(rw.child.id());
    assert!(threads.len() >= 2, "{threads:?}");
    for (tid, sets) in &threads {
        assert_eq!(*sets, [kept, kept, 0, kept], "thread {tid}");
    }
    // What remains is enough: the walks and the final slab shrink work.
    std::thread::sleep(Duration::from_secs(1));
    let r = rw.stop();
    let m = r.model.unwrap();
    assert_eq!((m.drift.anon_vma, m.drift.anon_vma_chain), (0, 0));

    // Started once it said `attached; serving`, after the drop.
    let s = Serve::start(&["--listen", "127.0.0.1:0"]);
    let pid = s.child.id();
    let (_, body) = s.scrape(None);
    assert!(body.contains("rmapwatch_"), "{body}");
    let threads = thread_caps(pid);
    assert!(threads.len() >= 3, "{threads:?}");
    for (tid, sets) in &threads {
        assert_eq!(*sets, [kept, kept, 0, kept], "serve thread {tid}");
    }
    let (status, errs) = s.stop();
    assert!(status.success(), "{errs:#?}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_setuid_rmapwatch_refuses_to_start() {
    require_root();
    let dir = std::env::temp_dir().join(format!("rmapwatch-setuid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("rmapwatch");
    std::fs::copy(RMAPWATCH, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["report", "--duration", "1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("refuses to run setuid"), "{stderr}");
    assert!(
        rmapwatch_programs_loaded().is_empty(),
        "it loaded something"
    );
}

/// `rmapwatch report` killed with SIGKILL `after` its start (or once it
/// said it attached): no program of ours stays loaded.
fn killed_after(after: Option<Duration>) {
    let mut c = Command::new(RMAPWATCH)
        .args(["report", "--json", "--interval", "0.2"])
        .env("RMAPWATCH_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut errs = Lines::new(c.stderr.take().unwrap());
    match after {
        Some(d) => std::thread::sleep(d),
        None => {
            errs.wait_for("attached", Duration::from_secs(30));
            // Inside the walks that the interval asks for.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    send(&c, libc::SIGKILL);
    let _ = c.wait();
    let left = wait_gone(Duration::from_secs(5));
    assert!(left.is_empty(), "killed after {after:?}: left {left:?}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_kill_9_at_any_moment_leaves_no_program_loaded() {
    require_root();
    // Loading, attaching, the seeding walk, streaming: each moment of a
    // start is somewhere in these.
    for ms in [0, 10, 30, 60, 100, 150, 250, 400, 700, 1000] {
        killed_after(Some(Duration::from_millis(ms)));
    }
    for _ in 0..3 {
        killed_after(None);
    }
}

/// The file operations `strace` logged that change something, but for
/// those the agent says it makes.
fn writes_outside(log: &str, own: &str) -> Vec<String> {
    let allowed = |path: &str| {
        path == own
            || path == "/proc/sys/kernel/kptr_restrict"
            || (path.starts_with("/sys/kernel/slab/") && path.ends_with("/shrink"))
    };
    let mut out = Vec::new();
    for l in log.lines() {
        let Some(path) = l.split('"').nth(1) else {
            continue;
        };
        // The system call's name: "9492  openat(AT_FDCWD, ..." (not a
        // substring: readlink( holds link().
        let name = l
            .split('(')
            .next()
            .and_then(|head| head.split_whitespace().last())
            .unwrap_or("");
        let changes = if name == "openat" || name == "open" {
            ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                .iter()
                .any(|f| l.contains(f))
        } else {
            name == "link"
                || name == "linkat"
                || [
                    "unlink",
                    "rename",
                    "mkdir",
                    "rmdir",
                    "creat",
                    "truncate",
                    "chmod",
                    "fchmod",
                    "chown",
                    "fchown",
                    "lchown",
                    "symlink",
                    "mknod",
                    "utime",
                    "futimesat",
                ]
                .iter()
                .any(|f| name.starts_with(f))
        };
        // Failed calls changed nothing.
        if changes && !l.contains("= -1 ") && !allowed(path) {
            out.push(l.to_owned());
        }
    }
    out
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_agent_writes_nothing_but_its_own_pushed_file() {
    require_root();
    let dir = std::env::temp_dir().join(format!("rmapwatch-agent-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    // As `--adb` runs it: a pushed copy that removes itself at the end.
    let own = dir.join("rmapwatch-pushed");
    std::fs::copy(RMAPWATCH, &own).unwrap();
    let log = dir.join("strace.log");
    let agent = format!(
        "strace -f -qq -e trace=%file -o {} {} agent --cleanup {}",
        log.display(),
        own.display(),
        own.display()
    );
    let w = Workload::start(&["--regions", "8", "--children", "2"]);
    let rw = Rmapwatch::spawn(
        {
            let mut c = Command::new(RMAPWATCH);
            c.args(["--remote", &agent, "report", "--json", "--interval", "0.3"]);
            c
        },
        "attached",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let r = rw.stop();
    w.finish();
    assert!(r.done);
    let deadline = Instant::now() + Duration::from_secs(10);
    while own.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!own.exists(), "the agent did not remove its pushed file");
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains(&format!("unlink(\"{}\")", own.display()))
            || text.contains(&format!("unlinkat(AT_FDCWD, \"{}\"", own.display())),
        "strace saw the agent's own removal (so it traced the agent)"
    );
    let outside = writes_outside(&text, &own.display().to_string());
    assert!(
        outside.is_empty(),
        "the agent wrote outside its file: {outside:#?}"
    );
}

#[test]
fn only_calls_that_change_a_file_count_as_writes() {
    let log = "9492  readlink(\"/proc/self/fd/3\", \"/tmp/x.lock\", 256) = 26\n\
               9492  openat(AT_FDCWD, \"/proc/self/fdinfo/7\", O_RDONLY|O_CLOEXEC) = 9\n\
               9492  openat(AT_FDCWD, \"/etc/x\", O_WRONLY|O_CREAT|O_CLOEXEC, 0666) = 9\n\
               9492  linkat(AT_FDCWD, \"/a\", AT_FDCWD, \"/b\", 0) = 0\n\
               9492  unlinkat(AT_FDCWD, \"/tmp/own\", 0) = 0\n\
               9492  mkdir(\"/var/lib/x\", 0777) = -1 EEXIST (File exists)\n";
    let out = writes_outside(log, "/tmp/own");
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(out[0].contains("/etc/x"));
    assert!(out[1].contains("linkat"));
}
