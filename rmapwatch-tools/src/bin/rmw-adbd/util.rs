//! Small helpers shared by every other module. They live here, depending on
//! nothing of the crate, so that the daemon, the transport, the services and
//! the multi-call tools can all use them without importing one another.
use std::{
    fs,
    sync::{Mutex, MutexGuard},
};

/// Uid (and gid) of Android's `shell` user.
pub const SHELL_UID: u32 = 2000;

/// Locks a mutex, ignoring poisoning (the data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Logs a line to stderr.
pub fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("rmw-adbd: {args}");
}

/// Fills `buf` with random bytes (an AUTH token need not be strong).
pub fn random(buf: &mut [u8]) {
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, buf))
        .is_err()
    {
        let mut x = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        for b in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}
