//! What the live source reads from `/proc` and `/sys` besides the programs.
use std::collections::HashMap;

use rmapwatch_engine::inspect::PidStatus;

/// Reads `/proc/<pid>/status`.
#[must_use]
pub fn pid_status(pid: u32) -> PidStatus {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return PidStatus::Absent;
    };
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    let kthread = field("Kthread:").map_or_else(|| field("VmSize:").is_none(), |v| v == "1");
    if kthread {
        PidStatus::KernelThread(field("Name:").unwrap_or_default())
    } else {
        PidStatus::User
    }
}

/// File paths of a process's mappings, by start address.
#[must_use]
pub fn map_paths(pid: u32) -> HashMap<u64, String> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return HashMap::new();
    };
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let path = f.nth(4)?;
            let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
            Some((start, path.to_owned()))
        })
        .collect()
}
