//! Exit codes, documented in docs/guide.md (a short table in the README)
//! and `--help`, and the one place where errors map to them: every error
//! type rmapwatch can end with says its code here ([`Coded`]), and
//! [`code`] asks the error that ended the run.
use rmapwatch_engine::{inspect::TargetError, stream::StreamError};

use crate::{
    error::{BadInput, OutputExists, UsageError},
    source::{
        adb::{AdbError, DeviceExit},
        remote::AgentExited,
    },
};

/// Runtime failure.
pub const FAILURE: u8 = 1;
/// Bad usage (clap's own code), the live view without a terminal, an
/// output file that exists.
pub const USAGE: u8 = 2;
/// This system cannot run rmapwatch (privileges, BTF, kernel symbols, a
/// device that cannot be used).
pub const ENVIRONMENT: u8 = 3;
/// The process to inspect does not exist, is a kernel thread, exited, or
/// the name is ambiguous.
pub const TARGET: u8 = 4;
/// The input file (a recording, or a remote agent's stream) is not a
/// rmapwatch stream, of another version, empty, damaged or truncated.
pub const INPUT: u8 = 5;

/// An error's exit code.
trait Coded {
    /// The code; `None`: not decided by this error (the next one down the
    /// chain, or [`FAILURE`]).
    fn code(&self) -> Option<u8>;
}

/// An agent's (or a device command's) own code, where it is one of ours.
fn passed_on(code: i32) -> u8 {
    u8::try_from(code)
        .ok()
        .filter(|c| (FAILURE..=INPUT).contains(c))
        .unwrap_or(FAILURE)
}

impl Coded for DeviceExit {
    fn code(&self) -> Option<u8> {
        Some(passed_on(self.code))
    }
}

impl Coded for AgentExited {
    /// `None` when the agent was killed by a signal: its error says more.
    fn code(&self) -> Option<u8> {
        self.code.map(passed_on)
    }
}

impl Coded for AdbError {
    fn code(&self) -> Option<u8> {
        Some(ENVIRONMENT)
    }
}

#[cfg(target_os = "linux")]
impl Coded for rmapwatch_live::kernel::EnvError {
    fn code(&self) -> Option<u8> {
        Some(ENVIRONMENT)
    }
}

#[cfg(target_os = "linux")]
impl Coded for rmapwatch_live::caps::CapsError {
    fn code(&self) -> Option<u8> {
        Some(ENVIRONMENT)
    }
}

#[cfg(not(target_os = "linux"))]
impl Coded for crate::source::live::NoLiveSource {
    fn code(&self) -> Option<u8> {
        Some(ENVIRONMENT)
    }
}

impl Coded for TargetError {
    fn code(&self) -> Option<u8> {
        Some(TARGET)
    }
}

impl Coded for rmapwatch_tui::NotATerminal {
    fn code(&self) -> Option<u8> {
        Some(USAGE)
    }
}

impl Coded for OutputExists {
    fn code(&self) -> Option<u8> {
        Some(USAGE)
    }
}

impl Coded for UsageError {
    fn code(&self) -> Option<u8> {
        Some(USAGE)
    }
}

impl Coded for BadInput {
    fn code(&self) -> Option<u8> {
        Some(INPUT)
    }
}

impl Coded for StreamError {
    fn code(&self) -> Option<u8> {
        Some(INPUT)
    }
}

/// The first of `T` in `e`'s chain, as a [`Coded`].
fn find<T: Coded + std::fmt::Display + std::fmt::Debug + Send + Sync + 'static>(
    e: &anyhow::Error,
) -> Option<u8> {
    e.downcast_ref::<T>().and_then(Coded::code)
}

/// The exit code of the error that ended the run.
#[must_use]
pub fn code(e: &anyhow::Error) -> u8 {
    // In order: an agent's own code first (it already said why), then what
    // is wrong with this system, the target, the usage, the input.
    #[cfg(target_os = "linux")]
    let env = find::<rmapwatch_live::kernel::EnvError>(e)
        .or_else(|| find::<rmapwatch_live::caps::CapsError>(e));
    #[cfg(not(target_os = "linux"))]
    let env = find::<crate::source::live::NoLiveSource>(e);
    find::<DeviceExit>(e)
        .or_else(|| find::<AgentExited>(e))
        .or(env)
        .or_else(|| find::<AdbError>(e))
        .or_else(|| find::<TargetError>(e))
        .or_else(|| find::<rmapwatch_tui::NotATerminal>(e))
        .or_else(|| find::<OutputExists>(e))
        .or_else(|| find::<UsageError>(e))
        .or_else(|| find::<BadInput>(e))
        .or_else(|| find::<StreamError>(e))
        .unwrap_or(FAILURE)
}
