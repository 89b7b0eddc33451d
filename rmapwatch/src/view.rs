//! The live view: the engine's frames on the dashboard, from the live
//! kernel (`sudo rmapwatch`), a remote agent, or a recording (`replay`).
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
use rmapwatch_engine::engine::{self, Engine, Step};
use rmapwatch_tui as tui;

use crate::{
    Common,
    drive::{Control, Drive, Signals, Source, Stop, drive},
    file, live, log,
};

/// The share of wall time snapshot walks may take in the live view (5 %).
const WALK_BUDGET: f64 = 0.05;

/// `sudo rmapwatch` (or `--remote`).
///
/// # Errors
/// Not a terminal, loading or attaching fails, or the terminal fails.
pub fn live(c: &Common, delay: Duration, log_path: &str) -> anyhow::Result<()> {
    // The live view's own precondition, before anything is set up.
    tui::check_terminal()?;
    log::to_file(log_path).with_context(|| format!("opening the log file {log_path}"))?;
    let _ = writeln!(
        std::io::stderr(),
        "rmapwatch: attaching (log: {log_path})..."
    );
    let rt = runtime()?;
    let signals = rt.block_on(async { Signals::install() })?;
    let src = live::source(c, delay)?;
    let opts = engine::Options {
        model: c.model,
        walk_on_tick: true,
        walk_budget: Some(WALK_BUDGET),
        source_answers: true,
        retention: engine::Retention::default(),
    };
    let source = src.link.as_ref().map(|l| {
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
    });
    dashboard(rt, signals, src, opts, delay, log_path, source)
}

/// `rmapwatch replay FILE`.
///
/// # Errors
/// Not a terminal, the file is not a recording, or the terminal fails.
pub fn replay(
    c: &Common,
    path: &Path,
    pace: file::Pace,
    delay: Duration,
    log_path: &str,
) -> anyhow::Result<()> {
    tui::check_terminal()?;
    let src = file::open(path, pace)?;
    log::to_file(log_path).with_context(|| format!("opening the log file {log_path}"))?;
    let rt = runtime()?;
    let signals = rt.block_on(async { Signals::install() })?;
    let opts = engine::Options {
        model: c.model,
        walk_on_tick: true,
        walk_budget: None,
        source_answers: false,
        retention: engine::Retention::default(),
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let source = Some(format!("replay of {name}"));
    dashboard(rt, signals, src, opts, delay, log_path, source)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The collector (engine and driver) on a thread of its own, the UI on
/// this one.
fn dashboard(
    rt: tokio::runtime::Runtime,
    mut signals: Signals,
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
        let tx = update_tx.clone();
        let notice_prefix = src.prefix;
        let link = src.link.clone();
        let collector = scope.spawn(move || {
            let mut engine = Engine::new(opts);
            let send = |e: &Engine, tx: &mpsc::Sender<tui::state::Update>| {
                let mut f = e.frame();
                f.link = link.as_ref().map(|l| l.report());
                let _ = tx.send(tui::state::Update::Frame(Box::new(f)));
            };
            let result = rt.block_on(drive(
                &mut src,
                &mut engine,
                Drive {
                    duration: None,
                    signals: Some(&mut signals),
                    control: Some(control_rx),
                    tee: None,
                    notice_prefix,
                },
                |e, step| {
                    if step == Step::Frame || e.walks() == 1 && step != Step::End {
                        send(e, &tx);
                    }
                    Ok(())
                },
            ));
            // The last state stays on the screen until the user quits.
            send(&engine, &tx);
            let why = match &result {
                Ok(Stop::SourceEnded) => "the recording ended (q quits)".to_owned(),
                Ok(stop) => format!("stopped ({stop:?})"),
                Err(e) => format!("collector failed: {e:#}"),
            };
            let ended = matches!(result, Ok(Stop::SourceEnded));
            let _ = tx.send(if ended {
                tui::state::Update::Ended(why.clone())
            } else {
                tui::state::Update::Stopped(why.clone())
            });
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
        let _ = writeln!(std::io::stderr(), "rmapwatch: {why}; programs detached");
        log::info(&format!("{why}; programs detached"));
        match ui_result {
            // The terminal went away: the session ended, as on SIGHUP.
            Err(e) if format!("{e:#}").contains("the terminal hung up") => collected.map(|_| ()),
            r => r.and(collected.map(|_| ())),
        }
    })
}
