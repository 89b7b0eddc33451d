//! `rmapwatch agent`: the live source, headless, for a remote host. The
//! stream (`rmapwatch.stream/1`) goes to stdout, requests come on stdin.
//! It detaches and exits on stdin EOF (the host went away), SIGHUP,
//! SIGTERM or SIGINT, and when stdout is closed (EPIPE).
use std::{
    io::{BufReader, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rmapwatch_engine::{
    input::{Input, Request},
    stream::{Kind, Reader, Writer},
};

use crate::{log, run::Signals, source::live, version};

/// A frame reaches the host within this: blocks are written at least this
/// often while inputs come.
const LATENCY: Duration = Duration::from_millis(50);

/// The command.
///
/// # Errors
/// Loading or attaching fails (before anything is written), or the
/// requests on stdin are not a stream of requests.
pub fn agent(live: &live::LiveArgs, tick: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut signals = rt.block_on(async { Signals::install() })?;
    let mut src = live::open(live, tick)?;
    let stdout = std::io::stdout().lock();
    let mut w = Writer::new(
        std::io::BufWriter::with_capacity(1 << 20, stdout),
        Kind::Inputs,
        &version::tool(),
        Some(&src.facts),
    )
    .context("writing the stream to stdout")?;
    w.flush().context("writing the stream to stdout")?;
    // Requests from the host, on a thread of their own; EOF stops.
    let (req_tx, mut req_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("requests".into())
        .spawn(move || {
            let stdin = BufReader::new(std::io::stdin());
            let result = Reader::open(stdin, Kind::Requests).map(|mut r| {
                while let Ok(Some(req)) = r.next_request() {
                    if req_tx.send(Ok(req)).is_err() {
                        return;
                    }
                }
            });
            let _ = req_tx.send(result.map(|()| Request::Stop).map_err(|e| e.to_string()));
        })
        .context("starting the request reader")?;
    let mut last_flush = Instant::now();
    let mut stopping = false;
    let mut requests_open = true;
    let result = rt.block_on(async {
        let mut flush_timer = tokio::time::interval(LATENCY);
        loop {
            tokio::select! {
                input = src.next() => {
                    let Some(input) = input else {
                        src.join()?;
                        anyhow::bail!("the source ended without saying so");
                    };
                    let end = matches!(input, Input::End { .. });
                    let now = matches!(input, Input::Tick { .. } | Input::WalkEnd { .. } | Input::End { .. });
                    let mut written = w.input(&input).is_ok();
                    if written && (now || last_flush.elapsed() >= LATENCY) {
                        last_flush = Instant::now();
                        written = w.flush().is_ok();
                    }
                    if end {
                        return src.join();
                    }
                    if !written && !stopping {
                        // stdout is gone (EPIPE): stop, and detach.
                        stopping = true;
                        src.request(Request::Stop);
                    }
                }
                _ = flush_timer.tick() => {
                    if w.buffered() > 0 && last_flush.elapsed() >= LATENCY {
                        last_flush = Instant::now();
                        if w.flush().is_err() && !stopping {
                            stopping = true;
                            src.request(Request::Stop);
                        }
                    }
                }
                r = req_rx.recv(), if requests_open => match r {
                    Some(Ok(Request::Stop)) | None => {
                        requests_open = r.is_some();
                        if !stopping {
                            stopping = true;
                            src.request(Request::Stop);
                        }
                    }
                    Some(Ok(req)) => src.request(req),
                    Some(Err(e)) => {
                        log::warn(&format!("requests on stdin: {e}; stopping"));
                        if !stopping {
                            stopping = true;
                            src.request(Request::Stop);
                        }
                    }
                },
                _ = signals.recv(), if !stopping => {
                    stopping = true;
                    src.request(Request::Stop);
                }
            }
        }
    });
    let _ = std::io::stderr().flush();
    result
}
