//! The live view: the engine's frames on the dashboard, from the live
//! kernel (`sudo rmapwatch`), a remote agent, a phone, or a recording
//! (`replay`).
use std::{
    io::Write as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rmapwatch_engine::{design, engine, text::printable};
use rmapwatch_tui as tui;

use crate::{
    log,
    run::{Control, Runner, Until},
    sink::{Stop, dashboard::Feed},
    source::{Source, Spec},
};

/// `sudo rmapwatch` (or `--remote`, `--adb`), and `rmapwatch replay FILE`.
///
/// # Errors
/// Not a terminal, loading or attaching fails, the file is not a
/// recording, or the terminal fails.
pub fn view(
    spec: &Spec,
    model: design::Options,
    delay: Duration,
    log_path: &str,
) -> anyhow::Result<()> {
    // The live view's own precondition, before anything is set up.
    tui::check_terminal()?;
    let replay = match spec {
        Spec::Recording { path, .. } => Some(path.as_path()),
        _ => None,
    };
    let (runner, src) = if replay.is_some() {
        // A recording that is none is said before the screen is taken.
        let src = spec.open(delay)?;
        log::to_file(log_path).with_context(|| format!("opening the log file {log_path}"))?;
        (Runner::with_signals()?, src)
    } else {
        log::to_file(log_path).with_context(|| format!("opening the log file {log_path}"))?;
        let _ = writeln!(
            std::io::stderr(),
            "rmapwatch: attaching (log: {log_path})..."
        );
        let mut runner = Runner::with_signals()?;
        match runner.open(spec, delay, None)? {
            Ok(src) => (runner, src),
            Err(stop) => {
                let _ = writeln!(std::io::stderr(), "rmapwatch: stopped ({stop:?})");
                return Ok(());
            }
        }
    };
    let (opts, header) = match replay {
        Some(path) => (
            engine::Options::replay(model, true),
            Some(format!("replay of {}", file_name(path))),
        ),
        None => (engine::Options::dashboard(model), header(&src)),
    };
    dashboard(runner, src, opts, delay, log_path, header)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The header's source line for a remote or a phone: "MODEL via adb
/// SERIAL (SDK, build type, root)".
fn header(src: &Source) -> Option<String> {
    src.link.as_ref().map(|l| {
        let r = l.report();
        let d = &r.device;
        match d.get("model") {
            Some(m) => format!(
                "{m} via {} (SDK {}, {}, {})",
                r.via,
                d.get("sdk").map_or("?", String::as_str),
                d.get("build_type").map_or("?", String::as_str),
                d.get("root").map_or("?", String::as_str)
            ),
            None => r.via,
        }
    })
}

/// The collector (the run into the dashboard's feed) on a thread of its
/// own, the UI on this one.
fn dashboard(
    mut runner: Runner,
    mut src: Source,
    opts: engine::Options,
    delay: Duration,
    log_path: &str,
    source: Option<String>,
) -> anyhow::Result<()> {
    let (update_tx, update_rx) = mpsc::channel();
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ui_tx, ui_rx) = mpsc::channel::<tui::Command>();
    let ui_done = Arc::new(AtomicBool::new(false));
    let ui_done_ui = ui_done.clone();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let collector = scope.spawn(move || {
            let mut feed = Feed::new(update_tx);
            let result = runner.run(
                &mut src,
                opts,
                Until {
                    duration: None,
                    control: Some(control_rx),
                },
                &mut feed,
            );
            let why = feed.why.take().unwrap_or_default();
            let ended = matches!(result, Ok(Stop::SourceEnded));
            // Watchdog: a UI thread stuck in a dead terminal must not keep
            // the process alive (and spinning) once everything is detached.
            // An ended recording waits for the user (a dead terminal ends
            // the UI by itself).
            let deadline = (!ended).then(|| Instant::now() + Duration::from_secs(2));
            while !ui_done.load(Ordering::Acquire) && deadline.is_none_or(|d| Instant::now() < d) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !ui_done.load(Ordering::Acquire) {
                let _ = ratatui::try_restore();
                log::info(&format!(
                    "{why}; programs detached; the terminal did not answer"
                ));
                std::process::exit(0);
            }
            (result, why)
        });
        // UI commands become the driver's controls.
        let forward = scope.spawn(move || {
            while let Ok(c) = ui_rx.recv() {
                let c = match c {
                    tui::Command::Detail(pid) => Control::Detail(pid),
                    tui::Command::Pause(p) => Control::Pause(p),
                };
                if control_tx.send(c).is_err() {
                    break;
                }
            }
            // The UI ended: the run ends.
            let _ = control_tx.send(Control::Quit);
        });
        let ui_result = (|| -> anyhow::Result<()> {
            let mut guard = tui::TerminalGuard::new()?;
            let mut app = tui::state::App::new(delay, Some(log_path.to_owned()));
            app.source = source;
            tui::run(
                &mut guard.terminal,
                &mut app,
                &mut tui::Crossterm,
                &update_rx,
                &ui_tx,
            )
        })();
        ui_done_ui.store(true, Ordering::Release);
        drop(ui_tx);
        let _ = forward.join();
        let (collected, why) = collector
            .join()
            .map_err(|_| anyhow::anyhow!("the collector thread panicked"))?;
        // Not eprintln!: after a hangup stderr is gone, and eprintln! panics.
        let _ = writeln!(
            std::io::stderr(),
            "rmapwatch: {}; programs detached",
            printable(&why)
        );
        log::info(&format!("{why}; programs detached"));
        match ui_result {
            // The terminal went away: the session ended, as on SIGHUP.
            Err(e) if format!("{e:#}").contains("the terminal hung up") => collected.map(|_| ()),
            r => r.and(collected.map(|_| ())),
        }
    })
}
