//! `rmapwatch inspect PID|COMM`: from one walk of the running system, or
//! from the last walk of a recording.
use std::{
    collections::HashMap,
    io::{BufReader, Write as _},
    path::Path,
};

use rmapwatch_engine::{
    facts::Sizes,
    input::Input,
    inspect::{self, PidStatus, Target, TargetError},
    model,
    snapshot::Snapshot,
    stream::{Kind, Reader},
};

use crate::{BadInput, Common, live};

/// The command.
///
/// # Errors
/// The target cannot be inspected ([`TargetError`]), loading fails, or the
/// recording is unusable.
pub fn inspect(
    c: &Common,
    target: &str,
    json: bool,
    all: bool,
    from: Option<&Path>,
) -> anyhow::Result<()> {
    if let (Some(a), None) = (&c.adb, from) {
        // On the device: its /proc, its walk; output passed through.
        let mut args = vec!["inspect".to_owned(), target.to_owned()];
        args.extend(json.then(|| "--json".to_owned()));
        args.extend(all.then(|| "--all".to_owned()));
        args.extend(live::device_args(&c.live));
        return crate::adb::run_to_end(a, "inspect", &args);
    }
    let target = Target::parse(target);
    let (snap, pid, paths, sizes) = match from {
        Some(path) => {
            let (snap, paths, sizes) = last_walk(path)?;
            // In a recording, a pid that is not in its last walk was not
            // there (or was a kernel thread): there is no /proc to ask.
            let pid = inspect::resolve(&target, &snap, &PidStatus::Absent, &PidStatus::Absent)?;
            let paths = paths.get(&pid).cloned().unwrap_or_default();
            (snap, pid, paths, sizes)
        }
        None => {
            let status = |t: &Target| match t {
                Target::Pid(pid) => live::pid_status(*pid),
                Target::Comm(_) => PidStatus::User,
            };
            let before = status(&target);
            // Fail before loading anything when the answer is already known.
            if let Target::Pid(pid) = target {
                match &before {
                    PidStatus::Absent => return Err(TargetError::NoSuchProcess(pid).into()),
                    PidStatus::KernelThread(name) => {
                        return Err(TargetError::KernelThread(pid, name.clone()).into());
                    }
                    PidStatus::User => {}
                }
            }
            let (snap, sizes) = live::snapshot(&c.live.btf)?;
            let after = status(&target);
            let pid = inspect::resolve(&target, &snap, &before, &after)?;
            (snap, pid, live::map_paths(pid), sizes)
        }
    };
    let est = model::estimate(&snap, c.model);
    let i = inspect::of_snapshot(&snap, &est, pid, &paths, sizes);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &i)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", i.to_text(all))?;
    }
    out.flush()?;
    Ok(())
}

/// Mapping paths by process.
type Paths = HashMap<u32, HashMap<u64, String>>;

/// The last complete walk of a recording, the mapping paths sent with it,
/// and the recorded object sizes.
fn last_walk(path: &Path) -> anyhow::Result<(Snapshot, Paths, Sizes)> {
    let bad = |source| BadInput {
        path: path.display().to_string(),
        source,
    };
    let f = crate::file::open_input(path)?;
    let mut r = Reader::open(BufReader::new(f), Kind::Inputs).map_err(bad)?;
    let sizes = r
        .header()
        .facts
        .as_ref()
        .map(|f| f.sizes)
        .unwrap_or_default();
    let mut last: Option<(Snapshot, Paths)> = None;
    let mut cur: Option<(Snapshot, Paths)> = None;
    let mut comms: HashMap<u32, String> = HashMap::new();
    loop {
        let input = match r.next_input() {
            Ok(Some(i)) => i,
            Ok(None) => break,
            // A damaged or cut recording: its last whole walk still counts.
            Err(e) if last.is_some() => {
                crate::log::warn(&format!(
                    "{}: {e}; inspecting its last whole walk",
                    path.display()
                ));
                break;
            }
            Err(e) => return Err(bad(e).into()),
        };
        match input {
            Input::WalkBegin { .. } => {
                cur = Some((Snapshot::default(), HashMap::new()));
                comms.clear();
            }
            Input::WalkVmas { comms: c, vmas } => {
                comms.extend(c);
                if let Some((s, _)) = &mut cur {
                    for v in &vmas {
                        let comm = rmapwatch_engine::event::Comm::new(
                            comms.get(&v.tgid).map_or("", String::as_str),
                        );
                        s.push(v, &comm.0);
                    }
                }
            }
            Input::MapPaths { pid, paths } => {
                if let Some((_, p)) = &mut cur {
                    p.insert(pid, paths.into_iter().collect());
                }
            }
            Input::WalkEnd { counts, error, .. } => {
                if let Some((mut s, p)) = cur.take()
                    && error.is_none()
                {
                    s.counts = counts;
                    last = Some((s, p));
                }
            }
            _ => {}
        }
    }
    let (snap, paths) = last.ok_or_else(|| {
        anyhow::anyhow!("{}: the recording holds no complete walk", path.display())
    })?;
    Ok((snap, paths, sizes))
}
