//! rmapwatch's live-kernel source: the eBPF programs (`loader`), the
//! running kernel's facts (`kernel`: BTF layouts, kallsyms ranges),
//! everything read from `/proc` and `/sys` (`procfs`; each walked VMA's
//! anonymous pages: `pagemap`), and the pump that turns them into the
//! engine's ordered inputs (`source`).
pub mod caps;
pub mod floor;
pub mod kernel;
pub mod kernel_log;
pub mod loader;
pub mod pagemap;
pub mod procfs;
pub mod source;
