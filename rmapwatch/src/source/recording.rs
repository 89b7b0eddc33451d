//! A recording as a source (a file, or standard input): its inputs
//! replayed at the recorded pace or as fast as they decode, and its last
//! walk for `inspect --from`.
use std::{
    collections::HashMap,
    io::{BufReader, Read},
    path::Path,
    time::{Duration, Instant},
};

use rmapwatch_engine::{
    facts::Facts,
    input::{Input, Nanos, Request},
    snapshot::Snapshot,
    stream::{Kind, Reader, StreamError},
};
use tokio::sync::mpsc::error::TryRecvError;

use super::running::Source;
use crate::{error::BadInput, log};

/// How fast a recording plays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as it decodes.
    Fast,
    /// At the recorded pace times this factor.
    Recorded(f64),
}

/// Opens a recording, or standard input for `-`.
///
/// # Errors
/// [`BadInput`]: the file cannot be opened.
pub fn open_input(path: &Path) -> Result<Box<dyn Read + Send>, BadInput> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = std::fs::File::open(path).map_err(|source| BadInput {
        path: path.display().to_string(),
        source: StreamError::Io { offset: 0, source },
    })?;
    Ok(Box::new(f))
}

/// Opens a recording (its header is checked at once).
///
/// # Errors
/// The file cannot be opened, or is not a rmapwatch stream ([`BadInput`]).
pub fn open(path: &Path, pace: Pace) -> anyhow::Result<Source> {
    let name = path.display().to_string();
    let reader = Reader::open(
        BufReader::with_capacity(1 << 20, open_input(path)?),
        Kind::Inputs,
    )
    .map_err(|source| BadInput {
        path: name.clone(),
        source,
    })?;
    let facts = reader.header().facts.clone().unwrap_or_default();
    Source::spawn("replay", "recorded: ", facts, move |out, mut requests| {
        play(reader, out, &mut requests, pace)
            .map_err(|source| BadInput { path: name, source }.into())
    })
}

/// The replay's clock: the recording's time, paced, minus pauses.
struct Clock {
    speed: Option<f64>,
    started: Instant,
    paused_for: Duration,
    paused_at: Option<Instant>,
    first_t: Option<Nanos>,
}

impl Clock {
    fn pause(&mut self, paused: bool) {
        match (paused, self.paused_at) {
            (true, None) => self.paused_at = Some(Instant::now()),
            (false, Some(at)) => {
                self.paused_for += at.elapsed();
                self.paused_at = None;
            }
            _ => {}
        }
    }

    /// How long until the input of time `t` is due.
    fn wait_for(&mut self, t: Nanos) -> Duration {
        let Some(speed) = self.speed else {
            return Duration::ZERO;
        };
        let t0 = *self.first_t.get_or_insert(t);
        let due = Duration::try_from_secs_f64(t.saturating_sub(t0) as f64 / 1e9 / speed)
            .unwrap_or(Duration::MAX);
        due.saturating_sub(self.started.elapsed().saturating_sub(self.paused_for))
    }
}

/// Feeds a recording's inputs, paced; a [`Request::Stop`] (or the engine
/// going away) ends it early, with an end; [`Request::Pause`] holds it.
/// Other requests are ignored: a recording cannot walk again.
fn play(
    mut reader: Reader<impl Read>,
    out: &mut dyn FnMut(Input) -> bool,
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<Request>,
    pace: Pace,
) -> Result<(), StreamError> {
    let mut clock = Clock {
        speed: match pace {
            Pace::Fast => None,
            Pace::Recorded(s) => Some(s),
        },
        started: Instant::now(),
        paused_for: Duration::ZERO,
        paused_at: None,
        first_t: None,
    };
    let mut last_t: Nanos = 0;
    let stop = |out: &mut dyn FnMut(Input) -> bool, t: Nanos| {
        out(Input::End {
            t,
            reason: "replay stopped".into(),
        });
    };
    loop {
        let Some(input) = reader.next_input()? else {
            return Ok(());
        };
        loop {
            loop {
                match requests.try_recv() {
                    Ok(Request::Pause { paused }) => clock.pause(paused),
                    Ok(Request::Stop) | Err(TryRecvError::Disconnected) => {
                        stop(out, last_t);
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => break,
                }
            }
            let wait = if clock.paused_at.is_some() {
                Duration::from_millis(20)
            } else {
                input.time().map_or(Duration::ZERO, |t| clock.wait_for(t))
            };
            if wait.is_zero() {
                break;
            }
            // In short steps, to answer a pause or a stop in time.
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        if let Some(t) = input.time() {
            last_t = t;
        }
        if !out(input) {
            return Ok(());
        }
    }
}

/// Mapping paths by process.
pub type Paths = HashMap<u32, HashMap<u64, String>>;

/// The last complete walk of a recording, the mapping paths sent with it,
/// and the recorded object sizes (`inspect --from`).
///
/// # Errors
/// The file is not a recording ([`BadInput`]), or holds no complete walk.
pub fn last_walk(path: &Path) -> anyhow::Result<(Snapshot, Paths, Facts)> {
    let bad = |source| BadInput {
        path: path.display().to_string(),
        source,
    };
    let f = open_input(path)?;
    let mut r = Reader::open(BufReader::new(f), Kind::Inputs).map_err(bad)?;
    let facts = r.header().facts.clone().unwrap_or_default();
    let mut last: Option<(Snapshot, Paths)> = None;
    let mut cur: Option<(Snapshot, Paths)> = None;
    let mut comms: HashMap<u32, String> = HashMap::new();
    loop {
        let input = match r.next_input() {
            Ok(Some(i)) => i,
            Ok(None) => break,
            // A damaged or cut recording: its last whole walk still counts.
            Err(e) if last.is_some() => {
                log::warn(&format!(
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
            Input::WalkVmas { comms: c, vmas, .. } => {
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
    Ok((snap, paths, facts))
}
