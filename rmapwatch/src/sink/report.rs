//! The report as text or JSON on stdout: interim reports while the run
//! goes (`--interval`), the final one at its end.
use std::io::Write as _;

use rmapwatch_engine::{engine::Step, report::Report};

use super::{End, Sink, View};

/// When interim reports are printed.
#[derive(Clone, Copy, Debug)]
pub enum Interim {
    /// Never: only the final report.
    Never,
    /// At every frame (a live source ticking at the interval).
    EveryFrame,
    /// At recorded time: at the first frame at or after each multiple of
    /// this many nanoseconds (a recording's replay).
    Every {
        /// The interval.
        ns: u64,
        /// The next multiple due.
        next: u64,
    },
}

impl Interim {
    /// At recorded time, every `interval`.
    #[must_use]
    pub fn recorded(interval: std::time::Duration) -> Self {
        Self::Every {
            ns: u64::try_from(interval.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            next: 0,
        }
    }
}

/// Prints reports.
pub struct ReportSink {
    /// JSON (one object per line) rather than text.
    pub json: bool,
    /// Processes in the text report.
    pub top: usize,
    /// Interim reports.
    pub interim: Interim,
    /// Whether reports carry the link's block (a live run's do; `record`'s
    /// final report is the one a replay of the file gives, to the byte).
    pub link: bool,
    /// Whether the final report is printed when the run failed: a
    /// recording's report of what came before its damage.
    pub on_error: bool,
}

impl ReportSink {
    fn report(&self, view: &View<'_>, done: bool) -> Report {
        if self.link {
            view.report(done)
        } else {
            view.engine.report(done)
        }
    }
}

impl Sink for ReportSink {
    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        if step != Step::Frame {
            return Ok(true);
        }
        let due = match &mut self.interim {
            Interim::Never => false,
            Interim::EveryFrame => true,
            Interim::Every { ns, next } => {
                let now = view.engine.now();
                let due = now >= *next;
                if due {
                    *next = (now / *ns).saturating_add(1).saturating_mul(*ns);
                }
                due
            }
        };
        if due {
            print(&self.report(view, false), self.json, self.top)?;
        }
        Ok(true)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        if end.is_ok() || self.on_error {
            let done = view.engine.ended().is_some();
            print(&self.report(view, done || end.is_ok()), self.json, self.top)?;
        }
        Ok(())
    }
}

/// Prints one report to stdout.
///
/// # Errors
/// stdout is gone.
pub fn print(r: &Report, json: bool, top: usize) -> anyhow::Result<()> {
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
