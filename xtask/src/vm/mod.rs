//! `cargo xtask vm-test`: rmapwatch on real Debian kernels under QEMU (TCG),
//! in every probe mode the kernel allows, with ground truth taken inside the
//! VM. The layers, each a module: `kernels` (Debian's kernel packages,
//! fetched and unpacked into `.cache/vm`), `guest` (what runs inside the VM:
//! its /init script, its parameters and the initramfs), `checks` (the guest's
//! output read back and checked against its ground truth, cell by cell) and
//! `matrix` (booting each kernel, retries, the host phase, the table). This
//! module holds only what they share; it names none of them, so that the
//! module graph stays acyclic.
pub mod checks;
pub mod guest;
pub mod kernels;
pub mod matrix;

use std::path::PathBuf;

/// An architecture of the matrix.
pub struct Arch {
    /// `uname -m`.
    pub name: &'static str,
    /// Debian's name.
    pub deb: &'static str,
    /// Rust target of the static binaries.
    pub target: &'static str,
    /// QEMU binary.
    pub qemu: &'static str,
    /// QEMU machine arguments.
    pub machine: &'static [&'static str],
    /// Serial console.
    pub console: &'static str,
}

/// x86_64 and arm64.
pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        deb: "amd64",
        target: "x86_64-unknown-linux-gnu",
        qemu: "qemu-system-x86_64",
        machine: &["-cpu", "max"],
        console: "ttyS0",
    },
    Arch {
        name: "aarch64",
        deb: "arm64",
        target: "aarch64-unknown-linux-gnu",
        qemu: "qemu-system-aarch64",
        machine: &["-M", "virt", "-cpu", "max"],
        console: "ttyAMA0",
    },
];

/// One cell's verdict.
pub struct Cell {
    /// Kernel release.
    pub kernel: String,
    /// Probe mode.
    pub mode: String,
    /// Pass or the first failed check.
    pub result: Result<(), String>,
    /// What was measured, for the matrix table.
    pub detail: String,
}

/// What a host phase is given: where the guest's server is, and whose.
pub struct HostPhase {
    /// The host's 127.0.0.1 port forwarded to the guest's 5555.
    pub port: u16,
    /// The cells' kernel column (`uname -r`, `uname -m` of the guest).
    pub kernel: String,
    /// The guest's `uname -r`.
    pub release: String,
    /// The host's rmapwatch (the x86_64 static build, which finds the
    /// other architecture's agent in the build tree beside it).
    pub host_bin: PathBuf,
    /// The matrix's cache (`.cache/vm`), where a phase may keep what it saw.
    pub cache: PathBuf,
}

/// A host phase: runs on the host while the guest waits in its
/// `adb_phase` (its servers listening); its cells join the boot's.
pub type HostPhaseFn = fn(&HostPhase) -> Vec<Cell>;
