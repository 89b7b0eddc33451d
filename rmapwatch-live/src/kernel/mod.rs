//! Facts about the running kernel: privileges, BTF layouts, symbol ranges.
//! Everything here is read at start-up, before any program is loaded.
pub mod kallsyms;

pub use rmapwatch_parse::{args, btf};

use std::path::Path;

use rmapwatch_common::{ABSENT, Config, MAX_SITE_RANGES, arg2, site, slab_path};
use rmapwatch_engine::{
    facts::{KernelId, Sizes, Slots},
    hooks::{HOOKS, SlabEvents, SlabPath},
};

pub use self::{
    btf::{KernelBtf, Layout},
    kallsyms::Kallsyms,
};

/// Why rmapwatch cannot run on this system (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Not root and missing capabilities.
    #[error(
        "rmapwatch needs root (it loads eBPF programs: CAP_BPF, CAP_PERFMON, and CAP_SYSLOG to \
         read kernel addresses); run it with sudo"
    )]
    NotRoot,
    /// BTF problems.
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    /// kallsyms problems.
    #[error(transparent)]
    Kallsyms(#[from] kallsyms::KallsymsError),
    /// More split parts than the programs take.
    #[error("{0} call-site ranges are more than the {MAX_SITE_RANGES} the probes take")]
    TooManyRanges(usize),
    /// Kernel lockdown forbids eBPF programs to read kernel memory.
    #[error(
        "the kernel is locked down in confidentiality mode (/sys/kernel/security/lockdown): \
         eBPF programs may not read kernel memory (bpf_probe_read_kernel), which every rmapwatch \
         probe does; boot without lockdown=confidentiality (Secure Boot alone gives integrity \
         mode, which rmapwatch runs under)"
    )]
    Lockdown,
    /// RLIMIT_MEMLOCK too low for the maps and cannot be raised.
    #[error(
        "the locked-memory limit ({0} KiB) is too low for rmapwatch's maps on this kernel \
         (before 5.11 BPF maps count against RLIMIT_MEMLOCK) and could not be raised: {1}; \
         run as root or raise it (ulimit -l unlimited)"
    )]
    Memlock(u64, String),
    /// `RMAPWATCH_LEAVE_OUT_SITES` names a function that is not an rmap
    /// call site.
    #[error(
        "{LEAVE_OUT_ENV}={0:?}: {1:?} is not an rmap function that allocates anon_vmas (give \
         {sites}, comma-separated)",
        sites = LEAVE_OUT_SITES.join(" and/or ")
    )]
    LeaveOut(String, String),
    /// The classic tracepoints' formats are not what the perf path reads.
    #[error(
        "cannot take slab events from classic tracepoints: {0} (tracefs \
         events/kmem/kmem_cache_{{alloc,free}}/format){1}"
    )]
    PerfFormat(String, &'static str),
}

/// The running kernel's identity.
#[must_use]
pub fn current_id() -> KernelId {
    {
        // SAFETY: utsname is plain old data; uname fills it.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a utsname.
        if unsafe { libc::uname(&raw mut u) } != 0 {
            return KernelId::default();
        }
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        KernelId {
            release: field(&u.release),
            arch: field(&u.machine),
        }
    }
}

/// Whether the effective capability set allows loading tracing programs.
fn capable() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |c: u64| cap_eff & (1 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Checks privileges first (before any other set-up), as the user sees them.
///
/// # Errors
/// [`EnvError::NotRoot`].
pub fn check_privileges() -> Result<(), EnvError> {
    if capable() {
        Ok(())
    } else {
        Err(EnvError::NotRoot)
    }
}

/// Everything read from the kernel at start-up.
pub struct KernelFacts {
    /// Identity.
    pub id: KernelId,
    /// BTF, kept open for fentry loading.
    pub btf_path: std::path::PathBuf,
    /// Struct layouts.
    pub layout: Layout,
    /// The hooks' function names (and aliases) this kernel has, each with
    /// the symbol a kprobe attaches to (a compiler-renamed entry such as
    /// `name.isra.0` where the plain name is absent): all that is asked of
    /// kallsyms after start-up (the whole table is ~10 MiB).
    pub hook_symbols: std::collections::BTreeMap<String, String>,
    /// Whether the kernel has the `kmem_cache_alloc_node` tracepoint
    /// (before 6.1).
    pub alloc_node: bool,
    /// How the slab events are taken.
    pub slab: SlabEvents,
    /// What the user is told of what start-up changed (kptr_restrict,
    /// RLIMIT_MEMLOCK).
    pub notes: Vec<String>,
    /// The programs' global configuration.
    pub config: Config,
    /// Per-object sizes for KB figures.
    pub sizes: Sizes,
    /// The slots of the objects the designs would hold.
    pub slots: Slots,
    /// Addresses of the `rmap_one` functions this kernel has (an rmap
    /// walk's caller).
    pub rmap_one: std::collections::BTreeMap<String, u64>,
    /// The time hooks' functions ([`TIME_FUNCTIONS`]) this kernel has, each
    /// with its kprobe entry symbol (as `hook_symbols`).
    pub time_symbols: std::collections::BTreeMap<String, String>,
    /// Whether `rmap_walk_anon`'s prototype has the positions its hook
    /// reads: `Ok(true)` checked in BTF, `Ok(false)` BTF has no such
    /// function (arm64 5.10: kallsyms has it; the positions, the same
    /// since 3.x, are assumed), `Err` another shape.
    pub rmap_walk_args: Result<bool, String>,
    /// `/proc/kallsyms` kept open from start-up, to name call sites later
    /// (after the capabilities were dropped).
    pub kallsyms: kallsyms::Opened,
}

/// The time hooks' kernel functions: fork work (`dup_mmap`, else the
/// first and last calls it makes, where it is inlined: Debian's 5.10 and
/// 6.12 have no `dup_mmap` symbol), rmap walks, and the rwsem slow paths
/// (kernels without lock tracepoints).
pub const TIME_FUNCTIONS: [&str; 8] = [
    "dup_mmap",
    "uprobe_start_dup_mmap",
    "uprobe_end_dup_mmap",
    "anon_vma_fork",
    "anon_vma_clone",
    "rmap_walk_anon",
    "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath",
];

/// Opens a BTF file (usually `/sys/kernel/btf/vmlinux`).
///
/// # Errors
/// [`btf::BtfError::Open`] when the file is missing or not BTF.
pub fn open_btf(path: &Path) -> Result<KernelBtf, btf::BtfError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| btf::BtfError::Open {
        path: origin.clone(),
        cause: e.to_string(),
    })?;
    KernelBtf::from_bytes(&bytes, &origin)
}

impl KernelFacts {
    /// Reads BTF and kallsyms (after [`check_privileges`]).
    ///
    /// # Errors
    /// See [`EnvError`].
    pub fn read(btf_path: &Path, slab: SlabPath) -> Result<Self, EnvError> {
        let mut notes = Vec::new();
        check_lockdown()?;
        raise_memlock(&mut notes)?;
        let btf = open_btf(btf_path)?;
        let layout = Layout::read(&btf)?;
        let (kallsyms, kallsyms_file) = kallsyms::read_noting(&mut |n| notes.push(n))?;
        let left_out = match std::env::var(LEAVE_OUT_ENV) {
            Ok(v) => leave_out_sites(&v)?,
            Err(_) => Vec::new(),
        };
        if !left_out.is_empty() {
            notes.push(format!(
                "{LEAVE_OUT_ENV}: {} left out of the rmap call-site ranges, as if inlined \
                 elsewhere: their anon_vmas reach only the inlining detector, and their objects \
                 are missing from the counts",
                left_out.join(", ")
            ));
        }
        let mut config = program_config(&kallsyms, &layout, &left_out)?;
        let slab_size = |cache: &str, fallback: u32| {
            std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/slab_size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(fallback)
        };
        let sizes = Sizes {
            anon_vma: slab_size("anon_vma", layout.anon_vma_size),
            anon_vma_chain: slab_size("anon_vma_chain", layout.avc_size),
        };
        let hook_symbols: std::collections::BTreeMap<String, String> = HOOKS
            .iter()
            .flat_map(|h| std::iter::once(h.name).chain(h.aliases.iter().copied()))
            .filter_map(|s| Some((s.to_owned(), kallsyms.entry(s)?)))
            .collect();
        let time_symbols = TIME_FUNCTIONS
            .iter()
            .filter_map(|s| Some(((*s).to_owned(), kallsyms.entry(s)?)))
            .collect();
        let rmap_walk_args = btf
            .function_params("rmap_walk_anon")
            .map_or(Ok(false), |p| args::rmap_walk_args(&p).map(|()| true));
        let rmap_one = rmapwatch_engine::time::RMAP_ONE
            .iter()
            .filter_map(|n| Some(((*n).to_owned(), kallsyms.addr(n)?)))
            .collect();
        let id = current_id();
        let (alloc_node, slab_events) = arg_layout(
            &btf,
            &layout,
            &hook_symbols,
            &id,
            slab,
            kallsyms.has("__rcu_read_lock"),
            &mut config,
        )?;
        config.args.anon_vma_slab_size = sizes.anon_vma;
        config.time = rmapwatch_common::TimeLayout {
            anon_vma_rwsem: layout.anon_vma_rwsem,
            folio_mapping: layout.folio_mapping,
            rwc_rmap_one: layout.rwc_rmap_one,
            syscall_ret: syscall_ret_offset(),
            rwsem_owner: layout.rwsem_owner,
            _pad: 0,
        };
        Ok(Self {
            sizes,
            slots: crate::procfs::slots(layout.vma_size),
            id,
            btf_path: btf_path.to_owned(),
            layout,
            hook_symbols,
            alloc_node,
            slab: slab_events,
            notes,
            config,
            rmap_one,
            time_symbols,
            rmap_walk_args,
            kallsyms: kallsyms_file,
        })
    }
}

/// Offset of `ret` in `syscalls:sys_exit_clone` (16 on every kernel seen;
/// the format is read where tracefs is mounted).
fn syscall_ret_offset() -> u32 {
    std::fs::read_to_string(format!("{TRACEFS}/events/syscalls/sys_exit_clone/format"))
        .ok()
        .and_then(|f| args::syscall_ret_offset(&f).ok())
        .unwrap_or(16)
}

/// Fills `config.args` from the tracepoint and hook prototypes, and picks
/// the slab path. Returns whether `kmem_cache_alloc_node` exists, and what
/// the user is told of the slab events.
fn arg_layout(
    btf: &KernelBtf,
    layout: &Layout,
    hook_symbols: &std::collections::BTreeMap<String, String>,
    id: &KernelId,
    slab: SlabPath,
    preempt_rcu: bool,
    config: &mut Config,
) -> Result<(bool, SlabEvents), EnvError> {
    let tp = |name: &str| {
        btf.tracepoint_params(name)
            .ok_or_else(|| btf::BtfError::NoTracepoint(name.to_owned()))
    };
    let alloc = args::slab_arg2("kmem_cache_alloc", &tp("kmem_cache_alloc")?)?;
    let free = args::slab_arg2("kmem_cache_free", &tp("kmem_cache_free")?)?;
    let alloc_node = match btf.tracepoint_params("kmem_cache_alloc_node") {
        Some(p) => {
            if args::slab_arg2("kmem_cache_alloc_node", &p)? != alloc {
                return Err(btf::BtfError::UnknownTracepoint(
                    "kmem_cache_alloc_node".into(),
                    "another layout than kmem_cache_alloc's".into(),
                )
                .into());
            }
            true
        }
        None => false,
    };
    // The first alias the kernel has is the one hooked.
    let proto = |hook: u32| {
        let spec = HOOKS.iter().find(|h| h.id == hook)?;
        let name = std::iter::once(spec.name)
            .chain(spec.aliases.iter().copied())
            .find(|n| hook_symbols.contains_key(*n))?;
        Some((name, btf.function_params(name)?))
    };
    let new = proto(rmapwatch_common::hook::RMAP_NEW);
    let ptes = proto(rmapwatch_common::hook::RMAP_PTES);
    let (rmap_new_vma, rmap_ptes_nr) = args::hook_positions(
        new.as_ref().map(|(n, p)| (*n, p.as_slice())),
        ptes.as_ref().map(|(n, p)| (*n, p.as_slice())),
    )?;
    let a = &mut config.args;
    a.alloc_arg2 = alloc;
    a.free_arg2 = free;
    a.anon_vma_size = layout.anon_vma_size;
    a.anon_vma_wait_list = layout.anon_vma_wait_list;
    a.rmap_new_vma = rmap_new_vma;
    a.rmap_ptes_nr = rmap_ptes_nr;
    let kind_by = |alloc: u32, free: u32| {
        let f = match free {
            arg2::CACHE => "cache",
            arg2::NAME => "cache name",
            _ => "call site",
        };
        match alloc {
            arg2::CACHE if free == arg2::CACHE => "cache pointer".to_owned(),
            arg2::CACHE => format!("cache pointer (frees: {f})"),
            _ => format!("bytes_req (frees: {f})"),
        }
    };
    let preemptible = args::raw_tracepoints_preemptible(&id.release, Some(preempt_rcu));
    let perf = match slab {
        SlabPath::Raw => false,
        SlabPath::Perf => true,
        SlabPath::Auto => preemptible,
    };
    let why = match slab {
        SlabPath::Auto if perf => "7.0+ with PREEMPT_RCU runs raw tracepoints preemptible; \
                                   perf tracepoints disable preemption"
            .to_owned(),
        SlabPath::Auto => String::new(),
        _ => "forced by --slab-path".to_owned(),
    };
    if !perf {
        let why = if preemptible && slab == SlabPath::Raw {
            "forced by --slab-path; on this kernel raw tracepoints can be preempted and miss \
             events (recursion misses are shown)"
                .to_owned()
        } else {
            why
        };
        return Ok((
            alloc_node,
            SlabEvents {
                path: "raw".into(),
                layout: kind_by(alloc, free),
                why,
                preemptible,
            },
        ));
    }
    let mounted = ensure_tracefs().map_err(|e| EnvError::PerfFormat(e, ""))?;
    let read = |e: &str| {
        std::fs::read_to_string(format!("{TRACEFS}/events/kmem/{e}/format"))
            .map_err(|err| EnvError::PerfFormat(format!("{e}: {err}"), ""))
    };
    let [call_site, ptr, req, got, name] =
        args::perf_offsets(&read("kmem_cache_alloc")?, &read("kmem_cache_free")?).map_err(|e| {
            EnvError::PerfFormat(e, "; --slab-path raw takes them from raw tracepoints")
        })?;
    a.slab_path = slab_path::PERF;
    a.perf_call_site = call_site;
    a.perf_ptr = ptr;
    a.perf_bytes_req = req;
    a.perf_bytes_alloc = got;
    a.perf_free_name = name;
    let free_kind = if name == ABSENT {
        arg2::NONE
    } else {
        arg2::NAME
    };
    let mut why = why;
    if mounted {
        why.push_str("; mounted tracefs at /sys/kernel/tracing");
    }
    Ok((
        alloc_node,
        SlabEvents {
            path: "perf".into(),
            layout: kind_by(arg2::SIZES, free_kind),
            why,
            preemptible: false,
        },
    ))
}

/// Refuses a kernel locked down in confidentiality mode (read from
/// securityfs, mounted for the check if it is not).
fn check_lockdown() -> Result<(), EnvError> {
    const FILE: &str = "/sys/kernel/security/lockdown";
    if !Path::new(FILE).exists() && Path::new("/sys/kernel/security").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "securityfs", "securityfs", "/sys/kernel/security"])
            .stderr(std::process::Stdio::null())
            .status();
    }
    match std::fs::read_to_string(FILE) {
        Ok(s) if lockdown_mode(&s) == Some("confidentiality") => Err(EnvError::Lockdown),
        _ => Ok(()),
    }
}

/// The selected mode of a lockdown file: `none [integrity] confidentiality`.
#[must_use]
pub fn lockdown_mode(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

/// Before 5.11 BPF maps are charged to RLIMIT_MEMLOCK (often 64 KiB or
/// 8 MiB): raises it to unlimited, or refuses if the maps cannot fit.
fn raise_memlock(notes: &mut Vec<String>) -> Result<(), EnvError> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut cur) } != 0
        || cur.rlim_cur == libc::RLIM_INFINITY
    {
        return Ok(());
    }
    let want = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const want) } == 0 {
        notes.push(format!(
            "raised RLIMIT_MEMLOCK from {} KiB to unlimited for the eBPF maps",
            cur.rlim_cur / 1024
        ));
        return Ok(());
    }
    let err = std::io::Error::last_os_error().to_string();
    // The ring buffer alone is 8 MiB by default.
    if cur.rlim_cur < 16 << 20 && !memcg_accounted() {
        return Err(EnvError::Memlock(cur.rlim_cur / 1024, err));
    }
    Ok(())
}

/// Whether BPF memory is charged to the memory cgroup (5.11+), not to
/// RLIMIT_MEMLOCK.
fn memcg_accounted() -> bool {
    args::version(&current_id().release) >= (5, 11)
}

/// Where tracefs is mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Whether tracefs is mounted.
#[must_use]
pub fn tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("events").exists()
}

/// Classic tracepoints need tracefs; mounts it if it is not (root only).
/// Returns whether it mounted it (a side effect the user is told of).
///
/// # Errors
/// Not mounted and mounting failed.
pub fn ensure_tracefs() -> Result<bool, String> {
    if tracefs_mounted() {
        return Ok(false);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .map_err(|e| format!("running mount -t tracefs: {e}"))?;
    if status.success() && tracefs_mounted() {
        Ok(true)
    } else {
        Err("tracefs is not mounted and mounting it failed".into())
    }
}

/// The environment variable naming rmap functions that allocate anon_vmas
/// ([`LEAVE_OUT_SITES`]) to leave out of the classifier's ranges, as if a
/// compiler had inlined them elsewhere: their anon_vma allocations then
/// reach only the inlining detector. For the detector's own test (it finds
/// nothing on any kernel tested).
pub const LEAVE_OUT_ENV: &str = "RMAPWATCH_LEAVE_OUT_SITES";

/// The call sites that may be left out: those that allocate anon_vmas,
/// which the detector then finds. (`anon_vma_clone` allocates AVCs only,
/// which it does not look for; the other two only free: left out, their
/// events would vanish without a trace.)
pub const LEAVE_OUT_SITES: [&str; 2] = ["__anon_vma_prepare", "anon_vma_fork"];

/// The call-site functions `RMAPWATCH_LEAVE_OUT_SITES` names (comma-separated,
/// each one of [`LEAVE_OUT_SITES`]).
///
/// # Errors
/// A name that is not one of them.
pub fn leave_out_sites(v: &str) -> Result<Vec<&'static str>, EnvError> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(known) = LEAVE_OUT_SITES.iter().find(|&&n| n == name) else {
            return Err(EnvError::LeaveOut(v.to_owned(), name.to_owned()));
        };
        if !out.contains(known) {
            out.push(*known);
        }
    }
    Ok(out)
}

/// Builds the programs' `CONFIG` from symbol ranges and layouts; the sites
/// in `left_out` get no range ([`LEAVE_OUT_ENV`]).
///
/// # Errors
/// A site function or `anon_vma_ctor` missing, or too many ranges.
pub fn program_config(
    kallsyms: &Kallsyms,
    layout: &Layout,
    left_out: &[&str],
) -> Result<Config, EnvError> {
    let mut config = Config {
        kmem_cache_ctor_off: layout.kmem_cache_ctor,
        task_pid_off: layout.task_pid,
        task_tgid_off: layout.task_tgid,
        task_comm_off: layout.task_comm,
        task_signal_off: layout.task_signal,
        signal_live_off: layout.signal_live,
        snap: layout.snap,
        anon_vma_ctor: kallsyms
            .addr("anon_vma_ctor")
            .ok_or_else(|| kallsyms::KallsymsError::Missing("anon_vma_ctor".into()))?,
        lo: u64::MAX,
        ..Config::default()
    };
    let mut n = 0;
    for (site_id, name) in site::NAMES.iter().enumerate() {
        let ranges = kallsyms.ranges(name);
        if ranges.is_empty() {
            return Err(kallsyms::KallsymsError::Missing((*name).to_owned()).into());
        }
        if left_out.contains(name) {
            continue;
        }
        for (start, end) in ranges {
            if n == MAX_SITE_RANGES {
                return Err(EnvError::TooManyRanges(n + 1));
            }
            config.range_start[n] = start;
            config.range_end[n] = end;
            config.range_site[n] = site_id as u32;
            config.lo = config.lo.min(start);
            config.hi = config.hi.max(end);
            n += 1;
        }
    }
    config.nr_ranges = n as u32;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_sites_are_rmap_call_sites_only() {
        assert_eq!(
            leave_out_sites(" __anon_vma_prepare,,anon_vma_fork,__anon_vma_prepare").unwrap(),
            ["__anon_vma_prepare", "anon_vma_fork"]
        );
        assert!(leave_out_sites("").unwrap().is_empty());
        let e = leave_out_sites("__anon_vma_prepare,kmalloc").unwrap_err();
        assert!(matches!(&e, EnvError::LeaveOut(_, n) if n == "kmalloc"));
        assert!(e.to_string().contains("anon_vma_fork"), "{e}");
        // Sites that allocate no anon_vma: their events would just vanish.
        for s in ["anon_vma_clone", "unlink_anon_vmas", "__put_anon_vma"] {
            assert!(leave_out_sites(s).is_err(), "{s}");
        }
        for s in LEAVE_OUT_SITES {
            assert!(site::NAMES.contains(&s));
        }
    }

    #[test]
    fn the_lockdown_mode_is_the_bracketed_one() {
        assert_eq!(
            lockdown_mode("none integrity [confidentiality]\n"),
            Some("confidentiality")
        );
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(lockdown_mode(""), None);
    }
}
