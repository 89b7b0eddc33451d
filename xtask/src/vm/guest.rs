//! The guest side of the matrix: its /init (`guest/init.sh`, a shell file
//! of its own), the parameters it reads from `/etc/rmw.conf` (written here),
//! and the initramfs that carries both with busybox, the static binaries,
//! the committed fixtures and the NIC's modules.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::{Arch, kernels};
use crate::cmd::sh;

/// Symbols of the kallsyms fixtures: the call sites, the hooks and their
/// older names, the anon_vma cache's ctor, PREEMPT_RCU's marker, and the
/// time hooks' functions (and an rmap walk caller).
pub const KSYMS: [&str; 19] = [
    "__anon_vma_prepare",
    "anon_vma_clone",
    "anon_vma_fork",
    "unlink_anon_vmas",
    "__put_anon_vma",
    "anon_vma_ctor",
    "folio_add_new_anon_rmap",
    "page_add_new_anon_rmap",
    "__page_add_new_anon_rmap",
    "folio_add_anon_rmap_ptes",
    "page_add_anon_rmap",
    "folio_add_anon_rmap_pmd",
    "__rcu_read_lock",
    "dup_mmap",
    "rmap_walk_anon",
    "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath",
    "rmap_walk",
    "try_to_migrate_one",
];

/// The probe modes a full boot runs, in order (`rmw.modes=` on the kernel
/// command line picks others).
pub const MODES: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// Regions (VMAs with an anon_vma each) of the workload of every mode.
pub const K: u64 = 40;
/// Children the workload forks (each A anon_vmas and 2A AVCs).
pub const F: u64 = 3;
/// Forks of the small fork storm timed per mode (untraced, then traced).
pub const STORM: u64 = 200;

/// At most this long the guest waits in the host phase for the host to
/// release it (below the boot's 900 s, so the log still ends).
const HOST_PHASE_SECS: u64 = 600;

/// The guest's watchdog budget of any other phase (its `RMW-T` stamp to the
/// next): past it the phase hung, and the guest says what hung and powers
/// off. The longest phase seen: 99 s (arm64's fentry mode under TCG).
const PHASE_SECS: u64 = 300;

/// The VM's /init, a busybox sh script: for each mode, attach, take the
/// anon_vma slab count, run the workload to its hold point, take the count
/// again, let interim reports come, release, stop, print everything between
/// markers. A file of its own so that shellcheck reads it and no Rust
/// escaping stands in the way; its parameters are in [`config`].
const INIT: &str = include_str!("guest/init.sh");

/// `/etc/rmw.conf`, which [`INIT`] sources: the guest's parameters as shell
/// assignments, each value single-quoted (nothing in it is expanded).
fn config() -> String {
    let vars = [
        ("RMW_MODES", MODES.join(" ")),
        ("RMW_KSYMS", KSYMS.join("|")),
        ("RMW_K", K.to_string()),
        ("RMW_F", F.to_string()),
        ("RMW_STORM", STORM.to_string()),
        ("RMW_WORKLOAD", crate::fixtures::WORKLOAD.join(" ")),
        ("RMW_HOST_PHASE_SECS", HOST_PHASE_SECS.to_string()),
        ("RMW_PHASE_SECS", PHASE_SECS.to_string()),
    ];
    let mut s = String::from(
        "# The matrix guest's parameters (xtask/src/vm/guest.rs), sourced by /init.\n",
    );
    for (name, value) in vars {
        s.push_str(&format!("{name}={}\n", quote(&value)));
    }
    s
}

/// `value` as one single-quoted shell word.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Builds the initramfs: busybox (of the guest's architecture), the static
/// binaries, /init, and the NIC's modules of each release in `net`
/// (`/lib/modules/RELEASE`, picked by the guest's `uname -r`).
pub fn initramfs(
    cache: &Path,
    arch: &Arch,
    bins: &Path,
    net: &[String],
) -> anyhow::Result<PathBuf> {
    let root = cache.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // Extracted, never installed: installing busybox-static:arm64 would
    // replace the host's /bin/busybox.
    kernels::extract(cache, &format!("busybox-static:{}", arch.deb), &[])?;
    std::fs::copy(cache.join("ex/bin/busybox"), root.join("bin/busybox"))
        .context("busybox-static")?;
    for applet in [
        "sh", "mount", "cat", "echo", "sleep", "grep", "mkfifo", "poweroff", "kill", "wc", "cut",
        "sed", "rm", "uname", "base64", "tr", "basename", "awk", "insmod", "ip", "nc", "httpd",
        "timeout", "mkdir",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    for b in ["rmapwatch", "rmw-workload", "rmw-adbd"] {
        std::fs::copy(bins.join(b), root.join("bin").join(b))
            .with_context(|| format!("static {b}"))?;
    }
    // The committed fixtures, replayed in the guest (another architecture
    // for those recorded elsewhere).
    std::fs::create_dir_all(root.join("fixtures"))?;
    for f in fixture_files()? {
        if let Some(name) = f.file_name() {
            std::fs::copy(&f, root.join("fixtures").join(name))?;
        }
    }
    for release in net {
        let tree = ["ex/lib/modules", "ex/usr/lib/modules"]
            .iter()
            .map(|d| cache.join(d).join(release))
            .find(|t| t.join("kernel").is_dir());
        let dest = root.join("lib/modules").join(release);
        // A kernel without them boots all the same; its guest says so and
        // its host phase fails.
        match tree.map(|t| kernels::net_modules(&t, &dest)) {
            Some(Ok(list)) => eprintln!("xtask: {release}: NIC modules {}", list.join(" ")),
            Some(Err(e)) => eprintln!("xtask: {release}: no NIC modules: {e:#}"),
            None => eprintln!("xtask: {release}: no module tree in {}", cache.display()),
        }
    }
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::write(root.join("etc/rmw.conf"), config())?;
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    sh(Command::new("chmod").arg("+x").arg(&init))?;
    let out = cache.join("initramfs.gz");
    crate::cpio::pack(&root, &out).context("packing the initramfs")?;
    Ok(out)
}

/// The committed fixtures (`rmapwatch/tests/fixtures/*.rmw`).
///
/// # Errors
/// The directory cannot be read.
pub fn fixture_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rmapwatch/tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rmw"))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `RMW_*` names in `text` that `prefix` starts (`$` for the
    /// script's uses, a line start for the config's assignments).
    fn names(text: &str, prefix: &str) -> BTreeSet<String> {
        text.match_indices(prefix)
            .filter_map(|(i, _)| {
                let rest = &text[i + prefix.len()..];
                let rest = rest.strip_prefix('{').unwrap_or(rest);
                let n = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                    .unwrap_or(rest.len());
                rest.starts_with("RMW_").then(|| rest[..n].to_owned())
            })
            .collect()
    }

    #[test]
    fn the_config_sets_every_parameter_init_reads_and_no_other() {
        let used = names(INIT, "$");
        let set = names(&config(), "\n");
        assert!(!used.is_empty());
        assert_eq!(used, set);
    }

    #[test]
    fn a_shell_reads_back_each_value_of_the_config() {
        let dir = std::env::temp_dir().join(format!("rmw-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let conf = dir.join("rmw.conf");
        std::fs::write(&conf, config()).expect("writing the config");
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#". "$1"; printf '%s\n' "$RMW_MODES" "$RMW_KSYMS" "$RMW_K" "$RMW_F" "$RMW_STORM" "$RMW_WORKLOAD" "$RMW_HOST_PHASE_SECS" "$RMW_PHASE_SECS""#)
            .arg("sh")
            .arg(&conf)
            .output()
            .expect("running sh");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{out:?}");
        let want = [
            MODES.join(" "),
            KSYMS.join("|"),
            K.to_string(),
            F.to_string(),
            STORM.to_string(),
            crate::fixtures::WORKLOAD.join(" "),
            HOST_PHASE_SECS.to_string(),
            PHASE_SECS.to_string(),
        ]
        .join("\n")
            + "\n";
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    #[test]
    fn quoting_keeps_a_single_quote() {
        assert_eq!(quote("a'b c"), r"'a'\''b c'");
    }
}
