//! Debian's kernel packages for the matrix: which series, where Debian
//! serves each (the host's apt state, or a private one per suite), the
//! newest package of a series, downloaded and unpacked into `.cache/vm`
//! (never installed), the kernel image inside it, and the NIC's modules
//! taken out of its module tree.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::Arch;
use crate::cmd::sh;

/// A kernel series of the matrix and where Debian serves it.
pub struct Series {
    /// Short name (the matrix table, logs, fixture names).
    pub label: &'static str,
    /// `None`: the host's apt sources (Debian 12); else a suite of
    /// deb.debian.org read through a private apt state (never the host's
    /// sources).
    pub suite: Option<&'static str>,
    /// Package name pattern (regex); `{deb}` is the Debian architecture.
    pub package: &'static str,
}

/// Debian 11's 5.10, Debian 12's 6.1 and its 6.12 backport, and the newest
/// 7.x of trixie-backports.
pub const SERIES: [Series; 4] = [
    Series {
        label: "5.10",
        suite: Some("bullseye"),
        package: "^linux-image-5\\.10\\..*-cloud-{deb}-unsigned$",
    },
    Series {
        label: "6.1",
        suite: None,
        package: "^linux-image-6\\.1\\.0-.*-cloud-{deb}-unsigned$",
    },
    Series {
        label: "6.12",
        suite: None,
        package: "^linux-image-6\\.12\\..*-cloud-{deb}-unsigned$",
    },
    Series {
        label: "7.x",
        suite: Some("trixie-backports"),
        package: "^linux-binary-7\\..*-cloud-{deb}$",
    },
];

/// The roots of the NIC's modules (with their dependencies); builtin ones
/// are skipped.
const NET_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// apt's options for a suite: the host's own state, or a private one under
/// `cache_root/apt-SUITE` (its lists refreshed once a day).
fn apt_options(cache_root: &Path, suite: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(suite) = suite else {
        return Ok(Vec::new());
    };
    let dir = cache_root.join(format!("apt-{suite}"));
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let uri = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:"))
                .map(|u| u.trim().to_owned())
        })
        .filter(|u| u.ends_with("/debian"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned());
    let list = dir.join("sources.list");
    std::fs::write(
        &list,
        format!(
            "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             {uri} {suite} main\n"
        ),
    )?;
    let status = dir.join("status");
    if !status.exists() {
        std::fs::write(&status, "")?;
    }
    let opts: Vec<String> = [
        format!("Dir::Etc::sourcelist={}", list.display()),
        "Dir::Etc::sourceparts=-".to_owned(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::State::status={}", status.display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
        "APT::Architectures::=amd64".to_owned(),
        "APT::Architectures::=arm64".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect();
    let stamp = dir.join("updated");
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 86_400));
    if !fresh {
        eprintln!(
            "xtask: apt-get update of {suite} into {} (private state; the host's sources are untouched)",
            dir.display()
        );
        sh(Command::new("apt-get").args(&opts).args(["update", "-q"]))?;
        std::fs::write(&stamp, "")?;
    }
    Ok(opts)
}

/// The newest Debian kernel package of a series for an architecture
/// (the archive keeps only current versions, so none is pinned).
fn newest_package(arch: &Arch, series: &Series, apt: &[String]) -> anyhow::Result<String> {
    let pattern = series.package.replace("{deb}", arch.deb);
    let out = Command::new("apt-cache")
        .args(apt)
        .args(["search", "--names-only", &pattern])
        .output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|a| version_key(a));
    names
        .pop()
        .with_context(|| format!("no Debian kernel package matches {pattern} (apt-get update?)"))
}

/// Orders package names as `sort -V` would (numbers by value).
fn version_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                key.push((std::mem::take(&mut text), num.parse().unwrap_or(0)));
                num.clear();
            }
            text.push(c);
        }
    }
    key.push((text, num.parse().unwrap_or(0)));
    key
}

/// Downloads and extracts a package (cached); `name` may carry `:arch`.
pub fn extract(cache: &Path, name: &str, apt: &[String]) -> anyhow::Result<()> {
    let base = name.split(':').next().unwrap_or(name);
    let marker = cache.join(format!(".extracted-{base}"));
    if marker.exists() {
        return Ok(());
    }
    eprintln!("xtask: downloading {name} (cached in {})", cache.display());
    sh(Command::new("apt-get")
        .args(apt)
        .args(["download", "-q", name])
        .current_dir(cache))?;
    let prefix = format!("{base}_");
    let deb = std::fs::read_dir(cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .context("the downloaded package")?;
    sh(Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("ex")))?;
    std::fs::write(marker, "")?;
    Ok(())
}

/// The newest kernel of a series, downloaded and extracted.
fn kernel_image(
    cache_root: &Path,
    cache: &Path,
    arch: &Arch,
    series: &Series,
) -> anyhow::Result<PathBuf> {
    let apt = apt_options(cache_root, series.suite)?;
    let package = newest_package(arch, series, &apt)?;
    extract(cache, &format!("{package}:{}", arch.deb), &apt)?;
    if let Some(release) = package.strip_prefix("linux-binary-") {
        // trixie's packages keep the image with the modules.
        return Ok(cache
            .join("ex/usr/lib/modules")
            .join(release)
            .join("vmlinuz"));
    }
    let release = package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_owned();
    Ok(cache.join("ex/boot").join(format!("vmlinuz-{release}")))
}

/// The newest kernel image of a series for an architecture (downloaded
/// and extracted into the matrix's cache).
///
/// # Errors
/// apt or the package fails.
pub fn kernel_image_of(cache_root: &Path, arch: &Arch, series: &Series) -> anyhow::Result<PathBuf> {
    let cache = cache_root.join(arch.deb);
    std::fs::create_dir_all(&cache)?;
    kernel_image(cache_root, &cache, arch, series)
}

/// The release of a kernel image of the cache: `boot/vmlinuz-RELEASE`, or
/// `usr/lib/modules/RELEASE/vmlinuz` (trixie).
pub fn release_of(vmlinuz: &Path) -> Option<String> {
    let name = vmlinuz.file_name()?.to_str()?;
    match name.strip_prefix("vmlinuz-") {
        Some(r) => Some(r.to_owned()),
        None => Some(vmlinuz.parent()?.file_name()?.to_str()?.to_owned()),
    }
}

/// A module's bytes, decompressed on the host (busybox's insmod may not).
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| {
            format!(
                "running {tool} -dc {} (is {tool} installed?)",
                path.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The `depends=` of a module's .modinfo (kernel module names).
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every module file under `dir`, by kernel module name (`-` read as `_`).
fn module_index(
    dir: &Path,
    index: &mut std::collections::HashMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            module_index(&path, index)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .find_map(|x| name.strip_suffix(x))
        {
            index.insert(stem.replace('-', "_"), path.clone());
        }
    }
    Ok(())
}

/// Puts the NIC's modules of the kernel tree `tree` (`lib/modules/RELEASE`
/// of a package) into `dest`, decompressed, with `net.list`: their files in
/// load order (dependencies first). The package has no `modules.dep`
/// (depmod runs at install): the order is read from each module's
/// `depends=`. Returns the list.
pub fn net_modules(tree: &Path, dest: &Path) -> anyhow::Result<Vec<String>> {
    let builtin: std::collections::HashSet<String> =
        std::fs::read_to_string(tree.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
            .map(|n| n.replace('-', "_"))
            .collect();
    let mut index = std::collections::HashMap::new();
    module_index(&tree.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Depth first, each module after its dependencies.
    fn visit(
        name: &str,
        index: &std::collections::HashMap<String, PathBuf>,
        builtin: &std::collections::HashSet<String>,
        seen: &mut std::collections::HashSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        if builtin.contains(name) || !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = index
            .get(name)
            .with_context(|| format!("no module {name}, and it is not builtin"))?;
        let ko = module_bytes(path)?;
        for dep in module_depends(&ko) {
            visit(&dep, index, builtin, seen, order)?;
        }
        order.push((name.to_owned(), ko));
        Ok(())
    }
    for root in NET_MODULES {
        visit(root, &index, &builtin, &mut seen, &mut order)
            .with_context(|| format!("the modules of {root} in {}", tree.display()))?;
    }
    std::fs::create_dir_all(dest)?;
    let mut list = Vec::new();
    for (name, ko) in order {
        let file = format!("{name}.ko");
        std::fs::write(dest.join(&file), ko)?;
        list.push(file);
    }
    std::fs::write(dest.join("net.list"), list.join("\n") + "\n")?;
    Ok(list)
}
