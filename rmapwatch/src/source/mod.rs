//! Where the inputs come from. One [`Spec`], built once from the flags,
//! names the source of a run: the live kernel here, a recording, a remote
//! agent, or an Android device over adb (one file each). Opening it gives
//! a running [`Source`]; what `inspect` needs of it is [`Spec::inspect`].
use std::{collections::HashMap, path::PathBuf, time::Duration};

use rmapwatch_engine::{
    facts::Facts,
    inspect::{self, PidStatus, Target, TargetError},
    snapshot::Snapshot,
};

pub mod adb;
pub mod live;
pub mod recording;
pub mod remote;
pub mod running;
pub mod start;

pub use recording::Pace;
pub use running::Source;

use crate::error::UsageError;

/// The source of a run.
#[derive(Clone, Debug)]
pub enum Spec {
    /// The running kernel, here (root).
    Live(live::LiveArgs),
    /// A recording (`-`: standard input).
    Recording {
        /// The file.
        path: PathBuf,
        /// How fast it plays.
        pace: Pace,
    },
    /// A remote agent: a command whose stdout is its stream.
    Remote {
        /// The command (`sh -c`).
        cmd: String,
    },
    /// An Android device over adb, running the agent with the attach
    /// options of `live`.
    Adb {
        /// The device and the agent to push.
        adb: adb::AdbArgs,
        /// How the agent attaches there.
        live: live::LiveArgs,
    },
}

/// What one process's inspection needs: one walk, the process found in
/// it, its mapping paths and the object sizes; or nothing, when the
/// device did it all and printed its answer.
pub enum Inspected {
    /// Inspect it here.
    Here {
        /// The walk.
        snap: Snapshot,
        /// The process.
        pid: u32,
        /// Its mappings' paths by start address.
        paths: HashMap<u64, String>,
        /// The measured machine (objects' sizes, slots, page size).
        facts: Box<Facts>,
    },
    /// The device inspected it and its output was passed through.
    Printed,
}

/// What `inspect` asked.
pub struct InspectQuery<'a> {
    /// A pid or a name.
    pub target: &'a str,
    /// JSON output (a device prints it itself).
    pub json: bool,
    /// Every VMA (a device prints it itself).
    pub all: bool,
}

impl Spec {
    /// Whether the source takes requests (a recording does not: its walks
    /// are the ones recorded).
    #[must_use]
    pub const fn answers(&self) -> bool {
        !matches!(self, Self::Recording { .. })
    }

    /// Starts the source: attaches to the kernel, opens the recording, or
    /// starts the agent. `tick`: how often a live source ticks (walks, for
    /// the engines that walk at ticks).
    ///
    /// # Errors
    /// The source cannot start: see each kind's module.
    pub fn open(&self, tick: Duration) -> anyhow::Result<Source> {
        match self {
            Self::Live(a) => live::open(a, tick),
            Self::Recording { path, pace } => recording::open(path, *pace),
            Self::Remote { cmd } => remote::remote(cmd),
            Self::Adb { adb, live } => {
                let mut args = vec![
                    "agent".to_owned(),
                    "--interval".to_owned(),
                    format!("{}", tick.as_secs_f64()),
                ];
                args.extend(live.device_args());
                adb::source(adb, &args)
            }
        }
    }

    /// The walk `inspect` reads for `q.target`, with the process found in
    /// it: a fresh walk of the live kernel, the last walk of a recording;
    /// a device runs the inspection itself.
    ///
    /// # Errors
    /// The target cannot be inspected ([`TargetError`]), the source fails,
    /// or it cannot inspect (a remote agent: [`UsageError`]).
    pub fn inspect(&self, q: &InspectQuery<'_>) -> anyhow::Result<Inspected> {
        let target = Target::parse(q.target);
        match self {
            Self::Adb { adb, live } => {
                // On the device: its /proc, its walk; output passed through.
                let mut args = vec!["inspect".to_owned(), q.target.to_owned()];
                args.extend(q.json.then(|| "--json".to_owned()));
                args.extend(q.all.then(|| "--all".to_owned()));
                args.extend(live.device_args());
                adb::run_to_end(adb, "inspect", &args)?;
                Ok(Inspected::Printed)
            }
            Self::Remote { cmd } => Err(UsageError(format!(
                "inspect reads the processes where they run: run `rmapwatch inspect {}` on the \
                 machine that `{cmd}` reaches",
                q.target
            ))
            .into()),
            Self::Recording { path, .. } => {
                let (snap, mut paths, facts) = recording::last_walk(path)?;
                // In a recording, a pid that is not in its last walk was
                // not there (or was a kernel thread): there is no /proc.
                let pid = inspect::resolve(
                    &target,
                    &snap,
                    &PidStatus::Absent,
                    &PidStatus::Absent,
                    &|_| None,
                )?;
                let paths = paths.remove(&pid).unwrap_or_default();
                Ok(Inspected::Here {
                    snap,
                    pid,
                    paths,
                    facts: Box::new(facts),
                })
            }
            Self::Live(a) => {
                let status = |t: &Target| match t {
                    Target::Pid(pid) => live::pid_status(*pid),
                    Target::Comm(_) => PidStatus::User,
                };
                let before = status(&target);
                // Fail before loading anything when the answer is known.
                if let Target::Pid(pid) = target {
                    match &before {
                        PidStatus::Absent => return Err(TargetError::NoSuchProcess(pid).into()),
                        PidStatus::KernelThread(name) => {
                            return Err(TargetError::KernelThread(pid, name.clone()).into());
                        }
                        PidStatus::User => {}
                    }
                }
                let (snap, facts) = live::snapshot(&a.btf, a.pagemap)?;
                let after = status(&target);
                let pid = inspect::resolve(&target, &snap, &before, &after, &live::argv0)?;
                Ok(Inspected::Here {
                    paths: live::map_paths(pid),
                    snap,
                    pid,
                    facts: Box::new(facts),
                })
            }
        }
    }
}
