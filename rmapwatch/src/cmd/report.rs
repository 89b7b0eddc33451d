//! `rmapwatch report` (live, remote, over adb, or from a recording),
//! `rmapwatch record` and `rmapwatch export`: the headless commands, each
//! a source run into sinks.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use rmapwatch_engine::{design, engine};

use crate::{
    error::UsageError,
    log,
    run::{self, Until},
    sink::{
        Sink,
        perfetto::PerfettoSink,
        record::{RecordSink, create},
        report::{Interim, ReportSink},
    },
    source::Spec,
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
}

fn counting(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "until Ctrl-C".to_owned(),
        |d| format!("for {:.1} s", d.as_secs_f64()),
    )
}

/// The `report` command: `spec` counted until `--duration`, a signal or
/// its end, then reported; a recording is reported at recorded time.
///
/// # Errors
/// Loading, attaching, the source or the output fails.
pub fn report(spec: &Spec, model: design::Options, o: &Opts) -> anyhow::Result<()> {
    let replay = !spec.answers();
    let mut sink = ReportSink {
        json: o.json,
        top: o.top,
        interim: match o.interval {
            None => Interim::Never,
            Some(i) if replay => Interim::recorded(i),
            Some(_) => Interim::EveryFrame,
        },
        link: true,
        // What came before any damage is reported, then the damage.
        on_error: replay,
    };
    let (opts, until) = if replay {
        (engine::Options::replay(model, false), Until::default())
    } else {
        (
            engine::Options::headless(model, o.interval.is_some()),
            Until {
                duration: o.duration,
                control: None,
            },
        )
    };
    let tick = o.interval.unwrap_or(Duration::from_secs(1));
    let stop = run::run(spec, tick, opts, until, &mut sink, |_| {
        if !replay {
            log::info(&format!("attached; counting {}", counting(o.duration)));
        }
    })?;
    if !replay {
        log::info(&format!("stopped ({stop:?}); programs detached"));
    }
    Ok(())
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

/// The `record` command: the live session of `report`, every input teed
/// to the file; at the end one more walk with every process's mapping
/// paths (for `inspect --from`), and the report a replay of the file
/// gives, to the byte.
///
/// # Errors
/// The file exists (without `force`), loading or attaching fails, or
/// writing fails.
pub fn record(spec: &Spec, model: design::Options, r: &RecordOpts) -> anyhow::Result<()> {
    let path = r.path.as_path();
    if r.perfetto.as_deref() == Some(path) {
        anyhow::bail!(UsageError(
            "--perfetto needs a file of its own, not the recording's".into()
        ));
    }
    let file = create(path, r.force)?;
    let trace = match &r.perfetto {
        Some(p) => match create(p, r.force) {
            Ok(f) => Some(PerfettoSink::new(p, f, r.top, true)),
            Err(e) => {
                // Leave no empty recording behind either.
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        },
        None => None,
    };
    let mut runner = run::Runner::with_signals()?;
    // Stopped or failed before the source started: no empty files left.
    let remove = || {
        let _ = std::fs::remove_file(path);
        if let Some(p) = &r.perfetto {
            let _ = std::fs::remove_file(p);
        }
    };
    let mut src = match runner.open(spec, r.interval, None) {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => {
            remove();
            return Ok(());
        }
        Err(e) => {
            remove();
            return Err(e);
        }
    };
    let recording = RecordSink::new(path, file, &src.facts)?;
    log::info(&format!(
        "attached; recording to {} {}",
        path.display(),
        counting(r.duration)
    ));
    // The trace of what was recorded is written whatever ended the run;
    // the recording is finished next, then the report printed.
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(t) = trace {
        sinks.push(Box::new(t));
    }
    sinks.push(Box::new(recording));
    sinks.push(Box::new(ReportSink {
        json: r.json,
        top: r.top,
        interim: Interim::Never,
        link: false,
        on_error: false,
    }));
    runner.run(
        &mut src,
        engine::Options::dashboard(model),
        Until {
            duration: r.duration,
            control: None,
        },
        &mut sinks,
    )?;
    Ok(())
}

/// What `export` was asked.
pub struct ExportOpts {
    /// The Perfetto trace to write.
    pub perfetto: PathBuf,
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
pub fn export(spec: &Spec, model: design::Options, o: &ExportOpts) -> anyhow::Result<()> {
    let Spec::Recording { path: from, .. } = spec else {
        anyhow::bail!(UsageError("export reads a recording: --from FILE".into()));
    };
    // `--force` over the recording itself would truncate what it reads.
    if let (Ok(a), Ok(b)) = (o.perfetto.canonicalize(), from.canonicalize())
        && a == b
    {
        anyhow::bail!(UsageError(format!(
            "--perfetto {} is the recording itself: write the trace elsewhere",
            o.perfetto.display()
        )));
    }
    let out = create(&o.perfetto, o.force)?;
    let mut runner = run::Runner::to_the_end()?;
    let mut src = match spec.open(Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => {
            // Nothing to write: leave nothing.
            drop(out);
            let _ = std::fs::remove_file(&o.perfetto);
            return Err(e);
        }
    };
    let mut sink = PerfettoSink::new(&o.perfetto, out, o.top, false);
    let result = runner.run(
        &mut src,
        engine::Options::replay(model, false),
        Until::default(),
        &mut sink,
    );
    match result {
        Err(e) if sink.written() => Err(e)
            .with_context(|| format!("{} holds the trace up to the damage", o.perfetto.display())),
        r => r.map(|_| ()),
    }
}
