//! rmapwatch: live anon_vma / anon_vma_chain accounting with eBPF, and what
//! ANON_VMA_LAZY would save. The layers, in order: `kernel` (BTF, kallsyms)
//! -> `loader` (aya) -> `decode`, `snapshot` -> `account`, `model` (pure)
//! -> `report`, `inspect`, `tui` (presenters); `app` wires them and
//! `daemon` runs the collector.
pub mod account;
pub mod addrmap;
pub mod app;
pub mod daemon;
pub mod decode;
pub mod hooks;
pub mod inspect;
pub mod kernel;
pub mod loader;
pub mod log;
pub mod model;
pub mod report;
pub mod snapshot;
pub mod tui;
pub mod walk;
