//! A running source: a thread of its own that yields [`Input`]s over a
//! channel and takes [`Request`]s back. Every kind of source (the live
//! kernel, a recording, a remote agent, a phone) runs as one of these.
use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use rmapwatch_engine::{
    facts::Facts,
    input::{Input, Request},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::link::Link;

/// A running source.
pub struct Source {
    /// The facts its stream starts with.
    pub facts: Facts,
    /// Said before its notices: "" for the live kernel here, "recorded: "
    /// for a recording, "remote: " for a remote agent, "device: " for a
    /// phone.
    pub prefix: &'static str,
    /// The link to a remote agent, if the source is one.
    pub link: Option<std::sync::Arc<Link>>,
    inputs: UnboundedReceiver<(usize, Input)>,
    backlog: Arc<Backlog>,
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
        let (in_tx, inputs) = unbounded_channel::<(usize, Input)>();
        let (requests, rq_rx) = unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let room = Arc::clone(&backlog);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                produce(
                    &mut |i| {
                        let w = weight(&i);
                        room.wait_for_room(BACKLOG_ITEMS, || in_tx.is_closed());
                        room.add(w);
                        in_tx.send((w, i)).is_ok()
                    },
                    rq_rx,
                )
            })
            .context("starting the source thread")?;
        Ok(Self {
            facts,
            prefix,
            link: None,
            inputs,
            backlog,
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
        let (w, i) = self.inputs.recv().await?;
        self.backlog.remove(w);
        Some(i)
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

/// How many items (events, walked VMAs, other inputs) a source may have
/// sent that the engine has not taken yet. Past it the source's thread
/// waits: a live source then stops draining the kernel's ring buffer,
/// which fills and counts what it drops (shown, and re-seeded), instead
/// of this process's memory growing without bound behind a slow engine or
/// a slow link (an agent on a phone, behind USB). The kernel's ring is the
/// buffer for bursts; this only decouples the threads: about 5 MiB of
/// events, or one batch however big.
pub const BACKLOG_ITEMS: usize = 1 << 17;

/// What an input weighs in the backlog.
fn weight(i: &Input) -> usize {
    match i {
        Input::Events { events, .. } => events.len().max(1),
        Input::WalkVmas { vmas, .. } => vmas.len().max(1),
        _ => 1,
    }
}

/// The items sent and not yet taken, and a wake-up for the source when
/// the engine takes some.
#[derive(Default)]
struct Backlog {
    queued: Mutex<usize>,
    room: Condvar,
}

impl Backlog {
    /// Waits while `limit` or more items wait, or until `closed` (the
    /// engine went away: nothing will take them).
    fn wait_for_room(&self, limit: usize, closed: impl Fn() -> bool) {
        let Ok(mut q) = self.queued.lock() else {
            return;
        };
        while *q >= limit && !closed() {
            q = match self.room.wait_timeout(q, Duration::from_millis(100)) {
                Ok((q, _)) => q,
                Err(_) => return,
            };
        }
    }

    fn add(&self, w: usize) {
        if let Ok(mut q) = self.queued.lock() {
            *q += w;
        }
    }

    fn remove(&self, w: usize) {
        if let Ok(mut q) = self.queued.lock() {
            *q = q.saturating_sub(w);
        }
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_ahead_of_its_engine_waits_and_goes_on_as_the_engine_takes() {
        let b = Arc::new(Backlog::default());
        b.add(10);
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                b.wait_for_room(10, || false);
                b.add(1);
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(!waiter.is_finished(), "at the limit, the source waits");
        b.remove(4);
        waiter.join().unwrap();
        assert_eq!(*b.queued.lock().unwrap(), 7);
    }

    #[test]
    fn a_source_whose_engine_went_away_does_not_wait() {
        let b = Backlog::default();
        b.add(10);
        b.wait_for_room(10, || true);
        b.wait_for_room(11, || false);
    }

    #[test]
    fn an_input_weighs_its_events_or_vmas() {
        let t = 0;
        assert_eq!(weight(&Input::Tick { t }), 1);
        assert_eq!(
            weight(&Input::Events {
                t,
                events: Vec::new()
            }),
            1
        );
    }

    #[tokio::test]
    async fn a_source_past_the_backlog_is_held_until_the_engine_takes() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let mut src = Source::spawn("test", "", Facts::default(), move |out, _| {
            for _ in 0..3 {
                let events = vec![
                    rmapwatch_engine::event::Event::Exit {
                        tid: 1,
                        tgid: 1,
                        comm: rmapwatch_engine::event::Comm([0; 16])
                    };
                    BACKLOG_ITEMS
                ];
                if !out(Input::Events { t: 0, events }) {
                    break;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(())
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            sent.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one batch fills the backlog"
        );
        let mut got = 0;
        while src.next().await.is_some() {
            got += 1;
        }
        assert_eq!(got, 3);
        src.join().unwrap();
    }
}
