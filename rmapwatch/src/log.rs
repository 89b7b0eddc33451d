//! Warnings: to stderr, or to a file while the TUI owns the screen (so that
//! nothing ever writes over it). Every line goes out without control
//! characters but its own line breaks (`text::printable_lines`): messages
//! carry process names, paths and what a device said.
use std::{
    fs::File,
    io::Write as _,
    sync::{Mutex, OnceLock},
};

use rmapwatch_engine::text::printable_lines;

static FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Sends later warnings to `path` (created or appended).
///
/// # Errors
/// The file cannot be opened.
pub fn to_file(path: &str) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = FILE.set(Mutex::new(f));
    Ok(())
}

/// Logs a warning.
pub fn warn(msg: &str) {
    let msg = printable_lines(msg);
    if let Some(f) = FILE.get()
        && let Ok(mut f) = f.lock()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(f, "{t} warning: {msg}");
        return;
    }
    let _ = writeln!(std::io::stderr(), "rmapwatch: warning: {msg}");
}

/// Logs an informational line (stderr only outside the TUI).
pub fn info(msg: &str) {
    let msg = printable_lines(msg);
    if let Some(f) = FILE.get()
        && let Ok(mut f) = f.lock()
    {
        let _ = writeln!(f, "{msg}");
        return;
    }
    let _ = writeln!(std::io::stderr(), "rmapwatch: {msg}");
}

/// Logs the error that ends the run: on stderr always (the terminal is
/// restored by then), and in the log file if there is one. Not eprintln!:
/// after a hangup stderr may be gone, and eprintln! panics.
pub fn error(msg: &str) {
    let msg = printable_lines(msg);
    if let Some(f) = FILE.get()
        && let Ok(mut f) = f.lock()
    {
        let _ = writeln!(f, "error: {msg}");
    }
    let _ = writeln!(std::io::stderr(), "rmapwatch: error: {msg}");
}
