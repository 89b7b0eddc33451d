//! `cargo xtask fixtures`: small recordings of a controlled workload on
//! this host, committed under `rmapwatch/tests/fixtures/` and replayed by
//! the non-root tests, which assert the numbers the recorder printed. (The
//! QEMU guests' recordings come from `cargo xtask vm-test --fixtures`.)
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The workload of every fixture: regions, children, noise.
pub const WORKLOAD: [&str; 6] = ["--regions", "40", "--children", "3", "--noise", "20"];

/// Records `bins/rmapwatch` (its `record --json`) while `bins/rmw-workload`
/// holds, into `out.rmw`, `out.json` (what the recorder printed) and
/// `out.meta` (the workload's `regions` and `ready` lines).
///
/// # Errors
/// A binary fails, or times out.
pub fn record(bins: &Path, out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let rmw = out.with_extension("rmw");
    let _ = std::fs::remove_file(&rmw);
    let mut rec = Command::new(bins.join("rmapwatch"))
        .args(extra)
        .args(["record", "-o"])
        .arg(&rmw)
        .args(["--json", "--interval", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rmapwatch record")?;
    let mut err = BufReader::new(rec.stderr.take().context("stderr")?).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match err.next() {
            Some(Ok(l)) if l.contains("attached") => break,
            Some(Ok(l)) => eprintln!("{l}"),
            _ => bail!("rmapwatch record ended before attaching"),
        }
        if Instant::now() > deadline {
            bail!("rmapwatch record did not attach");
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    let mut w = Command::new(bins.join("rmw-workload"))
        .args(WORKLOAD)
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting rmw-workload")?;
    let mut meta = String::new();
    let mut lines = BufReader::new(w.stdout.take().context("stdout")?).lines();
    for l in lines.by_ref() {
        let l = l?;
        meta.push_str(&l);
        meta.push('\n');
        if l.starts_with("ready") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    // Stopped while the workload holds: the final walk sees it.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(libc::pid_t::try_from(rec.id())?, libc::SIGINT) };
    let done = rec.wait_with_output()?;
    drop(w.stdin.take());
    let _ = w.wait();
    if !done.status.success() {
        bail!("rmapwatch record failed: {:?}", done.status);
    }
    std::fs::write(out.with_extension("json"), &done.stdout)?;
    std::fs::write(out.with_extension("meta"), meta)?;
    Ok(())
}
