//! The live dashboard. State (`state.rs`) and rendering (`ui.rs`) are plain
//! data and pure functions; this module owns the terminal and the loop,
//! generic over the ratatui backend so tests drive the real loop.
pub mod state;
pub mod ui;

#[cfg(test)]
mod tests;

use std::{
    io::IsTerminal as _,
    sync::mpsc::{Receiver, Sender},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use ratatui::{
    Terminal,
    backend::Backend,
    crossterm::event::{self, Event},
};

use self::state::{Action, App, Update, action_for};

/// Where terminal events come from (crossterm, or a script in tests).
pub trait Events {
    /// The next event, waiting at most `timeout`.
    ///
    /// # Errors
    /// The terminal cannot be read.
    fn next(&mut self, timeout: Duration) -> std::io::Result<Option<Event>>;
}

/// The real terminal.
pub struct Crossterm;

impl Events for Crossterm {
    fn next(&mut self, timeout: Duration) -> std::io::Result<Option<Event>> {
        if event::poll(timeout)? {
            event::read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Runs the UI until the user quits or the collector stops. `detail` tells
/// the collector which process the detail view shows.
///
/// # Errors
/// Drawing or reading the terminal fails.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &mut impl Events,
    updates: &Receiver<Update>,
    detail: &Sender<Option<u32>>,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut last_detail = None;
    loop {
        terminal
            .draw(|f| f.render_widget(&*app, f.area()))
            .map_err(|e| anyhow!("drawing: {e}"))?;
        if app.quit {
            return Ok(());
        }
        let event = events
            .next(Duration::from_millis(50))
            .context("reading the terminal")?;
        if let Some(action) = event.as_ref().and_then(|ev| action_for(ev, app)) {
            app.update(action);
        }
        while let Ok(u) = updates.try_recv() {
            app.update(Action::Update(u));
        }
        if app.detail_pid() != last_detail {
            last_detail = app.detail_pid();
            let _ = detail.send(last_detail);
        }
    }
}

/// Why the live view cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "the live view needs a terminal (stdin and stdout); use `rmapwatch report` (--json) for \
     headless output"
)]
pub struct NotATerminal;

/// Checks that stdin and stdout are terminals.
///
/// # Errors
/// [`NotATerminal`].
pub fn check_terminal() -> Result<(), NotATerminal> {
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(NotATerminal)
    }
}

/// Raw mode and the alternate screen while alive; restored on drop (and by
/// ratatui's panic hook, which restores first and reports second).
pub struct TerminalGuard {
    /// The terminal.
    pub terminal: ratatui::DefaultTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen.
    ///
    /// # Errors
    /// The terminal cannot be set up.
    pub fn new() -> anyhow::Result<Self> {
        let terminal = ratatui::try_init().context("setting up the terminal")?;
        Ok(Self { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
