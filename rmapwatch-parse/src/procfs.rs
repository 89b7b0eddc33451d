//! The text of `/proc` and `/sys` files the live source reads (the reading
//! is `rmapwatch_live::procfs`). Any process may name itself and its files
//! as it likes, so names and paths are kept exact here; they are made
//! printable where they reach a terminal.
use std::collections::HashMap;

use rmapwatch_engine::{inspect::PidStatus, snapshot::AnonPages};

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

/// Bits of a `/proc/PID/pagemap` entry: one native-endian `u64` per page
/// ([pagemap.rst](https://www.kernel.org/doc/html/v6.18/admin-guide/mm/pagemap.html)).
pub mod pagemap {
    /// Bit 63: the page is present in RAM.
    pub const PRESENT: u64 = 1 << 63;
    /// Bit 62: the page is swapped out (then not present).
    pub const SWAPPED: u64 = 1 << 62;
    /// Bit 61: a file page or a shared anonymous (shmem) page.
    pub const FILE_OR_SHARED_ANON: u64 = 1 << 61;
    /// Bit 56: the page is mapped exactly once ("exclusively mapped", 4.2+).
    pub const EXCLUSIVE: u64 = 1 << 56;
}

/// Counts a VMA's pagemap entries (a part of its range; add the parts up
/// with [`add_anon_pages`]): a present (bit 63) page that is not a file or
/// shared-anonymous page (bit 61 clear) is a present anonymous page; of
/// those, one that is not exclusively mapped (bit 56 clear) is shared:
/// another mapping (a forked process's copy of the VMA) maps it too.
///
/// Not counted:
/// - swapped-out pages (bit 62, bit 63 clear): not present, so neither
///   present nor shared, though another process may hold the same swap
///   entry; a VMA whose shared pages are all swapped out reads as sharing
///   nothing;
/// - pages being migrated (a swap-type entry: bit 62 too) and pages never
///   touched (an empty entry).
///
/// Counted although no rmap object is needed for it: the shared zero page
/// (what a read fault of untouched private memory maps) is present, not a
/// file page and never exclusive, so it counts as present and shared.
/// pagemap tells it apart only by its frame number, which only
/// `CAP_SYS_ADMIN` sees (rmapwatch drops it after attaching).
///
/// Bit 56 follows the page's mapcount; a kernel built with
/// `CONFIG_NO_PAGE_MAPCOUNT` (6.15+) decides per folio instead, so a page
/// of a large folio that another process maps in part may read shared.
#[must_use]
pub fn anon_pages(entries: &[u64]) -> AnonPages {
    let mut n = AnonPages::default();
    for &e in entries {
        if e & pagemap::PRESENT != 0 && e & pagemap::FILE_OR_SHARED_ANON == 0 {
            n.present += 1;
            n.shared += u64::from(e & pagemap::EXCLUSIVE == 0);
        }
    }
    n
}

/// The entries of pagemap bytes (native-endian `u64`s; a cut entry at the
/// end is left out).
pub fn pagemap_entries(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
}

/// A BPF map's `/proc/<pid>/fdinfo/<fd>`: its id, the kernel's memory
/// charge for it (`memlock`, bytes) and its entries; `None` for another
/// kind of file.
#[must_use]
pub fn bpf_map_fdinfo(text: &str) -> Option<(u32, u64, u32)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some((
        field("map_id")?.parse().ok()?,
        field("memlock")?.parse().ok()?,
        field("max_entries")?.parse().ok()?,
    ))
}

/// `a + b`, part by part (the counts of consecutive parts of one VMA).
#[must_use]
pub fn add_anon_pages(a: AnonPages, b: AnonPages) -> AnonPages {
    AnonPages {
        present: a.present.saturating_add(b.present),
        shared: a.shared.saturating_add(b.shared),
    }
}

/// The object size of a generic kmalloc cache from its name: `kmalloc-96`,
/// `kmalloc-1k`, `kmalloc-2M`. Only the plain ones: not `kmalloc-cg-*`,
/// `kmalloc-rcl-*`, `dma-kmalloc-*`, `kmalloc-rnd-*` (the same sizes for
/// other allocations), nor a name with anything after the size.
#[must_use]
pub fn kmalloc_size(name: &str) -> Option<u32> {
    let n = name.strip_prefix("kmalloc-")?;
    let (digits, unit) = match n.strip_suffix('k') {
        Some(d) => (d, 1 << 10),
        None => n.strip_suffix('M').map_or((n, 1), |d| (d, 1 << 20)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u32>()
        .ok()
        .filter(|&n| n > 0)?
        .checked_mul(unit)
}

/// The cache names of `/proc/slabinfo` (the first word of each line but
/// the header's `slabinfo - version` and `# name` lines).
pub fn slabinfo_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo -") && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
}

/// A number file of `/sys/kernel/slab/<cache>/` (`object_size`,
/// `slab_size`, `align`: `"192\n"`).
#[must_use]
pub fn slab_number(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bpf_maps_fdinfo_gives_its_id_memory_and_entries() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nmap_type:\t1\n\
                   key_size:\t4\nvalue_size:\t8\nmax_entries:\t16384\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t394936\nmap_id:\t7442\nfrozen:\t0\n";
        assert_eq!(super::bpf_map_fdinfo(map), Some((7442, 394_936, 16384)));
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nprog_type:\t17\n\
                    prog_jited:\t1\nmemlock:\t4096\nprog_id:\t5430\n";
        assert_eq!(super::bpf_map_fdinfo(prog), None);
        assert_eq!(super::bpf_map_fdinfo(""), None);
        assert_eq!(
            super::bpf_map_fdinfo("map_id:\tx\nmemlock:\t1\nmax_entries:\t1\n"),
            None
        );
    }

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

    #[test]
    fn pagemap_counts_present_anonymous_pages_and_those_mapped_elsewhere_too() {
        use pagemap::{EXCLUSIVE, FILE_OR_SHARED_ANON, PRESENT, SWAPPED};
        let pfn = 0x4_dc8d4;
        let entries = [
            PRESENT | EXCLUSIVE | pfn,                 // written by this process only
            PRESENT | pfn,                             // shared with a forked process
            PRESENT,                                   // the same, frame number hidden
            PRESENT | FILE_OR_SHARED_ANON | EXCLUSIVE, // a file page
            PRESENT | FILE_OR_SHARED_ANON,             // shmem, mapped twice
            SWAPPED | 0x1234_5000,                     // swapped out: not present
            SWAPPED | EXCLUSIVE,                       // swapped out, exclusive
            0,                                         // never touched
        ];
        assert_eq!(
            anon_pages(&entries),
            AnonPages {
                present: 3,
                shared: 2
            }
        );
        assert_eq!(anon_pages(&[]), AnonPages::default());
        // As pagemap gives them: bytes, added part by part.
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_ne_bytes()).collect();
        let (a, b) = bytes.split_at(24);
        let parts = add_anon_pages(
            anon_pages(&pagemap_entries(a).collect::<Vec<_>>()),
            anon_pages(&pagemap_entries(b).collect::<Vec<_>>()),
        );
        assert_eq!(parts, anon_pages(&entries));
        // A cut entry at the end is not an entry.
        assert_eq!(pagemap_entries(&bytes[..12]).count(), 1);
    }

    #[test]
    fn kmalloc_sizes_are_the_plain_generic_caches_only() {
        assert_eq!(kmalloc_size("kmalloc-8"), Some(8));
        assert_eq!(kmalloc_size("kmalloc-96"), Some(96));
        assert_eq!(kmalloc_size("kmalloc-1k"), Some(1024));
        assert_eq!(kmalloc_size("kmalloc-8k"), Some(8192));
        assert_eq!(kmalloc_size("kmalloc-2M"), Some(2 << 20));
        for other in [
            "kmalloc-cg-128",
            "kmalloc-rcl-64",
            "dma-kmalloc-32",
            "kmalloc-rnd-01-64",
            "kmalloc-",
            "kmalloc-0",
            "kmalloc-k",
            "kmalloc-+8",
            "kmalloc-8x",
            "kmalloc-9999999k",
            "vm_area_struct",
        ] {
            assert_eq!(kmalloc_size(other), None, "{other}");
        }
    }

    #[test]
    fn slabinfo_names_skip_the_header() {
        let text = "slabinfo - version: 2.1\n\
                    # name            <active_objs> <num_objs> <objsize> : tunables\n\
                    kmalloc-cg-8k         24     24   8192    4    8 : tunables    0    0    0\n\
                    kmalloc-8k            92     96   8192    4    8 : tunables    0    0    0\n\
                    kmalloc-96          1012   1134     96   42    1 : tunables    0    0    0\n";
        let sizes: Vec<u32> = slabinfo_names(text).filter_map(kmalloc_size).collect();
        assert_eq!(sizes, [8192, 96]);
        assert_eq!(slab_number("192\n"), Some(192));
        assert_eq!(slab_number("x"), None);
    }
}
