//! `cargo xtask vm-test`: rmapwatch on real Debian kernels under QEMU (TCG),
//! in every probe mode the kernel allows, with ground truth taken inside the
//! VM. The kernels are Debian packages, cached in `.cache/vm`.
use std::{
    fmt::Write as _,
    io::{BufRead as _, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use rmapwatch_engine::report::{ProcessReport, Report};

/// An architecture of the matrix.
pub struct Arch {
    /// `uname -m`.
    pub name: &'static str,
    /// Debian's name.
    pub deb: &'static str,
    /// Rust target of the static binaries.
    pub target: &'static str,
    /// QEMU binary and machine arguments.
    pub qemu: &'static str,
    /// QEMU machine arguments.
    pub machine: &'static [&'static str],
    /// Serial console.
    pub console: &'static str,
}

/// x86_64 and arm64.
pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        deb: "amd64",
        target: "x86_64-unknown-linux-gnu",
        qemu: "qemu-system-x86_64",
        machine: &["-cpu", "max"],
        console: "ttyS0",
    },
    Arch {
        name: "aarch64",
        deb: "arm64",
        target: "aarch64-unknown-linux-gnu",
        qemu: "qemu-system-aarch64",
        machine: &["-M", "virt", "-cpu", "max"],
        console: "ttyAMA0",
    },
];

/// A kernel series of the matrix and where Debian serves it.
pub struct Series {
    /// Short name (the matrix in docs/kernels.md, logs).
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

/// The series the GKI-like cell boots (slab_nomerge, auto mode): Android's
/// most common GKI base among Debian's kernels.
const GKI_SERIES: &str = "6.1";

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

/// Symbols of the kallsyms fixtures: the call sites, the hooks and their
/// older names, the anon_vma cache's ctor, and PREEMPT_RCU's marker.
pub const KSYMS: [&str; 13] = [
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
];

const MODES: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
pub const K: u64 = 40;
pub const F: u64 = 3;
/// Forks of the small fork storm timed per mode (untraced, then traced).
pub const STORM: u64 = 200;
/// At most this long the guest waits in the host phase for the host to
/// release it (below the boot's 900 s, so the log still ends).
const HOST_PHASE_SECS: u64 = 600;
/// The guest ports of the host phase: its server, and the one the host
/// connects to (and closes) to release it.
const GUEST_PORT: u16 = 5555;
const RELEASE_PORT: u16 = 5556;
/// The roots of the NIC's modules (with their dependencies); builtin ones
/// are skipped.
const NET_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// The VM's /init: for each mode, attach, take the anon_vma slab count,
/// run the workload to its hold point, take the count again, let interim
/// reports come, release, stop, print everything between markers.
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tracefs nodev /sys/kernel/tracing; mount -t bpf bpf /sys/fs/bpf
slab() {{ echo 1 > /sys/kernel/slab/anon_vma/shrink; cut -d' ' -f1 /sys/kernel/slab/anon_vma/objects; }}
cpuslabs() {{ cut -d' ' -f1 /sys/kernel/slab/anon_vma/cpu_slabs; }}
# With slab_nomerge (the GKI-like boot) the AVC cache is its own: counted too.
avcslab() {{ [ -L /sys/kernel/slab/anon_vma_chain ] && {{ echo -1; return; }}; echo 1 > /sys/kernel/slab/anon_vma_chain/shrink; cut -d' ' -f1 /sys/kernel/slab/anon_vma_chain/objects; }}
avccpu() {{ [ -L /sys/kernel/slab/anon_vma_chain ] && {{ echo -1; return; }}; cut -d' ' -f1 /sys/kernel/slab/anon_vma_chain/cpu_slabs; }}
echo "RMW-KERNEL $(uname -r) $(uname -m)"
# The kallsyms lines rmapwatch reads (and each one's successor, which ends
# its range): the unit tests' fixtures.
echo RMW-KSYMS-START
awk 'p{{print;p=0}} $3 ~ /^({ksyms})(\..*)?$/{{print;p=1}}' /proc/kallsyms
echo RMW-KSYMS-END
# Refusals a phone can produce (rmw.refusals=1): the last thing a guest
# does, as the lockdown it ends with cannot be lifted.
refusals() {{
  grep -q 'rmw\.refusals=1' /proc/cmdline || return 0
  cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
  mount -t tmpfs none /sys/kernel/btf
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE nobtf rc=$? $(grep error /tmp/e | head -1)"
  rmapwatch --btf /tmp/vmlinux.btf report --duration 1 --json > /tmp/j 2>/tmp/e; echo "RMW-REFUSE btf-file rc=$? reports=$(grep -c schema /tmp/j)"
  umount /sys/kernel/btf
  K=$(cat /proc/sys/kernel/kptr_restrict)
  echo 2 > /proc/sys/kernel/kptr_restrict
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE kptr rc=$? after=$(cat /proc/sys/kernel/kptr_restrict) $(grep kptr_restrict /tmp/e | head -1)"
  echo $K > /proc/sys/kernel/kptr_restrict
  (ulimit -l 64; rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE memlock rc=$? $(grep -i memlock /tmp/e | head -1)")
  mount -t securityfs none /sys/kernel/security 2>/dev/null
  echo confidentiality > /sys/kernel/security/lockdown
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE lockdown rc=$? $(grep error /tmp/e | head -1)"
}}
# rmw.net=1: a virtio-net NIC on QEMU's user network. Its modules (the host
# puts this kernel's in /lib/modules/RELEASE, net.list in load order), then
# QEMU's user-net defaults. Done late (in the host phase): nothing measured
# before sees a NIC driver.
net_up() {{
  D=/lib/modules/$(uname -r)
  [ -f $D/net.list ] || {{ echo "RMW-NET no modules for $(uname -r)"; return 1; }}
  for m in $(cat $D/net.list); do insmod $D/$m 2>/tmp/e || echo "RMW-NET insmod $m failed: $(cat /tmp/e)"; done
  i=0
  while [ ! -e /sys/class/net/eth0 ]; do sleep 0.2; i=$((i+1)); [ $i -gt 100 ] && {{ echo "RMW-NET no eth0"; return 1; }}; done
  ip link set lo up
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "RMW-NET ip failed"
}}
# Whether a TCP port (4 hex digits) of the guest is listening.
listening() {{ cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ":$1 [0-9A-F]*:0000 0A"; }}
# The guest's side of the host phase: servers on 5555 (the host reaches it
# on 127.0.0.1:<HostPhase::port>), started in the background, their pids in
# PHASE_PIDS (killed after the phase); PHASE_PORTS are waited for (listening)
# before RMW-NET-READY. Here: the project's ADB device stand-in, a
# userdebug "phone" whose adbd runs as root, for the host's real adb client.
adb_phase() {{
  mkdir -p /data/local/tmp
  printf 'ro.build.type=userdebug\nro.debuggable=1\nro.build.version.sdk=34\nro.product.model=arm64 guest\nro.product.cpu.abi=arm64-v8a\n' > /tmp/adb.props
  # As Android's init leaves them: kernel addresses hidden, 64 KiB of
  # locked memory for everything it starts.
  echo 2 > /proc/sys/kernel/kptr_restrict
  (ulimit -l 64; exec rmw-adbd --listen 0.0.0.0:5555 --props /tmp/adb.props --uid 0 > /tmp/adbd.out 2> /tmp/adbd.err) & PHASE_PIDS="$PHASE_PIDS $!"
  PHASE_PORTS="$PHASE_PORTS 15B3"
}}
# The host phase (rmw.net=1): NIC up, adb_phase, then RMW-NET-READY on the
# console; blocked until the host connects to 5556 and closes (at most
# {phase_secs} s, so a broken host never hangs the boot).
host_phase() {{
  grep -q 'rmw\.net=1' /proc/cmdline || return 0
  net_up
  PHASE_PIDS=; PHASE_PORTS=15B4
  timeout {phase_secs} nc -l -p 5556 < /dev/null > /dev/null 2>&1 &
  N=$!
  adb_phase
  for p in $PHASE_PORTS; do
    i=0
    while ! listening $p; do sleep 0.2; i=$((i+1)); [ $i -gt 300 ] && {{ echo "RMW-NET port $p not listening"; break; }}; done
  done
  echo RMW-NET-READY
  wait $N; echo "RMW-NET-RELEASED rc=$?"
  for p in $PHASE_PIDS; do kill $p 2>/dev/null; done
  [ -e /tmp/adbd.err ] && tail -5 /tmp/adbd.err | sed 's/^/RMW-NET adbd: /'
}}
# rmw.modes=a,b on the command line picks the modes; rmw.record=0 skips
# the recording.
MODES=$(sed -n 's/.*rmw\.modes=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
[ -n "$MODES" ] || MODES="{modes}"
for mode in $MODES; do
  rm -f /tmp/r.json /tmp/r.err /tmp/w.out /tmp/hold
  echo "RMW-STORM $mode base $(rmw-workload --regions {k} --noise 0 --storm {storm})"
  rmapwatch --probe-mode $mode report --json --interval 0.5 > /tmp/r.json 2>/tmp/r.err &
  P=$!
  i=0
  while ! grep -q -e attached -e error /tmp/r.err 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 600 ] && break; done
  sleep 2.5
  echo "RMW-PRE $mode $(wc -l < /tmp/r.json)"
  S0=$(slab); C0=$(cpuslabs); A0=$(avcslab); AC0=$(avccpu)
  mkfifo /tmp/hold
  rmw-workload --regions {k} --children {f} --noise 20 --hold < /tmp/hold > /tmp/w.out &
  W=$!
  exec 3>/tmp/hold
  while ! grep -q ready /tmp/w.out 2>/dev/null; do sleep 0.1; done
  S1=$(slab); C1=$(cpuslabs); A1=$(avcslab); AC1=$(avccpu)
  sleep 3
  echo "RMW-HOLD $mode $(wc -l < /tmp/r.json)"
  exec 3>&-
  wait $W
  echo "RMW-STORM $mode traced $(rmw-workload --regions {k} --noise 0 --storm {storm})"
  sleep 1
  kill -INT $P; wait $P; RC=$?
  sleep 1
  # JIT-ed programs are in kallsyms as bpf_prog_<tag>_<name> [bpf] while loaded.
  LEFT=$(grep '\[bpf\]' /proc/kallsyms | grep -c -e kmem_cache -e sched_process -e fork_e -e fentry_ -e kprobe_ -e task_vma)
  echo "RMW-MODE $mode rc=$RC s0=$S0 s1=$S1 c0=$C0 c1=$C1 ops=$(cat /sys/kernel/slab/anon_vma/objs_per_slab) a0=$A0 a1=$A1 ac0=$AC0 ac1=$AC1 aops=$(cat /sys/kernel/slab/anon_vma_chain/objs_per_slab) sheaf=$(cat /sys/kernel/slab/anon_vma/sheaf_capacity 2>/dev/null || echo 0) asheaf=$(cat /sys/kernel/slab/anon_vma_chain/sheaf_capacity 2>/dev/null || echo 0) cpus=$(grep -c ^processor /proc/cpuinfo) left=$LEFT $(grep -e regions -e ready /tmp/w.out | tr '\n' ' ')"
  sed 's/^/RMW-ERR /' /tmp/r.err
  sed 's/^/RMW-JSON /' /tmp/r.json
done
if grep -q 'rmw\.record=0' /proc/cmdline; then host_phase; refusals; echo RMW-END; poweroff -f; fi
# A recording made here, for the host to replay (another architecture on
# arm64), and the host's fixtures replayed here.
rm -f /tmp/rec.rmw /tmp/hold2
rmapwatch record -o /tmp/rec.rmw --json --interval 0.5 > /tmp/rec.json 2>/tmp/rec.err &
R=$!
i=0
while ! grep -q -e attached -e error /tmp/rec.err 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 600 ] && break; done
sleep 0.8
mkfifo /tmp/hold2
rmw-workload {workload} --hold < /tmp/hold2 > /tmp/w2.out &
W=$!
exec 4>/tmp/hold2
while ! grep -q ready /tmp/w2.out 2>/dev/null; do sleep 0.1; done
sleep 1.5
kill -INT $R; wait $R; RC=$?
exec 4>&-
wait $W
echo "RMW-REC rc=$RC $(grep -e regions -e ready /tmp/w2.out | tr '\n' ' ')"
sed 's/^/RMW-REC-ERR /' /tmp/rec.err
sed 's/^/RMW-REC-JSON /' /tmp/rec.json
echo RMW-REC-B64-START
base64 /tmp/rec.rmw
echo RMW-REC-B64-END
for f in /fixtures/*.rmw; do
  [ -e "$f" ] || continue
  echo "RMW-REPLAY $(basename $f) $(rmapwatch report --from $f --json 2>/tmp/replay.err | tr '\n' ' ')"
done
host_phase
refusals
echo RMW-END
poweroff -f
"#,
        modes = MODES.join(" "),
        ksyms = KSYMS.join("|"),
        k = K,
        f = F,
        storm = STORM,
        workload = crate::fixtures::WORKLOAD.join(" "),
        phase_secs = HOST_PHASE_SECS,
    )
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Downloads and extracts a package (cached); `name` may carry `:arch`.
fn extract(cache: &Path, name: &str, apt: &[String]) -> anyhow::Result<()> {
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
fn release_of(vmlinuz: &Path) -> Option<String> {
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
fn net_modules(tree: &Path, dest: &Path) -> anyhow::Result<Vec<String>> {
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

/// Builds the initramfs: busybox (of the guest's architecture), the static
/// binaries, /init, and the NIC's modules of each release in `net`
/// (`/lib/modules/RELEASE`, picked by the guest's `uname -r`).
fn initramfs(cache: &Path, arch: &Arch, bins: &Path, net: &[String]) -> anyhow::Result<PathBuf> {
    let root = cache.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // Extracted, never installed: installing busybox-static:arm64 would
    // replace the host's /bin/busybox.
    extract(cache, &format!("busybox-static:{}", arch.deb), &[])?;
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
        match tree.map(|t| net_modules(&t, &dest)) {
            Some(Ok(list)) => eprintln!("xtask: {release}: NIC modules {}", list.join(" ")),
            Some(Err(e)) => eprintln!("xtask: {release}: no NIC modules: {e:#}"),
            None => eprintln!("xtask: {release}: no module tree in {}", cache.display()),
        }
    }
    let init = root.join("init");
    std::fs::write(&init, init_script())?;
    sh(Command::new("chmod").arg("+x").arg(&init))?;
    let out = cache.join("initramfs.gz");
    crate::cpio::pack(&root, &out).context("packing the initramfs")?;
    Ok(out)
}

/// One cell's verdict.
pub struct Cell {
    /// Kernel release.
    pub kernel: String,
    /// Probe mode.
    pub mode: String,
    /// Pass or the first failed check.
    pub result: Result<(), String>,
    /// What was measured, for the matrix in docs/kernels.md.
    pub detail: String,
}

/// The report's process `pid`.
fn find(r: &Report, pid: u64) -> Option<&ProcessReport> {
    r.processes.iter().find(|p| u64::from(p.pid) == pid)
}

/// The report's block of an object kind.
fn object<'a>(
    r: &'a Report,
    name: &str,
) -> Result<&'a rmapwatch_engine::report::ObjectReport, String> {
    r.objects.get(name).ok_or(format!("no {name} block"))
}

/// Checks one mode's output against the VM's ground truth.
pub fn check(
    mode: &str,
    meta: &str,
    pre_lines: usize,
    hold_lines: usize,
    errs: &[&str],
    json: &[Report],
) -> (Result<(), String>, String) {
    let field = |k: &str| -> i64 {
        meta.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    let mut detail = String::new();
    let r = (|| -> Result<(), String> {
        if field("rc") != 0 {
            // A forced mode this kernel refuses must say so in one line
            // (arm64 6.1 has no BPF trampoline: fentry attach is ENOTSUPP).
            let refused =
                format!("--probe-mode {mode} was forced but this kernel accepts no such hook");
            if let Some(e) = errs.iter().find(|e| e.contains(&refused)) {
                let _ = write!(
                    detail,
                    "kernel cannot: {}",
                    e.trim_start_matches("rmapwatch: error: ")
                );
                return Ok(());
            }
            return Err(format!(
                "rmapwatch exited {}: {}",
                field("rc"),
                errs.join(" | ")
            ));
        }
        let last = json.last().ok_or("no final report")?;
        // Interim reports from quiet moments: a report is built from the
        // event stream drained so far and a fresh walk; if a process forks
        // while that happens (the init shell runs `wc` at the markers), the
        // walk sees objects whose events are still in the ring (seen on
        // arm64 6.12: drift 4). A report is quiet when the one before and
        // the one after it counted the same: nothing was in flight.
        // The per-page rmap hooks count every fault, rmapwatch's own too
        // (its walk's tables are mapped and unmapped each time): they are
        // not anon_vma traffic, and left out.
        let anon_hooks = |r: &Report| {
            r.hooks
                .iter()
                .filter(|(name, _)| !name.starts_with("folio_"))
                .map(|(name, h)| (name.clone(), h.calls))
                .collect::<Vec<_>>()
        };
        let same =
            |a: &Report, b: &Report| anon_hooks(a) == anon_hooks(b) && a.objects == b.objects;
        let quiet_before = |lines: usize, what: &str| -> Result<&Report, String> {
            let upto = lines.min(json.len());
            (1..upto)
                .rev()
                .find(|&i| {
                    same(&json[i], &json[i - 1])
                        && json.get(i + 1).is_none_or(|n| same(n, &json[i]))
                })
                .or_else(|| upto.checked_sub(1))
                .map(|i| &json[i])
                .ok_or(format!("no interim report {what}"))
        };
        // At the hold point (the workload's children exist and have written).
        let hold = quiet_before(hold_lines, "at the hold point")?;
        // Before the workload: the hooks and the slab tracepoints are
        // compared over [pre, hold], where both were attached (under TCG the
        // hooks attach seconds after the tracepoints).
        let pre = quiet_before(pre_lines, "before the workload")?;
        // 1. probe modes
        if last.probes.is_empty() {
            return Err("no probes".into());
        }
        for (hook, m) in &last.probes {
            let m = m.as_str();
            let slab = !hook.starts_with("folio_");
            let want = match mode {
                "tracepoint" if slab => "tracepoint",
                "tracepoint" => "unavailable",
                // Auto takes fentry where the kernel allows it, else kprobe.
                "auto" if m == "kprobe" => "kprobe",
                "auto" => "fentry",
                m => m,
            };
            // A function this kernel does not have (6.1 has no
            // folio_add_anon_rmap_pmd) is reported as such, not hooked.
            let absent = last.hooks.get(hook).is_some_and(|h| {
                h.fallbacks
                    .iter()
                    .any(|x| x.ends_with("not in this kernel"))
            });
            if absent {
                let _ = write!(detail, "{hook} absent from this kernel; ");
                continue;
            }
            if m != want {
                return Err(format!("{hook} is {m}, not {want}: {}", errs.join(" | ")));
            }
        }
        // 2. At the hold point, the event-maintained live objects equal a
        //    fresh iterator walk exactly (drift 0), and the anon_vma slab
        //    counter agrees with what SLUB can hide: `objects` counts the
        //    free slots of the per-CPU slabs (and per-CPU partial slabs) as
        //    in use, and on 6.1 and 6.12 a shrink does not empty those (on
        //    6.18 it does: `cpu_slabs` is then 0 and the check is exact). So
        //    in use is in [objects - cpu_slabs * objs_per_slab, objects] at
        //    both points, and the true delta in [D - slack1, D + slack0].
        // Objects whose lives straddled the attach were mis-charged now and
        // then (an exited process kept 2-7 objects, or one moved between
        // processes) until fork's end was attached before the allocations
        // and what was reported while attaching was applied before seeding.
        let model = |r: &Report, what: &str| r.model.clone().ok_or(format!("no walk {what}"));
        let drift = model(hold, "at the hold point")?.drift;
        if drift.anon_vma != 0 || drift.anon_vma_chain != 0 {
            return Err(format!(
                "events vs a fresh walk at the hold point: drift {drift:?} (before the workload {:?})",
                model(pre, "before the workload")?.drift
            ));
        }
        for &pid in &workload_pids(meta)? {
            let p = find(hold, pid)
                .ok_or(format!("workload process {pid} missing at the hold point"))?;
            if Some(p.live) != p.snapshot {
                return Err(format!(
                    "workload process {pid}: events {:?} vs fresh walk {:?}",
                    p.live, p.snapshot
                ));
            }
        }
        let av = object(hold, "anon_vma")?;
        let net = av.allocs.cast_signed() - av.frees.cast_signed();
        let slab = field("s1") - field("s0");
        // 7.x's sheaves (per-CPU arrays of objects, a main and a spare per
        // CPU, `sheaf_capacity` each) hold free objects that `objects`
        // counts as in use, and a shrink does not empty them.
        let sheaves = |cap: i64| cap.max(0) * 2 * field("cpus").max(1);
        let (slack0, slack1) = (
            field("c0") * field("ops") + sheaves(field("sheaf")),
            field("c1") * field("ops") + sheaves(field("sheaf")),
        );
        let live = hold.live.anon_vma.objects;
        let _ = write!(
            detail,
            "live anon_vma {live}, AVC {} vs a fresh walk (workload processes exact); anon_vma net {net}, slab delta {slab} \
             (per-CPU slab slots{} {slack0} / {slack1})",
            hold.live.anon_vma_chain.objects,
            if field("sheaf") > 0 {
                " and sheaves"
            } else {
                ""
            }
        );
        if slack0 < 0 || slack1 < 0 || !(slab - slack1..=slab + slack0).contains(&net) {
            return Err(format!(
                "anon_vma: rmapwatch net {net}, slab delta {slab}, per-CPU slab slots {slack0} / {slack1}"
            ));
        }
        // With slab_nomerge the AVC cache is its own, and checked the same way.
        if field("a0") >= 0 && field("a1") >= 0 {
            let avc = object(hold, "anon_vma_chain")?;
            let net = avc.allocs.cast_signed() - avc.frees.cast_signed();
            let slab = field("a1") - field("a0");
            let (slack0, slack1) = (
                field("ac0") * field("aops") + sheaves(field("asheaf")),
                field("ac1") * field("aops") + sheaves(field("asheaf")),
            );
            let _ = write!(
                detail,
                "; unmerged AVC cache: net {net}, slab delta {slab} (per-CPU slab slots {slack0} / {slack1})"
            );
            if slack0 < 0 || slack1 < 0 || !(slab - slack1..=slab + slack0).contains(&net) {
                return Err(format!(
                    "AVC (unmerged cache): rmapwatch net {net}, slab delta {slab}, per-CPU slab slots {slack0} / {slack1}"
                ));
            }
        }
        // 3. per process: every child A anon_vmas and 2A AVCs, A >= K
        let kids: Vec<&ProcessReport> = last
            .processes
            .iter()
            .filter(|p| p.comm == "rmw-workload")
            .filter(|p| {
                p.ppid.is_some_and(|ppid| {
                    last.processes
                        .iter()
                        .any(|q| q.pid == ppid && q.comm == "rmw-workload")
                })
            })
            .collect();
        if kids.len() as u64 != F {
            return Err(format!(
                "{} workload children in the report, expected {F}",
                kids.len()
            ));
        }
        let a = kids[0].anon_vma.allocs;
        for k in &kids {
            if k.anon_vma.allocs != a || k.anon_vma_chain.allocs != 2 * a || a < K {
                return Err(format!("child counts differ from A={a}, 2A AVCs: {k:?}"));
            }
        }
        let _ = write!(detail, "; {F} children x {a} anon_vma / {} AVC", 2 * a);
        // 4. function hooks against the slab call sites, and the rmap pages
        if mode != "tracepoint" {
            let delta = |f: &dyn Fn(&Report) -> u64| f(hold).saturating_sub(f(pre));
            // A hook this mode attached has counted calls; an absent site
            // has no events (the JSON leaves empty sites out).
            let calls =
                |h: &str| delta(&|j: &Report| j.hooks.get(h).and_then(|x| x.calls).unwrap_or(0));
            let site = |s: &str| {
                delta(&|j: &Report| {
                    j.objects
                        .get("anon_vma_chain")
                        .and_then(|o| o.allocs_by_site.get(s).copied())
                        .unwrap_or(0)
                })
            };
            let prepare_avcs = site("__anon_vma_prepare");
            if calls("__anon_vma_prepare") != prepare_avcs {
                return Err(format!(
                    "__anon_vma_prepare calls {} != AVCs allocated there {prepare_avcs}",
                    calls("__anon_vma_prepare")
                ));
            }
            let fork_avcs = site("anon_vma_fork");
            if calls("anon_vma_fork") < fork_avcs || calls("anon_vma_fork") < F * a {
                return Err(format!(
                    "anon_vma_fork calls {} < {fork_avcs} / {}",
                    calls("anon_vma_fork"),
                    F * a
                ));
            }
            if hold.rmap.is_none() {
                return Err("no rmap counters with function hooks".into());
            }
            let folios = delta(&|j: &Report| j.rmap.as_ref().map_or(0, |r| r.new_anon_folios));
            if folios < K * (1 + F) {
                return Err(format!(
                    "new anon folios {folios} < the workload's {} touched pages",
                    K * (1 + F)
                ));
            }
            // Per VMA, exactly: the parent and each child mapped one new
            // anonymous folio per region page (first touch, then
            // copy-on-write), whatever else they faulted elsewhere.
            let per_process = region_folios(meta, hold)?;
            if per_process.len() as u64 != 1 + F || per_process.iter().any(|&(_, n)| n != K) {
                return Err(format!(
                    "new anon folios in the {K} region VMAs per process (parent first): {per_process:?}"
                ));
            }
            let _ = write!(
                detail,
                "; prepare calls {} = AVCs there; fork calls {}; new anon folios {folios}, \
                 in the regions exactly {K} for the parent and each of {F} children",
                calls("__anon_vma_prepare"),
                calls("anon_vma_fork"),
            );
        }
        if field("left") != 0 {
            return Err(format!(
                "{} rmapwatch programs still loaded after exit",
                field("left")
            ));
        }
        let _ = write!(detail, "; nothing loaded after exit");
        if last.dropped_events != Some(0) {
            return Err(format!("dropped events: {:?}", last.dropped_events));
        }
        match &last.inlined {
            Some(i) if i.anon_vma_allocs == 0 => {
                let _ = write!(detail, "; inlining detector 0");
            }
            other => return Err(format!("inlining detector: {other:?}")),
        }
        let _ = write!(detail, "; {}", last.slab.line());
        if last.model.is_none() {
            return Err("no snapshot in the VM".into());
        }
        Ok(())
    })();
    (r, detail)
}

/// Boots one kernel and checks every mode, then the recording made in it
/// (replayed here by `host_bin`) and the fixtures replayed in it.
fn run_kernel(
    arch: &Arch,
    vmlinuz: &Path,
    initrd: &Path,
    host_bin: &Path,
    boot: &Boot,
) -> anyhow::Result<Vec<Cell>> {
    // The host phase's ports: free ones now, forwarded to the guest's.
    let ports = if boot.net {
        Some((free_port()?, free_port()?))
    } else {
        None
    };
    let mut qemu = Command::new("timeout");
    qemu.args(["900", arch.qemu, "-accel", "tcg"])
        .args(arch.machine)
        .args([
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={} quiet panic=-1 rmw.modes={}{}{}{}{}",
            arch.console,
            boot.modes.join(","),
            if boot.record { "" } else { " rmw.record=0" },
            if boot.refusals { " rmw.refusals=1" } else { "" },
            if boot.net { " rmw.net=1" } else { "" },
            boot.cmdline
        ));
    if let Some((port, release)) = ports {
        // QEMU's user network (the guest 10.0.2.15, its gateway 10.0.2.2),
        // reachable from the host's loopback only. No option ROM: the
        // kernel is booted directly.
        qemu.args([
            "-netdev",
            &format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_PORT},\
                 hostfwd=tcp:127.0.0.1:{release}-:{RELEASE_PORT}"
            ),
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ]);
    }
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running qemu")?;
    let (stdout, mut stderr) = (
        child.stdout.take().context("qemu's stdout")?,
        child.stderr.take().context("qemu's stderr")?,
    );
    let errs = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = stderr.read_to_end(&mut e);
        e
    });
    // The serial console as it comes, line by line, so that the host phase
    // runs while the guest waits.
    let (tx, lines) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut raw = Vec::new();
    let mut phase: Option<Vec<Cell>> = None;
    for line in lines {
        raw.extend_from_slice(&line);
        if let Some((port, release)) = ports
            && phase.is_none()
            && String::from_utf8_lossy(&line).contains("RMW-NET-READY")
        {
            let so_far = String::from_utf8_lossy(&raw).replace('\r', "");
            let kernel = so_far
                .lines()
                .find_map(|l| l.split("RMW-KERNEL ").nth(1))
                .unwrap_or("")
                .trim()
                .to_owned();
            let hp = HostPhase {
                port,
                release: kernel.split(' ').next().unwrap_or("").to_owned(),
                kernel,
            };
            eprintln!("xtask: {}: host phase on 127.0.0.1:{port}", hp.kernel);
            phase = Some(boot.host_phase.map(|f| f(&hp)).unwrap_or_default());
            if let Err(e) = release_guest(release) {
                eprintln!("xtask: {}: releasing the guest: {e:#}", hp.kernel);
            }
        }
    }
    let _ = reader.join();
    let status = child.wait().context("waiting for qemu")?;
    let stderr = errs.join().unwrap_or_default();
    let log = String::from_utf8_lossy(&raw).replace('\r', "");
    let kernel = log
        .lines()
        .find_map(|l| l.split("RMW-KERNEL ").nth(1))
        .map(str::to_owned)
        .ok_or_else(|| {
            // Kept whole: an early oops is only useful with all of it.
            let saved = initrd.with_file_name("serial-noboot.log");
            let _ = std::fs::write(&saved, &log);
            anyhow::anyhow!(
                "{NO_BOOT}qemu {}, its stderr: {}; serial ({}):\n{}",
                status,
                String::from_utf8_lossy(&stderr).trim(),
                saved.display(),
                tail(&log)
            )
        })?;
    // The whole serial log is kept: a kernel oops in a guest is only
    // useful with everything before it.
    let saved = initrd.with_file_name(format!("serial-{}.log", kernel.replace(' ', "-")));
    let _ = std::fs::write(&saved, &log);
    if let Some(ksyms) = log
        .split("RMW-KSYMS-START\n")
        .nth(1)
        .and_then(|r| r.split("RMW-KSYMS-END").next())
    {
        let _ = std::fs::write(
            initrd.with_file_name(format!("ksyms-{}.txt", kernel.replace(' ', "-"))),
            ksyms,
        );
    }
    if !log.contains("RMW-END") {
        bail!(
            "{}the VM did not finish (full log: {}):\n{}",
            if log.contains("Oops: int3") {
                PATCH_RACE
            } else {
                ""
            },
            saved.display(),
            tail(&log)
        );
    }
    let mut cells = Vec::new();
    for &mode in boot.modes {
        let meta = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-MODE {mode} ")).nth(1))
            .unwrap_or("");
        let errs: Vec<&str> = section(&log, mode, "RMW-ERR ");
        let json: Vec<Report> = section(&log, mode, "RMW-JSON ")
            .into_iter()
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| format!("a report that does not parse ({e}): {l}"))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{mode}: {e}"))?;
        let hold_lines = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-HOLD {mode} ")).nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let pre_lines = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-PRE {mode} ")).nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let (result, mut detail) = check(mode, meta, pre_lines, hold_lines, &errs, &json);
        if result.is_ok() {
            detail.push_str(&storm_detail(&log, mode, json.last()));
        }
        cells.push(Cell {
            kernel: kernel.clone(),
            mode: format!("{mode}{}", boot.label),
            result,
            detail,
        });
    }
    if boot.record {
        cells.push(recording(&log, &kernel, initrd, host_bin));
    }
    if boot.refusals {
        cells.push(refusals(&log, &kernel));
    }
    if boot.net {
        cells.extend(host_phase_cells(&log, &kernel, phase));
    }
    Ok(cells)
}

/// A free port of the host's loopback (bound, read, closed: QEMU binds it
/// next).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("a bound port")?.port())
}

/// Ends the guest's host phase: connects to its release port (forwarded
/// from `port`) and closes; the guest's `nc`, its stdin empty, closes its
/// side at once, so the end of the stream says it was reached.
fn release_guest(port: u16) -> anyhow::Result<()> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .with_context(|| format!("waiting for the guest to close 127.0.0.1:{port}"))?;
    Ok(())
}

/// The host phase's cells, failed with the guest's `RMW-NET` lines where
/// they fail, and a `host phase` cell when the phase never ran or did not
/// release the guest.
fn host_phase_cells(log: &str, kernel: &str, phase: Option<Vec<Cell>>) -> Vec<Cell> {
    let net: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("RMW-NET "))
        .collect();
    let said = if net.is_empty() {
        String::new()
    } else {
        format!(" (the guest: {})", net.join("; "))
    };
    let failed = |why: String| Cell {
        kernel: kernel.to_owned(),
        mode: "host phase".to_owned(),
        result: Err(format!("{why}{said}")),
        detail: String::new(),
    };
    let Some(mut cells) = phase else {
        return vec![failed("the guest never printed RMW-NET-READY".to_owned())];
    };
    for c in &mut cells {
        if let Err(e) = &mut c.result {
            e.push_str(&said);
        }
    }
    let released = log
        .lines()
        .find_map(|l| l.strip_prefix("RMW-NET-RELEASED "))
        .unwrap_or("(no RMW-NET-RELEASED line)");
    if released.trim() != "rc=0" {
        cells.push(failed(format!(
            "the host did not release the guest: {released}"
        )));
    }
    cells
}

/// What a host phase is given: where the guest's server is, and whose.
pub struct HostPhase {
    /// The host's 127.0.0.1 port forwarded to the guest's 5555.
    pub port: u16,
    /// The cells' kernel column (`uname -r`, `uname -m` of the guest).
    pub kernel: String,
    /// The guest's `uname -r`.
    pub release: String,
}

/// A host phase: runs on the host while the guest waits in its
/// `adb_phase` (its servers listening); its cells join the boot's.
pub type HostPhaseFn = fn(&HostPhase) -> Vec<Cell>;

/// The refusals a phone can produce, tried in the guest: each one line
/// with its remedy and exit code 3, or handled (and said) where rmapwatch
/// can handle it.
fn refusals(log: &str, kernel: &str) -> Cell {
    let line = |what: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("RMW-REFUSE {what} ")))
            .unwrap_or("")
    };
    let rc = |l: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("rc="))
            .unwrap_or("?")
            .to_owned()
    };
    let mut detail = Vec::new();
    let result = (|| -> Result<(), String> {
        let l = line("nobtf");
        if rc(l) != "3" || !l.contains("--btf") {
            return Err(format!("no BTF: {l}"));
        }
        detail.push("no BTF: exit 3, says --btf".to_owned());
        let l = line("btf-file");
        if rc(l) != "0" || !l.contains("reports=1") {
            return Err(format!("--btf FILE: {l}"));
        }
        detail.push("--btf FILE: runs".to_owned());
        let l = line("kptr");
        if rc(l) != "0" || !l.contains("after=2") || !l.contains("lowered to 1") {
            return Err(format!("kptr_restrict 2: {l}"));
        }
        detail.push("kptr_restrict 2: lowered to 1 for the read, set back, said".to_owned());
        let l = line("memlock");
        if rc(l) != "0" || !l.contains("raised RLIMIT_MEMLOCK from 64 KiB") {
            return Err(format!("memlock 64 KiB: {l}"));
        }
        detail.push("RLIMIT_MEMLOCK 64 KiB: raised, said".to_owned());
        let l = line("lockdown");
        if rc(l) != "3" || !l.contains("confidentiality") {
            return Err(format!("lockdown=confidentiality: {l}"));
        }
        detail.push("lockdown confidentiality: exit 3, one line".to_owned());
        Ok(())
    })();
    Cell {
        kernel: kernel.to_owned(),
        mode: "refusals".to_owned(),
        result,
        detail: detail.join("; "),
    }
}

/// Decodes standard base64 (as busybox writes it: lines of 76).
fn base64(text: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", char::from(c))),
        })
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// The guest's recording: kept next to the serial log, replayed by the
/// host's rmapwatch (x86_64: another architecture for arm64 guests) to the
/// report the guest's recorder printed; and the committed fixtures
/// replayed in the guest to theirs.
fn recording(log: &str, kernel: &str, initrd: &Path, host_bin: &Path) -> Cell {
    let mut detail = String::new();
    let result = (|| -> Result<(), String> {
        let meta = log
            .lines()
            .find_map(|l| l.strip_prefix("RMW-REC "))
            .ok_or("no recording in the guest")?;
        let errs: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("RMW-REC-ERR "))
            .collect();
        if !meta.starts_with("rc=0") {
            return Err(format!(
                "the guest's recorder failed: {meta}: {}",
                errs.join(" | ")
            ));
        }
        let printed: String = log
            .lines()
            .filter_map(|l| l.strip_prefix("RMW-REC-JSON "))
            .map(|l| format!("{l}\n"))
            .collect();
        let b64: String = log
            .split("RMW-REC-B64-START\n")
            .nth(1)
            .and_then(|r| r.split("RMW-REC-B64-END").next())
            .ok_or("no recording bytes in the serial log")?
            .to_owned();
        let bytes = base64(&b64)?;
        // Kernel releases have dots: extensions are appended, not replaced.
        let file = |ext: &str| initrd.with_file_name(format!("{}.{ext}", recording_name(kernel)));
        let rmw = file("rmw");
        std::fs::write(&rmw, &bytes).map_err(|e| e.to_string())?;
        std::fs::write(file("json"), &printed).map_err(|e| e.to_string())?;
        let ready: String = meta
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ready", "\nready");
        std::fs::write(file("meta"), format!("{ready}\n")).map_err(|e| e.to_string())?;
        let out = Command::new(host_bin)
            .args(["report", "--from"])
            .arg(&rmw)
            .arg("--json")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "the host could not replay the guest's recording: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if out.stdout != printed.as_bytes() {
            return Err(
                "the host's replay of the guest's recording differs from what the guest printed"
                    .into(),
            );
        }
        let r: Report =
            serde_json::from_str(&printed).map_err(|e| format!("the guest's report: {e}"))?;
        let _ = write!(
            detail,
            "recorded here ({} KiB, {} events, {} walks), replayed on the host: the same report",
            bytes.len() / 1024,
            r.events,
            r.model.as_ref().map_or(0, |m| m.snapshot.stats.taken)
        );
        // The fixtures, replayed in the guest.
        let mut replayed = Vec::new();
        for line in log.lines().filter_map(|l| l.strip_prefix("RMW-REPLAY ")) {
            let (name, json) = line.split_once(' ').ok_or("a bad replay line")?;
            let want = fixture_files()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|f| f.file_name().is_some_and(|n| n == name))
                .ok_or(format!("no fixture {name}"))?
                .with_extension("json");
            let want = std::fs::read_to_string(&want).map_err(|e| e.to_string())?;
            if json.trim_end() != want.trim_end() {
                return Err(format!(
                    "fixture {name} replayed in the guest: another report: {}",
                    &json[..json.len().min(300)]
                ));
            }
            replayed.push(name.to_owned());
        }
        if replayed.is_empty() {
            return Err("no fixture replayed in the guest".into());
        }
        let _ = write!(detail, "; fixtures replayed here: {}", replayed.join(", "));
        Ok(())
    })();
    Cell {
        kernel: kernel.to_owned(),
        mode: "record/replay".to_owned(),
        result,
        detail,
    }
}

/// The name (without extension) of a guest's recording next to its
/// serial log.
#[must_use]
pub fn recording_name(kernel: &str) -> String {
    format!("rec-{}", kernel.replace(' ', "-"))
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

/// The workload's pids (parent first) from its `ready PARENT CHILD...` line.
fn workload_pids(meta: &str) -> Result<Vec<u64>, String> {
    let mut words = meta.split_whitespace().skip_while(|w| *w != "ready");
    words.next().ok_or("no ready line from the workload")?;
    Ok(words.map_while(|p| p.parse().ok()).collect())
}

/// From the workload's `regions START END ready PARENT CHILD...` and a
/// report: per workload process (parent first), the new anonymous folios
/// counted in VMAs that start inside the regions.
fn region_folios(meta: &str, report: &Report) -> Result<Vec<(u64, u64)>, String> {
    let words: Vec<&str> = meta.split_whitespace().collect();
    let after = |w: &str| words.iter().position(|x| *x == w).map(|i| &words[i + 1..]);
    let hex = |s: &&str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let r = after("regions").ok_or("no regions line from the workload")?;
    let (Some(start), Some(end)) = (r.first().and_then(hex), r.get(1).and_then(hex)) else {
        return Err(format!("bad regions line: {meta}"));
    };
    let pids = workload_pids(meta)?;
    pids.iter()
        .map(|&pid| {
            let p = find(report, pid)
                .ok_or(format!("workload process {pid} missing from the report"))?;
            let by_vma = &p
                .rmap
                .as_ref()
                .ok_or(format!("no per-VMA rmap counts for {pid}"))?
                .by_vma;
            let n = by_vma
                .iter()
                .filter(|(k, _)| hex(&k.as_str()).is_some_and(|a| (start..end).contains(&a)))
                .map(|(_, v)| *v)
                .sum();
            Ok((pid, n))
        })
        .collect()
}

/// The fork storm timed in this mode, untraced and traced (reported, not
/// checked: TCG wall time says little), with rmapwatch's cost per event.
fn storm_detail(log: &str, mode: &str, last: Option<&Report>) -> String {
    let secs = |phase: &str| -> Option<f64> {
        let l = log
            .lines()
            .find_map(|l| l.split(&format!("RMW-STORM {mode} {phase} ")).nth(1))?;
        // "storm 200 forks 1.234 s"
        l.split_whitespace().nth(3)?.parse().ok()
    };
    let (Some(base), Some(traced)) = (secs("base"), secs("traced")) else {
        return String::new();
    };
    let ns = last
        .and_then(|j| j.cost.as_ref()?.ns_per_event)
        .map_or_else(String::new, |n| format!(", {n:.0} ns/event (bpf_stats)"));
    format!(
        "; fork storm ({STORM} forks): untraced {base:.2} s, traced {traced:.2} s ({:+.1}%){ns}",
        (traced / base - 1.0) * 100.0
    )
}

/// Lines with `prefix` between this mode's RMW-MODE line and the next one.
fn section<'a>(log: &'a str, mode: &str, prefix: &str) -> Vec<&'a str> {
    let start = log.find(&format!("RMW-MODE {mode} ")).unwrap_or(log.len());
    let rest = &log[start..];
    let end = rest[1..].find("RMW-MODE ").map_or(rest.len(), |e| e + 1);
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// How a boot that died of an `int3` oops starts its error. Seen once (6.12
/// x86_64, attaching in kprobe mode, RIP in `syscall_exit_to_user_mode_prepare`,
/// a static branch that enabling a syscall tracepoint patches): the guest
/// kernel patches live code through a temporary int3, and a vCPU executed
/// that int3 after the patch had completed, which the kernel's syncing of
/// every CPU rules out on hardware (most likely a stale translation of
/// multi-threaded TCG). The kernel is booted once more, and the matrix says
/// so; a second failure fails it.
const PATCH_RACE: &str = "guest oops on an int3 of live code patching: ";

/// How a boot that never reached /init starts its error (seen once in 20
/// boots: 7.3 x86_64 ended after 6 s with no line from the guest, and
/// booted normally the next time). Booted once more, and said.
const NO_BOOT: &str = "the VM did not boot to /init: ";

/// The matrix of one architecture. `bins` holds its static binaries.
///
/// # Errors
/// A kernel cannot be fetched or booted.
pub fn matrix(
    cache_root: &Path,
    arch: &Arch,
    bins: &Path,
    host_bin: &Path,
    only: &[String],
) -> anyhow::Result<Vec<Cell>> {
    let cache = cache_root.join(arch.deb);
    std::fs::create_dir_all(&cache)?;
    let mut cells = Vec::new();
    let full = Boot {
        modes: &MODES,
        record: true,
        cmdline: "",
        label: "",
        refusals: false,
        net: false,
        host_phase: None,
    };
    // arm64's 5.10 and 6.12 (the phones' kernels the ADB stand-in runs
    // on) have a NIC and a host phase.
    let arm_net = arch.name == "aarch64";
    let full_net = Boot {
        net: arm_net,
        host_phase: arm_net.then_some(crate::adbcell::phase as HostPhaseFn),
        ..full
    };
    // 5.10 (Android's oldest GKI, maps charged to RLIMIT_MEMLOCK) tries
    // the refusals too.
    let full_refusals = Boot {
        refusals: true,
        ..full_net
    };
    let gki = Boot {
        modes: &["auto"],
        record: false,
        cmdline: " slab_nomerge",
        label: " (GKI-like: slab_nomerge)",
        refusals: true,
        net: false,
        host_phase: None,
    };
    let boots = SERIES
        .iter()
        .map(|s| {
            (
                s,
                match s.label {
                    "5.10" => &full_refusals,
                    "6.12" => &full_net,
                    _ => &full,
                },
            )
        })
        .chain(
            SERIES
                .iter()
                .filter(|s| s.label == GKI_SERIES)
                .map(|s| (s, &gki)),
        );
    // Every kernel first: the initramfs carries the NIC's modules of those
    // booted with one.
    let mut plan = Vec::new();
    for (series, boot) in boots {
        if !only.is_empty() && !only.iter().any(|o| o == series.label) {
            continue;
        }
        plan.push((
            series,
            boot,
            kernel_image(cache_root, &cache, arch, series)?,
        ));
    }
    let mut net: Vec<String> = plan
        .iter()
        .filter(|(_, b, _)| b.net)
        .filter_map(|(_, _, v)| release_of(v))
        .collect();
    net.dedup();
    let initrd = initramfs(&cache, arch, bins, &net)?;
    for (series, boot, vmlinuz) in plan {
        eprintln!(
            "xtask: booting {}{} under {} (TCG)",
            vmlinuz.display(),
            boot.cmdline,
            arch.qemu
        );
        let t = std::time::Instant::now();
        let booted = match run_kernel(arch, &vmlinuz, &initrd, host_bin, boot) {
            Err(e) => match retry_reason(&e) {
                Some((why, note)) => {
                    eprintln!("xtask: {e:#}");
                    eprintln!("xtask: {why}; booting it once more");
                    run_kernel(arch, &vmlinuz, &initrd, host_bin, boot).map(|mut cells| {
                        for c in &mut cells {
                            c.detail.push_str(&format!("; booted twice ({note})"));
                        }
                        cells
                    })
                }
                None => Err(e),
            },
            ok => ok,
        };
        // A kernel that does not boot or finish is a failed cell, not the
        // end of the matrix.
        match booted {
            Ok(c) => cells.extend(c),
            Err(e) => cells.push(Cell {
                kernel: format!("{} {}", series.label, arch.name),
                mode: format!("boot{}", boot.label),
                result: Err(format!("{e:#}")
                    .lines()
                    .take(12)
                    .collect::<Vec<_>>()
                    .join(" / ")),
                detail: String::new(),
            }),
        }
        eprintln!("xtask: done in {:.0} s", t.elapsed().as_secs_f64());
    }
    Ok(cells)
}

/// Why a failed boot is booted once more (said, and noted in its rows),
/// or `None`: a failure of rmapwatch, not of the guest.
fn retry_reason(e: &anyhow::Error) -> Option<(&'static str, &'static str)> {
    let e = format!("{e:#}");
    if e.starts_with(PATCH_RACE) {
        Some((
            "the guest kernel hit a breakpoint of its own live code patching after the patch \
             had completed (on hardware every CPU is synced before the int3 goes; most likely a \
             stale translation of multi-threaded TCG)",
            "the first boot: guest int3 oops",
        ))
    } else if e.starts_with(NO_BOOT) {
        Some((
            "the guest never reached /init",
            "the first boot never reached /init",
        ))
    } else {
        None
    }
}

/// One boot of a kernel: the modes its /init runs, whether it records,
/// extra kernel arguments, and what its cells' mode column says besides.
pub struct Boot {
    /// Probe modes, in order.
    pub modes: &'static [&'static str],
    /// Whether the guest records (and replays the fixtures).
    pub record: bool,
    /// Extra kernel command line.
    pub cmdline: &'static str,
    /// Appended to each cell's mode.
    pub label: &'static str,
    /// Whether the guest tries the refusals a phone can produce.
    pub refusals: bool,
    /// Whether the guest has a NIC (virtio-net on QEMU's user network, its
    /// 5555 and 5556 forwarded from free ports of the host's loopback) and
    /// a host phase: after the recording, its `adb_phase` starts its
    /// servers, it prints `RMW-NET-READY` and waits; the host runs
    /// `host_phase`, then releases it.
    pub net: bool,
    /// The host's side of the phase (`None`: the guest is released at once).
    pub host_phase: Option<HostPhaseFn>,
}

/// The matrix table (docs/kernels.md).
#[must_use]
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::from(
        "| kernel | arch | mode | result | measured in the VM |\n|---|---|---|---|---|\n",
    );
    for c in cells {
        let (k, arch) = c.kernel.split_once(' ').unwrap_or((&c.kernel, ""));
        let r = match &c.result {
            Ok(()) => "pass".to_owned(),
            Err(e) => format!("FAIL: {e}"),
        };
        let _ = writeln!(s, "| {k} | {arch} | {} | {r} | {} |", c.mode, c.detail);
    }
    s
}
