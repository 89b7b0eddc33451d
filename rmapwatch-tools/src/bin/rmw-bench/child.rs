//! The tracers a benchmark starts: a child stopped with SIGINT when
//! dropped, `rmapwatch report --json` started until it has attached and
//! stopped for its report, bpftrace started until its probes are attached,
//! and a child's output read line by line.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A child stopped with SIGINT (and reaped) when dropped: an error in a
/// round leaves no tracer running (it would hold the programs, and any
/// lock file the bench was started under).
pub(crate) struct Stop(pub(crate) std::process::Child);

impl Stop {
    /// Stops the child: SIGINT, again each second (bpftrace can lose one:
    /// taken between its check of the flag and its `epoll_wait`, with no
    /// event to wake it, it waited forever), and SIGKILL after 30 s.
    ///
    /// # Errors
    /// The child cannot be waited for.
    pub(crate) fn stop(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.0.id()).ok();
        for tick in 0..300 {
            if let Some(st) = self.0.try_wait()? {
                return Ok(st);
            }
            if tick % 10 == 0
                && let Some(pid) = pid
            {
                // SAFETY: kill(2) on our child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        self.0.wait()
    }
}

impl Drop for Stop {
    /// [`Stop::stop`], unless the child was waited for already.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `bin report --json ARGS` with `env`, and returns once it said it
/// attached; `on_line` sees each stderr line before that (an error stops).
///
/// # Errors
/// It cannot start, never attaches within 120 s, or `on_line` says so.
pub(crate) fn rmapwatch_report(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    mut on_line: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Stop> {
    let mut rw = Stop(
        Command::new(bin)
            .args(["report", "--json"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let err = lines_of(rw.0.stderr.take().context("no stderr")?);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .context("rmapwatch never attached")?;
        let l = err.recv_timeout(left)?;
        on_line(&l)?;
        if l.contains("attached; counting") {
            return Ok(rw);
        }
    }
}

/// Stops a [`rmapwatch_report`] with SIGINT and reads the report it prints.
///
/// # Errors
/// It printed no report, or not one this rmapwatch reads.
pub(crate) fn report_of(mut rw: Stop) -> anyhow::Result<rmapwatch_engine::report::Report> {
    let mut stdout = String::new();
    let mut out = rw.0.stdout.take().context("no stdout")?;
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(i32::try_from(rw.0.id())?, libc::SIGINT) };
    std::io::Read::read_to_string(&mut out, &mut stdout)?;
    drop(rw);
    Ok(serde_json::from_str(
        stdout
            .lines()
            .last()
            .context("rmapwatch printed no report")?,
    )?)
}

/// Lines of a child's stream, read on a thread.
pub(crate) fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// What bpftrace prints once its last probe is attached, when this
/// variable is set (on stderr before 0.23, on stdout from 0.23 on;
/// bpftrace's own runtime tests wait for it; "Attaching N probes" comes
/// before the first attach).
pub(crate) const BPFTRACE_ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// bpftrace running `script`, returned once all its probes are attached,
/// with its stdout's lines (its maps, at exit); stopped (SIGINT) if it
/// never says so.
pub(crate) fn bpftrace(script: &str) -> anyhow::Result<(Stop, mpsc::Receiver<String>)> {
    let mut child = Stop(
        Command::new("bpftrace")
            .args(["-e", script])
            .env(BPFTRACE_ATTACHED, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bpftrace (cargo xtask setup installs it)")?,
    );
    let out = lines_of(child.0.stdout.take().context("no stdout")?);
    let err = lines_of(child.0.stderr.take().context("no stderr")?);
    let deadline = Instant::now() + Duration::from_secs(120);
    'attached: loop {
        let mut ended = 0;
        for rx in [&out, &err] {
            loop {
                match rx.try_recv() {
                    Ok(l) if l.contains(BPFTRACE_ATTACHED) => break 'attached,
                    Ok(_) => {}
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        ended += 1;
                        break;
                    }
                }
            }
        }
        if ended == 2 {
            bail!("bpftrace exited before it attached");
        }
        if Instant::now() >= deadline {
            bail!("bpftrace never printed {BPFTRACE_ATTACHED:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its stderr read to the end: a closed pipe would kill it (SIGPIPE)
    // at its next line.
    std::thread::spawn(move || err.iter().for_each(drop));
    Ok((child, out))
}
