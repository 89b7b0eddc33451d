//! `rmapwatch report` (live, remote, or from a recording) and `rmapwatch
//! record`.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rmapwatch_engine::{
    engine::{self, Engine, Step},
    input::Input,
    perfetto,
    report::Report,
    stream::{Kind, Writer},
};

use crate::{
    Common, OutputExists, UsageError,
    drive::{Drive, Signals, Stop, drive},
    file, live, log,
};

/// What `report` was asked.
pub struct Opts {
    /// How long to count.
    pub duration: Option<Duration>,
    /// Interim reports.
    pub interval: Option<Duration>,
    /// JSON output.
    pub json: bool,
    /// Processes in the text report.
    pub top: usize,
    /// A recording to report on.
    pub from: Option<PathBuf>,
}

fn counting(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "until Ctrl-C".to_owned(),
        |d| format!("for {:.1} s", d.as_secs_f64()),
    )
}

fn print(r: &Report, json: bool, top: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", r.to_text(top))?;
    }
    out.flush()?;
    Ok(())
}

/// The engine of a recording's replay: its walks are the ones recorded.
fn replay_engine(c: &Common) -> Engine {
    Engine::new(engine::Options {
        model: c.model,
        walk_on_tick: false,
        walk_budget: None,
        source_answers: false,
        retention: engine::Retention::default(),
    })
}

/// The engine of a live source (the kernel here, a remote agent): it asks
/// for walks on ticks when `walk_on_tick`, spending at most `walk_budget`
/// of the time walking. Exited processes are folded after the default
/// retention (bounded state for runs of days).
pub fn live_engine(c: &Common, walk_on_tick: bool, walk_budget: Option<f64>) -> Engine {
    Engine::new(engine::Options {
        model: c.model,
        walk_on_tick,
        walk_budget,
        source_answers: true,
        retention: engine::Retention::default(),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The `report` command.
///
/// # Errors
/// Loading, attaching, the source or the output fails.
pub fn report(c: &Common, o: &Opts) -> anyhow::Result<()> {
    let rt = runtime()?;
    if let Some(path) = &o.from {
        // A recording: its walks are the ones recorded.
        let mut src = file::open(path, file::Pace::Fast)?;
        let prefix = src.prefix;
        let mut engine = replay_engine(c);
        // Interim reports at recorded time: at the first frame at or after
        // each multiple of the interval.
        let every = o
            .interval
            .map(|i| u64::try_from(i.as_nanos()).unwrap_or(u64::MAX).max(1));
        let mut next = 0u64;
        let result = rt.block_on(drive(
            &mut src,
            &mut engine,
            Drive::replay(prefix),
            |e, step| {
                if let Some(every) = every
                    && step == Step::Frame
                    && e.now() >= next
                {
                    next = (e.now() / every).saturating_add(1).saturating_mul(every);
                    print(&e.report(false), o.json, o.top)?;
                }
                Ok(())
            },
        ));
        // What came before any damage is reported, then the damage.
        print(&engine.report(engine.ended().is_some()), o.json, o.top)?;
        return result.map(|_| ());
    }
    let mut signals = rt.block_on(async { Signals::install() })?;
    let mut src = live::source(c, o.interval.unwrap_or(Duration::from_secs(1)))?;
    let prefix = src.prefix;
    let link = src.link.clone();
    log::info(&format!("attached; counting {}", counting(o.duration)));
    let mut engine = live_engine(c, o.interval.is_some(), None);
    let stop = rt.block_on(drive(
        &mut src,
        &mut engine,
        Drive {
            duration: o.duration,
            signals: Some(&mut signals),
            control: None,
            tee: None,
            notice_prefix: prefix,
        },
        |e, step| {
            if step == Step::Frame && o.interval.is_some() {
                let mut r = e.report(false);
                r.link = link.as_ref().map(|l| l.report());
                print(&r, o.json, o.top)?;
            }
            Ok(())
        },
    ))?;
    log::info(&format!("stopped ({stop:?}); programs detached"));
    let mut r = engine.report(true);
    r.link = link.as_ref().map(|l| l.report());
    print(&r, o.json, o.top)
}

/// What `record` was asked.
pub struct RecordOpts {
    /// The file.
    pub path: PathBuf,
    /// How long.
    pub duration: Option<Duration>,
    /// Walk and tick interval.
    pub interval: Duration,
    /// Overwrite.
    pub force: bool,
    /// The final report as JSON.
    pub json: bool,
    /// Processes in the text report and with tracks in the Perfetto trace.
    pub top: usize,
    /// Also write the run's Perfetto trace here.
    pub perfetto: Option<PathBuf>,
}

/// Creates the recording: mode 0600, never over an existing file unless
/// `force`.
fn create(path: &Path, force: bool) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OutputExists(path.display().to_string()).into()
        } else {
            anyhow::Error::from(e).context(format!("creating {}", path.display()))
        }
    })
}

/// The `record` command: the live session of `report`, every input teed
/// to the file; at the end one more walk with every process's mapping
/// paths (for `inspect --from`).
///
/// # Errors
/// The file exists (without `force`), loading or attaching fails, or
/// writing fails.
pub fn record(c: &Common, r: &RecordOpts) -> anyhow::Result<()> {
    let RecordOpts {
        path,
        duration,
        interval,
        force,
        json,
        top,
        perfetto,
    } = r;
    let (path, duration, interval, force) = (path.as_path(), *duration, *interval, *force);
    if perfetto.as_deref() == Some(path) {
        anyhow::bail!(UsageError(
            "--perfetto needs a file of its own, not the recording's".into()
        ));
    }
    let file = create(path, force)?;
    let trace = match perfetto {
        Some(p) => match create(p, force) {
            Ok(f) => Some((p.as_path(), f)),
            Err(e) => {
                // Leave no empty recording behind either.
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        },
        None => None,
    };
    let mut builder = trace.as_ref().map(|_| perfetto::Builder::new(*top));
    let rt = runtime()?;
    let mut signals = rt.block_on(async { Signals::install() })?;
    let mut src = live::source(c, interval)?;
    let prefix = src.prefix;
    let mut w = Writer::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        Kind::Inputs,
        &live::tool(),
        Some(&src.facts),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    log::info(&format!(
        "attached; recording to {} {}",
        path.display(),
        counting(duration)
    ));
    let mut engine = live_engine(c, true, Some(0.05));
    let started = Instant::now();
    let mut events = 0u64;
    let mut tee = |i: &Input| -> anyhow::Result<()> {
        if let Input::Events { events: e, .. } = i {
            events += e.len() as u64;
        }
        w.input(i).context("writing the recording")?;
        // A block at least every tick: a recorder that is killed loses at
        // most a tick's worth.
        if matches!(i, Input::Tick { .. }) {
            w.flush().context("writing the recording")?;
        }
        Ok(())
    };
    let stop = rt.block_on(drive(
        &mut src,
        &mut engine,
        Drive {
            duration,
            signals: Some(&mut signals),
            control: None,
            tee: Some(&mut tee),
            notice_prefix: prefix,
        },
        |e, step| {
            if let Some(b) = builder.as_mut() {
                b.step(e, step);
            }
            Ok(())
        },
    ));
    // The trace of what was recorded, whatever ended the run.
    if let (Some((p, f)), Some(b)) = (trace, &builder) {
        write_trace(p, f, b)?;
        log::info(&format!("wrote the Perfetto trace {}", p.display()));
    }
    let stop = stop?;
    w.flush().context("writing the recording")?;
    let bytes = w.written;
    log::info(&format!(
        "stopped ({stop:?}); programs detached; recorded {} in {:.1} s: {events} events, {} walks, \
         {} KiB ({:.1} bytes per event)",
        path.display(),
        started.elapsed().as_secs_f64(),
        engine.walks(),
        bytes / 1024,
        if events > 0 {
            bytes as f64 / events as f64
        } else {
            0.0
        }
    ));
    if stop == Stop::SourceEnded {
        anyhow::bail!("the source ended before the recording was stopped");
    }
    // The report a replay of the file gives, to the byte.
    print(&engine.report(true), *json, *top)
}

/// Writes the encoded trace to `file` (created by [`create`]).
fn write_trace(path: &Path, file: std::fs::File, b: &perfetto::Builder) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&b.encode())
        .and_then(|()| w.flush())
        .with_context(|| format!("writing {}", path.display()))
}

/// What `export` was asked.
pub struct ExportOpts {
    /// The Perfetto trace to write.
    pub perfetto: PathBuf,
    /// The recording (`-`: standard input).
    pub from: PathBuf,
    /// Processes with tracks of their own.
    pub top: usize,
    /// Overwrite the trace if it exists.
    pub force: bool,
}

/// The `export` command: a recording replayed into a Perfetto trace, as
/// `record --perfetto` writes it during the run.
///
/// # Errors
/// The trace exists (without `force`) or cannot be written; the recording
/// is not one (then no trace is left), or is damaged or truncated (then
/// the trace holds what came before the damage).
pub fn export(c: &Common, o: &ExportOpts) -> anyhow::Result<()> {
    let rt = runtime()?;
    // `--force` over the recording itself would truncate what it reads.
    if let (Ok(a), Ok(b)) = (o.perfetto.canonicalize(), o.from.canonicalize())
        && a == b
    {
        anyhow::bail!(crate::UsageError(format!(
            "--perfetto {} is the recording itself: write the trace elsewhere",
            o.perfetto.display()
        )));
    }
    let out = create(&o.perfetto, o.force)?;
    let mut src = match file::open(&o.from, file::Pace::Fast) {
        Ok(s) => s,
        Err(e) => {
            // Nothing to write: leave nothing.
            drop(out);
            let _ = std::fs::remove_file(&o.perfetto);
            return Err(e);
        }
    };
    let prefix = src.prefix;
    let mut engine = replay_engine(c);
    let mut builder = perfetto::Builder::new(o.top);
    let result = rt.block_on(drive(
        &mut src,
        &mut engine,
        Drive::replay(prefix),
        |e, step| {
            builder.step(e, step);
            Ok(())
        },
    ));
    write_trace(&o.perfetto, out, &builder)?;
    result
        .map(|_| ())
        .with_context(|| format!("{} holds the trace up to the damage", o.perfetto.display()))
}
