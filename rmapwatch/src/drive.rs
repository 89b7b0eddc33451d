//! Sources and the driver: a source runs on a thread of its own and yields
//! [`Input`]s over a channel; the driver feeds them to the engine, tees
//! them to a recording, hands steps to a sink, and sends the engine's
//! requests back. It also owns the run's end: `--duration`, the signals,
//! the live view's quit.
use std::time::Duration;

use anyhow::Context as _;
use rmapwatch_engine::{
    engine::{Engine, Step},
    facts::Facts,
    input::{Input, Request},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel},
};

use crate::log;

/// A running source.
pub struct Source {
    /// The facts its stream starts with.
    pub facts: Facts,
    /// Said before its notices: "" for the live kernel here, "recorded: "
    /// for a recording, "remote: " for a remote agent.
    pub prefix: &'static str,
    /// The link to a remote agent, if the source is one.
    pub link: Option<std::sync::Arc<crate::link::Link>>,
    inputs: UnboundedReceiver<Input>,
    requests: UnboundedSender<Request>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    /// Dropped after everything else: what the source set up elsewhere
    /// (a device session, undone at the end).
    pub guard: Option<Box<dyn Send>>,
}

impl Source {
    /// Runs `produce` on a thread of its own: it sends inputs into its
    /// sink (which says `false` once nobody listens) and reads requests.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(
        name: &str,
        prefix: &'static str,
        facts: Facts,
        produce: impl FnOnce(
            &mut dyn FnMut(Input) -> bool,
            UnboundedReceiver<Request>,
        ) -> anyhow::Result<()>
        + Send
        + 'static,
    ) -> anyhow::Result<Self> {
        let (in_tx, inputs) = unbounded_channel();
        let (requests, rq_rx) = unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || produce(&mut |i| in_tx.send(i).is_ok(), rq_rx))
            .context("starting the source thread")?;
        Ok(Self {
            facts,
            prefix,
            link: None,
            inputs,
            requests,
            thread: Some(thread),
            guard: None,
        })
    }

    /// Sends a request (a source that went away ignores it).
    pub fn request(&self, r: Request) {
        let _ = self.requests.send(r);
    }

    /// The next input; `None` once the source's thread ended.
    pub async fn next(&mut self) -> Option<Input> {
        self.inputs.recv().await
    }

    /// Waits for the source's thread and returns its error, if any.
    ///
    /// # Errors
    /// The source failed, or its thread panicked.
    pub fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the source thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM or SIGHUP.
    Terminate,
    /// The user quit the live view.
    Quit,
    /// The source ended by itself (the end of a recording, or a link).
    SourceEnded,
}

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

/// What a sink (the live view) tells the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Inspect this process (or none).
    Detail(Option<u32>),
    /// Pause or resume (a recording's replay).
    Pause(bool),
    /// The user quit.
    Quit,
}

/// Sees every input before the engine does (a recording's writer).
pub type Tee<'a> = &'a mut dyn FnMut(&Input) -> anyhow::Result<()>;

/// How the driver runs.
pub struct Drive<'a> {
    /// Stop after this long (host time).
    pub duration: Option<Duration>,
    /// Stop on these signals.
    pub signals: Option<&'a mut Signals>,
    /// A sink's controls.
    pub control: Option<UnboundedReceiver<Control>>,
    /// Every input, before the engine sees it (a recording).
    pub tee: Option<Tee<'a>>,
    /// Said before the source's notices that are not from here and now
    /// ("recorded: ", "remote: ").
    pub notice_prefix: &'static str,
}

impl Drive<'_> {
    /// A recording's replay: to its end, no signals, controls or tee.
    pub const fn replay(notice_prefix: &'static str) -> Self {
        Self {
            duration: None,
            signals: None,
            control: None,
            tee: None,
            notice_prefix,
        }
    }
}

fn forward(src: &Source, engine: &mut Engine) {
    for r in engine.take_requests() {
        src.request(r);
    }
}

/// Feeds the source's inputs to the engine until the source ends; a stop
/// (duration, signal, quit) asks the engine to finish (one final walk,
/// then the source stops). `on_step` sees every step.
///
/// # Errors
/// The source failed, a recording could not be written, an input broke
/// the ordering rules, or `on_step` failed.
pub async fn drive(
    src: &mut Source,
    engine: &mut Engine,
    mut d: Drive<'_>,
    mut on_step: impl FnMut(&Engine, Step) -> anyhow::Result<()>,
) -> anyhow::Result<Stop> {
    let deadline = tokio::time::sleep(d.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut stop: Option<Stop> = None;
    let mut hard_stopped = false;
    // After a second signal, a source that does not end in this long is
    // given up on (a remote link that stalled).
    let give_up = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(give_up);
    let mut control_open = d.control.is_some();
    loop {
        let signal = async {
            match d.signals.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let control = async {
            match d.control.as_mut() {
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
                if let Some(tee) = d.tee.as_mut() {
                    tee(&input)?;
                }
                if let Input::Notice(n) = &input {
                    let text = format!("{}{}", d.notice_prefix, n.text);
                    if n.warning {
                        log::warn(&text);
                    } else {
                        log::info(&text);
                    }
                }
                let step = engine.apply(input).context("the source broke the stream's ordering rules")?;
                forward(src, engine);
                on_step(engine, step)?;
                if step == Step::End {
                    src.join()?;
                    return Ok(stop.unwrap_or(Stop::SourceEnded));
                }
            }
            () = &mut deadline, if stop.is_none() => {
                stop = Some(Stop::Duration);
                engine.finish();
                forward(src, engine);
            }
            s = signal => {
                if stop.is_none() {
                    stop = Some(s);
                    engine.finish();
                    forward(src, engine);
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
                Some(Control::Quit) => {
                    if stop.is_none() {
                        stop = Some(Stop::Quit);
                        engine.finish();
                        forward(src, engine);
                    }
                }
            },
        }
    }
}
