//! Parsers of input rmapwatch does not control: what a device answers
//! over adb (`device`), and, with the `kernel` feature, what the running
//! kernel describes (`btf` layouts, `kallsyms` ranges, tracepoint `args`
//! and tracefs `format` files) and `/proc` and `/sys` text (`procfs`).
//!
//! Each is a pure function of bytes or text: the reading (and any writing,
//! as of `kptr_restrict`) stays with the caller (rmapwatch-live, the
//! binary's adb source), so that `fuzz/` can feed them anything. None of
//! them panics on any input.
pub mod device;
pub mod procfs;

#[cfg(feature = "kernel")]
pub mod args;
#[cfg(feature = "kernel")]
pub mod btf;
#[cfg(feature = "kernel")]
pub mod kallsyms;
