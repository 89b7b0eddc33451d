//! Facts of the measured machine: who it is, what its objects cost, how it
//! is watched and its clocks. The first input of every stream
//! ([`crate::input::Input::Facts`]).
use serde::{Deserialize, Serialize};

use crate::{
    hooks::{HookStatus, ProbeMode, SlabEvents},
    model::Objects,
};

/// Kernel identity shown in reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelId {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub arch: String,
}

/// Per-object byte sizes used for KB figures: the slab's object size
/// (`/sys/kernel/slab/*/slab_size`) where readable, else `sizeof` from BTF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// anon_vma.
    pub anon_vma: u32,
    /// AVC.
    pub anon_vma_chain: u32,
}

impl Sizes {
    /// Bytes of `o` per object type: anon_vma, AVC. The one place where
    /// objects become bytes.
    #[must_use]
    pub fn per_type(self, o: Objects) -> [u64; 2] {
        [
            o.anon_vma * u64::from(self.anon_vma),
            o.avc * u64::from(self.anon_vma_chain),
        ]
    }

    /// Bytes of `o`, both types.
    #[must_use]
    pub fn bytes(self, o: Objects) -> u64 {
        self.per_type(o).iter().sum()
    }
}

/// The slots objects take in this kernel's allocators: what the objects a
/// design would hold instead of today's cost in bytes (`None` where the
/// kernel did not say; all unknown in recordings made before they were
/// read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Slots {
    /// `struct vm_area_struct` and its slab cache.
    pub vm_area_struct: VmaSlot,
    /// `/sys/kernel/slab/maple_node/slab_size`: a maple tree node's slot
    /// (`None`: no such cache, as before 6.1).
    pub maple_node: Option<u32>,
    /// The generic kmalloc buckets (`kmalloc-<N>` caches), in bytes,
    /// ascending.
    pub kmalloc: Vec<u32>,
}

/// `struct vm_area_struct`: its size and its slab cache's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmaSlot {
    /// `sizeof(struct vm_area_struct)` from BTF.
    pub struct_size: Option<u32>,
    /// `/sys/kernel/slab/vm_area_struct/object_size`.
    pub object_size: Option<u32>,
    /// `/sys/kernel/slab/vm_area_struct/slab_size`: the bytes each object
    /// takes in its slab (object, metadata, alignment).
    pub slab_size: Option<u32>,
    /// `/sys/kernel/slab/vm_area_struct/align`.
    pub align: Option<u32>,
}

impl Slots {
    /// The kmalloc bucket an allocation of `size` bytes takes: the
    /// smallest bucket of at least `size` (`None` for 0 bytes, a size
    /// larger than every bucket, which kmalloc takes from the page
    /// allocator, or no buckets known).
    #[must_use]
    pub fn kmalloc_bucket(&self, size: u32) -> Option<u32> {
        if size == 0 {
            return None;
        }
        self.kmalloc.iter().copied().filter(|&b| b >= size).min()
    }
}

/// Where a stream's clock stands against the measured machine's clocks, at
/// `t = 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockRef {
    /// `CLOCK_REALTIME`, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// `CLOCK_MONOTONIC`, nanoseconds.
    pub monotonic_ns: u64,
    /// `CLOCK_BOOTTIME`, nanoseconds.
    pub boottime_ns: u64,
}

/// Byte order of the measured machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    /// Little-endian (x86_64, arm64 as Linux runs it).
    #[default]
    Little,
    /// Big-endian.
    Big,
}

/// Facts of the measured machine and of how it is watched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The tool that measured: `rmapwatch 0.1.0`.
    pub tool: String,
    /// Kernel release and architecture.
    pub kernel: KernelId,
    /// Bytes per page.
    pub page_size: u32,
    /// Byte order.
    pub endian: Endian,
    /// `sizeof(struct anon_vma)` from BTF.
    pub anon_vma_size: u32,
    /// `sizeof(struct anon_vma_chain)` from BTF.
    pub avc_size: u32,
    /// Per-object slab sizes for byte figures.
    pub sizes: Sizes,
    /// The probe mode asked for.
    pub probe_mode: ProbeMode,
    /// How each function hook was attached.
    pub hooks: Vec<HookStatus>,
    /// Whether the fork window (syscall tracepoints) is attached.
    pub fork_window: bool,
    /// Why snapshot walks are unavailable, if they are.
    pub snapshot_error: Option<String>,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// Whether the kernel keeps run-time statistics of the programs.
    pub bpf_stats: bool,
    /// The clocks at `t = 0`.
    pub clock: ClockRef,
    /// Where the data comes from (`live`, an agent, ...).
    pub source: String,
    /// How the slab events are taken.
    #[serde(default)]
    pub slab: SlabEvents,
    /// The slots of the objects the designs would hold (vm_area_struct,
    /// maple tree nodes, kmalloc buckets).
    #[serde(default)]
    pub slots: Slots,
    /// How walks read pagemap for the ideal: `off`, `whole`, or a budget
    /// per walk such as `200 ms` (empty: not said, as in older
    /// recordings).
    #[serde(default)]
    pub pagemap: String,
    /// How lock waits, fork work and rmap walks are timed (default in
    /// recordings made before they were).
    #[serde(default)]
    pub time: crate::hooks::TimeHooks,
    /// The floor `rmw-bench cost` measured on this machine and kernel (an
    /// empty raw program on the slab tracepoints), if it was: the live
    /// cost is shown against it.
    #[serde(default)]
    pub floor: Option<Floor>,
    /// rmapwatch's maps in the kernel and what the kernel charges for each
    /// (empty in recordings made before they were recorded). Their sizes
    /// are fixed at load (preallocated), so this bounds the kernel side.
    #[serde(default)]
    pub maps: Vec<MapMemory>,
}

/// One of rmapwatch's kernel maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMemory {
    /// Its name in the object (`EVENTS`, `FORKING`, ...).
    pub name: String,
    /// Entries (the ring buffer: bytes).
    pub max_entries: u32,
    /// The kernel's charge for it (`memlock` in its fdinfo), bytes;
    /// per-CPU maps count every possible CPU.
    pub bytes: u64,
}

/// An empty raw tracepoint program's cost on the slab tracepoints, as
/// `rmw-bench cost` measured it on this machine and kernel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// ns per run (`bpf_stats`), the fork storm's median.
    pub ns_per_run: f64,
    /// When, in seconds since the epoch.
    pub measured_unix: u64,
    /// How (`rmw-bench cost, 5 rounds`).
    pub by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kmalloc_bucket_is_the_smallest_that_holds_the_size() {
        // As /sys/kernel/slab lists them (not sorted).
        let s = Slots {
            kmalloc: vec![
                128, 16, 192, 1024, 2048, 32, 4096, 512, 64, 8, 8192, 96, 256,
            ],
            ..Slots::default()
        };
        assert_eq!(s.kmalloc_bucket(1), Some(8));
        assert_eq!(s.kmalloc_bucket(8), Some(8));
        assert_eq!(s.kmalloc_bucket(9), Some(16));
        assert_eq!(s.kmalloc_bucket(65), Some(96));
        assert_eq!(s.kmalloc_bucket(97), Some(128));
        assert_eq!(s.kmalloc_bucket(120), Some(128));
        assert_eq!(s.kmalloc_bucket(129), Some(192));
        assert_eq!(s.kmalloc_bucket(8192), Some(8192));
        assert_eq!(s.kmalloc_bucket(8193), None, "from the page allocator");
        assert_eq!(s.kmalloc_bucket(0), None);
        assert_eq!(Slots::default().kmalloc_bucket(64), None);
    }

    #[test]
    fn facts_of_recordings_before_slots_read_as_unknown() {
        let f: Facts = serde_json::from_str(
            r#"{"tool":"rmapwatch 0.1.0","kernel":{"release":"6.1","arch":"x86_64"},
                "page_size":4096,"endian":"little","anon_vma_size":96,"avc_size":64,
                "sizes":{"anon_vma":104,"anon_vma_chain":64},"probe_mode":"auto","hooks":[],
                "fork_window":true,"snapshot_error":null,"ring_bytes":8388608,
                "bpf_stats":true,"clock":{"unix_ns":1,"monotonic_ns":2,"boottime_ns":3},
                "source":"live"}"#,
        )
        .unwrap();
        assert_eq!(f.slots, Slots::default());
        assert_eq!(f.slots.vm_area_struct.slab_size, None);
    }
}
