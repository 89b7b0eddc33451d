//! Workflows for rmapwatch: set-up, run, test. Building is cargo's job
//! (`rmapwatch-live/build.rs` builds the eBPF object with aya-build); xtask
//! only orchestrates.
//!
//! Each command first installs what it needs, idempotently, and says what
//! it does (`setup`: the profiles, from `cargo xtask run`'s eBPF toolchain to
//! everything `cargo xtask test` needs). The modules: `cmd` (running
//! commands), `setup` (what each command installs), `vm` (the kernel matrix
//! under QEMU: `kernels`, `guest`, `checks`, `matrix`), `adbcell` (the
//! matrix's host phase over adb, wired in here), `cycles` (the import-cycle
//! check), `fixtures`, `btf` and `cpio`.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod adbcell;
mod btf;
mod cmd;
mod cpio;
mod cycles;
mod designs;
mod fixtures;
mod setup;
mod vm;

use cmd::{as_root, cargo, cargo_bin, is_root, sh, step, workspace_root};
use setup::{BPF_TOOLCHAIN, Profile};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "rmapwatch workflows")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a command needs if missing (idempotent), saying which
    /// command it prepares and what that includes.
    ///
    /// `run` (the default): the eBPF
    /// toolchain (Debian's rustc-web and library sources linked into rustup
    /// as rmapwatch-bpf, LLVM 22, bpf-linker). `test`: everything the tests
    /// need (also the aarch64 cross gcc, QEMU, the arm64 dpkg architecture,
    /// adb, bpftrace, bpftool, tmux, Prometheus, stress-ng, shellcheck, the
    /// Python venv, rustup's nightly and cargo-fuzz). The other profiles are
    /// those of the other commands.
    Setup {
        /// Which command to prepare for.
        #[arg(value_enum, default_value = "run")]
        profile: Profile,
        /// Print the plan (each item: present, or what would be done) and
        /// change nothing; needs no root.
        #[arg(long)]
        dry_run: bool,
    },
    /// Build (release) and run rmapwatch as root; arguments after `--` go to
    /// rmapwatch. Installs the eBPF toolchain; with `--adb`, also the aarch64
    /// cross gcc (the phone's static agent).
    Run {
        /// Arguments for rmapwatch.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every check and test: fmt, clippy, shellcheck, the crate
    /// boundaries and import cycles, unit and binary tests, the fuzzers, the
    /// privileged kernel tests (as root, one at a time), and the kernel
    /// matrix under QEMU (vm-test). Installs everything the tests need
    /// (`cargo xtask setup test --dry-run` lists it).
    Test {
        /// Skip fmt, clippy and shellcheck.
        #[arg(long)]
        no_lint: bool,
    },
    /// Boot Debian's kernels under QEMU (Debian 11's 5.10, Debian 12's 6.1
    /// and 6.12, trixie-backports' newest 7.x; x86_64 and arm64) and run
    /// rmapwatch in each probe mode (fentry, kprobe, tracepoint), plus a
    /// GKI-like boot (slab_nomerge, auto), against ground truth taken inside
    /// the VM. Installs the eBPF toolchain, the aarch64 cross gcc, QEMU,
    /// zstd, adb, and adds the arm64 dpkg architecture.
    VmTest {
        /// Rewrite the matrix in docs/kernels.md (between its vm-matrix
        /// markers) with the results.
        #[arg(long)]
        report: bool,
        /// Only these series (5.10, 6.1, 6.12, 7.x; repeatable).
        #[arg(long, value_name = "SERIES")]
        only: Vec<String>,
        /// Only this architecture (x86_64 or aarch64).
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// Write each guest's recording into rmapwatch/tests/fixtures.
        #[arg(long)]
        fixtures: bool,
    },
    /// Build static release binaries (rmapwatch, rmw-workload, rmw-adbd) for
    /// a target: x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu (for
    /// Android and any Linux without shared libraries). Installs the eBPF
    /// toolchain; for aarch64 also the aarch64 cross gcc.
    Build {
        /// Rust target triple.
        #[arg(long, default_value = "x86_64-unknown-linux-gnu")]
        target: String,
    },
    /// Record this host's fixtures (rmapwatch/tests/fixtures/host-ARCH.*):
    /// a controlled workload, replayed by the non-root tests (root).
    /// Installs the eBPF toolchain.
    Fixtures,
    /// Cut the BTF of every kernel of the matrix down to what rmapwatch
    /// reads (rmapwatch-live/tests/btf/SERIES-ARCH.btf, kilobytes each):
    /// the unit tests' fixtures for each tracepoint and hook layout.
    /// Installs zstd and adds the arm64 dpkg architecture.
    BtfFixtures,
    /// Build (release) and soak `rmapwatch serve` as root: fork/mmap churn
    /// (stress-ng) next to a process holding --vmas VMAs, scraped the whole
    /// time; fails on an RSS growth trend, a scrape of 100 ms or more, or
    /// end counts unlike a fresh walk's (see BENCHMARKS.md). With `--adb`,
    /// through the adb device stand-in (this host as the phone): the
    /// agent's RSS and the link's lag watched too. Installs the eBPF
    /// toolchain, stress-ng and adb.
    Soak {
        /// Minutes of churn.
        #[arg(long, default_value = "10", value_parser = positive_minutes)]
        minutes: f64,
        /// VMAs of state (half of them with an anon_vma).
        #[arg(long, default_value = "1000000")]
        vmas: usize,
        /// Through `rmapwatch --adb` and the device stand-in.
        #[arg(long)]
        adb: bool,
    },
    /// Build (release) and run the benchmarks as root; each prints its
    /// baseline from the same run and the ratio (see BENCHMARKS.md).
    /// Installs the eBPF toolchain, bpftrace and adb.
    Bench {
        /// One of render, pipeline, ingest, footprint, snapshot, designs,
        /// pagemap, designs-render, replay, record, idle, locks, cost, storms, adb (the
        /// --adb link), all (but adb).
        #[arg(default_value = "all")]
        which: String,
        /// The benchmark's options, passed to rmw-bench (`cargo xtask bench
        /// cost --rounds 7`; `target/release/rmw-bench NAME --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Replay every recording at hand (the matrix guests', kept by vm-test
    /// next to their serial logs, and this host's fixture) with the host's
    /// rmapwatch and write docs/designs-table.md (between its markers):
    /// per recording, today against LAZY, the COW context and the ideal as
    /// the ANON_VMA_LAZY cover letter's two tables (system-wide; the
    /// zygote tree's processes). Builds the static x86_64 rmapwatch.
    DesignsTable,
    /// Print the import cycles among the modules of every workspace crate
    /// (`crate::`, `super::`, `self::` and child-module paths), or that
    /// there is none; exits 0 either way (`cargo xtask test` fails on them).
    /// Installs nothing.
    Cycles,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Setup { profile, dry_run } => setup::prepare(profile, &root, dry_run),
        Cmd::Run { args } => {
            // A phone over adb: the host needs no root, the phone needs the
            // static agent of its architecture (both built: phones are
            // aarch64, emulators x86_64; found in the build tree).
            let adb = args.iter().any(|a| a == "--adb" || a.starts_with("--adb="));
            setup::prepare(
                if adb { Profile::RunAdb } else { Profile::Run },
                &root,
                false,
            )?;
            step("building rmapwatch (release)");
            cargo(&["build", "--release", "--package", "rmapwatch"])?;
            let bin = root.join("target/release/rmapwatch");
            if adb {
                for arch in &vm::ARCHES {
                    build_static(&root, arch)?;
                }
            }
            step(&format!("running {} {}", bin.display(), args.join(" ")));
            let status = if adb {
                Command::new(&bin).args(&args).status()
            } else {
                as_root(&bin, &args).status()
            }
            .context("starting rmapwatch")?;
            // rmapwatch already printed why it stopped; pass its code on.
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { no_lint } => test(&root, no_lint),
        Cmd::DesignsTable => designs_table(&root),
        Cmd::VmTest {
            report,
            fixtures,
            only,
            arch,
        } => {
            setup::prepare(Profile::VmTest, &root, false)?;
            vm_test(&root, report, fixtures, &only, arch.as_deref())
        }
        Cmd::Build { target } => {
            let arch = vm::ARCHES
                .iter()
                .find(|a| a.target == target)
                .with_context(|| format!("unsupported target {target}: x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu"))?;
            let profile = if arch.name == "x86_64" {
                Profile::Build
            } else {
                Profile::BuildAarch64
            };
            setup::prepare(profile, &root, false)?;
            let dir = build_static(&root, arch)?;
            step(&format!(
                "static binaries in {} (rmapwatch there is the agent `--adb` pushes: found \
                 by a host rmapwatch of this build tree, or pass --agent {}/rmapwatch)",
                dir.display(),
                dir.display()
            ));
            Ok(())
        }
        Cmd::Fixtures => {
            setup::prepare(Profile::Fixtures, &root, false)?;
            build_release("rmapwatch and the workload")?;
            let arch = std::env::consts::ARCH;
            let out = root.join(format!("rmapwatch/tests/fixtures/host-{arch}"));
            fixtures::record(&root.join("target/release"), &out, &[])?;
            step(&format!("wrote {}.{{rmw,json,meta}}", out.display()));
            Ok(())
        }
        Cmd::BtfFixtures => {
            setup::prepare(Profile::BtfFixtures, &root, false)?;
            btf_fixtures(&root)
        }
        Cmd::Soak { minutes, vmas, adb } => {
            setup::prepare(Profile::Soak, &root, false)?;
            build_release("rmapwatch, the workload and the soak")?;
            if adb {
                // The agent the host pushes to the stand-in.
                build_static(&root, &vm::ARCHES[0])?;
            }
            let bin = root.join("target/release/rmw-bench");
            let mut args = vec![
                "soak".to_owned(),
                "--minutes".to_owned(),
                minutes.to_string(),
                "--vmas".to_owned(),
                vmas.to_string(),
            ];
            if adb {
                args.push("--adb".to_owned());
            }
            step(&format!("running {} {}", bin.display(), args.join(" ")));
            sh(&mut as_root(&bin, &args))
        }
        Cmd::Bench { which, args } => {
            setup::prepare(Profile::Bench, &root, false)?;
            build_release("the benchmarks")?;
            if which == "adb" {
                // The agent the adb benchmark pushes to the stand-in.
                build_static(&root, &vm::ARCHES[0])?;
            }
            let bin = root.join("target/release/rmw-bench");
            let mut argv = vec![which];
            argv.extend(args);
            step(&format!("running {} {}", bin.display(), argv.join(" ")));
            sh(&mut as_root(&bin, &argv))
        }
        Cmd::Cycles => {
            let graphs = cycles::workspace(&root)?;
            print!("{}", cycles::render(&graphs));
            Ok(())
        }
    }
}

/// The BTF fixtures of every kernel of the matrix, and one of a layout no
/// kernel has.
fn btf_fixtures(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("rmapwatch-live/tests/btf");
    std::fs::create_dir_all(&dir)?;
    for arch in &vm::ARCHES {
        for series in &vm::kernels::SERIES {
            let image = vm::kernels::kernel_image_of(&root.join(".cache/vm"), arch, series)?;
            let out = dir.join(format!("{}-{}.btf", series.label, arch.name));
            let n = btf::fixture(&image, &out)?;
            step(&format!(
                "{} ({n} bytes) from {}",
                out.display(),
                image.display()
            ));
            // A layout no kernel has: free's cache pointer an int.
            if series.label == "6.12" && arch.name == "x86_64" {
                let odd = btf::retype_param(&std::fs::read(&out)?, "kmem_cache_free", 3, "int")?;
                let to = dir.join("unknown-layout.btf");
                std::fs::write(&to, odd)?;
                step(&format!(
                    "{} (6.12's, kmem_cache_free's s an int)",
                    to.display()
                ));
            }
        }
    }
    Ok(())
}

/// fmt, clippy, and shellcheck on every shell script of the repository
/// (tracked `*.sh` files and `.ci/run`).
fn lint() -> anyhow::Result<()> {
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    step("cargo clippy -D warnings");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let out = Command::new("git")
        .args(["ls-files", "-z", "*.sh"])
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut scripts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    scripts.push(".ci/run".to_owned());
    step(&format!("shellcheck {}", scripts.join(" ")));
    sh(Command::new("shellcheck").args(&scripts))
}

fn test(root: &Path, no_lint: bool) -> anyhow::Result<()> {
    setup::prepare(Profile::Test, root, false)?;
    if !no_lint {
        lint()?;
    }
    boundaries(root)?;
    step("unit and binary tests (no root needed)");
    // The default members: the eBPF crate is built for bpf by
    // rmapwatch-live/build.rs.
    // The Perfetto test decodes with the venv's Python.
    sh(Command::new(cargo_bin())
        .arg("test")
        .env("RMAPWATCH_PYTHON", setup::venv_python(root)))?;
    fuzz_briefly()?;
    step("privileged kernel tests (root, one at a time)");
    cargo(&["build", "--tests", "--package", "rmapwatch"])?;
    // The controlled workload and the adb device stand-in the privileged
    // tests run, next to rmapwatch.
    cargo(&["build", "--package", "rmapwatch-tools", "--bins"])?;
    // The static agent the --adb tests push (found in the build tree).
    build_static(root, &vm::ARCHES[0])?;
    let privileged = [
        "test",
        "--package",
        "rmapwatch",
        // The stand-in's own root tests (uid 2000, setuid su).
        "--package",
        "rmapwatch-tools",
        // The set-up's own: the run path's plan in a rustup without nightly.
        "--package",
        "xtask",
        "--",
        "--ignored",
        "--test-threads=1",
    ];
    if is_root() {
        cargo(&privileged)?;
    } else {
        sh(Command::new("sudo")
            .args(["--preserve-env=PATH,RUSTUP_HOME,CARGO_HOME", &cargo_bin()])
            .args(privileged))?;
    }
    step(
        "kernel matrix under QEMU: Debian 5.10, 6.1, 6.12 and 7.x, x86_64 and arm64, \
         fentry / kprobe / tracepoint, and a GKI-like boot on arm64",
    );
    vm_test(root, false, false, &[], None)
}

/// Where `designs-table` writes its tables, between [`DESIGNS_MARKERS`].
const DESIGNS_DOC: &str = "docs/designs-table.md";
/// The markers around the generated block of [`DESIGNS_DOC`].
const DESIGNS_MARKERS: (&str, &str) =
    ("<!-- designs-table:start -->", "<!-- designs-table:end -->");

/// Writes the designs' tables into [`DESIGNS_DOC`] (created with its
/// markers when missing).
fn designs_table(root: &Path) -> anyhow::Result<()> {
    let host = build_static(root, &vm::ARCHES[0])?.join("rmapwatch");
    let block = designs::generate(root, &host)?;
    let doc = root.join(DESIGNS_DOC);
    let text = std::fs::read_to_string(&doc).unwrap_or_else(|_| {
        format!(
            "# The designs on recorded machines\n\n{}\n{}\n",
            DESIGNS_MARKERS.0, DESIGNS_MARKERS.1
        )
    });
    let new = between_markers(&text, DESIGNS_MARKERS, &block)
        .with_context(|| format!("{DESIGNS_DOC} has no designs-table markers"))?;
    std::fs::write(&doc, new)?;
    step(&format!("{DESIGNS_DOC} rewritten"));
    Ok(())
}

/// Where `vm-test --report` writes the matrix, between [`MATRIX_MARKERS`].
const MATRIX_DOC: &str = "docs/kernels.md";
/// The markers around the matrix table in [`MATRIX_DOC`].
/// `--minutes`: positive and finite, refused before anything is built.
fn positive_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        Ok(_) => Err("give a positive number of minutes".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

const MATRIX_MARKERS: (&str, &str) = ("<!-- vm-matrix:start -->", "<!-- vm-matrix:end -->");

/// `text` with what lies between the `markers` replaced by `table`, or
/// `None` when a marker is missing or the end comes first.
fn between_markers(text: &str, markers: (&str, &str), table: &str) -> Option<String> {
    let (a, b) = markers;
    let i = text.find(a)?;
    let j = i + text[i..].find(b)?;
    Some(format!("{}{a}\n{table}{}", &text[..i], &text[j..]))
}

/// Runs the kernel matrix (set up already), prints its table, and with
/// `report` writes it into [`MATRIX_DOC`].
fn vm_test(
    root: &Path,
    report: bool,
    fixtures: bool,
    only: &[String],
    only_arch: Option<&str>,
) -> anyhow::Result<()> {
    let doc = root.join(MATRIX_DOC);
    // Said before half an hour of QEMU, not after.
    if report {
        let text = std::fs::read_to_string(&doc)
            .with_context(|| format!("--report writes the matrix into {MATRIX_DOC}"))?;
        if between_markers(&text, MATRIX_MARKERS, "").is_none() {
            bail!(
                "{MATRIX_DOC} has no {} ... {} markers (in that order): --report writes the \
                 matrix between them",
                MATRIX_MARKERS.0,
                MATRIX_MARKERS.1
            );
        }
    }
    let mut cells = Vec::new();
    if let Some(a) = only_arch
        && !vm::ARCHES.iter().any(|x| x.name == a)
    {
        bail!("--arch {a}: the matrix has x86_64 and aarch64");
    }
    // The x86_64 build replays every guest's recording (and drives the
    // arm64 guests over adb): always built.
    let host = build_static(root, &vm::ARCHES[0])?.join("rmapwatch");
    for arch in vm::ARCHES
        .iter()
        .filter(|a| only_arch.is_none_or(|o| o == a.name))
    {
        let bins = build_static(root, arch)?;
        cells.extend(vm::matrix::matrix(
            &root.join(".cache/vm"),
            arch,
            &bins,
            &host,
            only,
            // The arm64 guests' host phase: the phone over adb.
            Some(adbcell::phase as vm::HostPhaseFn),
        )?);
    }
    if fixtures {
        write_vm_fixtures(root, &cells)?;
    }
    let table = vm::matrix::table(&cells);
    println!("{table}");
    if report {
        let text = std::fs::read_to_string(&doc)?;
        let new = between_markers(&text, MATRIX_MARKERS, &table)
            .with_context(|| format!("{MATRIX_DOC} lost its vm-matrix markers during the run"))?;
        std::fs::write(&doc, new)?;
        step(&format!("{MATRIX_DOC} matrix rewritten"));
    }
    let failed: Vec<&vm::Cell> = cells.iter().filter(|c| c.result.is_err()).collect();
    if failed.is_empty() {
        step(&format!("vm-test: {} passed, 0 failed", cells.len()));
        Ok(())
    } else {
        // Said last, where a log's tail shows it (the table above can be
        // longer than the tail): each failed cell, its error cut short.
        let mut why = String::new();
        for c in &failed {
            let e = c.result.as_ref().err().map_or("", String::as_str);
            let short: String = e.chars().take(600).collect();
            let more = if short.len() < e.len() { " ..." } else { "" };
            let _ = write!(why, "\n  {} {}: {short}{more}", c.kernel, c.mode);
        }
        bail!(
            "vm-test: {} passed, {} failed:{why}",
            cells.len() - failed.len(),
            failed.len()
        )
    }
}

/// Builds rmapwatch, the workload and the benchmarks in release mode
/// (`target/release`).
fn build_release(what: &str) -> anyhow::Result<()> {
    step(&format!("building {what} (release)"));
    cargo(&[
        "build",
        "--release",
        "--package",
        "rmapwatch",
        "--package",
        "rmapwatch-tools",
        "--bins",
    ])
}

/// Copies each guest's recording (kept by vm-test next to its serial log)
/// into the committed fixtures, as `vm-ARCH-SERIES.{rmw,json,meta}`.
fn write_vm_fixtures(root: &Path, cells: &[vm::Cell]) -> anyhow::Result<()> {
    for c in cells
        .iter()
        .filter(|c| c.mode == "record/replay" && c.result.is_ok())
    {
        let (release, arch) = c.kernel.split_once(' ').unwrap_or((&c.kernel, ""));
        let deb = vm::ARCHES
            .iter()
            .find(|a| a.name == arch)
            .map_or("amd64", |a| a.deb);
        let series = release.split('.').take(2).collect::<Vec<_>>().join(".");
        let src = root.join(".cache/vm").join(deb);
        let dst = root.join("rmapwatch/tests/fixtures");
        // Releases have dots: extensions are appended, not replaced.
        let (from, to) = (
            vm::checks::recording_name(&c.kernel),
            format!("vm-{arch}-{series}"),
        );
        for ext in ["rmw", "json", "meta"] {
            std::fs::copy(
                src.join(format!("{from}.{ext}")),
                dst.join(format!("{to}.{ext}")),
            )
            .with_context(|| format!("copying the recording of {}", c.kernel))?;
        }
        step(&format!("fixture {to}.rmw from {}", c.kernel));
    }
    // The kallsyms excerpts, one per kernel booted.
    let dst = root.join("rmapwatch-live/tests/kallsyms");
    std::fs::create_dir_all(&dst)?;
    let mut kernels: Vec<&str> = cells.iter().map(|c| c.kernel.as_str()).collect();
    kernels.sort_unstable();
    kernels.dedup();
    for k in kernels {
        let (release, arch) = k.split_once(' ').unwrap_or((k, ""));
        let Some(a) = vm::ARCHES.iter().find(|a| a.name == arch) else {
            continue;
        };
        let src = root
            .join(".cache/vm")
            .join(a.deb)
            .join(format!("ksyms-{}.txt", k.replace(' ', "-")));
        let Some(series) = vm::kernels::SERIES
            .iter()
            .find(|s| match s.label.strip_suffix('x') {
                Some(major) => release.starts_with(major),
                None => release.starts_with(&format!("{}.", s.label)),
            })
        else {
            continue;
        };
        if src.exists() {
            let to = dst.join(format!("{}-{arch}.txt", series.label));
            std::fs::copy(&src, &to)?;
            step(&format!("kallsyms fixture {}", to.display()));
        }
    }
    Ok(())
}

/// Crates that the engine must never depend on: it knows no kernel
/// source, no runtime, no terminal.
const NOT_IN_THE_ENGINE: &[&str] = &[
    "aya",
    "aya-obj",
    "aya-log",
    "btf-rs",
    "tokio",
    "ratatui",
    "crossterm",
    "libc",
    "mio",
];

/// The crate boundaries, proven: no crate's modules import each other in a
/// cycle; the engine's dependency tree has no aya, tokio, ratatui or
/// Linux-only API; and the host side that replays and talks to a phone
/// (engine, TUI, CLI, without the live source) type-checks for macOS on
/// Apple silicon.
fn boundaries(root: &Path) -> anyhow::Result<()> {
    step("boundary: no import cycle among the modules of each crate");
    let graphs = cycles::workspace(root)?;
    let found = cycles::render(&graphs);
    if graphs.iter().any(|g| !g.cycles().is_empty()) {
        bail!("import cycles:\n{found}");
    }
    step(found.trim_end());
    step("boundary: the engine's dependency tree (cargo tree -p rmapwatch-engine)");
    let out = Command::new(cargo_bin())
        .args([
            "tree",
            "-p",
            "rmapwatch-engine",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let bad: Vec<&&str> = NOT_IN_THE_ENGINE
        .iter()
        .filter(|c| crates.contains(**c))
        .collect();
    if !bad.is_empty() {
        bail!("the engine depends on {bad:?}:\n{tree}");
    }
    step(&format!(
        "boundary: the engine depends on {} crates, none of {}",
        crates.len(),
        NOT_IN_THE_ENGINE.join(", ")
    ));
    step(
        "boundary: the host side (rmapwatch without the live source) checks for aarch64-apple-darwin",
    );
    let mut c = Command::new("rustup");
    c.args([
        "run",
        BPF_TOOLCHAIN,
        "cargo",
        "check",
        "--quiet",
        "-p",
        "rmapwatch",
    ])
    .args([
        "--target",
        "aarch64-apple-darwin",
        "-Z",
        "build-std=std,panic_abort",
    ])
    .args(["--target-dir", "target/cross-check"])
    .env("RUSTC_BOOTSTRAP", "1");
    sh(&mut c)
}

/// The fuzz targets of `fuzz/` that `cargo xtask test` runs briefly, with
/// what each feeds, and for how many seconds: the stream decoder 30 s, the
/// parsers of what devices and the kernel say 12 s each (from corpora
/// minimized after 10-minute runs: a short run re-checks them and explores
/// a little; CI's whole run must stay under an hour).
const FUZZ_TARGETS: [(&str, &str, u32); 6] = [
    ("stream", "the stream decoder and the engine", 30),
    (
        "device",
        "a device's adb replies (devices -l, probe/getprop, agent stderr)",
        12,
    ),
    ("kallsyms", "the /proc/kallsyms parser and its lookups", 12),
    ("btf", "BTF layouts and prototypes", 12),
    ("tracefs_format", "tracefs format files", 12),
    (
        "procfs",
        "/proc status, maps, cmdline, comm and slab objects",
        12,
    ),
];

/// Each fuzz target briefly (`fuzz/`, [`FUZZ_TARGETS`]), from its kept
/// corpus (`fuzz/corpus/<target>.tar.zst`, minimized after a 10-minute
/// run) unpacked into a scratch directory: the kept one changes only by
/// hand. `cargo fuzz` builds with debug assertions (its default without
/// `-O`): an overflow on input is a crash.
fn fuzz_briefly() -> anyhow::Result<()> {
    for (target, what, secs) in FUZZ_TARGETS {
        let scratch = std::env::temp_dir().join(format!("rmapwatch-fuzz-corpus-{target}"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        sh(Command::new("tar")
            .args(["--zstd", "-xf"])
            .arg(format!("fuzz/corpus/{target}.tar.zst"))
            .arg("-C")
            .arg(&scratch))?;
        step(&format!(
            "fuzzing {what} for {secs} s (cargo +nightly fuzz run {target})"
        ));
        sh(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .arg(&scratch)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
                "-max_len=65536",
            ]))?;
    }
    Ok(())
}

/// Static binaries for the VM (any Linux, and Android, without shared
/// libraries). aarch64: Debian's cross gcc as the linker and `-Z build-std`
/// from Debian's library sources, with the Debian toolchain.
fn build_static(root: &Path, arch: &vm::Arch) -> anyhow::Result<PathBuf> {
    step(&format!(
        "building static {} binaries (crt-static)",
        arch.name
    ));
    let mut c = if arch.name == "x86_64" {
        Command::new(cargo_bin())
    } else {
        let mut c = Command::new("rustup");
        c.args(["run", BPF_TOOLCHAIN, "cargo"])
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            );
        c
    };
    c.args([
        "build",
        "--release",
        "--target",
        arch.target,
        "--package",
        "rmapwatch",
        "--package",
        "rmapwatch-tools",
    ])
    .args([
        "--bin",
        "rmapwatch",
        "--bin",
        "rmw-workload",
        "--bin",
        "rmw-adbd",
    ])
    .env(
        "RUSTFLAGS",
        if arch.name == "x86_64" {
            "-C target-feature=+crt-static"
        } else {
            // Phones from android14-6.1 on may run 16 KiB pages.
            "-C target-feature=+crt-static -C link-arg=-Wl,-z,max-page-size=16384"
        },
    );
    if arch.name != "x86_64" {
        c.args(["-Z", "build-std=std,panic_abort"]);
    }
    sh(&mut c)?;
    let dir = root.join("target").join(arch.target).join("release");
    if arch.name == "x86_64" {
        return Ok(dir);
    }
    let align = load_alignment(&dir.join("rmapwatch"))?;
    if align < 16384 {
        bail!(
            "{}/rmapwatch: LOAD segments aligned to {align} bytes, not 16 KiB pages",
            dir.display()
        );
    }
    step(&format!(
        "{} rmapwatch: static, LOAD segments aligned to {} KiB (16 KiB-page kernels run it)",
        arch.name,
        align / 1024
    ));
    Ok(dir)
}

/// The smallest alignment of an ELF64 file's LOAD segments.
fn load_alignment(path: &Path) -> anyhow::Result<u64> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let num = |o: usize, n: usize| -> anyhow::Result<u64> {
        let s = b.get(o..o + n).context("truncated ELF")?;
        Ok(s.iter().rev().fold(0, |a, &x| a << 8 | u64::from(x)))
    };
    if b.get(..4) != Some(b"\x7fELF") {
        bail!("{} is not ELF", path.display());
    }
    let (phoff, phentsize, phnum) = (num(32, 8)?, num(54, 2)?, num(56, 2)?);
    let mut min = u64::MAX;
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize)?;
        if num(at, 4)? == 1 {
            min = min.min(num(at + 48, 8)?);
        }
    }
    Ok(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_goes_between_the_markers_and_nowhere_else() {
        let doc =
            "# Kernels\n\n<!-- vm-matrix:start -->\n| old |\n<!-- vm-matrix:end -->\n\nafter\n";
        assert_eq!(
            between_markers(doc, MATRIX_MARKERS, "| new |\n").as_deref(),
            Some(
                "# Kernels\n\n<!-- vm-matrix:start -->\n| new |\n<!-- vm-matrix:end -->\n\nafter\n"
            )
        );
        assert_eq!(between_markers("# Kernels\n", MATRIX_MARKERS, ""), None);
        let reversed = "<!-- vm-matrix:end -->\n<!-- vm-matrix:start -->\n";
        assert_eq!(between_markers(reversed, MATRIX_MARKERS, ""), None);
    }
}
