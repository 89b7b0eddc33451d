//! Builds the eBPF object (`rmapwatch-ebpf`) for the bpf target with
//! aya-build, so that plain `cargo build`, `check`, `clippy` and `test` work.
//!
//! The toolchain is the one `cargo xtask setup` registers with rustup
//! (Debian's rustc-web with its library sources, linked as `rmapwatch-bpf`),
//! or any rustup toolchain with `rust-src` named in `RMAPWATCH_BPF_TOOLCHAIN`.
use std::process::Command;

use anyhow::{Context as _, bail};

const DEFAULT_TOOLCHAIN: &str = "rmapwatch-bpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RMAPWATCH_BPF_TOOLCHAIN");
    let toolchain =
        std::env::var("RMAPWATCH_BPF_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_owned());
    let found = Command::new("rustup")
        .args(["run", &toolchain, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        bail!(
            "the eBPF toolchain '{toolchain}' is not installed: run `cargo xtask setup` \
             (or set RMAPWATCH_BPF_TOOLCHAIN to a rustup toolchain that has rust-src)"
        );
    }
    // Debian's rustc reports the stable channel; `-Z build-std=core` for the
    // bpf target needs RUSTC_BOOTSTRAP. It is set here, in the build script's
    // own environment, so only the eBPF child build inherits it.
    // SAFETY: the build script is single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rmapwatch-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "rmapwatch-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF object")
}
