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

/// A process's name, from `/proc/<pid>/comm`.
#[must_use]
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

/// Whether a process (thread group) still exists.
#[must_use]
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn slab_objects(cache: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/objects"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the user is told the first time the anon_vma cache is shrunk.
pub const SHRINKING: &str = "shrinking the anon_vma slab cache (/sys/kernel/slab/anon_vma/shrink) \
                             for an exact object count: it returns empty slabs to the page \
                             allocator and frees nothing in use";

/// The slab counters: `/sys/kernel/slab/anon_vma/objects` after flushing
/// per-CPU slabs and sheaves when `shrink` (without it SLUB counts their
/// free objects as in use), and the (usually merged) AVC cache's count.
#[must_use]
pub fn slab_counts(shrink: bool) -> rmapwatch_engine::input::SlabCounts {
    let shrunk = shrink && std::fs::write("/sys/kernel/slab/anon_vma/shrink", "1").is_ok();
    rmapwatch_engine::input::SlabCounts {
        anon_vma: slab_objects("anon_vma"),
        anon_vma_chain: slab_objects("anon_vma_chain"),
        shrunk,
    }
}
