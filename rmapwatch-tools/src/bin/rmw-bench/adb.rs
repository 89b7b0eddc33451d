//! `rmw-bench adb`: the cost of `--adb`, on this host through the device
//! stand-in (`rmw-adbd`, commands running here) and the real adb client.
//! Baseline in the same invocation: `rmapwatch report --interval 1` here,
//! the same walks and ticks without a link. Figures: the agent's CPU on the
//! device side, the host side's CPU, the link's bytes per second at idle
//! and in a fork storm (against USB 2's ~4 MB/s), dropped events, lag.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{child::lines_of, storm::cpu_ticks};

/// A USB 2 link's practical rate for adb (bytes/s).
const USB2: f64 = 4.0e6;

fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

/// The agent on the "device": the process whose command line has
/// `--cleanup` (what an `--adb` host passes it).
pub fn agent_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let words: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        (words.contains(&&b"--cleanup"[..]) && words.contains(&&b"agent"[..])).then_some(pid)
    })
}

fn latest(rx: &mpsc::Receiver<String>, last: &mut Option<serde_json::Value>) {
    while let Ok(l) = rx.try_recv() {
        if let Ok(v) = serde_json::from_str(&l) {
            *last = Some(v);
        }
    }
}

fn link(v: Option<&serde_json::Value>, k: &str) -> f64 {
    v.and_then(|v| v["link"][k].as_f64()).unwrap_or(0.0)
}

fn spawn_report(bin: &Path, pre: &[&str], env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut c = Command::new(bin);
    c.args(pre)
        .args(["report", "--json", "--interval", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    Ok(c.spawn()?)
}

fn wait_attached(rx: &mpsc::Receiver<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("attached; counting") => return Ok(()),
            Ok(l) if l.contains("error") => bail!("rmapwatch: {l}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    bail!("rmapwatch never attached")
}

fn stop(mut c: Child) -> anyhow::Result<()> {
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(i32::try_from(c.id())?, libc::SIGINT) };
    let st = c.wait()?;
    if !st.success() {
        bail!("rmapwatch exited {st}");
    }
    Ok(())
}

/// Runs the benchmark: `secs` of idle, then a storm of `forks`.
///
/// # Errors
/// The stand-in, adb or rmapwatch fail.
pub fn run(secs: usize, forks: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory")?;
    let bin = dir.join("rmapwatch");
    let adbd = dir.join("rmw-adbd");
    let workload = dir.join("rmw-workload");
    for p in [&bin, &adbd, &workload] {
        if !p.exists() {
            bail!("{} not found next to rmw-bench", p.display());
        }
    }
    // Baseline: the same report here, no link.
    let mut base = spawn_report(&bin, &[], &[])?;
    let base_err = lines_of(base.stderr.take().context("stderr")?);
    // Read, or its reports fill the pipe and it blocks.
    let _base_out = lines_of(base.stdout.take().context("stdout")?);
    wait_attached(&base_err)?;
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), cpu_ticks(base.id())?);
    std::thread::sleep(Duration::from_secs(secs as u64));
    let base_pct = (cpu_ticks(base.id())? - c0) as f64 / hz() / t0.elapsed().as_secs_f64() * 100.0;
    stop(base)?;

    let dev = StandIn::start(&adbd)?;
    let (env, serial) = (dev.env.clone(), dev.serial.clone());
    let result = (|| -> anyhow::Result<()> {
        let mut host = spawn_report(&bin, &["--adb", &serial], &env)?;
        let host_err = lines_of(host.stderr.take().context("stderr")?);
        let host_out = lines_of(host.stdout.take().context("stdout")?);
        wait_attached(&host_err)?;
        std::thread::sleep(Duration::from_secs(2));
        let agent = agent_pid().context("no agent process found")?;
        let mut last = None;
        latest(&host_out, &mut last);
        let (t0, a0, h0, b0) = (
            Instant::now(),
            cpu_ticks(agent)?,
            cpu_ticks(host.id())?,
            link(last.as_ref(), "bytes"),
        );
        std::thread::sleep(Duration::from_secs(secs as u64));
        latest(&host_out, &mut last);
        let dt = t0.elapsed().as_secs_f64();
        let (a1, h1, b1) = (
            cpu_ticks(agent)?,
            cpu_ticks(host.id())?,
            link(last.as_ref(), "bytes"),
        );
        let agent_pct = (a1 - a0) as f64 / hz() / dt * 100.0;
        let host_pct = (h1 - h0) as f64 / hz() / dt * 100.0;
        let idle_rate = (b1 - b0) / dt;
        // The storm: as fast as the machine forks, the link's peak.
        let t1 = Instant::now();
        let o = Command::new(&workload)
            .args(["--regions", "40", "--noise", "0", "--storm"])
            .arg(forks.to_string())
            .output()?;
        let storm_s = t1.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1500));
        latest(&host_out, &mut last);
        let b2 = link(last.as_ref(), "bytes");
        let storm_rate = (b2 - b1) / (storm_s + 1.5);
        let lag_max = link(last.as_ref(), "lag_max_ms");
        stop(host)?;
        let dropped = last
            .as_ref()
            .and_then(|v| v["dropped_events"].as_u64())
            .unwrap_or(u64::MAX);
        let events = last
            .as_ref()
            .and_then(|v| v["events"].as_u64())
            .unwrap_or(0);
        println!(
            "{:<52} {:>8.2} % of one core over {dt:.0} s (refresh 1 s); host side {host_pct:.2} %",
            "adb idle: the agent on the device (stand-in, here)", agent_pct
        );
        println!(
            "{:<52} {:>8.2} % of one core  ratio {:.2}x",
            "  baseline: rmapwatch report --interval 1 here",
            base_pct,
            agent_pct / base_pct.max(0.01)
        );
        println!("{:<52} {:>8.1} KB/s", "adb idle: link", idle_rate / 1024.0);
        println!(
            "{:<52} {:>8.1} KB/s over {:.1} s ({}), {events} events in all, {dropped} dropped, lag max {lag_max:.0} ms; {:.3}x of USB 2 (4 MB/s)",
            format!("adb fork storm ({forks} forks): link"),
            storm_rate / 1024.0,
            storm_s + 1.5,
            String::from_utf8_lossy(&o.stdout).trim(),
            storm_rate / USB2
        );
        Ok(())
    })();
    dev.stop()?;
    result
}

/// The device stand-in (`rmw-adbd`, root) connected to an adb server of
/// its own (its own port and home): a "phone" whose commands run here.
pub struct StandIn {
    dev: Child,
    home: PathBuf,
    /// The environment an adb client (and `rmapwatch --adb`) needs.
    pub env: Vec<(&'static str, String)>,
    /// The device's serial (its address).
    pub serial: String,
}

impl StandIn {
    /// Starts `adbd` (the stand-in's binary) and connects the server.
    ///
    /// # Errors
    /// The stand-in or adb fail.
    pub fn start(adbd: &Path) -> anyhow::Result<Self> {
        let home = std::env::temp_dir().join("rmw-bench-adb-home");
        std::fs::create_dir_all(&home)?;
        let env = vec![
            ("ANDROID_ADB_SERVER_PORT", "15981".to_owned()),
            ("HOME", home.display().to_string()),
        ];
        let mut dev = Command::new(adbd)
            .args(["--listen", "127.0.0.1:0", "--uid", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = lines_of(dev.stdout.take().context("stdout")?);
        let serial = out
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
            .context("rmw-adbd did not say where it listens")?;
        let s = Self {
            dev,
            home,
            env,
            serial,
        };
        s.adb(&["connect", &s.serial])?;
        Ok(s)
    }

    /// `adb ARGS` against this server; its stdout.
    ///
    /// # Errors
    /// adb cannot be run.
    pub fn adb(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = Command::new("adb")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .context("running adb (apt install adb)")?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    /// Stops the server and the stand-in; fails if a pushed file is left
    /// on the "device".
    ///
    /// # Errors
    /// Something of rmapwatch's was left in `/data/local/tmp`.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.adb(&["kill-server"]);
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(i32::try_from(self.dev.id())?, libc::SIGTERM) };
        let _ = self.dev.wait();
        let _ = std::fs::remove_dir_all(&self.home);
        let left: Vec<PathBuf> = std::fs::read_dir("/data/local/tmp")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("rmapwatch-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !left.is_empty() {
            bail!("left on the device side: {left:?}");
        }
        Ok(())
    }
}
