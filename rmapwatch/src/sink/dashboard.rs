//! The dashboard's feed: the engine's frames, typed, to the UI thread
//! over a channel; at the end the last state and why the run stopped.
use std::sync::mpsc;

use rmapwatch_engine::engine::Step;
use rmapwatch_tui::state::Update;

use super::{End, Sink, Stop, View};

/// Sends frames to the dashboard.
pub struct Feed {
    tx: mpsc::Sender<Update>,
    /// Set by [`Sink::finish`]: the line the dashboard shows at the end.
    pub why: Option<String>,
}

impl Feed {
    /// A feed into `tx`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<Update>) -> Self {
        Self { tx, why: None }
    }

    fn send(&self, view: &View<'_>) {
        let _ = self.tx.send(Update::Frame(Box::new(view.frame())));
    }
}

impl Sink for Feed {
    fn step(&mut self, view: &View<'_>, step: Step) -> anyhow::Result<bool> {
        // Every frame, and everything until the first walk's frame (the
        // seeding walk's state shows at once).
        if step == Step::Frame || view.engine.walks() == 1 && step != Step::End {
            self.send(view);
        }
        Ok(true)
    }

    fn finish(&mut self, view: &View<'_>, end: End<'_>) -> anyhow::Result<()> {
        // The last state stays on the screen until the user quits.
        self.send(view);
        let why = match end {
            Ok(Stop::SourceEnded) => "the recording ended (q quits)".to_owned(),
            Ok(stop) => format!("stopped ({stop:?})"),
            Err(e) => format!("collector failed: {e:#}"),
        };
        let _ = self.tx.send(if matches!(end, Ok(Stop::SourceEnded)) {
            Update::Ended(why.clone())
        } else {
            Update::Stopped(why.clone())
        });
        self.why = Some(why);
        Ok(())
    }
}
