//! A recording (`rmapwatch.stream/1`): every input of the run, written as
//! the engine gets it, so that a replay of the file gives the same report.
use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use rmapwatch_engine::{
    engine::Step,
    facts::Facts,
    input::Input,
    stream::{Kind, Writer},
};

use super::{End, Sink, Stop, View};
use crate::{error::OutputExists, log, version};

/// Writes the run's inputs to a file.
pub struct RecordSink {
    path: PathBuf,
    w: Writer<BufWriter<File>>,
    started: Instant,
    events: u64,
}

/// Creates an output file: mode 0600, never over an existing file unless
/// `force` ([`OutputExists`], exit code 2).
///
/// # Errors
/// The file exists (without `force`) or cannot be created.
pub fn create(path: &Path, force: bool) -> anyhow::Result<File> {
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

impl RecordSink {
    /// Starts the recording in `file` (made by [`create`]) with the
    /// source's `facts` in its header.
    ///
    /// # Errors
    /// The header cannot be written.
    pub fn new(path: &Path, file: File, facts: &Facts) -> anyhow::Result<Self> {
        let w = Writer::new(
            BufWriter::with_capacity(1 << 20, file),
            Kind::Inputs,
            &version::tool(),
            Some(facts),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            w,
            started: Instant::now(),
            events: 0,
        })
    }
}

impl Sink for RecordSink {
    fn input(&mut self, i: &Input) -> anyhow::Result<()> {
        if let Input::Events { events, .. } = i {
            self.events += events.len() as u64;
        }
        self.w.input(i).context("writing the recording")?;
        // A block at least every tick: a recorder that is killed loses at
        // most a tick's worth.
        if matches!(i, Input::Tick { .. }) {
            self.w.flush().context("writing the recording")?;
        }
        Ok(())
    }

    fn step(&mut self, _: &View<'_>, _: Step) -> anyhow::Result<bool> {
        Ok(true)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        // A failed run's error is the one to say; what was written stays.
        let Ok(stop) = end else {
            let _ = self.w.flush();
            return Ok(());
        };
        self.w.flush().context("writing the recording")?;
        let bytes = self.w.written;
        log::info(&format!(
            "stopped ({stop:?}); programs detached; recorded {} in {:.1} s: {} events, {} walks, \
             {} KiB ({:.1} bytes per event)",
            self.path.display(),
            self.started.elapsed().as_secs_f64(),
            self.events,
            view.engine.walks(),
            bytes / 1024,
            if self.events > 0 {
                bytes as f64 / self.events as f64
            } else {
                0.0
            }
        ));
        if stop == Stop::SourceEnded {
            anyhow::bail!("the source ended before the recording was stopped");
        }
        Ok(())
    }
}
