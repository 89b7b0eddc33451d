//! `rmapwatch inspect <PID|COMM>`: one process's VMAs with their anon_vma,
//! AVCs and lazy verdicts, its anon_vma family, and what lazy would save.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
};

use serde::{Deserialize, Serialize};

use crate::{
    design::{self, Designs, Outcome, Share},
    facts::{Facts, Sizes},
    model::{self, Estimate, Options, Pair},
    report::{LazyBlock, LiveBlock},
    snapshot::{Snapshot, Vma},
    text::{Printable, printable_lines},
};

/// JSON schema name.
pub const SCHEMA: &str = "rmapwatch.inspect/1";

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process id.
    Pid(u32),
    /// A process name (comm, up to 15 characters).
    Comm(String),
}

impl Target {
    /// A number is a pid, anything else a comm.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        s.parse()
            .map_or_else(|_| Self::Comm(s.to_owned()), Self::Pid)
    }
}

/// Why the target cannot be inspected (exit code 4).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No process with that pid.
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    /// A kernel thread has no user memory.
    #[error("pid {0} ({1}) is a kernel thread: it has no user memory and no anon_vma")]
    KernelThread(u32, String),
    /// The process went away during the walk.
    #[error("process {0} exited during the snapshot")]
    Exited(u32),
    /// The process exists but the iterator did not walk it.
    #[error(
        "process {0} exists but the kernel's task_vma iterator did not visit it (another pid \
         or user namespace, or its mm is gone)"
    )]
    NotVisible(u32),
    /// No process of that name.
    #[error(
        "no process named {0:?} (a name is the kernel's comm, at most 15 bytes, or the first \
         argument of a process's command line whose comm is its first 15 bytes)"
    )]
    NoMatch(String),
    /// Several processes of that name.
    #[error("{name:?} matches {} processes: {}; give a pid", .candidates.len(), list(.candidates))]
    Ambiguous {
        /// The name.
        name: String,
        /// The candidates: pid and name.
        candidates: Vec<(u32, String)>,
    },
}

fn list(candidates: &[(u32, String)]) -> String {
    candidates
        .iter()
        .map(|(pid, comm)| format!("{pid} ({})", crate::text::printable(comm)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel keeps this many bytes of a process name (`TASK_COMM_LEN`
/// less its NUL).
pub const COMM_BYTES: usize = 15;

/// `name` cut as the kernel cuts a process name: its first 15 bytes (at a
/// character boundary: the kernel cuts bytes, and a comm read back is
/// lossy there anyway).
#[must_use]
pub fn as_comm(name: &str) -> &str {
    if name.len() <= COMM_BYTES {
        return name;
    }
    let mut end = COMM_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// What the system says about a pid outside the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidStatus {
    /// No such process.
    Absent,
    /// A kernel thread, with its name.
    KernelThread(String),
    /// A user process.
    User,
}

/// Resolves a target against a snapshot. `before` / `after` are the pid's
/// status before and after the walk (only used for a pid). A name longer
/// than a comm (an Android package, `com.google.android.gms`, whose comm
/// is `com.google.andr`) matches the processes of that comm whose command
/// line's first argument, or its last path component, is the name;
/// `argv0(pid)` reads it (`None`: unknown, as in a recording: then the
/// comm alone decides).
///
/// # Errors
/// [`TargetError`].
pub fn resolve(
    target: &Target,
    snap: &Snapshot,
    before: &PidStatus,
    after: &PidStatus,
    argv0: &dyn Fn(u32) -> Option<String>,
) -> Result<u32, TargetError> {
    match target {
        Target::Pid(pid) => {
            if snap.procs.contains_key(pid) {
                return Ok(*pid);
            }
            match (before, after) {
                (PidStatus::Absent, _) => Err(TargetError::NoSuchProcess(*pid)),
                (PidStatus::KernelThread(name), _) => {
                    Err(TargetError::KernelThread(*pid, name.clone()))
                }
                (PidStatus::User, PidStatus::Absent) => Err(TargetError::Exited(*pid)),
                (PidStatus::User, _) => Err(TargetError::NotVisible(*pid)),
            }
        }
        Target::Comm(name) => {
            let comm = as_comm(name);
            let long = comm.len() < name.len();
            let candidates: Vec<(u32, String)> = snap
                .procs
                .values()
                .filter(|p| p.comm == comm)
                .filter(|p| {
                    !long
                        || argv0(p.pid).is_none_or(|a| {
                            a == *name || a.rsplit('/').next() == Some(name.as_str())
                        })
                })
                .map(|p| (p.pid, p.comm.clone()))
                .collect();
            match candidates[..] {
                [] => Err(TargetError::NoMatch(name.clone())),
                [(pid, _)] => Ok(pid),
                _ => Err(TargetError::Ambiguous {
                    name: name.clone(),
                    candidates,
                }),
            }
        }
    }
}

/// One VMA in the inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmaReport {
    /// `vm_start`, hex.
    pub start: String,
    /// `vm_end`, hex.
    pub end: String,
    /// `vm_flags`, hex.
    pub flags: String,
    /// rwx and p/s, as in /proc/PID/maps.
    pub perms: String,
    /// Backing file path (from /proc/PID/maps), or null for anonymous.
    pub file: Option<String>,
    /// The anon_vma's address, hex, or null.
    pub anon_vma: Option<String>,
    /// AVCs in its chain today.
    pub avc: u64,
    /// U | L | P | R.
    pub lazy_state: String,
    /// The rule behind the verdict.
    pub rule: model::Rule,
    /// AVCs under lazy.
    pub lazy_avc: u64,
    /// Its verdict under each design (empty when inspected without them).
    #[serde(default)]
    pub designs: Vec<VmaDesign>,
}

/// A VMA under one design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmaDesign {
    /// Objects, bytes and change against today's for this VMA.
    #[serde(flatten)]
    pub share: Share,
    /// Why, in a few words.
    pub verdict: String,
}

/// The designs an inspection shows: the set (for each VMA's verdict),
/// the walk's outcomes (for the process's share), the machine.
#[derive(Clone, Copy)]
pub struct DesignView<'a> {
    /// The designs, as of the walk.
    pub designs: &'a Designs,
    /// Their outcomes at the walk.
    pub outcomes: &'a [Outcome],
    /// The measured machine (slots, page size).
    pub facts: &'a Facts,
}

/// A process sharing anon_vma trees with the inspected one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyMember {
    /// tgid.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// anon_vmas both reference through their chains.
    pub shared_anon_vmas: u64,
}

/// The inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// [`SCHEMA`].
    pub schema: String,
    /// tgid.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// Every VMA.
    pub vmas: Vec<VmaReport>,
    /// Objects it owns today.
    pub live: LiveBlock,
    /// What lazy would hold for it.
    pub lazy: LazyBlock,
    /// Processes sharing its anon_vma trees (fork relatives), most shared first.
    pub family: Vec<FamilyMember>,
    /// Model options.
    pub options: Options,
    /// What the model cannot see.
    pub blind_spots: Vec<String>,
    /// What each design would hold for it (its rules and blind spots are
    /// the report's `designs`).
    #[serde(default)]
    pub designs: Vec<Share>,
}

fn perms(flags: u64) -> String {
    const VM_READ: u64 = 1;
    const VM_WRITE: u64 = 2;
    const VM_EXEC: u64 = 4;
    const VM_SHARED: u64 = 8;
    let bit = |b: u64, c: char| if flags & b != 0 { c } else { '-' };
    let mut s = String::with_capacity(4);
    s.push(bit(VM_READ, 'r'));
    s.push(bit(VM_WRITE, 'w'));
    s.push(bit(VM_EXEC, 'x'));
    s.push(if flags & VM_SHARED != 0 { 's' } else { 'p' });
    s
}

/// Processes sharing anon_vmas with one process: fed every VMA of a walk
/// after the process's own.
#[derive(Debug)]
pub struct Family {
    pid: u32,
    mine: HashSet<u64>,
    shared: BTreeMap<u32, HashSet<u64>>,
}

impl Family {
    /// Sharing with `pid`, whose VMAs are `mine`.
    #[must_use]
    pub fn new(pid: u32, mine: &[Vma]) -> Self {
        Self {
            pid,
            mine: mine
                .iter()
                .flat_map(|v| v.chain.iter().map(|&(_, av)| av))
                .filter(|&av| av != 0)
                .collect(),
            shared: BTreeMap::new(),
        }
    }

    /// One VMA of the walk.
    pub fn vma(&mut self, v: &Vma) {
        if v.tgid == self.pid {
            return;
        }
        for &(_, av) in &v.chain {
            if self.mine.contains(&av) {
                self.shared.entry(v.tgid).or_default().insert(av);
            }
        }
    }

    /// The members, most shared first; `comm` names them.
    #[must_use]
    pub fn finish(self, comm: impl Fn(u32) -> String) -> Vec<FamilyMember> {
        let mut family: Vec<FamilyMember> = self
            .shared
            .into_iter()
            .map(|(p, avs)| FamilyMember {
                pid: p,
                comm: comm(p),
                shared_anon_vmas: avs.len() as u64,
            })
            .collect();
        family.sort_by_key(|f| (std::cmp::Reverse(f.shared_anon_vmas), f.pid));
        family
    }
}

/// What an inspection is made against: the walk's estimate, the mapping
/// paths, the machine's sizes, and the designs when they were run.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    /// The snapshot model's estimate.
    pub est: &'a Estimate,
    /// A VMA's start address -> its file path (from /proc/PID/maps).
    pub paths: &'a HashMap<u64, String>,
    /// The objects' sizes.
    pub sizes: Sizes,
    /// The designs.
    pub designs: Option<DesignView<'a>>,
}

/// Builds the inspection of `pid` from its VMAs and its family.
#[must_use]
pub fn inspect(
    mine: &[Vma],
    comm: String,
    family: Vec<FamilyMember>,
    pid: u32,
    seen: &Seen<'_>,
) -> Inspection {
    let Seen {
        est,
        paths,
        sizes,
        designs,
    } = *seen;
    let vmas = mine
        .iter()
        .map(|v| {
            let verdict = model::verdict(v, est.options);
            let per_design = designs
                .map(|d| {
                    d.designs
                        .verdicts(v, d.facts)
                        .into_iter()
                        .map(|(share, verdict)| VmaDesign { share, verdict })
                        .collect()
                })
                .unwrap_or_default();
            VmaReport {
                start: format!("{:#x}", v.start),
                end: format!("{:#x}", v.end),
                flags: format!("{:#x}", v.flags),
                perms: perms(v.flags),
                file: v
                    .file
                    .then(|| paths.get(&v.start).cloned().unwrap_or_default()),
                anon_vma: (v.anon_vma != 0).then(|| format!("{:#x}", v.anon_vma)),
                avc: v.chain.len() as u64,
                lazy_state: verdict.state.as_str().to_owned(),
                rule: verdict.rule,
                lazy_avc: verdict.lazy_avc,
                designs: per_design,
            }
        })
        .collect();
    let pair: Pair = est.processes.get(&pid).copied().unwrap_or_default();
    Inspection {
        schema: SCHEMA.to_owned(),
        pid,
        comm,
        vmas,
        live: LiveBlock::of(pair.actual, sizes),
        lazy: LazyBlock::of(pair.lazy, pair.actual, sizes),
        family,
        options: est.options,
        blind_spots: model::BLIND_SPOTS.iter().map(|&s| s.to_owned()).collect(),
        designs: designs
            .map(|d| design::shares(d.outcomes, pid))
            .unwrap_or_default(),
    }
}

/// [`inspect`] from a snapshot held in memory (`pid` must be in it).
#[must_use]
pub fn of_snapshot(snap: &Snapshot, pid: u32, seen: &Seen<'_>) -> Inspection {
    let proc_ = snap.procs.get(&pid);
    let mine: Vec<Vma> = proc_
        .map(|p| p.vmas.iter().map(|&i| snap.vmas[i].clone()).collect())
        .unwrap_or_default();
    let mut family = Family::new(pid, &mine);
    snap.vmas.iter().for_each(|v| family.vma(v));
    let comm_of = |p: u32| {
        snap.procs
            .get(&p)
            .map(|x| x.comm.clone())
            .unwrap_or_default()
    };
    let family = family.finish(comm_of);
    inspect(&mine, comm_of(pid), family, pid, seen)
}

impl Inspection {
    /// Text rendering; `all` lists VMAs without an anon_vma too.
    #[must_use]
    pub fn to_text(&self, all: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pid {} ({}): {} VMAs",
            self.pid,
            Printable(&self.comm),
            self.vmas.len()
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<16} | {:>12} | {:>12} | {:>8}",
            "Object", "Actual (KB)", "Lazy (KB)", "Change"
        );
        let row = |s: &mut String, name: &str, a: u64, l: u64, c: Option<f64>| {
            let c = c.map_or_else(|| "-".to_owned(), |c| format!("{c:+.1}%"));
            let _ = writeln!(
                s,
                "{name:<16} | {:>12.1} | {:>12.1} | {c:>8}",
                a as f64 / 1024.0,
                l as f64 / 1024.0
            );
        };
        row(
            &mut s,
            "anon_vma",
            self.live.anon_vma.bytes,
            self.lazy.anon_vma.bytes,
            self.lazy.anon_vma.change_pct,
        );
        row(
            &mut s,
            "anon_vma_chain",
            self.live.anon_vma_chain.bytes,
            self.lazy.anon_vma_chain.bytes,
            self.lazy.anon_vma_chain.change_pct,
        );
        if !self.designs.is_empty() {
            let _ = writeln!(s);
            s.push_str(&design::table(
                self.designs
                    .iter()
                    .map(|d| (d.name.as_str(), &d.holding, d.change_vs_today)),
            ));
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<14} {:<14} {:<4} {:>5} {:>6}  {:<5} {:<13} {:<6} {:<6} file",
            "start", "end", "perm", "AVCs", "lazy", "state", "rule", "cow", "ideal"
        );
        let mut hidden = 0;
        for v in &self.vmas {
            if !all && v.anon_vma.is_none() {
                hidden += 1;
                continue;
            }
            let short = |name: &str| {
                v.designs
                    .iter()
                    .find(|d| d.share.name == name)
                    .map_or("-", |d| match name {
                        "cow_context" if d.share.holding.count("remap_entry") > 0 => "remap",
                        "ideal" if d.verdict.starts_with("unknown") => "?",
                        "ideal" if d.share.holding.count("rmap_vma") > 0 => "rmap",
                        _ => "-",
                    })
            };
            let _ = writeln!(
                s,
                "{:<14} {:<14} {:<4} {:>5} {:>6}  {:<5} {:<13} {:<6} {:<6} {}",
                v.start.trim_start_matches("0x"),
                v.end.trim_start_matches("0x"),
                v.perms,
                v.avc,
                v.lazy_avc,
                v.lazy_state,
                format!("{:?}", v.rule),
                short("cow_context"),
                short("ideal"),
                Printable(v.file.as_deref().unwrap_or(""))
            );
        }
        if hidden > 0 {
            let _ = writeln!(
                s,
                "({hidden} VMAs without an anon_vma not shown; --all shows them)"
            );
        }
        if !self.family.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "anon_vma family (processes sharing its trees through fork):"
            );
            for f in &self.family {
                let _ = writeln!(
                    s,
                    "  {:>8} {:<16} {} shared anon_vmas",
                    f.pid,
                    Printable(&f.comm),
                    f.shared_anon_vmas
                );
            }
        }
        printable_lines(&s).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sim::Sim;

    fn snap_with_comms(names: &[(u32, &str)]) -> Snapshot {
        let mut sim = Sim::default();
        for &(pid, _) in names {
            let v = sim.map(pid, 0x1000);
            sim.fault(v);
        }
        let mut s = sim.snapshot();
        for &(pid, name) in names {
            let p = s.procs.get_mut(&pid).unwrap();
            p.pid = pid;
            p.comm = name.into();
        }
        s
    }

    fn none(_: u32) -> Option<String> {
        None
    }

    #[test]
    fn targets_resolve_or_say_why_not() {
        let s = snap_with_comms(&[(10, "bash"), (11, "bash"), (12, "vim")]);
        let user = PidStatus::User;
        assert_eq!(Target::parse("12"), Target::Pid(12));
        assert_eq!(Target::parse("vim"), Target::Comm("vim".into()));
        assert_eq!(resolve(&Target::Pid(12), &s, &user, &user, &none), Ok(12));
        assert_eq!(
            resolve(&Target::Comm("vim".into()), &s, &user, &user, &none),
            Ok(12)
        );
        assert_eq!(
            resolve(
                &Target::Pid(99),
                &s,
                &PidStatus::Absent,
                &PidStatus::Absent,
                &none
            ),
            Err(TargetError::NoSuchProcess(99))
        );
        assert_eq!(
            resolve(
                &Target::Pid(2),
                &s,
                &PidStatus::KernelThread("kthreadd".into()),
                &user,
                &none
            ),
            Err(TargetError::KernelThread(2, "kthreadd".into()))
        );
        assert_eq!(
            resolve(&Target::Pid(50), &s, &user, &PidStatus::Absent, &none),
            Err(TargetError::Exited(50))
        );
        assert_eq!(
            resolve(&Target::Pid(50), &s, &user, &user, &none),
            Err(TargetError::NotVisible(50))
        );
        assert_eq!(
            resolve(&Target::Comm("emacs".into()), &s, &user, &user, &none),
            Err(TargetError::NoMatch("emacs".into()))
        );
        let amb = resolve(&Target::Comm("bash".into()), &s, &user, &user, &none).unwrap_err();
        assert_eq!(
            amb.to_string(),
            "\"bash\" matches 2 processes: 10 (bash), 11 (bash); give a pid"
        );
    }

    #[test]
    fn a_name_longer_than_a_comm_is_found_by_the_command_line() {
        // Android: the app's comm is its package name's first 15 bytes.
        let s = snap_with_comms(&[
            (20, "com.google.andr"),
            (21, "com.google.andr"),
            (22, "com.google.andr"),
            (23, "surfaceflinger"),
        ]);
        let user = PidStatus::User;
        let argv0 = |pid: u32| {
            Some(
                match pid {
                    20 => "com.google.android.gms",
                    21 => "com.google.android.gms.persistent",
                    22 => "/system/bin/com.google.android.apps.x",
                    _ => "/system/bin/surfaceflinger",
                }
                .to_owned(),
            )
        };
        let find = |name: &str, argv0: &dyn Fn(u32) -> Option<String>| {
            resolve(&Target::Comm(name.into()), &s, &user, &user, argv0)
        };
        assert_eq!(find("com.google.android.gms", &argv0), Ok(20));
        assert_eq!(find("com.google.android.gms.persistent", &argv0), Ok(21));
        // The last path component of the first argument counts too.
        assert_eq!(find("com.google.android.apps.x", &argv0), Ok(22));
        assert_eq!(
            find("com.google.android.nothing", &argv0),
            Err(TargetError::NoMatch("com.google.android.nothing".into()))
        );
        // The comm itself still names all three: ambiguous, listed.
        let amb = find("com.google.andr", &argv0).unwrap_err();
        assert_eq!(
            amb.to_string(),
            "\"com.google.andr\" matches 3 processes: 20 (com.google.andr), 21 \
             (com.google.andr), 22 (com.google.andr); give a pid"
        );
        // Command lines unknown (a recording): the comm decides.
        let amb = find("com.google.android.gms", &none).unwrap_err();
        assert!(
            matches!(amb, TargetError::Ambiguous { ref candidates, .. } if candidates.len() == 3)
        );
        assert_eq!(as_comm("ab"), "ab");
        assert_eq!(as_comm("com.google.android.gms"), "com.google.andr");
        // Cut at a character boundary.
        assert_eq!(as_comm("ééééééééé"), "ééééééé");
    }

    #[test]
    fn family_counts_shared_anon_vmas_through_fork() {
        let mut sim = Sim::default();
        for i in 0..3 {
            let v = sim.map(1, i * 0x10000);
            sim.fault(v);
        }
        sim.fork(1, 2);
        let v = sim.map(3, 0);
        sim.fault(v);
        let snap = sim.snapshot();
        let est = model::estimate(&snap, Options::default());
        let sizes = Sizes {
            anon_vma: 104,
            anon_vma_chain: 64,
        };
        let paths = HashMap::new();
        let i = of_snapshot(
            &snap,
            2,
            &Seen {
                est: &est,
                paths: &paths,
                sizes,
                designs: None,
            },
        );
        assert_eq!(i.family.len(), 1);
        assert_eq!(i.family[0].pid, 1);
        assert_eq!(i.family[0].shared_anon_vmas, 3);
        assert!(
            i.vmas
                .iter()
                .all(|v| v.lazy_state == "P" && v.avc == 2 && v.lazy_avc == 1)
        );
        assert_eq!(i.live.anon_vma.objects, 3);
        assert_eq!(i.lazy.anon_vma.objects, 0);
        assert_eq!(i.lazy.anon_vma_chain.change_pct, Some(-50.0));
        assert!(i.to_text(false).contains("anon_vma family"));
    }
}
