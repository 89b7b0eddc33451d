//! The text of `/proc` and `/sys` files the live source reads (the reading
//! is `rmapwatch_live::procfs`). Any process may name itself and its files
//! as it likes, so names and paths are kept exact here; they are made
//! printable where they reach a terminal.
use std::collections::HashMap;

use rmapwatch_engine::inspect::PidStatus;

/// What `/proc/<pid>/status` says of a process that exists: a kernel
/// thread (`Kthread: 1`, or before 6.0, which has no such field, no
/// `VmSize:`) with its `Name:`, or a user process.
#[must_use]
pub fn pid_status(status: &str) -> PidStatus {
    pid_status_with_stat(status, None)
}

/// As [`pid_status`], with the text of `/proc/<pid>/stat` where there is
/// no `Kthread:` line (before 6.0): the task's flags tell (`PF_KTHREAD`),
/// not the absence of `VmSize:`, which a user process whose main thread
/// exited alone shares with kernel threads (its leader, the pid, is a
/// zombie without an mm). Without a readable `stat`, `VmSize:` decides.
#[must_use]
pub fn pid_status_with_stat(status: &str, stat: Option<&str>) -> PidStatus {
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    let kthread = match field("Kthread:") {
        Some(v) => v == "1",
        None => stat
            .and_then(stat_flags)
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
#[must_use]
pub fn stat_flags(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// File paths of a process's mappings (the text of `/proc/<pid>/maps`), by
/// start address.
#[must_use]
pub fn map_paths(maps: &str) -> HashMap<u64, String> {
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

/// The first argument of a `/proc/<pid>/cmdline` (NUL-separated; empty
/// for a kernel thread or a zombie): on Android, an app's whole package
/// name.
#[must_use]
pub fn cmdline_argv0(raw: &[u8]) -> Option<String> {
    let first = raw.split(|&b| b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
}

/// A process's name from the text of `/proc/<pid>/comm` (the kernel ends
/// it with a newline).
#[must_use]
pub fn comm(text: &str) -> String {
    text.trim_end().to_owned()
}

/// The object count of a `/sys/kernel/slab/<cache>/objects` (`"1234 N0=1234\n"`:
/// the total, then per node).
#[must_use]
pub fn slab_objects(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_flags_count_from_the_last_parenthesis_of_the_comm() {
        // A zombie leader (5.10) and a kernel thread; a comm with ") 1 2".
        let zombie = "1853 (rmw-workload) Z 1 1853 1 0 -1 4227140 140 0 0 0 0 0";
        assert_eq!(stat_flags(zombie), Some(4_227_140));
        assert_eq!(
            pid_status_with_stat("Name:\trmw-workload\nState:\tZ (zombie)\n", Some(zombie)),
            PidStatus::User
        );
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        assert_eq!(
            pid_status_with_stat("Name:\tkthreadd\n", Some(kthread)),
            PidStatus::KernelThread("kthreadd".into())
        );
        let odd = "77 (a) 1 2 (b) S 1 77 77 0 -1 4194560 0";
        assert_eq!(stat_flags(odd), Some(4_194_560));
        assert_eq!(stat_flags("77 (cut"), None);
    }

    use super::*;

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

    #[test]
    fn kernel_threads_are_told_by_kthread_or_by_having_no_vm() {
        assert_eq!(
            pid_status("Name:\tkworker/0:1\nKthread:\t1\n"),
            PidStatus::KernelThread("kworker/0:1".into())
        );
        assert_eq!(
            pid_status("Name:\tkswapd0\nState:\tS (sleeping)\n"),
            PidStatus::KernelThread("kswapd0".into())
        );
        assert_eq!(
            pid_status("Name:\tbash\nKthread:\t0\nVmSize:\t  8000 kB\n"),
            PidStatus::User
        );
        assert_eq!(
            pid_status("Name:\tbash\nVmSize:\t  8000 kB\n"),
            PidStatus::User
        );
    }

    #[test]
    fn slab_objects_are_the_first_number() {
        assert_eq!(slab_objects("1234 N0=1234\n"), Some(1234));
        assert_eq!(slab_objects("\n"), None);
        assert_eq!(slab_objects("-1"), None);
    }
}
