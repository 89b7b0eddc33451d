//! Running commands: what every workflow shares (a step said on stderr, a
//! command that must succeed, cargo, root or sudo). A leaf module: it names
//! no other module of xtask, so any of them may use it.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace's root directory (xtask's parent).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Says what xtask does next (stderr, so that stdout stays the output).
pub fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Whether we run as root.
#[must_use]
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as root: directly when we are root, else through sudo.
#[must_use]
pub fn as_root(program: &Path, args: &[String]) -> Command {
    if is_root() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=RMAPWATCH_LOG,RMAPWATCH_BPF_TOOLCHAIN")
            .arg(program)
            .args(args);
        c
    }
}

/// Runs `cmd`, failing unless it exits 0.
///
/// # Errors
/// It cannot start, or exits non-zero.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Whether `cmd` runs and exits 0 (its output swallowed).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// The cargo that runs xtask (`$CARGO`), so that nested builds use the
/// same toolchain.
#[must_use]
pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs [`cargo_bin`] with `args`.
///
/// # Errors
/// cargo fails.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new(cargo_bin()).args(args))
}
