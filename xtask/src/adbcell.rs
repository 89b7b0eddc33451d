//! The matrix's adb cell: an arm64 guest serves the project's ADB device
//! stand-in (`rmw-adbd`) on a QEMU port of 127.0.0.1, and the host drives
//! it with the real adb client and `rmapwatch --adb`: the same exact checks
//! as the guest's own cells (slab counters, live = fresh walk, children
//! A/2A, nothing left loaded), with the ground truth read through adb;
//! then the link's cost (bytes/s idle and in a fork storm, the agent's CPU
//! on the device against the host side's, frame lag) and what was left on
//! the device (files, kptr_restrict).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rmapwatch_engine::report::Report;

use crate::vm::{
    Cell, HostPhase, checks,
    guest::{F, K, STORM},
};

/// A private adb server (port, HOME) for the cell.
struct Adb {
    port: u16,
    home: PathBuf,
    serial: String,
}

impl Adb {
    fn cmd(&self) -> Command {
        let mut c = Command::new("adb");
        c.env("ANDROID_ADB_SERVER_PORT", self.port.to_string())
            .env("HOME", &self.home)
            .env_remove("ANDROID_SERIAL")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let o = self
            .cmd()
            .args(args)
            .output()
            .map_err(|e| format!("adb {}: {e}", args.join(" ")))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
        } else {
            Err(format!(
                "adb {} exited {}: {}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }

    fn shell(&self, script: &str) -> Result<String, String> {
        self.run(&["-s", &self.serial, "shell", "-T", script])
    }
}

impl Drop for Adb {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Lines of a child's stream, collected on a thread.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(needle) {
                    return Ok(l);
                }
            }
            Err(_) => {
                return Err(format!(
                    "no '{needle}' in {} s: {}",
                    limit.as_secs(),
                    seen.join(" | ")
                ));
            }
        }
    }
}

fn drain(rx: &mpsc::Receiver<String>, into: &mut Vec<String>) {
    while let Ok(l) = rx.try_recv() {
        into.push(l);
    }
}

/// CPU ticks (utime + stime) of a process, from its stat line.
fn ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The slab snapshot the guest's cells take, through adb.
const SLABS: &str = "slab() { echo 1 > /sys/kernel/slab/$1/shrink; cut -d' ' -f1 /sys/kernel/slab/$1/objects; }; \
cpu() { cut -d' ' -f1 /sys/kernel/slab/$1/cpu_slabs; }; \
if [ -L /sys/kernel/slab/anon_vma_chain ]; then A=-1; AC=-1; else A=$(slab anon_vma_chain); AC=$(cpu anon_vma_chain); fi; \
echo \"s=$(slab anon_vma) c=$(cpu anon_vma) a=$A ac=$AC\"";

fn field<'a>(line: &'a str, k: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .unwrap_or("-1")
}

/// The agent's pid on the device (the process with `--cleanup` in its
/// command line), if it runs.
const AGENT_PID: &str = "for p in /proc/[0-9]*; do grep -qa -- '--cleanup' $p/cmdline 2>/dev/null && { echo ${p#/proc/}; break; }; done";

/// CPU ticks of the agent (on the device) and of the host side, now.
fn cpu(adb: &Adb, agent_pid: &str, host_pid: u32) -> (Option<u64>, Option<u64>, Instant) {
    (
        adb.shell(&format!("cat /proc/{agent_pid}/stat"))
            .ok()
            .as_deref()
            .and_then(ticks),
        std::fs::read_to_string(format!("/proc/{host_pid}/stat"))
            .ok()
            .as_deref()
            .and_then(ticks),
        Instant::now(),
    )
}

/// The host phase of an arm64 guest (its `adb_phase` serves the
/// stand-in): one cell.
pub fn phase(hp: &HostPhase) -> Vec<Cell> {
    // The x86_64 static build (vm-test builds it first); it finds the
    // aarch64 agent in the build tree beside it.
    let (port, kernel) = (hp.port, hp.kernel.as_str());
    let t = Instant::now();
    let (result, detail) = match run(port, &hp.host_bin, &hp.release, &hp.cache) {
        Ok(d) => (Ok(()), d),
        Err(e) => (Err(e), String::new()),
    };
    vec![Cell {
        kernel: kernel.to_owned(),
        mode: "auto over adb (host: real adb client)".to_owned(),
        result,
        detail: format!("{detail}; {:.0} s", t.elapsed().as_secs_f64()),
    }]
}

fn run(port: u16, host_bin: &Path, release: &str, cache: &Path) -> Result<String, String> {
    let home = std::env::temp_dir().join(format!("rmw-vm-adb-{port}"));
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let adb = Adb {
        port: 15_990,
        home,
        serial: format!("127.0.0.1:{port}"),
    };
    let _ = adb.cmd().arg("kill-server").output();
    // The guest's stand-in may need a moment after the port opened.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = adb.run(&["connect", &adb.serial]).unwrap_or_default();
        let state = adb
            .run(&["-s", &adb.serial, "get-state"])
            .unwrap_or_default();
        if out.contains("connected") && state == "device" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("adb connect {}: {out} / {state}", adb.serial));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let kptr0 = adb.shell("cat /proc/sys/kernel/kptr_restrict")?;
    // The host side: rmapwatch (x86_64) with the aarch64 agent found in the
    // build tree, interim reports every 0.5 s as the guest cells take.
    let mut host = Command::new(host_bin)
        .args([
            "--adb",
            &adb.serial,
            "report",
            "--json",
            "--interval",
            "0.5",
        ])
        .env("ANDROID_ADB_SERVER_PORT", adb.port.to_string())
        .env("HOME", &adb.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", host_bin.display()))?;
    let out_rx = lines(host.stdout.take().ok_or("stdout")?);
    let err_rx = lines(host.stderr.take().ok_or("stderr")?);
    let mut json: Vec<String> = Vec::new();
    let mut errs: Vec<String> = Vec::new();
    let result = (|| -> Result<String, String> {
        wait_line(
            &err_rx,
            &mut errs,
            "attached; counting",
            Duration::from_secs(400),
        )?;
        let host_pid = host.id();
        let agent_pid = adb.shell(AGENT_PID)?;
        let cpu0 = cpu(&adb, &agent_pid, host_pid);
        // Idle: what the link carries with nothing happening, and what
        // the agent costs then.
        std::thread::sleep(Duration::from_secs(5));
        let cpu_idle = cpu(&adb, &agent_pid, host_pid);
        drain(&out_rx, &mut json);
        let pre_lines = json.len();
        let idle_rate = json
            .last()
            .and_then(|l| serde_json::from_str::<Report>(l).ok())
            .and_then(|r| r.link)
            .map_or(0.0, |l| l.recent_bytes_per_s);
        let s0 = adb.shell(SLABS)?;
        let mut w = adb
            .cmd()
            .args(["-s", &adb.serial, "shell", "-T"])
            .arg(format!(
                "rmw-workload --regions {} --children {} --noise 20 --hold",
                K, F
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let w_rx = lines(w.stdout.take().ok_or("workload stdout")?);
        let mut w_lines = Vec::new();
        wait_line(&w_rx, &mut w_lines, "ready", Duration::from_secs(120))?;
        let s1 = adb.shell(SLABS)?;
        std::thread::sleep(Duration::from_secs(3));
        drain(&out_rx, &mut json);
        let hold_lines = json.len();
        drop(w.stdin.take());
        let _ = w.wait();
        // The fork storm: the link's peak.
        let storm = adb.shell(&format!(
            "rmw-workload --regions {} --noise 0 --storm {}",
            K, STORM
        ))?;
        std::thread::sleep(Duration::from_secs(1));
        let cpu1 = cpu(&adb, &agent_pid, host_pid);
        // Ctrl-C: the final report, the agent stops and removes itself.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(host_pid as libc::pid_t, libc::SIGINT) };
        let status = host.wait().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        drain(&out_rx, &mut json);
        drain(&err_rx, &mut errs);
        std::thread::sleep(Duration::from_secs(1));
        let left = adb.shell(
            "grep '\\[bpf\\]' /proc/kallsyms | grep -c -e kmem_cache -e sched_process -e fork_e -e fentry_ -e kprobe_ -e task_vma || true",
        ).unwrap_or_else(|e| e);
        let files = adb
            .shell("ls /data/local/tmp | grep -c rmapwatch- || true")
            .unwrap_or_else(|e| e);
        let kptr1 = adb.shell("cat /proc/sys/kernel/kptr_restrict")?;
        let cpus = adb.shell("grep -c ^processor /proc/cpuinfo")?;
        let ops = adb.shell("cat /sys/kernel/slab/anon_vma/objs_per_slab")?;
        let aops = adb.shell("cat /sys/kernel/slab/anon_vma_chain/objs_per_slab")?;
        let sheaf =
            adb.shell("cat /sys/kernel/slab/anon_vma/sheaf_capacity 2>/dev/null || echo 0")?;
        let asheaf =
            adb.shell("cat /sys/kernel/slab/anon_vma_chain/sheaf_capacity 2>/dev/null || echo 0")?;
        let meta = format!(
            "rc={} s0={} s1={} c0={} c1={} ops={ops} a0={} a1={} ac0={} ac1={} aops={aops} \
             sheaf={sheaf} asheaf={asheaf} cpus={cpus} left={left} {}",
            status.code().unwrap_or(-1),
            field(&s0, "s"),
            field(&s1, "s"),
            field(&s0, "c"),
            field(&s1, "c"),
            field(&s0, "a"),
            field(&s1, "a"),
            field(&s0, "ac"),
            field(&s1, "ac"),
            w_lines
                .iter()
                .filter(|l| l.starts_with("regions") || l.starts_with("ready"))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        );
        let reports: Vec<Report> = json
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| format!("a report that does not parse ({e}): {l}"))
            })
            .collect::<Result<_, _>>()?;
        let err_refs: Vec<&str> = errs.iter().map(String::as_str).collect();
        let (checked, detail) =
            checks::check("auto", &meta, pre_lines, hold_lines, &err_refs, &reports);
        checked?;
        if files.trim() != "0" {
            return Err(format!("left in /data/local/tmp: {files} files"));
        }
        if kptr1 != kptr0 {
            return Err(format!("kptr_restrict {kptr0} before, {kptr1} after"));
        }
        let last = reports.last().ok_or("no final report")?;
        if last.kernel.release != release {
            return Err(format!(
                "the report is of kernel {}, the guest runs {release}",
                last.kernel.release
            ));
        }
        let link = last
            .link
            .clone()
            .ok_or("the final report has no link block")?;
        let peak = reports
            .iter()
            .filter_map(|r| r.link.as_ref())
            .map(|l| l.recent_bytes_per_s)
            .fold(0.0, f64::max);
        let secs = cpu1.2.duration_since(cpu0.2).as_secs_f64();
        let idle_secs = cpu_idle.2.duration_since(cpu0.2).as_secs_f64();
        // USER_HZ is 100 on every Linux architecture.
        let pct = |a: Option<u64>, b: Option<u64>, secs: f64| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => {
                format!("{:.1}%", (b - a) as f64 / 100.0 / secs * 100.0)
            }
            _ => "?".to_owned(),
        };
        // What the "phone" showed: the cover letter's table, kept for
        // docs/android.md next to the series' numbers.
        if let Some(t) = last.seed_table() {
            let _ = std::fs::write(cache.join(format!("adb-seed-{release}.txt")), t);
        }
        Ok(format!(
            "{detail}; link idle {:.1} KB/s, peak {:.1} KB/s (storm: {}), {} KB in {:.0} s, lag max {:.0} ms; \
             CPU at idle ({idle_secs:.0} s): agent on the device {}, host side {}; over the whole {secs:.0} s (workload, storm): agent {}, host {}; dropped {}; nothing left \
             (files 0, programs {left}, kptr_restrict {kptr1})",
            idle_rate / 1024.0,
            peak / 1024.0,
            storm
                .split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" "),
            link.bytes / 1024,
            last.duration_s,
            link.lag_max_ms,
            pct(cpu0.0, cpu_idle.0, idle_secs),
            pct(cpu0.1, cpu_idle.1, idle_secs),
            pct(cpu0.0, cpu1.0, secs),
            pct(cpu0.1, cpu1.1, secs),
            last.dropped_events
                .map_or("?".to_owned(), |d| d.to_string()),
        ))
    })();
    let _ = host.kill();
    let _ = host.wait();
    if result.is_err() {
        drain(&err_rx, &mut errs);
        let _ = writeln!(
            std::io::stderr(),
            "xtask: adb cell failed; rmapwatch said:\n{}",
            errs.join("\n")
        );
    }
    result
}
