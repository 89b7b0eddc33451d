//! The exporter's publisher (`serve`): every frame's report, whole, handed
//! to the HTTP side, which encodes the latest one at each scrape (so a
//! scrape never waits for a walk, and never sees half of a re-seed).
use rmapwatch_engine::{engine::Step, report::Report};

use super::{Sink, View};

/// Calls its function with the report of every frame (with the link's
/// block).
pub struct Publish<F: FnMut(Report)>(pub F);

impl<F: FnMut(Report)> Sink for Publish<F> {
    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        if step == Step::Frame {
            (self.0)(view.report(false));
        }
        Ok(true)
    }
}
