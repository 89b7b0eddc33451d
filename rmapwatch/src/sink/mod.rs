//! Where a run's results go. A [`Sink`] sees every input before the
//! engine does, every step of the engine after it, and the end of the run
//! with its reason, in the manner of ripgrep's `Sink`: one required
//! method, the rest defaulted. The run helper ([`crate::run`]) drives any
//! sink; each sink is one file here (text/JSON reports, a recording, a
//! Perfetto trace, the exporter's publisher, the dashboard's feed), and a
//! command combines them.
use rmapwatch_engine::{
    engine::{Engine, Step},
    input::Input,
    report::Report,
    view::Frame,
};

use crate::link::Link;

pub mod dashboard;
pub mod perfetto;
pub mod publish;
pub mod record;
pub mod report;

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM or SIGHUP.
    Terminate,
    /// The user quit the live view (or a sink asked to stop).
    Quit,
    /// The source ended by itself (the end of a recording, or a link).
    SourceEnded,
}

/// How a run ended: its stop reason, or the error that ended it.
pub type End<'a> = Result<Stop, &'a anyhow::Error>;

/// What a sink sees of the run: the engine, and the link to a remote
/// source (whose block the reports and frames carry).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The engine, after its latest step.
    pub engine: &'a Engine,
    /// The link to a remote agent or a phone, if the source is one.
    pub link: Option<&'a Link>,
}

impl View<'_> {
    /// The engine's report with the link's block.
    #[must_use]
    pub fn report(&self, done: bool) -> Report {
        let mut r = self.engine.report(done);
        r.link = self.link.map(Link::report);
        r
    }

    /// The engine's frame with the link's block.
    #[must_use]
    pub fn frame(&self) -> Frame {
        let mut f = self.engine.frame();
        f.link = self.link.map(Link::report);
        f
    }
}

/// A consumer of a run.
pub trait Sink {
    /// Every input, before the engine applies it (a recording's writer).
    ///
    /// # Errors
    /// The sink failed: the run ends with this error.
    fn input(&mut self, _input: &Input) -> anyhow::Result<()> {
        Ok(())
    }

    /// After every engine step. `Ok(false)` asks the run to stop (one
    /// final walk, as on a signal).
    ///
    /// # Errors
    /// The sink failed: the run ends with this error.
    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool>;

    /// The run ended (`end`): the engine's final state.
    ///
    /// # Errors
    /// The sink failed; this error is the run's, before the run's own.
    fn finish(&mut self, _view: &View<'_>, _end: End<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn input(&mut self, input: &Input) -> anyhow::Result<()> {
        (**self).input(input)
    }

    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        (**self).step(view, step)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        (**self).finish(view, end)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn input(&mut self, input: &Input) -> anyhow::Result<()> {
        (**self).input(input)
    }

    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        (**self).step(view, step)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        (**self).finish(view, end)
    }
}

/// Several sinks as one, in order: every sink sees every input and step;
/// the run stops if any asks; at the end they finish in order and the
/// first error stops the rest (a recording that could not be finished is
/// not reported as if it had been).
impl<S: Sink> Sink for Vec<S> {
    fn input(&mut self, input: &Input) -> anyhow::Result<()> {
        self.iter_mut().try_for_each(|s| s.input(input))
    }

    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        let mut go_on = true;
        for s in self.iter_mut() {
            go_on &= s.step(view, step)?;
        }
        Ok(go_on)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        self.iter_mut().try_for_each(|s| s.finish(view, end))
    }
}
