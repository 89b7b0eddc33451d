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
    /// Slot sizes the designs' byte figures use (stream 1.2; empty in
    /// older recordings).
    #[serde(default)]
    pub slots: Slots,
}

/// A slab cache's sizes as `/sys/kernel/slab/<cache>/` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSlot {
    /// `object_size`: the object as the cache was created for it.
    pub object_size: u32,
    /// `slab_size`: the slot each object takes (alignment, metadata).
    pub slab_size: u32,
    /// `align`.
    pub align: u32,
}

/// The slots the designs' objects would take on the measured kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    /// `sizeof(struct vm_area_struct)` from BTF (0: unread).
    #[serde(default)]
    pub vm_area_struct_size: u32,
    /// The `vm_area_struct` cache.
    #[serde(default)]
    pub vm_area_struct: Option<CacheSlot>,
    /// The `maple_node` cache's `slab_size`.
    #[serde(default)]
    pub maple_node: Option<u32>,
    /// Generic kmalloc bucket sizes present (`kmalloc-<N>`), ascending.
    #[serde(default)]
    pub kmalloc: Vec<u32>,
}

impl Slots {
    /// The kmalloc bucket an object of `size` bytes lands in: the smallest
    /// bucket at least that large (`None`: buckets unknown, or none fits).
    #[must_use]
    pub fn kmalloc_bucket(&self, size: u32) -> Option<u32> {
        self.kmalloc.iter().copied().filter(|&b| b >= size).min()
    }
}
