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
        // On a terminal that hung up (ssh dropped, tmux killed) crossterm's
        // reader loops on end-of-file and never returns: check the tty for a
        // hangup before every entry into crossterm. Keys crossterm already
        // read and queued come out first; only then wait on the tty here.
        if tty_ready(Duration::ZERO)? && event::poll(Duration::ZERO)? {
            return event::read().map(Some);
        }
        if event::poll(Duration::ZERO)? {
            return event::read().map(Some);
        }
        if tty_ready(timeout)? && event::poll(Duration::ZERO)? {
            return event::read().map(Some);
        }
        Ok(None)
    }
}

/// Whether stdin has input within `timeout`; an error once the terminal
/// hung up.
fn tty_ready(timeout: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the terminal hung up",
        ));
    }
    Ok(pfd.revents & libc::POLLIN != 0)
}

/// What the UI tells the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The process the detail view shows (or none).
    Detail(Option<u32>),
    /// The display was paused or resumed (a replay pauses its source too).
    Pause(bool),
}

/// Runs the UI until the user quits or the collector stops; `commands`
/// tells the collector what the user asked for.
///
/// # Errors
/// Drawing or reading the terminal fails.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &mut impl Events,
    updates: &Receiver<Update>,
    commands: &Sender<Command>,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut last_detail = None;
    let mut last_paused = false;
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
            let _ = commands.send(Command::Detail(last_detail));
        }
        if app.paused != last_paused {
            last_paused = app.paused;
            let _ = commands.send(Command::Pause(last_paused));
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
        // try_restore: a terminal that hung up cannot be restored, and
        // ratatui::restore would then print (and panic) into it.
        let _ = ratatui::try_restore();
    }
}
