//! Facts about the running kernel: privileges, BTF layouts, symbol ranges.
//! Everything here is read at start-up, before any program is loaded.
pub mod btf;
pub mod kallsyms;

use std::path::Path;

use rmapwatch_common::{Config, MAX_SITE_RANGES, site};
use rmapwatch_engine::facts::{KernelId, Sizes};

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
    /// The hooks' function names (and aliases) this kernel has: all that
    /// is asked of kallsyms after start-up (the whole table is ~10 MiB).
    pub hook_symbols: std::collections::BTreeSet<String>,
    /// The programs' global configuration.
    pub config: Config,
    /// Per-object sizes for KB figures.
    pub sizes: Sizes,
}

impl KernelFacts {
    /// Reads BTF and kallsyms (after [`check_privileges`]).
    ///
    /// # Errors
    /// See [`EnvError`].
    pub fn read(btf_path: &Path) -> Result<Self, EnvError> {
        let btf = KernelBtf::open(btf_path)?;
        let layout = Layout::read(&btf)?;
        let kallsyms = Kallsyms::read()?;
        let config = program_config(&kallsyms, &layout)?;
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
        Ok(Self {
            sizes,
            id: current_id(),
            btf_path: btf_path.to_owned(),
            layout,
            hook_symbols: rmapwatch_engine::hooks::HOOKS
                .iter()
                .flat_map(|h| std::iter::once(h.name).chain(h.aliases.iter().copied()))
                .filter(|s| kallsyms.has(s))
                .map(str::to_owned)
                .collect(),
            config,
        })
    }
}

/// Builds the programs' `CONFIG` from symbol ranges and layouts.
///
/// # Errors
/// A site function or `anon_vma_ctor` missing, or too many ranges.
pub fn program_config(kallsyms: &Kallsyms, layout: &Layout) -> Result<Config, EnvError> {
    let mut config = Config {
        kmem_cache_ctor_off: layout.kmem_cache_ctor,
        task_pid_off: layout.task_pid,
        task_tgid_off: layout.task_tgid,
        task_comm_off: layout.task_comm,
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
