//! The run path's set-up asks for no more than building and running need:
//! in a rustup that has only a stable toolchain and the linked eBPF one (no
//! nightly), `cargo xtask setup run --dry-run` succeeds and plans none of
//! what only the tests need. Read from the plan it prints: nothing is
//! removed from the machine. Run by `cargo xtask test`'s privileged step
//! (`cargo test -p xtask -- --ignored`).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// What only the tests need (packages, and words of the other items).
const TEST_ONLY: &[&str] = &[
    "adb",
    "bpftrace",
    "bpftool",
    "tmux",
    "util-linux",
    "qemu-system-x86",
    "qemu-system-arm",
    "prometheus",
    "stress-ng",
    "python3-venv",
    "shellcheck",
    "zstd",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
];

/// What the run path does need.
const RUN: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "rmapwatch-bpf",
    "bpf-linker",
];

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A RUSTUP_HOME with the machine's stable toolchain and Debian's rustc
/// linked as `rmapwatch-bpf`, and nothing else.
fn bare_rustup(home: &Path) {
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home.join("toolchains")).expect("a temporary RUSTUP_HOME");
    let sysroot =
        run(Command::new("rustup").args(["run", "stable", "rustc", "--print", "sysroot"]));
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let name = sysroot
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the stable toolchain's directory name")
        .to_owned();
    // rustup refuses to `link` a channel's name (stable): the toolchain
    // directory is linked in as installed, under its own name.
    std::os::unix::fs::symlink(&sysroot, home.join("toolchains").join(&name))
        .expect("linking the stable toolchain");
    let rustup = |args: &[&str]| {
        run(Command::new("rustup")
            .args(args)
            .env("RUSTUP_HOME", home)
            .env_remove("RUSTUP_TOOLCHAIN"))
    };
    rustup(&["toolchain", "link", "rmapwatch-bpf", "/usr"]);
    rustup(&["default", &name]);
    let list = rustup(&["toolchain", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains("nightly"), "a nightly in {list}");
}

/// `xtask setup PROFILE --dry-run` in the RUSTUP_HOME `home`: its plan.
fn dry_run(home: &Path, profile: &str) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["setup", profile, "--dry-run"])
        .env("RUSTUP_HOME", home)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RMAPWATCH_BPF_TOOLCHAIN"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The words of the plan's item lines (indented).
fn item_words(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter(|l| l.starts_with("  "))
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
#[ignore = "privileged step of cargo xtask test"]
fn run_setup_plans_only_the_ebpf_toolchain_in_a_rustup_without_nightly() {
    let home = std::env::temp_dir().join(format!("rmw-xtask-rustup-{}", std::process::id()));
    bare_rustup(&home);
    let plan = dry_run(&home, "run");
    let tested = dry_run(&home, "test");
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        plan.starts_with("setup run: for `cargo xtask run`: "),
        "{plan}"
    );
    let words = item_words(&plan);
    for w in RUN {
        assert!(words.contains(w), "{w} not planned:\n{plan}");
    }
    for w in TEST_ONLY {
        assert!(!words.contains(w), "{w} planned for run:\n{plan}");
    }
    for w in [
        "nightly",
        "cargo-fuzz",
        "dpkg-architecture",
        "arm64",
        "venv",
    ] {
        assert!(!plan.contains(w), "{w} in the run plan:\n{plan}");
    }
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("  ")).count(),
        RUN.len(),
        "{plan}"
    );
    // The same rustup, for the tests: the nightly is what it lacks, and
    // the plan says so (so the run plan above was made without one).
    assert!(
        tested
            .lines()
            .any(|l| l.contains("MISSING") && l.contains("rustup toolchain nightly")),
        "{tested}"
    );
    for w in TEST_ONLY {
        assert!(
            item_words(&tested).contains(w),
            "{w} not planned for test:\n{tested}"
        );
    }
}
