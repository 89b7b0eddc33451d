//! What the live source reads from `/proc` and `/sys` besides the programs
//! (the parsing is `rmapwatch_parse::procfs`).
use std::collections::HashMap;

use rmapwatch_engine::{
    facts::{Slots, VmaSlot},
    inspect::PidStatus,
};
use rmapwatch_parse::procfs as parse;

/// Reads `/proc/<pid>/status`.
#[must_use]
pub fn pid_status(pid: u32) -> PidStatus {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return PidStatus::Absent;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    parse::pid_status_with_stat(&status, stat.as_deref())
}

/// File paths of a process's mappings, by start address.
#[must_use]
pub fn map_paths(pid: u32) -> HashMap<u64, String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| parse::map_paths(&m))
        .unwrap_or_default()
}

/// The first argument of a process's command line (`/proc/<pid>/cmdline`
/// up to its first NUL): on Android, an app's whole package name.
#[must_use]
pub fn argv0(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    parse::cmdline_argv0(&raw)
}

/// A process's name, from `/proc/<pid>/comm`.
#[must_use]
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| parse::comm(&c))
}

/// Whether a process (thread group) still exists.
#[must_use]
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn slab_objects(cache: &str) -> Option<u64> {
    parse::slab_objects(&std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/objects")).ok()?)
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

fn slab_number(cache: &str, file: &str) -> Option<u32> {
    parse::slab_number(&std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/{file}")).ok()?)
}

/// The generic kmalloc buckets (sizes of the `kmalloc-<N>` caches), from
/// `/sys/kernel/slab`, else `/proc/slabinfo`; ascending.
#[must_use]
pub fn kmalloc_buckets() -> Vec<u32> {
    let mut sizes: Vec<u32> = match std::fs::read_dir("/sys/kernel/slab") {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .filter_map(|e| parse::kmalloc_size(e.file_name().to_str()?))
            .collect(),
        Err(_) => Vec::new(),
    };
    if sizes.is_empty()
        && let Ok(text) = std::fs::read_to_string("/proc/slabinfo")
    {
        sizes = parse::slabinfo_names(&text)
            .filter_map(parse::kmalloc_size)
            .collect();
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The slots of the objects the designs would hold: `vm_area_struct`'s
/// (its size from BTF, `vma_size`; its cache's from sysfs), a maple
/// node's, the kmalloc buckets.
#[must_use]
pub fn slots(vma_size: Option<u32>) -> Slots {
    Slots {
        vm_area_struct: VmaSlot {
            struct_size: vma_size,
            object_size: slab_number("vm_area_struct", "object_size"),
            slab_size: slab_number("vm_area_struct", "slab_size"),
            align: slab_number("vm_area_struct", "align"),
        },
        maple_node: slab_number("maple_node", "slab_size"),
        kmalloc: kmalloc_buckets(),
    }
}

/// rmapwatch's own BPF maps (this process's `anon_inode:bpf-map` files):
/// each one's name and the kernel's charge for it (`memlock`).
#[must_use]
pub fn bpf_maps() -> Vec<rmapwatch_engine::facts::MapMemory> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut seen = std::collections::BTreeSet::new();
    fds.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map")
        })
        .filter_map(|e| {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", e.file_name().to_str()?))
                    .ok()?;
            let (id, bytes, max_entries) = parse::bpf_map_fdinfo(&info)?;
            // The same map behind two descriptors counts once.
            if !seen.insert(id) {
                return None;
            }
            let name = aya::maps::MapInfo::from_id(id)
                .ok()
                .and_then(|m| m.name_as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("map {id}"));
            Some(rmapwatch_engine::facts::MapMemory {
                name,
                max_entries,
                bytes,
            })
        })
        .collect()
}
