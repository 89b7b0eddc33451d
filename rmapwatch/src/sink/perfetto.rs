//! A Perfetto trace of the run (`export --perfetto`, `record --perfetto`),
//! built by the engine's [`perfetto::Builder`] at every step and written
//! at the end, whatever ended the run.
use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rmapwatch_engine::{engine::Step, perfetto};

use super::{End, Sink, View};
use crate::log;

/// Builds the trace and writes it to its file at the end.
pub struct PerfettoSink {
    path: PathBuf,
    file: Option<File>,
    builder: perfetto::Builder,
    /// Say where the trace went (a recording run; `export` is quiet).
    announce: bool,
    written: bool,
}

impl PerfettoSink {
    /// A trace for the `top` processes, to `file` (made by
    /// [`super::record::create`]).
    #[must_use]
    pub fn new(path: &Path, file: File, top: usize, announce: bool) -> Self {
        Self {
            path: path.to_owned(),
            file: Some(file),
            builder: perfetto::Builder::new(top),
            announce,
            written: false,
        }
    }

    /// Whether the trace was written (a failed run still writes what came
    /// before the failure).
    #[must_use]
    pub fn written(&self) -> bool {
        self.written
    }
}

impl Sink for PerfettoSink {
    fn input(&mut self, input: &rmapwatch_engine::input::Input) -> anyhow::Result<()> {
        // Lock waits long enough for a slice.
        self.builder.input(input);
        Ok(())
    }

    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        self.builder.step(view.engine, step);
        Ok(true)
    }

    fn finish(&mut self, _: &View<'_>, _: End<'_>) -> anyhow::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&self.builder.encode())
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.written = true;
        if self.announce {
            log::info(&format!("wrote the Perfetto trace {}", self.path.display()));
        }
        Ok(())
    }
}
