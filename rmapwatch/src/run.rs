//! The run helper: one place that owns a run's runtime, its signals, its
//! source, its engine and the link block, and drives them into a sink.
//!
//! A source runs on a thread of its own and yields inputs over a channel;
//! the driver hands each input to the sink (a recording tees it), feeds it
//! to the engine, hands the engine's step to the sink, and sends the
//! engine's requests back to the source. It also owns the run's end:
//! `--duration`, the signals, a sink's or the live view's quit, each of
//! which asks the engine to finish (one final walk, then the source
//! stops); a second signal stops at once.
use std::time::Duration;

use anyhow::Context as _;
use rmapwatch_engine::{
    engine::{self, Engine, Step},
    input::{Input, Request},
    text::printable,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::UnboundedReceiver,
};

use crate::{
    log,
    sink::{Sink, Stop, View},
    source::{Source, Spec},
};

/// The signals that stop a run, installed before the programs are
/// attached so that a signal right after "attached" is never lost.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime).
    ///
    /// # Errors
    /// The handlers cannot be installed.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next stopping signal.
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            _ = self.int.recv() => Stop::Interrupt,
            _ = self.term.recv() => Stop::Terminate,
            _ = self.hup.recv() => Stop::Terminate,
        }
    }
}

/// What the live view tells the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Inspect this process (or none).
    Detail(Option<u32>),
    /// Pause or resume (a recording's replay).
    Pause(bool),
    /// The user quit.
    Quit,
}

/// How a run ends besides its source ending.
#[derive(Default)]
pub struct Until {
    /// Stop after this long (host time).
    pub duration: Option<Duration>,
    /// The live view's controls.
    pub control: Option<UnboundedReceiver<Control>>,
}

/// A runtime, and the signals when the run takes them (a recording's
/// replay to a file or a report does not: it runs to its end).
pub struct Runner {
    rt: tokio::runtime::Runtime,
    signals: Option<Signals>,
    /// Why the last run was asked to stop, if it was (its end may still
    /// have failed: a final walk over a link that dropped).
    stopped: Option<Stop>,
}

impl Runner {
    /// A runtime whose runs stop on SIGINT, SIGTERM and SIGHUP, installed
    /// now: before any source attaches.
    ///
    /// # Errors
    /// The runtime or the handlers cannot be set up.
    pub fn with_signals() -> anyhow::Result<Self> {
        let rt = runtime()?;
        let signals = rt.block_on(async { Signals::install() })?;
        Ok(Self {
            rt,
            signals: Some(signals),
            stopped: None,
        })
    }

    /// A runtime whose runs go to their source's end.
    ///
    /// # Errors
    /// The runtime cannot be started.
    pub fn to_the_end() -> anyhow::Result<Self> {
        Ok(Self {
            rt: runtime()?,
            signals: None,
            stopped: None,
        })
    }

    /// Drives `src` through an engine of `opts` into `sink` until the
    /// source ends; a stop (`until`, a signal, the sink) asks the engine to
    /// finish first. The sink then finishes with how the run ended; its
    /// error comes before the run's.
    ///
    /// # Errors
    /// The source failed, an input broke the stream's ordering rules, or
    /// the sink failed.
    pub fn run(
        &mut self,
        src: &mut Source,
        opts: engine::Options,
        until: Until,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<Stop> {
        let mut engine = Engine::new(opts);
        let link = src.link.clone();
        self.stopped = None;
        let result = self.rt.block_on(drive(
            src,
            &mut engine,
            self.signals.as_mut(),
            until,
            link.as_deref(),
            sink,
            &mut self.stopped,
        ));
        let view = View {
            engine: &engine,
            link: link.as_deref(),
        };
        sink.finish(&view, result.as_ref().map(|s| *s))?;
        result
    }

    /// Why the last run was asked to stop (a signal, `--duration`, a quit),
    /// if it was: a run that then failed was ending, not lost.
    #[must_use]
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// Starts `spec` on a thread of its own, while signals (and
    /// `deadline`) are still heard: a phone's `adb root` and
    /// `wait-for-device` may take a minute. `Ok(Err(stop))` when the run
    /// was stopped first: the start is cancelled (its commands killed, its
    /// own cleanup run) and waited for.
    ///
    /// # Errors
    /// The source cannot start (see [`Spec::open`]).
    pub fn open(
        &mut self,
        spec: &Spec,
        tick: Duration,
        deadline: Option<std::time::Instant>,
    ) -> anyhow::Result<Result<Source, Stop>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spec = spec.clone();
        let opening = std::thread::Builder::new()
            .name("source start".into())
            .spawn(move || {
                let _ = tx.send(spec.open(tick));
            })
            .context("starting the source's thread")?;
        let signals = self.signals.as_mut();
        let until = deadline.map(tokio::time::Instant::from_std);
        let stopped = self.rt.block_on(async {
            tokio::select! {
                r = rx => Ok(r),
                s = async {
                    match signals {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => Err(s),
                () = async {
                    match until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => Err(Stop::Duration),
            }
        });
        match stopped {
            Ok(r) => {
                let _ = opening.join();
                r.map_err(|_| anyhow::anyhow!("the source's thread ended without a word"))?
                    .map(Ok)
            }
            Err(stop) => {
                log::info(&format!(
                    "stopped ({stop:?}) while the source was starting: cancelling the start"
                ));
                crate::source::start::cancel();
                // Whatever it got (a source that started after all is
                // dropped: detached, its device session undone).
                let _ = opening.join();
                Ok(Err(stop))
            }
        }
    }

    /// Waits `d` (or until `deadline`); `Some` when a signal came.
    pub fn pause(&mut self, d: Duration, deadline: Option<std::time::Instant>) -> Option<Stop> {
        let until = deadline.map_or(d, |dl| {
            d.min(dl.saturating_duration_since(std::time::Instant::now()))
        });
        let signals = self.signals.as_mut();
        self.rt.block_on(async {
            tokio::select! {
                s = async {
                    match signals {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => Some(s),
                () = tokio::time::sleep(until) => None,
            }
        })
    }
}

/// Opens `spec` and runs it into `sink`, to its end or until a stop: the
/// whole of a headless command's run.
///
/// # Errors
/// See [`Spec::open`] and [`Runner::run`].
pub fn run(
    spec: &Spec,
    tick: Duration,
    opts: engine::Options,
    until: Until,
    sink: &mut dyn Sink,
    attached: impl FnOnce(&Source),
) -> anyhow::Result<Stop> {
    let mut runner = if spec.answers() {
        Runner::with_signals()?
    } else {
        Runner::to_the_end()?
    };
    let mut src = match runner.open(spec, tick, None)? {
        Ok(s) => s,
        Err(stop) => return Ok(stop),
    };
    attached(&src);
    runner.run(&mut src, opts, until, sink)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn forward(src: &Source, engine: &mut Engine) {
    for r in engine.take_requests() {
        src.request(r);
    }
}

/// Feeds the source's inputs to the engine until the source ends; a stop
/// (duration, signal, quit) asks the engine to finish (one final walk,
/// then the source stops). The sink sees every input and every step.
async fn drive(
    src: &mut Source,
    engine: &mut Engine,
    mut signals: Option<&mut Signals>,
    mut until: Until,
    link: Option<&crate::link::Link>,
    sink: &mut dyn Sink,
    stop: &mut Option<Stop>,
) -> anyhow::Result<Stop> {
    let notice_prefix = src.prefix;
    let deadline = tokio::time::sleep(until.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut hard_stopped = false;
    // After a second signal, a source that does not end in this long is
    // given up on (a remote link that stalled).
    let give_up = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(give_up);
    let mut control_open = until.control.is_some();
    // Asks the engine to finish, once: the first reason to stop is the one
    // reported.
    let finish = |stop: &mut Option<Stop>, why: Stop, src: &Source, engine: &mut Engine| {
        if stop.is_none() {
            *stop = Some(why);
            engine.finish();
            forward(src, engine);
        }
    };
    loop {
        let signal = async {
            match signals.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let control = async {
            match until.control.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = src.next() => {
                let Some(input) = input else {
                    src.join()?;
                    anyhow::bail!("the source ended without saying so");
                };
                sink.input(&input)?;
                if let Input::Notice(n) = &input {
                    // One line, whatever the source put in it.
                    let text = format!("{notice_prefix}{}", printable(&n.text));
                    if n.warning {
                        log::warn(&text);
                    } else {
                        log::info(&text);
                    }
                }
                let step = engine.apply(input).context("the source broke the stream's ordering rules")?;
                forward(src, engine);
                let go_on = sink.step(&View { engine, link }, step)?;
                if step == Step::End {
                    src.join()?;
                    return Ok(stop.unwrap_or(Stop::SourceEnded));
                }
                if !go_on {
                    finish(stop, Stop::Quit, src, engine);
                }
            }
            () = &mut deadline, if stop.is_none() => {
                finish(stop, Stop::Duration, src, engine);
            }
            s = signal => {
                if stop.is_none() {
                    finish(stop, s, src, engine);
                } else if !hard_stopped {
                    // A second signal: no final walk, stop now.
                    hard_stopped = true;
                    src.request(Request::Stop);
                    give_up.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            () = &mut give_up, if hard_stopped => {
                log::warn("the source did not end within 5 s of the second signal: giving up on it");
                return Ok(stop.unwrap_or(Stop::Terminate));
            }
            c = control, if control_open => match c {
                None => control_open = false,
                Some(Control::Detail(pid)) => {
                    engine.want_detail(pid);
                    forward(src, engine);
                }
                Some(Control::Pause(paused)) => src.request(Request::Pause { paused }),
                Some(Control::Quit) => finish(stop, Stop::Quit, src, engine),
            },
        }
    }
}
