//! `rmapwatch serve`: a Prometheus exporter. The engine runs as for
//! `report --interval`; every frame's report is published whole, and an
//! HTTP server on a thread of its own encodes the latest one at each
//! scrape (so a scrape never waits for a walk, and never sees half of a
//! re-seed). When the source goes away (a phone unplugged), the last
//! state is kept, marked `rmapwatch_source_up 0`, and the source is
//! started again every `--retry` seconds.
use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use rmapwatch_engine::{design, engine, report::Report};

use crate::{
    error::UsageError,
    log,
    metrics::{self, Exporter, Format},
    run::{Runner, Until},
    sink::{Stop, publish::Publish},
    source::Spec,
};

/// What `serve` was asked.
pub struct Opts {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Per-process series for this many processes.
    pub top: usize,
    /// Walk and publish every so often.
    pub interval: Duration,
    /// Start a lost source again after this long.
    pub retry: Duration,
    /// Stop after this long (tests, soaks).
    pub duration: Option<Duration>,
}

/// What the HTTP side reads.
#[derive(Debug)]
struct State {
    report: Option<Arc<Report>>,
    published: Instant,
    up: bool,
    connects: u64,
    losses: u64,
    scrapes: u64,
    last_scrape_s: f64,
    top: usize,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    // A panicked holder left whole values behind: keep serving them.
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds the listening socket, with the errors a user can act on.
fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => UsageError(format!(
            "{addr} is in use (another exporter, or node_exporter's neighbour?): choose another \
             address with --listen, e.g. --listen 127.0.0.1:{}",
            addr.port().wrapping_add(1)
        ))
        .into(),
        std::io::ErrorKind::AddrNotAvailable => UsageError(format!(
            "{addr} is not an address of this machine: --listen takes one of its addresses (or \
             0.0.0.0 for all)"
        ))
        .into(),
        std::io::ErrorKind::PermissionDenied => UsageError(format!(
            "{addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE): choose a \
             port above 1023"
        ))
        .into(),
        _ => anyhow::Error::from(e).context(format!("listening on {addr}")),
    })
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    shared: Shared,
    listen: String,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        ));
    }
    match req.uri().path() {
        "/metrics" => {
            let format = Format::negotiate(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            let started = Instant::now();
            let (report, exporter) = {
                let mut s = lock(&shared);
                let e = Exporter {
                    up: s.up,
                    report_age_s: s.published.elapsed().as_secs_f64(),
                    connects: s.connects,
                    losses: s.losses,
                    scrapes: s.scrapes,
                    last_scrape_s: s.last_scrape_s,
                    cpu_s: None,
                    rss_bytes: None,
                    top: s.top,
                };
                s.scrapes += 1;
                (s.report.clone(), e)
            };
            let (cpu_s, rss_bytes) = metrics::own_usage();
            let body = metrics::encode(
                report,
                Exporter {
                    cpu_s,
                    rss_bytes,
                    ..exporter
                },
                format,
            );
            lock(&shared).last_scrape_s = started.elapsed().as_secs_f64();
            Ok(match body {
                Ok(b) => reply(StatusCode::OK, format.content_type(), b),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            })
        }
        "/" => Ok(reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            metrics::index_page(&listen),
        )),
        _ => Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        )),
    }
}

/// The HTTP server, on a thread and runtime of its own.
fn spawn_server(listener: TcpListener, shared: Shared) -> anyhow::Result<()> {
    listener
        .set_nonblocking(true)
        .context("setting the listening socket non-blocking")?;
    let listen = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP server's runtime")?;
    // Here, not on the server's thread: a server that cannot start is the
    // command's error, not a line in the log of an exporter serving nothing.
    let l = {
        let _in = rt.enter();
        tokio::net::TcpListener::from_std(listener).context("starting the HTTP server")?
    };
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let stream = match l.accept().await {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of descriptors, say: wait, do not spin.
                            log::warn(&format!("accepting a scrape: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let shared = shared.clone();
                    let listen = listen.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            handle(req, shared.clone(), listen.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })
        .context("starting the HTTP server's thread")?;
    Ok(())
}

/// The `serve` command.
///
/// # Errors
/// The address cannot be bound, or the source cannot be started the
/// first time (later losses are served as stale and retried).
pub fn serve(spec: &Spec, model: design::Options, o: &Opts) -> anyhow::Result<()> {
    let listener = bind(o.listen)?;
    let addr = listener.local_addr().unwrap_or(o.listen);
    if !addr.ip().is_loopback() {
        log::warn(&format!(
            "listening on {addr}, not loopback: anyone who reaches this port can read the \
             metrics (process names and pids included); there is no authentication, so put it \
             behind a firewall or a proxy, or use --listen 127.0.0.1:{}",
            addr.port()
        ));
    }
    let shared: Shared = Arc::new(Mutex::new(State {
        report: None,
        published: Instant::now(),
        up: false,
        connects: 0,
        losses: 0,
        scrapes: 0,
        last_scrape_s: 0.0,
        top: o.top,
    }));
    let mut runner = Runner::with_signals()?;
    let deadline = o.duration.map(|d| Instant::now() + d);
    let mut first = true;
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut src = match runner.open(spec, o.interval, deadline) {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Ok(()),
            // The first start's errors are the user's to fix: say them and
            // exit (no device, not root, ...).
            Err(e) if first => return Err(e),
            Err(e) => {
                log::warn(&format!(
                    "the source is still away ({e:#}); trying again in {:.0} s",
                    o.retry.as_secs_f64()
                ));
                if stopped(&mut runner, o.retry, deadline) {
                    return Ok(());
                }
                continue;
            }
        };
        if first {
            spawn_server(
                listener.try_clone().context("sharing the socket")?,
                shared.clone(),
            )?;
            log::info(&format!(
                "attached; serving http://{addr}/metrics (a report every {:.1} s, the top {} \
                 processes)",
                o.interval.as_secs_f64(),
                o.top
            ));
            first = false;
        } else {
            log::info("the source is back: serving it again");
        }
        lock(&shared).connects += 1;
        let mut publish = Publish(|r: Report| {
            let mut s = lock(&shared);
            s.report = Some(Arc::new(r));
            s.published = Instant::now();
            s.up = true;
        });
        let result = runner.run(
            &mut src,
            engine::Options::dashboard(model),
            Until {
                duration: remaining,
                control: None,
            },
            &mut publish,
        );
        drop(src);
        match result {
            Ok(Stop::SourceEnded) => {}
            Ok(stop) => {
                log::info(&format!("stopped ({stop:?}); programs detached"));
                return Ok(());
            }
            // Stopped, and its end failed (the final walk over a link that
            // dropped): the end, not a lost source to retry.
            Err(e) if runner.stopped().is_some() => return Err(e),
            Err(e) => log::warn(&format!("{e:#}")),
        }
        {
            let mut s = lock(&shared);
            s.up = false;
            s.losses += 1;
        }
        log::warn(&format!(
            "the source went away: serving its last state as stale (rmapwatch_source_up 0); \
             trying again every {:.0} s",
            o.retry.as_secs_f64()
        ));
        if stopped(&mut runner, o.retry, deadline) {
            return Ok(());
        }
    }
}

/// Waits `d` (or until the deadline); `true` when a signal or the
/// deadline says stop.
fn stopped(runner: &mut Runner, d: Duration, deadline: Option<Instant>) -> bool {
    if let Some(s) = runner.pause(d, deadline) {
        log::info(&format!("stopped ({s:?})"));
        return true;
    }
    deadline.is_some_and(|dl| Instant::now() >= dl)
}
