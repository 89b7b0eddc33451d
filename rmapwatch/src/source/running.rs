//! A running source: a thread of its own that yields [`Input`]s over a
//! channel and takes [`Request`]s back. Every kind of source (the live
//! kernel, a recording, a remote agent, a phone) runs as one of these.
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
