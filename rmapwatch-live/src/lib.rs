//! rmapwatch's live-kernel source: the eBPF programs (`loader`), the
//! running kernel's facts (`kernel`: BTF layouts, kallsyms ranges), and
//! everything read from `/proc` and `/sys` (`procfs`).
pub mod daemon;
pub mod kernel;
pub mod loader;
pub mod procfs;
