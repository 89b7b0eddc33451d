//! The matrix runner: for each architecture, which kernels boot how
//! (probe modes, recording, refusals, a NIC and a host phase, the GKI-like
//! boot), QEMU under TCG, the serial console read live so that the host
//! phase runs while the guest waits, one retry for the two known guest
//! flukes, and the table of cells.
use std::{
    fmt::Write as _,
    io::{BufRead as _, Read as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{Arch, Cell, HostPhase, HostPhaseFn, checks, guest, kernels};

/// The series the GKI-like cell boots (slab_nomerge, auto mode): Android's
/// most common GKI base among Debian's kernels.
const GKI_SERIES: &str = "6.1";

/// The guest ports of the host phase: its server, and the one the host
/// connects to (and closes) to release it.
const GUEST_PORT: u16 = 5555;

const RELEASE_PORT: u16 = 5556;

/// One boot of a kernel: the modes its /init runs, whether it records,
/// extra kernel arguments, and what its cells' mode column says besides.
pub struct Boot {
    /// Probe modes, in order.
    pub modes: &'static [&'static str],
    /// Whether the guest records (and replays the fixtures).
    pub record: bool,
    /// Whether the guest runs the zombie-leader check (`rmw.zombie=0`:
    /// not).
    pub zombie: bool,
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
    /// Whether each mode's time check runs (fork work, rmap walks and lock
    /// waits against tracefs kprobe counts): a cell per mode, failed if the
    /// guest printed none. Off: `rmw.time=0`, no time cells.
    pub time: bool,
    /// With `time`: only this mode's time check runs (`rmw.time=MODE`).
    pub time_only: Option<&'static str>,
}

impl Boot {
    /// The modes whose time check runs.
    #[must_use]
    pub fn time_modes(&self) -> Vec<&'static str> {
        if !self.time {
            return Vec::new();
        }
        self.modes
            .iter()
            .copied()
            .filter(|m| self.time_only.is_none_or(|only| only == *m))
            .collect()
    }

    /// The kernel command line's `rmw.time` word (empty: every mode).
    #[must_use]
    pub fn time_arg(&self) -> String {
        match (self.time, self.time_only) {
            (false, _) => " rmw.time=0".to_owned(),
            (true, Some(only)) => format!(" rmw.time={only}"),
            (true, None) => String::new(),
        }
    }
}

/// The series whose arm64 boot runs the time checks: the newest (raw
/// tracepoints under PREEMPT_RCU, where our programs can nest), in fentry
/// mode only (the richest: fork work and rmap walks timed by trampolines,
/// which x86_64 checks in every mode). arm64's other series skip them:
/// under TCG a time check costs 1.5-3 min per mode there, and x86_64 runs
/// them on every series and mode. CI's matrix took 64 min of its 60.
const ARM_TIME_SERIES: &str = "7.x";

/// A full boot: every mode, recorded, timed.
const FULL: Boot = Boot {
    modes: &guest::MODES,
    record: true,
    zombie: true,
    cmdline: "",
    label: "",
    refusals: false,
    net: false,
    host_phase: None,
    time: true,
    time_only: None,
};

/// The mode of arm64's time checks.
const ARM_TIME_MODE: &str = "fentry";

/// The matrix of one architecture. `bins` holds its static binaries;
/// `host_bin` is the host's rmapwatch (the x86_64 static build), which
/// replays every guest's recording; `arm_phase` is the host's side of the
/// arm64 guests' host phase (the caller's: the matrix knows no host phase).
///
/// # Errors
/// A kernel cannot be fetched or booted.
pub fn matrix(
    cache_root: &Path,
    arch: &Arch,
    bins: &Path,
    host_bin: &Path,
    only: &[String],
    arm_phase: Option<HostPhaseFn>,
) -> anyhow::Result<Vec<Cell>> {
    let cache = cache_root.join(arch.deb);
    std::fs::create_dir_all(&cache)?;
    let mut cells = Vec::new();
    let full = FULL;
    // arm64's 5.10 and 6.12 (the phones' kernels the ADB stand-in runs
    // on) have a NIC and a host phase.
    let arm_net = arch.name == "aarch64";
    let full_net = Boot {
        net: arm_net,
        host_phase: if arm_net { arm_phase } else { None },
        ..full
    };
    // 5.10 (Android's oldest GKI, maps charged to RLIMIT_MEMLOCK) tries
    // the refusals too.
    let full_refusals = Boot {
        refusals: true,
        ..full_net
    };
    // x86_64's 5.10 (GKI's base, the oldest verifier) also runs the cost
    // split's variants in its tracepoint mode: the stages' ns/run in a
    // guest, and proof that every variant loads there. One boot only:
    // under TCG each variant adds a program run to every slab event.
    let full_split = Boot {
        cmdline: " rmw.split=tracepoint",
        ..full_refusals
    };
    let gki = Boot {
        modes: &["auto"],
        record: false,
        zombie: false,
        cmdline: " slab_nomerge",
        label: " (GKI-like: slab_nomerge)",
        refusals: true,
        net: false,
        host_phase: None,
        time: false,
        time_only: None,
    };
    // arm64's 6.12 (Android 16's GKI) is the phone only: its adb cell runs
    // the whole workload check in auto mode (fentry there). Its three
    // modes, recording and zombie proved nothing that x86_64's 6.12 (the
    // same kernel's paths) and arm64's 5.10 and 7.x (the architecture's
    // oldest and newest hooks) do not, for 5 of CI's minutes under TCG.
    let phone = Boot {
        modes: &[],
        record: false,
        zombie: false,
        time: false,
        ..full_net
    };
    let arm = arch.name == "aarch64";
    // arm64 runs the time checks on one series only, and the zombie-leader
    // check on 5.10 only: there the VMA walk (`iter/task`) reaches a zombie
    // leader's threads through offsets read from the kernel's BTF, which
    // differ by architecture; on newer kernels (`iter/task_vma`) the check
    // is of procfs and the engine, the same on both architectures, which
    // x86_64 checks on every series (73 s a boot under arm64's TCG).
    let timed = |s: &kernels::Series, b: &Boot| Boot {
        time: b.time && (!arm || s.label == ARM_TIME_SERIES),
        time_only: arm.then_some(ARM_TIME_MODE),
        zombie: b.zombie && (!arm || s.label == "5.10"),
        ..*b
    };
    let boots: Vec<(&kernels::Series, Boot)> = kernels::SERIES
        .iter()
        // arm64's 6.1 boots only GKI-like (below): its full boot proved
        // nothing x86_64's 6.1 and arm64's 5.10 and 7.x do not, for 4 min.
        .filter(|s| !(arm && s.label == GKI_SERIES))
        .map(|s| {
            (
                s,
                timed(
                    s,
                    match s.label {
                        // arm64's GKI-like boot tries the refusals.
                        "5.10" if arm => &full_net,
                        "5.10" => &full_split,
                        "6.12" if arm => &phone,
                        _ => &full,
                    },
                ),
            )
        })
        // The GKI-like boot on arm64 only, the phones' architecture:
        // x86_64's proved nothing its 6.1 full boot, its 5.10's refusals
        // and arm64's GKI-like boot do not (slab_nomerge changes what the
        // engine counts, not what the programs see), for 1.7 of CI's 60
        // minutes.
        .chain(
            kernels::SERIES
                .iter()
                .filter(|s| arm && s.label == GKI_SERIES)
                .map(|s| (s, timed(s, &gki))),
        )
        .collect();
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
            kernels::kernel_image_of(cache_root, arch, series)?,
        ));
    }
    let mut net: Vec<String> = plan
        .iter()
        .filter(|(_, b, _)| b.net)
        .filter_map(|(_, _, v)| kernels::release_of(v))
        .collect();
    net.dedup();
    let initrd = guest::initramfs(&cache, arch, bins, &net)?;
    for (series, boot, vmlinuz) in plan {
        eprintln!(
            "xtask: booting {}{} under {} (TCG)",
            vmlinuz.display(),
            boot.cmdline,
            arch.qemu
        );
        let t = std::time::Instant::now();
        let boot_once = || run_kernel(cache_root, arch, &vmlinuz, &initrd, host_bin, &boot);
        // A guest fluke (said, and noted in every row): booted once more.
        let again = |why: &str, note: &str| {
            eprintln!("xtask: {why}; booting it once more");
            boot_once().map(|mut cells| {
                for c in &mut cells {
                    c.detail.push_str(&format!("; booted twice ({note})"));
                }
                cells
            })
        };
        let booted = match boot_once() {
            Err(e) => match retry_reason(&e) {
                Some((why, note)) => {
                    eprintln!("xtask: {e:#}");
                    again(why, note)
                }
                None => Err(e),
            },
            Ok(cells) => match cells_retry_reason(&cells) {
                Some((why, note)) => again(why, note),
                None => Ok(cells),
            },
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
             had completed, or called address 0 through a call site being patched (on hardware \
             every CPU is synced before the int3 goes; most likely a stale translation of \
             multi-threaded TCG)",
            "the first boot: guest oops of live code patching",
        ))
    } else if e.starts_with(WEDGED) {
        Some((
            "the guest kernel wedged (a CPU stuck in the kernel for minutes, the guest's own \
             watchdog unable to run; most likely multi-threaded TCG, as the int3 oops)",
            "the first boot: the guest kernel wedged",
        ))
    } else if e.starts_with(HUNG_FOR_CPUS) {
        Some((
            "a guest thread hung in the kernel waiting for the other vCPUs (live code \
             patching's sync, stop_machine or a cross-CPU call), which never answered (most \
             likely multi-threaded TCG, as the int3 oops)",
            "the first boot: hung waiting for its other vCPUs",
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

/// Why a boot whose cells came back is booted once more, or `None`: a
/// mode failed because the guest kernel's `kmem_cache_alloc` tracepoint ran
/// for no program ([`checks::ALLOC_TRACEPOINT_SILENT`]), a guest fluke of
/// the same kind as [`PATCH_RACE`], and every failed cell is one of those
/// (another failure is no reason to boot again). Its failed cells are
/// printed first, as they were.
fn cells_retry_reason(cells: &[Cell]) -> Option<(&'static str, &'static str)> {
    let failed: Vec<&Cell> = cells.iter().filter(|c| c.result.is_err()).collect();
    // Only when every failure is this fluke: a boot once more must not
    // hide another mode's failure.
    let silent = |c: &Cell| {
        c.result
            .as_ref()
            .is_err_and(|e| e.starts_with(checks::ALLOC_TRACEPOINT_SILENT))
    };
    if failed.is_empty() || !failed.iter().all(|c| silent(c)) {
        return None;
    }
    for c in failed {
        eprintln!("{}", table(std::slice::from_ref(c)));
    }
    Some((
        "the guest kernel's kmem_cache_alloc tracepoint ran for none of its programs (ours and \
         the empty one beside it alike) while its frees ran: most likely a stale translation of \
         its static branch after live patching under multi-threaded TCG",
        "the first boot: its kmem_cache_alloc tracepoint ran for no program",
    ))
}

/// How a boot that died of its own live code patching ([`patch_race`]: an
/// `int3` oops, or a call to 0) starts its error. The int3, seen once (6.12
/// x86_64, attaching in kprobe mode, RIP in `syscall_exit_to_user_mode_prepare`,
/// a static branch that enabling a syscall tracepoint patches): the guest
/// kernel patches live code through a temporary int3, and a vCPU executed
/// that int3 after the patch had completed, which the kernel's syncing of
/// every CPU rules out on hardware (most likely a stale translation of
/// multi-threaded TCG). The kernel is booted once more, and the matrix says
/// so; a second failure fails it.
const PATCH_RACE: &str = "guest oops of live code patching (an int3, or a call to 0): ";

/// Whether a guest that did not finish died of its own live code patching
/// ([`PATCH_RACE`]): an `int3` oops, or a call to address 0 (an instruction
/// fetch at 0 in kernel mode; seen once, 7.3 x86_64 attaching in kprobe
/// mode: `map_anon_folio_pte_nopf` called 0 where it calls
/// `folio_add_new_anon_rmap`, whose entry the kprobe's ftrace site was
/// patching). Neither can come of a program the verifier loaded; a second
/// boot that dies alike fails the kernel.
fn patch_race(log: &str) -> bool {
    log.contains("Oops: int3")
        || (log.contains("#PF: supervisor instruction fetch in kernel mode")
            && log.contains("RIP: 0010:0x0\n"))
}

/// How a boot whose guest watchdog fired starts its error: a phase ran
/// past its budget (`guest::PHASE_SECS`), and the guest said what hung
/// ([`checks::hung`]) and powered off. Not booted again: a hang is ours
/// until shown otherwise.
const HUNG: &str = "a phase of the guest hung: ";

/// How a boot starts its error whose guest kernel reported a CPU stuck for
/// [`WEDGED_SECS`] or more (soft lockups): seen once, 6.1 x86_64 in its
/// tracepoint mode's time check, CPU#1 stuck in `/init` (pid 1) from 9 s
/// into the phase until QEMU's 900 s timeout, and the guest's watchdog
/// never ran (the other vCPU stuck too). Booted once more, as the other
/// flukes of multi-threaded TCG.
const WEDGED: &str = "the guest kernel wedged: ";

/// Seconds of a CPU stuck in the kernel after which the guest counts as
/// wedged (a loaded host can stall a vCPU for tens of seconds).
const WEDGED_SECS: u64 = 120;

/// How a boot starts its error whose guest hung with a thread waiting for
/// every other CPU in the kernel ([`checks::hung_waiting_for_cpus`]: live
/// code patching's sync, `stop_machine`, a cross-CPU call): a vCPU that
/// never answered, a guest fluke of the kind of [`PATCH_RACE`], booted once
/// more.
const HUNG_FOR_CPUS: &str = "a phase of the guest hung waiting for its other CPUs: ";

/// How a boot that never reached /init starts its error (seen once in 20
/// boots: 7.3 x86_64 ended after 6 s with no line from the guest, and
/// booted normally the next time). Booted once more, and said.
const NO_BOOT: &str = "the VM did not boot to /init: ";

/// Boots one kernel and checks every mode, then the recording made in it
/// (replayed here by `host_bin`) and the fixtures replayed in it.
fn run_kernel(
    cache_root: &Path,
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
    // An oops panics, and the panic ends QEMU at once (`panic=-1` reboots,
    // `-no-reboot` exits): a guest that oopsed used to run on in soft
    // lockups until the 900 s timeout (7.3 x86_64, a call to 0 while
    // attaching kprobes).
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
            "console={} quiet oops=panic panic=-1 rmw.modes={}{}{}{}{}{}{}",
            arch.console,
            if boot.modes.is_empty() {
                "none".to_owned()
            } else {
                boot.modes.join(",")
            },
            if boot.record { "" } else { " rmw.record=0" },
            if boot.zombie { "" } else { " rmw.zombie=0" },
            boot.time_arg(),
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
    let mut wedged = None;
    for line in lines {
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        // A CPU stuck in the kernel this long: the guest is wedged (its
        // watchdog cannot run either); QEMU is stopped (`timeout` passes
        // the TERM on) rather than left to its 900 s.
        if wedged.is_none()
            && let Some(secs) = checks::soft_lockup_secs(&text)
            && secs >= WEDGED_SECS
        {
            wedged = Some(text.trim().to_owned());
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        if let Some((port, release)) = ports
            && phase.is_none()
            && text.contains("RMW-NET-READY")
        {
            let so_far = String::from_utf8_lossy(&raw).replace('\r', "");
            let kernel = checks::kernel(&so_far).unwrap_or("").trim().to_owned();
            let hp = HostPhase {
                port,
                release: kernel.split(' ').next().unwrap_or("").to_owned(),
                kernel,
                host_bin: host_bin.to_owned(),
                cache: cache_root.to_owned(),
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
    if let Some(w) = wedged {
        let saved = initrd.with_file_name("serial-wedged.log");
        let _ = std::fs::write(&saved, &log);
        bail!(
            "{WEDGED}{w}; stopped (full log: {}; phases: {})",
            saved.display(),
            checks::phases(&log).unwrap_or_default()
        );
    }
    let kernel = checks::kernel(&log).map(str::to_owned).ok_or_else(|| {
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
    // One file per boot: the GKI-like boot of a kernel that also boots
    // full names its extra words (it overwrote the full boot's log).
    let extra: Vec<&str> = boot.cmdline.split_whitespace().collect();
    let saved = initrd.with_file_name(format!(
        "serial-{}{}{}.log",
        kernel.replace(' ', "-"),
        if extra.is_empty() { "" } else { "-" },
        extra.join("-")
    ));
    let _ = std::fs::write(&saved, &log);
    if let Some(p) = checks::phases(&log) {
        eprintln!("xtask: {kernel}{}: guest time by phase: {p}", boot.label);
    }
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
        if let Some(h) = checks::hung(&log) {
            if let Some(frame) = checks::hung_waiting_for_cpus(&log) {
                bail!(
                    "{HUNG_FOR_CPUS}task {frame}\n{h}\n(full log: {})",
                    saved.display()
                );
            }
            bail!("{HUNG}{h}\n(full log: {})", saved.display());
        }
        bail!(
            "{}the VM did not finish (full log: {}):\n{}",
            if patch_race(log.as_str()) {
                PATCH_RACE
            } else {
                ""
            },
            saved.display(),
            tail(&log)
        );
    }
    let mut cells = checks::modes(&log, &kernel, boot.modes, boot.label);
    let time_modes = boot.time_modes();
    if !time_modes.is_empty() {
        cells.extend(checks::time(&log, &kernel, &time_modes, boot.label));
    }
    if boot.record {
        cells.push(checks::recording(&log, &kernel, initrd, host_bin));
    }
    if boot.zombie {
        cells.push(checks::zombie(&log, &kernel));
    }
    if boot.refusals {
        cells.push(checks::refusals(&log, &kernel));
    }
    if boot.net {
        cells.extend(checks::host_phase_cells(&log, &kernel, phase));
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

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The matrix table (what `vm-test --report` writes into docs/kernels.md).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_silent_alloc_tracepoint_boots_a_kernel_twice() {
        let cell = |result: Result<(), String>| Cell {
            kernel: "7.3.4 aarch64".into(),
            mode: "fentry".into(),
            result,
            detail: String::new(),
        };
        let silent = format!(
            "{}events vs a fresh walk ...",
            checks::ALLOC_TRACEPOINT_SILENT
        );
        assert!(cells_retry_reason(&[cell(Ok(())), cell(Err(silent))]).is_some());
        assert!(cells_retry_reason(&[cell(Ok(()))]).is_none());
        let ours = "events vs a fresh walk at the hold point: drift ...".to_owned();
        assert!(cells_retry_reason(&[cell(Err(ours.clone()))]).is_none());
        // Another failure beside the fluke: no second boot to hide it.
        let silent = format!("{}...", checks::ALLOC_TRACEPOINT_SILENT);
        assert!(cells_retry_reason(&[cell(Err(silent)), cell(Err(ours))]).is_none());
    }

    #[test]
    fn a_call_to_address_0_while_patching_is_a_patch_race_and_other_oopses_are_not() {
        // As in the serial log of 7.3 x86_64 (kprobe mode, attaching).
        let null_call =
            "[   69.909485] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   69.911227] #PF: supervisor instruction fetch in kernel mode
[   69.911517] #PF: error_code(0x0010) - not-present page
[   69.916725] RIP: 0010:0x0
[   69.922596]  map_anon_folio_pte_nopf+0xaf/0x160
";
        assert!(patch_race(null_call));
        assert!(patch_race("[  5.1] Oops: int3: 0000 [#1] SMP NOPTI\n"));
        // A NULL data read, or a fetch elsewhere, is no patching race.
        let read = null_call.replace("instruction fetch", "read access");
        assert!(!patch_race(&read));
        let elsewhere = null_call.replace("RIP: 0010:0x0", "RIP: 0010:0xffffffffc0001000");
        assert!(!patch_race(&elsewhere));
        assert!(!patch_race("RMW-T 60.90 mode kprobe\n"));
    }

    #[test]
    fn a_hang_boots_again_only_when_a_thread_waited_for_the_other_cpus() {
        let ours = anyhow::anyhow!("{HUNG}phase 'mode kprobe' ran past its 300 s");
        assert!(retry_reason(&ours).is_none());
        let cpus = anyhow::anyhow!("{HUNG_FOR_CPUS}task 97: [<0>] text_poke_bp_batch+0x1");
        assert!(retry_reason(&cpus).is_some());
        let wedged = anyhow::anyhow!("{WEDGED}soft lockup - CPU#1 stuck for 130s! [init:1]");
        assert!(retry_reason(&wedged).is_some());
    }

    #[test]
    fn a_boot_says_which_modes_its_time_checks_run_in() {
        let b = FULL;
        assert_eq!(b.time_modes(), guest::MODES.to_vec());
        assert_eq!(b.time_arg(), "");
        let arm = Boot {
            time_only: Some(ARM_TIME_MODE),
            ..b
        };
        assert_eq!(arm.time_modes(), ["fentry"]);
        assert_eq!(arm.time_arg(), " rmw.time=fentry");
        let off = Boot { time: false, ..arm };
        assert!(off.time_modes().is_empty());
        assert_eq!(off.time_arg(), " rmw.time=0");
    }
}
