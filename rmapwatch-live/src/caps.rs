//! Least privilege. rmapwatch needs root to attach its programs; once they
//! are attached it drops every capability the rest of the run does not
//! use. What stays, and why:
//! - `CAP_BPF` (`CAP_SYS_ADMIN` on kernels before 5.8, which have no
//!   `CAP_BPF`): every later `bpf()` call (reading the counters and the
//!   programs' statistics, starting a walk from the iterator's link,
//!   pruning maps) passes the `unprivileged_bpf_disabled` gate with it;
//! - `CAP_SYS_PTRACE`: `/proc/PID/maps` of other users' processes (the
//!   mapping paths of the detail view, of `inspect` and of a recording's
//!   last walk);
//! - `CAP_DAC_OVERRIDE`, only for an agent that removes its own pushed
//!   binary at the end (`--cleanup`: Android's `/data/local/tmp` is the
//!   shell user's).
//!
//! The final walk's slab shrink writes a root-owned file that root may
//! write without a capability. Refusing to run setuid is also here: a
//! setuid rmapwatch would attach programs for whoever runs it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Capability numbers (`include/uapi/linux/capability.h`).
pub mod cap {
    /// `CAP_DAC_OVERRIDE`.
    pub const DAC_OVERRIDE: u32 = 1;
    /// `CAP_SYS_PTRACE`.
    pub const SYS_PTRACE: u32 = 19;
    /// `CAP_SYS_ADMIN`.
    pub const SYS_ADMIN: u32 = 21;
    /// `CAP_BPF` (5.8+).
    pub const BPF: u32 = 39;
}

/// Why the capabilities could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// `capget` / `capset` failed.
    #[error("{0} failed: {1}")]
    Syscall(&'static str, std::io::Error),
    /// Threads that kept more than asked (they block the signal that asks).
    #[error("threads {0:?} still hold capabilities after being asked to drop them")]
    Threads(Vec<i32>),
    /// Run setuid or setgid.
    #[error(
        "rmapwatch refuses to run setuid or setgid (real uid {uid}, effective {euid}): it \
         would attach kernel programs for whoever runs it; run it as root (sudo rmapwatch)"
    )]
    Setuid {
        /// Real uid.
        uid: u32,
        /// Effective uid.
        euid: u32,
    },
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective and permitted sets now, as 64-bit masks.
///
/// # Errors
/// [`CapsError::Syscall`].
pub fn current() -> Result<(u64, u64), CapsError> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: a valid header and two data structs, as version 3 asks.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut h, d.as_mut_ptr()) };
    if rc != 0 {
        return Err(CapsError::Syscall(
            "capget",
            std::io::Error::last_os_error(),
        ));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
    ))
}

/// The highest capability this kernel knows.
fn last_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|c| c.min(63))
}

/// The mask every thread drops to, for the signal handler.
static WANT: AtomicU64 = AtomicU64::new(0);
/// The highest capability number, for the signal handler.
static LAST: AtomicU32 = AtomicU32::new(63);

/// Drops the calling thread's bounding set to `want` and its effective
/// and permitted sets to `want`, none inheritable. Only raw system calls:
/// it also runs in a signal handler. The bounding set goes first:
/// dropping from it needs `CAP_SETPCAP`, which the `capset` gives up.
/// Returns the failing call and its errno.
fn drop_this_thread(want: u64, last: u32) -> Result<(), (&'static str, i32)> {
    for c in 0..=last.min(63) {
        if want & (1 << c) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number; no memory.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(c), 0, 0, 0) };
            // EINVAL: a capability this kernel does not know.
            // SAFETY: errno of this thread.
            let errno = unsafe { *libc::__errno_location() };
            if rc != 0 && errno != libc::EINVAL {
                return Err(("prctl(PR_CAPBSET_DROP)", errno));
            }
        }
    }
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let (lo, hi) = ((want & 0xffff_ffff) as u32, (want >> 32) as u32);
    let d = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: a valid header and two data structs, as version 3 asks.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut h, d.as_ptr()) };
    if rc != 0 {
        // SAFETY: errno of this thread.
        return Err(("capset", unsafe { *libc::__errno_location() }));
    }
    Ok(())
}

/// The signal that asks another thread to drop (capabilities are per
/// thread: `capset` changes only the caller's).
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    // SAFETY: errno of this thread, saved and restored around the calls.
    let saved = unsafe { *libc::__errno_location() };
    let _ = drop_this_thread(WANT.load(Ordering::SeqCst), LAST.load(Ordering::SeqCst));
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// A thread's effective, permitted and bounding sets, from its status.
fn thread_sets(tid: &str) -> Option<[u64; 3]> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some([field("CapEff:")?, field("CapPrm:")?, field("CapBnd:")?])
}

/// Keeps only `keep` (those of them the process has) in the effective and
/// permitted sets of **every thread of the process**, none inheritable,
/// and removes the rest from their bounding sets: the rest can never come
/// back, not even through an `execve` as uid 0 (which would otherwise
/// refill the sets from the bounding set). Threads started later inherit
/// the dropped sets. Other threads are asked with a real-time signal and
/// then checked through `/proc/self/task`.
///
/// # Errors
/// [`CapsError::Syscall`]; [`CapsError::Threads`] when a thread still has
/// more after two seconds.
pub fn keep_only(keep: &[u32]) -> Result<u64, CapsError> {
    let (_, permitted) = current()?;
    let want = keep
        .iter()
        .filter(|&&c| c < 64)
        .fold(0u64, |m, &c| m | 1 << c)
        & permitted;
    let last = last_cap().unwrap_or(63);
    WANT.store(want, Ordering::SeqCst);
    LAST.store(last, Ordering::SeqCst);
    // SAFETY: a handler that makes only async-signal-safe system calls,
    // installed for a real-time signal nothing else in rmapwatch uses.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut sa.sa_mask);
        if libc::sigaction(drop_signal(), &raw const sa, std::ptr::null_mut()) != 0 {
            return Err(CapsError::Syscall(
                "sigaction",
                std::io::Error::last_os_error(),
            ));
        }
    }
    drop_this_thread(want, last).map_err(|(call, errno)| {
        CapsError::Syscall(call, std::io::Error::from_raw_os_error(errno))
    })?;
    // SAFETY: no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc/self/task")
            .map_err(|e| CapsError::Syscall("reading /proc/self/task", e))?
            .flatten()
        {
            let name = e.file_name();
            let tid = name.to_string_lossy();
            let Ok(t) = tid.parse::<i32>() else { continue };
            // A thread that ended meanwhile has no status: nothing to do.
            match thread_sets(&tid) {
                Some(sets) if sets.iter().any(|&m| m != want) && t != me => {
                    // SAFETY: tgkill on a thread of this process.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, t, drop_signal()) };
                    left.push(t);
                }
                _ => {}
            }
        }
        if left.is_empty() {
            return Ok(want);
        }
        if std::time::Instant::now() > deadline {
            return Err(CapsError::Threads(left));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The capabilities a run keeps once its programs are attached:
/// `CAP_BPF` where the kernel has it (else `CAP_SYS_ADMIN`),
/// `CAP_SYS_PTRACE`, and `CAP_DAC_OVERRIDE` when `cleanup` (an agent that
/// removes its pushed binary).
#[must_use]
pub fn after_attach(kernel_has_cap_bpf: bool, cleanup: bool) -> Vec<u32> {
    let mut keep = vec![
        if kernel_has_cap_bpf {
            cap::BPF
        } else {
            cap::SYS_ADMIN
        },
        cap::SYS_PTRACE,
    ];
    if cleanup {
        keep.push(cap::DAC_OVERRIDE);
    }
    keep
}

/// Whether the kernel knows `CAP_BPF` (5.8+): `/proc/sys/kernel/cap_last_cap`
/// is at least 39.
#[must_use]
pub fn kernel_has_cap_bpf() -> bool {
    last_cap().is_some_and(|last| last >= cap::BPF)
}

/// Refuses a setuid or setgid start.
///
/// # Errors
/// [`CapsError::Setuid`].
pub fn refuse_setuid() -> Result<(), CapsError> {
    // SAFETY: these calls have no preconditions.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if uid != euid || gid != egid {
        return Err(CapsError::Setuid { uid, euid });
    }
    Ok(())
}

/// The names of the capabilities in `mask`, for the log.
#[must_use]
pub fn names(mask: u64) -> String {
    let name = |c: u32| match c {
        cap::DAC_OVERRIDE => "CAP_DAC_OVERRIDE".to_owned(),
        cap::SYS_PTRACE => "CAP_SYS_PTRACE".to_owned(),
        cap::SYS_ADMIN => "CAP_SYS_ADMIN".to_owned(),
        cap::BPF => "CAP_BPF".to_owned(),
        c => format!("cap {c}"),
    };
    let v: Vec<String> = (0..64).filter(|c| mask & (1 << c) != 0).map(name).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_set_is_what_the_run_needs() {
        assert_eq!(after_attach(true, false), [cap::BPF, cap::SYS_PTRACE]);
        assert_eq!(
            after_attach(false, false),
            [cap::SYS_ADMIN, cap::SYS_PTRACE]
        );
        assert_eq!(
            after_attach(true, true),
            [cap::BPF, cap::SYS_PTRACE, cap::DAC_OVERRIDE]
        );
        assert_eq!(
            names(1 << cap::BPF | 1 << cap::SYS_PTRACE),
            "CAP_SYS_PTRACE, CAP_BPF"
        );
        assert_eq!(names(0), "none");
    }
}
