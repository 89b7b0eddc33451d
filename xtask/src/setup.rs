//! What each command installs, and installing it: idempotent, said step by
//! step, and only what that command needs (a profile). `cargo xtask run`
//! needs the eBPF toolchain: Debian's rustc-web with its library sources
//! (linked into rustup as `rmapwatch-bpf`), LLVM 22 and bpf-linker built
//! against it (see ../shared/docs/toolchain.md for why this recipe and not a
//! rustup nightly). `cargo xtask test` needs everything: the toolchain, the
//! aarch64 cross gcc, QEMU and the arm64 dpkg architecture for the kernel
//! matrix, the test peers, the Python venv and, for the fuzzer, rustup's
//! nightly and cargo-fuzz. [`Profile::items`] is the plan, pure;
//! [`prepare`] checks each item and installs what is missing, or with
//! `dry_run` only says what it would do.
use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::bail;

use crate::cmd::{cargo_bin, is_root, sh, step, succeeds};

/// Name under which Debian's toolchain is linked into rustup.
pub const BPF_TOOLCHAIN: &str = "rmapwatch-bpf";

/// Debian packages of the eBPF toolchain.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// The aarch64 cross gcc and C library: the linker of static aarch64
/// binaries (the phone's agent, the arm64 guests' binaries).
const CROSS_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];
/// QEMU for the kernel matrix, and zstd for what it unpacks (kernel
/// modules, bzImage payloads).
const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-arm", "zstd"];
/// The test peers and tools only `cargo xtask test` needs.
const TEST_PACKAGES: &[&str] = &[
    // The fuzz corpus is a .tar.zst.
    "zstd",
    "bpftrace",
    "bpftool",
    "util-linux",
    "tmux",
    // The real Prometheus server and promtool, against `rmapwatch serve`.
    "prometheus",
    // Fork/mmap churn for `cargo xtask soak` and the Prometheus tests.
    "stress-ng",
    // The lint step checks every shell script.
    "shellcheck",
    // The venv of the Perfetto test's decoder (python3 -m venv).
    "python3-venv",
];
/// What the Perfetto test decodes traces with: Perfetto's generated Python
/// bindings, in the venv `.cache/venv`.
const PYTHON_PACKAGES: &[&str] = &["perfetto==0.59.1", "protobuf==7.36.2"];

/// One thing a set-up makes sure of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A Debian package (`apt-get install`).
    Apt(&'static str),
    /// Debian's rustc linked into rustup as [`BPF_TOOLCHAIN`].
    RustupLink,
    /// bpf-linker, built by `cargo install` against Debian's LLVM 22.
    BpfLinker,
    /// A foreign dpkg architecture: the arm64 guests' kernels and busybox
    /// are Debian packages of it (downloaded and unpacked, never installed).
    DpkgArch(&'static str),
    /// The venv `.cache/venv` with [`PYTHON_PACKAGES`].
    Venv,
    /// rustup's nightly (the fuzzer's sanitizers; it needs no rust-src):
    /// checked, never installed.
    Nightly,
    /// cargo-fuzz (`cargo install`).
    CargoFuzz,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Apt(p) => write!(f, "apt {p}"),
            Self::RustupLink => write!(f, "rustup link {BPF_TOOLCHAIN} -> /usr (Debian's rustc)"),
            Self::BpfLinker => write!(f, "cargo install bpf-linker ^0.13 (LLVM 22)"),
            Self::DpkgArch(a) => write!(f, "dpkg-architecture {a}"),
            Self::Venv => write!(f, "venv .cache/venv ({})", PYTHON_PACKAGES.join(" ")),
            Self::Nightly => write!(f, "rustup toolchain nightly (cargo +nightly fuzz)"),
            Self::CargoFuzz => write!(f, "cargo install cargo-fuzz"),
        }
    }
}

/// What a command needs installed, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// `cargo xtask run`: the eBPF toolchain.
    Run,
    /// `cargo xtask run -- --adb`: and the aarch64 cross gcc.
    RunAdb,
    /// `cargo xtask build` (x86_64): the eBPF toolchain.
    Build,
    /// `cargo xtask build --target aarch64-unknown-linux-gnu`: and the
    /// aarch64 cross gcc.
    BuildAarch64,
    /// `cargo xtask fixtures`: the eBPF toolchain.
    Fixtures,
    /// `cargo xtask bench`: the eBPF toolchain, bpftrace, adb.
    Bench,
    /// `cargo xtask soak`: the eBPF toolchain, stress-ng.
    Soak,
    /// `cargo xtask vm-test`: the eBPF toolchain, the aarch64 cross gcc,
    /// QEMU, the arm64 dpkg architecture, adb.
    VmTest,
    /// `cargo xtask btf-fixtures`: zstd, the arm64 dpkg architecture.
    BtfFixtures,
    /// `cargo xtask test`: everything.
    Test,
}

impl Profile {
    /// The command this profile prepares.
    #[must_use]
    pub const fn command(self) -> &'static str {
        match self {
            Self::Run => "cargo xtask run",
            Self::RunAdb => "cargo xtask run -- --adb",
            Self::Build => "cargo xtask build",
            Self::BuildAarch64 => "cargo xtask build --target aarch64-unknown-linux-gnu",
            Self::Fixtures => "cargo xtask fixtures",
            Self::Bench => "cargo xtask bench",
            Self::Soak => "cargo xtask soak",
            Self::VmTest => "cargo xtask vm-test",
            Self::BtfFixtures => "cargo xtask btf-fixtures",
            Self::Test => "cargo xtask test",
        }
    }

    /// What the profile includes, in words.
    #[must_use]
    pub const fn summary(self) -> &'static str {
        match self {
            Self::Run | Self::Build | Self::Fixtures => TOOLCHAIN_WORDS,
            Self::RunAdb | Self::BuildAarch64 => {
                "the eBPF toolchain, and the aarch64 cross gcc (static aarch64 binaries)"
            }
            Self::Bench => {
                "the eBPF toolchain, bpftrace (the storms baseline), adb (the adb benchmark)"
            }
            Self::Soak => "the eBPF toolchain, stress-ng (the churn), adb (soak --adb)",
            Self::VmTest => {
                "the eBPF toolchain, the aarch64 cross gcc, QEMU with zstd, the arm64 dpkg \
                 architecture (the arm64 guests' packages), adb (the arm64 guests over adb)"
            }
            Self::BtfFixtures => {
                "zstd (bzImage payloads) and the arm64 dpkg architecture (the arm64 kernels)"
            }
            Self::Test => {
                "everything the tests need: the eBPF toolchain, the aarch64 cross gcc, QEMU and \
                 the arm64 dpkg architecture, adb, bpftrace, bpftool, tmux, Prometheus, \
                 stress-ng, shellcheck, the Python venv of the Perfetto test, rustup's nightly \
                 and cargo-fuzz (the fuzzer)"
            }
        }
    }

    /// The plan: every item this profile makes sure of, in the order the
    /// set-up takes them (pure: nothing is checked here).
    #[must_use]
    pub fn items(self) -> Vec<Item> {
        let apt = |pkgs: &[&'static str]| pkgs.iter().map(|p| Item::Apt(p)).collect::<Vec<_>>();
        let toolchain = || {
            let mut v = apt(TOOLCHAIN_PACKAGES);
            v.extend([Item::RustupLink, Item::BpfLinker]);
            v
        };
        let arm64 = Item::DpkgArch("arm64");
        let mut items = match self {
            Self::Run | Self::Build | Self::Fixtures => toolchain(),
            Self::RunAdb | Self::BuildAarch64 => [toolchain(), apt(CROSS_PACKAGES)].concat(),
            Self::Bench => [toolchain(), apt(&["bpftrace", "adb"])].concat(),
            Self::Soak => [toolchain(), apt(&["stress-ng", "adb"])].concat(),
            Self::VmTest => [
                toolchain(),
                apt(CROSS_PACKAGES),
                apt(QEMU_PACKAGES),
                apt(&["adb"]),
                vec![arm64],
            ]
            .concat(),
            Self::BtfFixtures => vec![Item::Apt("zstd"), arm64],
            Self::Test => [
                toolchain(),
                apt(CROSS_PACKAGES),
                apt(QEMU_PACKAGES),
                apt(&["adb"]),
                apt(TEST_PACKAGES),
                vec![arm64, Item::Venv, Item::Nightly, Item::CargoFuzz],
            ]
            .concat(),
        };
        // A package two parts need is installed once, where it first comes.
        let mut seen = Vec::new();
        items.retain(|i| {
            let new = !seen.contains(i);
            seen.push(*i);
            new
        });
        items
    }
}

/// How the profiles that need only the toolchain put it.
const TOOLCHAIN_WORDS: &str = "the eBPF toolchain: Debian's rustc-web with its library \
                               sources, linked into rustup as rmapwatch-bpf, LLVM 22, and \
                               bpf-linker built against it";

/// The rustup toolchain the eBPF side builds with, when the user picked
/// one (`RMAPWATCH_BPF_TOOLCHAIN`): then Debian's is neither installed nor
/// linked.
fn chosen_toolchain() -> Option<String> {
    std::env::var("RMAPWATCH_BPF_TOOLCHAIN").ok()
}

/// Whether `item` is there already.
fn present(item: Item, root: &Path) -> bool {
    match item {
        Item::Apt(p) => deb_installed(p),
        Item::RustupLink => {
            succeeds(Command::new("rustup").args(["run", BPF_TOOLCHAIN, "rustc", "--version"]))
        }
        Item::BpfLinker => succeeds(Command::new("bpf-linker").arg("--version")),
        Item::DpkgArch(a) => Command::new("dpkg")
            .arg("--print-foreign-architectures")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == a)),
        Item::Venv => venv_ready(root),
        Item::Nightly => {
            succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
        }
        Item::CargoFuzz => succeeds(Command::new("cargo").args(["+nightly", "fuzz", "--version"])),
    }
}

/// What the set-up does about a missing `item`.
const fn action(item: Item) -> &'static str {
    match item {
        Item::Apt(_) | Item::CargoFuzz => "would install",
        Item::RustupLink => "would link",
        Item::BpfLinker => "would build",
        Item::DpkgArch(_) => "would add",
        Item::Venv => "would make",
        Item::Nightly => "MISSING (cannot be installed by xtask)",
    }
}

/// Whether the set-up leaves `item` alone: Debian's toolchain when the
/// user picked another one.
fn skipped(item: Item) -> bool {
    chosen_toolchain().is_some()
        && match item {
            Item::Apt(p) => TOOLCHAIN_PACKAGES.contains(&p),
            Item::RustupLink => true,
            _ => false,
        }
}

/// Makes sure of every item of `profile`, saying what it does; with
/// `dry_run`, prints the plan (each item present, skipped, or what would
/// be done) on stdout and changes nothing (no root needed).
///
/// # Errors
/// Not a Debian system, an install fails, or rustup's nightly is missing
/// where the profile needs it.
pub fn prepare(profile: Profile, root: &Path, dry_run: bool) -> anyhow::Result<()> {
    let items = profile.items();
    let say = format!(
        "setup {}: for `{}`: {}",
        profile_name(profile),
        profile.command(),
        profile.summary()
    );
    if dry_run {
        println!("{say}");
        println!("dry run: nothing is changed");
        let mut todo = 0;
        for &item in &items {
            let state = if skipped(item) {
                "skipped (RMAPWATCH_BPF_TOOLCHAIN)"
            } else if present(item, root) {
                "present"
            } else {
                todo += 1;
                action(item)
            };
            println!("  {state:<14} {item}");
        }
        println!(
            "{} items: {} present or skipped, {todo} to do",
            items.len(),
            items.len() - todo
        );
        return Ok(());
    }
    step(&say);
    if let Some(tc) = chosen_toolchain() {
        step(&format!(
            "RMAPWATCH_BPF_TOOLCHAIN={tc}: using that rustup toolchain as is"
        ));
    }
    let apt: Vec<&str> = items
        .iter()
        .filter(|i| !skipped(**i))
        .filter_map(|i| match i {
            Item::Apt(p) => Some(*p),
            _ => None,
        })
        .collect();
    if !apt.is_empty() && !Path::new("/usr/bin/dpkg-query").exists() {
        bail!(
            "not a Debian/Ubuntu system: install a rustup nightly with rust-src and \
             bpf-linker, then set RMAPWATCH_BPF_TOOLCHAIN=nightly"
        );
    }
    apt_install(&apt)?;
    for &item in &items {
        if matches!(item, Item::Apt(_)) || skipped(item) {
            continue;
        }
        if present(item, root) {
            step(&format!("{item}: present"));
            continue;
        }
        install(item, root)?;
    }
    step(&format!("set-up for `{}` complete", profile.command()));
    Ok(())
}

/// The profile's name on the command line (`setup run-adb`).
fn profile_name(profile: Profile) -> String {
    clap::ValueEnum::to_possible_value(&profile)
        .map_or_else(|| format!("{profile:?}"), |v| v.get_name().to_owned())
}

/// Installs one missing item that is not a Debian package.
fn install(item: Item, root: &Path) -> anyhow::Result<()> {
    match item {
        Item::Apt(p) => apt_install(&[p]),
        Item::RustupLink => {
            step(&format!(
                "linking Debian's rustc into rustup as {BPF_TOOLCHAIN}"
            ));
            sh(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
            if !Path::new("/usr/lib/rustlib/src/rust/library/core").exists() {
                bail!("rust-web-src did not install /usr/lib/rustlib/src/rust/library");
            }
            Ok(())
        }
        Item::BpfLinker => {
            step("building bpf-linker against LLVM 22 (about a minute)");
            sh(Command::new(cargo_bin())
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    "^0.13",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
        }
        Item::DpkgArch(a) => {
            step(&format!(
                "adding the {a} dpkg architecture (for kernel packages of the QEMU matrix)"
            ));
            sh(&mut sudo(&["dpkg", "--add-architecture", a]))?;
            sh(&mut sudo(&["apt-get", "update", "-q"]))
        }
        Item::Venv => python_venv(root),
        Item::Nightly => bail!(
            "the fuzz step needs a rustup nightly toolchain (rustup toolchain install \
             nightly --profile minimal)"
        ),
        Item::CargoFuzz => {
            step("installing cargo-fuzz (about a minute)");
            sh(Command::new(cargo_bin()).args(["install", "cargo-fuzz", "--locked"]))
        }
    }
}

/// `args` as a command, through sudo unless we are root.
fn sudo(args: &[&str]) -> Command {
    let mut all: Vec<&str> = if is_root() { vec![] } else { vec!["sudo"] };
    all.extend_from_slice(args);
    let mut c = Command::new(all[0]);
    c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the packages of `pkgs` that are missing, in one apt-get call.
fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        step(&format!("Debian packages present: {}", pkgs.join(" ")));
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    sh(&mut sudo(&["apt-get", "update", "-q"]))?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    sh(&mut sudo(&args))
}

/// The venv's interpreter (what `RMAPWATCH_PYTHON` names for the tests).
#[must_use]
pub fn venv_python(root: &Path) -> PathBuf {
    root.join(".cache/venv/bin/python3")
}

/// Whether the venv imports Perfetto's trace bindings at the pinned version.
fn venv_ready(root: &Path) -> bool {
    succeeds(Command::new(venv_python(root)).args([
        "-c",
        "import importlib.metadata as m, google.protobuf; \
         from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace; \
         assert m.version('perfetto') == '0.59.1'",
    ]))
}

/// Makes the venv `.cache/venv` with [`PYTHON_PACKAGES`] (a venv that
/// imports them is left as it is).
fn python_venv(root: &Path) -> anyhow::Result<()> {
    let venv = root.join(".cache/venv");
    let py = venv_python(root);
    if !py.exists() {
        step(&format!(
            "making the Python venv {} (the Perfetto test's decoder)",
            venv.display()
        ));
        sh(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    step(&format!(
        "installing {} into {}",
        PYTHON_PACKAGES.join(" "),
        venv.display()
    ));
    sh(Command::new(&py)
        .args(["-m", "pip", "install", "-q"])
        .args(PYTHON_PACKAGES))?;
    if !venv_ready(root) {
        bail!(
            "{} cannot import perfetto's trace bindings after pip install",
            py.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What only the tests need: none of it in the run path's plan.
    const TEST_ONLY: &[&str] = &[
        "adb",
        "bpftrace",
        "bpftool",
        "tmux",
        "qemu-system-x86",
        "qemu-system-arm",
        "prometheus",
        "stress-ng",
        "python3-venv",
        "shellcheck",
        "gcc-aarch64-linux-gnu",
        "libc6-dev-arm64-cross",
    ];

    fn apt(items: &[Item]) -> Vec<&'static str> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Apt(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn run_installs_only_the_ebpf_toolchain() {
        let items = Profile::Run.items();
        assert_eq!(apt(&items), TOOLCHAIN_PACKAGES);
        assert_eq!(
            &items[TOOLCHAIN_PACKAGES.len()..],
            [Item::RustupLink, Item::BpfLinker]
        );
        for p in TEST_ONLY {
            assert!(!apt(&items).contains(p), "{p} in the run plan");
        }
        assert_eq!(Profile::Build.items(), items);
        assert_eq!(Profile::Fixtures.items(), items);
    }

    #[test]
    fn run_with_adb_adds_only_the_cross_gcc() {
        let items = Profile::RunAdb.items();
        assert_eq!(
            items,
            [
                Profile::Run.items(),
                CROSS_PACKAGES.iter().map(|p| Item::Apt(p)).collect()
            ]
            .concat()
        );
        assert_eq!(Profile::BuildAarch64.items(), items);
    }

    #[test]
    fn only_the_test_profile_needs_nightly_fuzz_and_the_venv() {
        for p in [
            Profile::Run,
            Profile::RunAdb,
            Profile::Build,
            Profile::BuildAarch64,
            Profile::Fixtures,
            Profile::Bench,
            Profile::Soak,
            Profile::VmTest,
            Profile::BtfFixtures,
        ] {
            let items = p.items();
            for i in [
                Item::Nightly,
                Item::CargoFuzz,
                Item::Venv,
                Item::Apt("python3-venv"),
            ] {
                assert!(!items.contains(&i), "{p:?} has {i}");
            }
        }
        let test = Profile::Test.items();
        for i in [Item::Nightly, Item::CargoFuzz, Item::Venv] {
            assert!(test.contains(&i));
        }
    }

    #[test]
    fn the_arm64_architecture_only_where_arm64_packages_are_fetched() {
        let arm64 = Item::DpkgArch("arm64");
        for p in [Profile::VmTest, Profile::BtfFixtures, Profile::Test] {
            assert!(p.items().contains(&arm64), "{p:?}");
        }
        for p in [Profile::Run, Profile::RunAdb, Profile::Bench, Profile::Soak] {
            assert!(!p.items().contains(&arm64), "{p:?}");
        }
        let vm = Profile::VmTest.items();
        for q in QEMU_PACKAGES.iter().chain(CROSS_PACKAGES).chain(&["adb"]) {
            assert!(vm.contains(&Item::Apt(q)), "vm-test lacks {q}");
        }
    }

    #[test]
    fn the_test_profile_covers_every_other_once() {
        let test = Profile::Test.items();
        for p in [
            Profile::Run,
            Profile::RunAdb,
            Profile::Bench,
            Profile::Soak,
            Profile::VmTest,
            Profile::BtfFixtures,
        ] {
            for i in p.items() {
                assert!(test.contains(&i), "{p:?}'s {i} not in test");
            }
        }
        for (n, i) in test.iter().enumerate() {
            assert!(!test[n + 1..].contains(i), "{i} twice");
        }
        for p in TEST_ONLY {
            assert!(test.contains(&Item::Apt(p)), "{p}");
        }
    }
}
