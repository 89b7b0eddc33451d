//! The guest side of the matrix: its /init script and its parameters, and
//! the initramfs that carries it with busybox, the static binaries, the
//! committed fixtures and the NIC's modules.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::{Arch, kernels};
use crate::cmd::sh;

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
    let init = root.join("init");
    std::fs::write(&init, init_script())?;
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
