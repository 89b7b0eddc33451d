//! The live kernel as a source (Linux only): privileges, the running
//! kernel's facts, the attached programs on a thread of their own; and one
//! walk of every process for `inspect`.
use std::{path::Path, time::Duration};

use rmapwatch_engine::{
    facts::Facts,
    hooks::{ProbeMode, SlabPath},
    snapshot::{PagemapRead, Snapshot},
};

use super::running::Source;

/// How to attach.
#[derive(Clone, Debug)]
pub struct LiveArgs {
    /// The BTF to read layouts from.
    pub btf: std::path::PathBuf,
    /// How to attach function hooks.
    pub probe_mode: ProbeMode,
    /// Ring buffer bytes.
    pub ring_bytes: Option<u32>,
    /// Where the slab events come from.
    pub slab_path: SlabPath,
    /// Attach the nest watch (`--watch-nesting`).
    pub watch_nesting: bool,
    /// Keep `CAP_DAC_OVERRIDE` after attaching: an agent that removes its
    /// pushed binary at the end (`--cleanup`).
    pub cleanup: bool,
    /// Whether and how long each walk reads pagemap (the command's default
    /// already chosen).
    pub pagemap: PagemapRead,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use rmapwatch_live::{
        caps,
        kernel::{self, KernelFacts},
        loader::{Attach, Probes},
        source::{Live, LiveOptions},
    };

    /// Checks privileges and reads the running kernel's facts (before
    /// anything is loaded: these errors come first).
    pub fn kernel(btf: &Path, slab: SlabPath) -> anyhow::Result<KernelFacts> {
        kernel::check_privileges()?;
        Ok(KernelFacts::read(btf, slab)?)
    }

    /// Attaches and starts streaming, ticking every `tick`.
    pub fn open(a: &LiveArgs, tick: Duration) -> anyhow::Result<Source> {
        let mut k = kernel(&a.btf, a.slab_path)?;
        k.config.nest_watch = u32::from(a.watch_nesting);
        let live = Live::start(
            &k,
            &LiveOptions {
                probe_mode: a.probe_mode,
                ring_bytes: a.ring_bytes,
                tick,
                pagemap: a.pagemap,
            },
        )?;
        let facts = live.facts().clone();
        // Attached: what the rest of the run does not use goes, for good.
        let keep = caps::after_attach(caps::kernel_has_cap_bpf(), a.cleanup);
        let kept = caps::keep_only(&keep)?;
        crate::log::info(&format!(
            "attached; capabilities kept: {} (the others dropped)",
            caps::names(kept)
        ));
        Source::spawn("live source", "", facts, move |out, requests| {
            live.run(&mut |i| out(i), requests)
        })
    }

    /// One walk of every process's VMAs, into memory (`inspect`), each
    /// VMA's anonymous pages read from pagemap as `pagemap` says, and the
    /// kernel's object sizes.
    pub fn snapshot(btf: &Path, pagemap: PagemapRead) -> anyhow::Result<(Snapshot, Facts)> {
        let k = kernel(btf, SlabPath::Raw)?;
        let mut probes = Probes::load(&k, ProbeMode::Tracepoint, None, Attach::SnapshotOnly)?;
        let mut s = Snapshot::default();
        let mut pages = rmapwatch_live::pagemap::Reader::new(pagemap);
        let first = probes.snapshot_reader()?;
        s.counts = rmapwatch_engine::snapshot::decode_passes(
            first,
            || {
                probes
                    .snapshot_next_pass()
                    .map_err(|e| rmapwatch_engine::snapshot::SnapshotError::Io(format!("{e:#}")))
            },
            |v, comm| {
                let mut v = v.clone();
                pages.fill(std::slice::from_mut(&mut v));
                s.push(&v, comm);
            },
        )?;
        pages.add_to(&mut s.counts);
        let facts = Facts {
            // SAFETY: sysconf has no preconditions.
            page_size: u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096),
            sizes: k.sizes,
            slots: k.slots.clone(),
            pagemap: pagemap.to_string(),
            ..Facts::default()
        };
        Ok((s, facts))
    }

    /// What the system says of a pid (for `inspect`'s errors).
    pub fn pid_status(pid: u32) -> rmapwatch_engine::inspect::PidStatus {
        rmapwatch_live::procfs::pid_status(pid)
    }

    /// A process's mapping paths.
    pub fn map_paths(pid: u32) -> std::collections::HashMap<u64, String> {
        rmapwatch_live::procfs::map_paths(pid)
    }

    /// The first argument of a process's command line.
    pub fn argv0(pid: u32) -> Option<String> {
        rmapwatch_live::procfs::argv0(pid)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Why there is no live source here (exit code 3).
    #[derive(Debug, thiserror::Error)]
    #[error(
        "the live kernel source needs Linux: on this system rmapwatch replays recordings \
         (rmapwatch replay FILE, report --from FILE)"
    )]
    pub struct NoLiveSource;

    pub fn open(_: &LiveArgs, _: Duration) -> anyhow::Result<Source> {
        Err(NoLiveSource.into())
    }

    pub fn snapshot(_: &Path, _: PagemapRead) -> anyhow::Result<(Snapshot, Facts)> {
        Err(NoLiveSource.into())
    }

    pub fn pid_status(_: u32) -> rmapwatch_engine::inspect::PidStatus {
        rmapwatch_engine::inspect::PidStatus::Absent
    }

    pub fn map_paths(_: u32) -> std::collections::HashMap<u64, String> {
        std::collections::HashMap::new()
    }

    pub fn argv0(_: u32) -> Option<String> {
        None
    }
}

pub use imp::*;

/// Prepares the process (allocator policy for big walk tables).
pub fn tune_process() {
    #[cfg(target_os = "linux")]
    rmapwatch_live::source::tune_allocator();
}

impl LiveArgs {
    /// The attach options, as a device's rmapwatch takes them (its BTF is
    /// the device's own, or the one pushed).
    #[must_use]
    pub fn device_args(&self) -> Vec<String> {
        let mode = match self.probe_mode {
            ProbeMode::Auto => "auto",
            ProbeMode::Fentry => "fentry",
            ProbeMode::Kprobe => "kprobe",
            ProbeMode::Tracepoint => "tracepoint",
        };
        let slab = match self.slab_path {
            SlabPath::Auto => "auto",
            SlabPath::Raw => "raw",
            SlabPath::Perf => "perf",
        };
        let mut v: Vec<String> = ["--probe-mode", mode, "--slab-path", slab]
            .map(str::to_owned)
            .into();
        if let Some(b) = self.ring_bytes {
            v.extend(["--ring-buffer-kb".to_owned(), (b / 1024).to_string()]);
        }
        if self.watch_nesting {
            v.push("--watch-nesting".to_owned());
        }
        // Always said: the device's own default is an agent's.
        v.extend(match self.pagemap {
            PagemapRead::Off => vec!["--no-pagemap".to_owned()],
            PagemapRead::Whole => vec!["--pagemap-budget".to_owned(), "none".to_owned()],
            PagemapRead::Within(d) => {
                vec!["--pagemap-budget".to_owned(), d.as_millis().to_string()]
            }
        });
        v
    }
}
