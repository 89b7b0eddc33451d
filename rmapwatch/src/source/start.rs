//! Stopping a run while its source still starts: a phone's `adb root` and
//! `wait-for-device` may take a minute, an `ssh` may hang. A signal or the
//! end of `--duration` then cancels the start: the commands it runs are
//! killed (each runs in a process group of its own) and its polling loops
//! give up at their next step, so the source's own cleanup (an `adb
//! unroot`, the pushed agent removed) still runs.
use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

static CANCELLED: AtomicBool = AtomicBool::new(false);
static STARTING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Why a start gave up.
#[derive(Debug, thiserror::Error)]
#[error("stopped while the source was starting")]
pub struct Cancelled;

/// Cancels every start in progress, and those to come (a run that was
/// stopped does not start another source).
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
    let groups = STARTING.lock().map(|g| g.clone()).unwrap_or_default();
    for pgid in groups {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
    }
}

/// Whether starts are cancelled.
///
/// # Errors
/// [`Cancelled`] once [`cancel`] was called.
pub fn check() -> Result<(), Cancelled> {
    if CANCELLED.load(Ordering::SeqCst) {
        Err(Cancelled)
    } else {
        Ok(())
    }
}

/// A command run while starting (its own process group, `pgid`), killed
/// by [`cancel`] until this guard is dropped.
pub struct Starting(i32);

impl Starting {
    /// Registers `pgid`; kills it at once if starts are cancelled already.
    #[must_use]
    pub fn new(pgid: u32) -> Self {
        let pgid = i32::try_from(pgid).unwrap_or(0);
        if let Ok(mut g) = STARTING.lock() {
            g.push(pgid);
        }
        if check().is_err() {
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
        }
        Self(pgid)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Ok(mut g) = STARTING.lock() {
            g.retain(|&p| p != self.0);
        }
    }
}
