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
    // Before 6.0 there is no `Kthread:` line: the task's flags tell
    // (`PF_KTHREAD`). Not the absence of `VmSize:`, which a user process
    // whose main thread exited alone shares with kernel threads (its
    // leader, the pid, is a zombie without an mm).
    let kthread = match field("Kthread:") {
        Some(v) => v == "1",
        None => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_flags(&s))
            .map_or_else(|| field("VmSize:").is_none(), |f| f & PF_KTHREAD != 0),
    };
    if kthread {
        PidStatus::KernelThread(field("Name:").unwrap_or_default())
    } else {
        PidStatus::User
    }
}

/// `PF_KTHREAD` (`include/linux/sched.h`): the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The flags field of a `/proc/<pid>/stat` line (the 9th; the comm before
/// it may hold spaces and parentheses, so fields count from its last `)`).
fn stat_flags(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// File paths of a process's mappings, by start address.
#[must_use]
pub fn map_paths(pid: u32) -> HashMap<u64, String> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return HashMap::new();
    };
    maps.split('\n')
        .filter_map(maps_line)
        .map(|(start, path)| (start, path.to_owned()))
        .collect()
}

/// One line of `/proc/PID/maps`: its start address and its path (`None`
/// without one). The path is everything after the fifth field and the
/// padding: it may hold spaces and any byte but a newline (which the
/// kernel writes as `\012`), so it is never split on whitespace.
#[must_use]
pub fn maps_line(l: &str) -> Option<(u64, &str)> {
    let mut rest = l;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let path = rest.trim_start_matches(' ');
    if path.is_empty() {
        return None;
    }
    let start = u64::from_str_radix(fields[0].split('-').next()?, 16).ok()?;
    Some((start, path))
}

/// The first argument of a process's command line (`/proc/<pid>/cmdline`
/// up to its first NUL): on Android, an app's whole package name.
#[must_use]
pub fn argv0(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline_argv0(&raw)
}

/// The first argument of a `/proc/<pid>/cmdline` (NUL-separated; empty
/// for a kernel thread or a zombie).
#[must_use]
pub fn cmdline_argv0(raw: &[u8]) -> Option<String> {
    let first = raw.split(|&b| b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_flags_count_from_the_last_parenthesis_of_the_comm() {
        // A zombie leader (5.10) and a kernel thread; a comm with ") 1 2".
        let zombie = "1853 (rmw-workload) Z 1 1853 1 0 -1 4227140 140 0 0 0 0 0";
        assert_eq!(stat_flags(zombie), Some(4_227_140));
        assert_eq!(stat_flags(zombie).unwrap() & PF_KTHREAD, 0);
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        assert_ne!(stat_flags(kthread).unwrap() & PF_KTHREAD, 0);
        let odd = "77 (a) 1 2 (b) S 1 77 77 0 -1 4194560 0";
        assert_eq!(stat_flags(odd), Some(4_194_560));
        assert_eq!(stat_flags("77 (cut"), None);
    }

    #[test]
    fn map_paths_keep_spaces_and_odd_bytes() {
        let l = "7f9ff4bff000-7f9ff4c00000 rw-p 00000000 00:1f 1234                       \
                 /tmp/My Files/f\x1b[2J\x07\r\\012x (deleted)";
        assert_eq!(
            maps_line(l),
            Some((
                0x7f9f_f4bf_f000,
                "/tmp/My Files/f\x1b[2J\x07\r\\012x (deleted)"
            ))
        );
        assert_eq!(
            maps_line(
                "7ffe4b0b0000-7ffe4b0d1000 rw-p 00000000 00:00 0                          [stack]"
            ),
            Some((0x7ffe_4b0b_0000, "[stack]"))
        );
        // Anonymous: no path.
        assert_eq!(
            maps_line("55e8bac80000-55e8baca1000 rw-p 00000000 00:00 0 "),
            None
        );
        assert_eq!(
            maps_line("55e8bac80000-55e8baca1000 rw-p 00000000 00:00 0"),
            None
        );
        assert_eq!(maps_line(""), None);
        assert_eq!(maps_line("zz-1 r 0 0 0 x"), None);
    }
}
