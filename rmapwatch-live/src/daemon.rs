//! The collector: drains the ring buffer asynchronously into the accounting,
//! until the duration ends or Ctrl-C / SIGTERM / SIGHUP.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use aya::maps::RingBuf;

use crate::loader::Probes;
use rmapwatch_engine::{account::Accounting, decode::decode};

/// Why the collector stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM or SIGHUP.
    Terminate,
    /// The user quit the live view.
    Quit,
}

/// The signals that stop the collector, installed before the programs are
/// attached so that a signal right after "attached" is never lost.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    ///
    /// # Errors
    /// The handlers cannot be installed.
    pub fn install(quit: Option<tokio::sync::oneshot::Receiver<()>>) -> anyhow::Result<Self> {
        Ok(Self {
            quit,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next stopping signal (or the UI quitting).
    pub async fn recv(&mut self) -> Stop {
        let quit = async {
            match self.quit.as_mut() {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => Stop::Interrupt,
            _ = self.term.recv() => Stop::Terminate,
            _ = self.hup.recv() => Stop::Terminate,
            () = quit => Stop::Quit,
        }
    }
}

/// Looks up names of processes first seen without one.
pub fn fill_comms(acct: &mut Accounting) {
    for pid in acct.take_unnamed() {
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            acct.set_comm(pid, c.trim_end().to_owned());
        }
    }
}

/// How often the ring buffer is drained without a wakeup.
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Applies everything waiting in the ring buffer; returns the records that
/// could not be decoded.
pub fn drain<T>(rb: &mut RingBuf<T>, acct: &mut Accounting) -> u64 {
    let mut bad = 0;
    while let Some(item) = rb.next() {
        match decode(&item) {
            Ok(e) => acct.apply(&e),
            Err(_) => bad += 1,
        }
    }
    fill_comms(acct);
    bad
}

/// Runs the collector; `tick` is called every `interval` with the state.
///
/// # Errors
/// Ring buffer or signal set-up failures.
pub async fn collect(
    probes: &mut Probes,
    acct: &mut Accounting,
    signals: &mut Signals,
    duration: Option<Duration>,
    interval: Option<Duration>,
    mut tick: impl FnMut(&mut Accounting, &mut Probes, Duration),
) -> anyhow::Result<Stop> {
    let ring = probes.take_ring()?;
    // SAFETY: the ring buffer owns its fd and keeps it open until the AsyncFd
    // (which owns the ring buffer) is dropped.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let start = Instant::now();
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    // The programs submit without waking us (a wakeup per event costs an
    // IPI); they force one when the ring is an eighth full. Drain on a short
    // timer too.
    let mut drain_timer = tokio::time::interval(DRAIN_EVERY);
    drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bad_records = 0u64;
    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                bad_records += drain(guard.get_inner_mut(), acct);
                guard.clear_ready();
            }
            _ = drain_timer.tick() => bad_records += drain(ring.get_mut(), acct),
            () = &mut deadline => break Stop::Duration,
            stop = signals.recv() => break stop,
            _ = ticker.tick(), if interval.is_some() => {
                // What happened before the tick's walk, applied before it.
                bad_records += drain(ring.get_mut(), acct);
                tick(acct, probes, start.elapsed());
            }
        }
    };
    // Whatever is still in the buffer happened before the stop.
    bad_records += drain(ring.get_mut(), acct);
    if bad_records > 0 {
        eprintln!("rmapwatch: warning: {bad_records} undecodable ring buffer records skipped");
    }
    Ok(stop)
}

/// Allocations of at least this size are mapped and unmapped on their
/// own: the tables a walk builds (megabytes at 1M VMAs) go back to the
/// system when the walk ends, instead of staying in a heap whose threshold
/// glibc raises after each such free.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Pins the allocator's behaviour for big tables (see [`MMAP_THRESHOLD`]).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns freed heap memory to the system (after loading, whose BTF
/// parsing peaks at tens of MiB and then frees it).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
