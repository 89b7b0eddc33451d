//! The link to a remote agent as the host sees it: bytes received (a
//! counting reader under the stream decoder) and how late ticks arrive.
//!
//! Lag without comparing clocks: each tick carries the agent's time; the
//! host notes `arrival - tick time` per tick, and the smallest such offset
//! seen is the link at its quickest. A tick's lag is its offset above that
//! minimum: the queueing delay of the link (and of the agent's writes).
use std::{
    collections::BTreeMap,
    io::Read,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use rmapwatch_engine::report::LinkReport;

/// Shared between the reader thread and the sinks.
#[derive(Debug)]
pub struct Link {
    via: String,
    device: BTreeMap<String, String>,
    start: Instant,
    bytes: AtomicU64,
    state: Mutex<LagState>,
}

#[derive(Debug, Default)]
struct LagState {
    min_offset_ns: Option<i128>,
    lag_ns: u64,
    lag_max_ns: u64,
    /// The rate window: when and at which byte count it started.
    window: Option<(Instant, u64)>,
    recent_bytes_per_s: f64,
}

impl Link {
    /// A link reached `via` (e.g. `adb SERIAL`), to a device described by
    /// `device`.
    #[must_use]
    pub fn new(via: String, device: BTreeMap<String, String>) -> Arc<Self> {
        Arc::new(Self {
            via,
            device,
            start: Instant::now(),
            bytes: AtomicU64::new(0),
            state: Mutex::new(LagState::default()),
        })
    }

    /// A reader that counts what passes through it into this link.
    pub fn counting<R: Read>(self: &Arc<Self>, inner: R) -> Counting<R> {
        Counting {
            inner,
            link: self.clone(),
        }
    }

    /// A tick stamped `t_ns` (the agent's clock) arrived now.
    pub fn tick(&self, t_ns: u64) {
        let arrival = i128::try_from(self.start.elapsed().as_nanos()).unwrap_or(i128::MAX);
        let offset = arrival - i128::from(t_ns);
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let min = *s.min_offset_ns.get_or_insert(offset);
        if offset < min {
            s.min_offset_ns = Some(offset);
        }
        let min = s.min_offset_ns.unwrap_or(offset);
        s.lag_ns = u64::try_from(offset - min).unwrap_or(0);
        s.lag_max_ns = s.lag_max_ns.max(s.lag_ns);
    }

    /// What the link did so far (updates the recent rate when at least a
    /// second passed since the last call that did).
    #[must_use]
    pub fn report(&self) -> LinkReport {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let elapsed = self.start.elapsed().as_secs_f64();
        let now = Instant::now();
        let (lag_ms, lag_max_ms, recent) = match self.state.lock() {
            Ok(mut s) => {
                let (t0, b0) = *s.window.get_or_insert((self.start, 0));
                let dt = now.duration_since(t0).as_secs_f64();
                if dt >= 1.0 {
                    s.recent_bytes_per_s = (bytes - b0) as f64 / dt;
                    s.window = Some((now, bytes));
                } else if s.recent_bytes_per_s == 0.0 && dt > 0.0 {
                    s.recent_bytes_per_s = (bytes - b0) as f64 / dt;
                }
                (
                    s.lag_ns as f64 / 1e6,
                    s.lag_max_ns as f64 / 1e6,
                    s.recent_bytes_per_s,
                )
            }
            Err(_) => (0.0, 0.0, 0.0),
        };
        LinkReport {
            via: self.via.clone(),
            device: self.device.clone(),
            bytes,
            bytes_per_s: if elapsed > 0.0 {
                bytes as f64 / elapsed
            } else {
                0.0
            },
            recent_bytes_per_s: recent,
            lag_ms,
            lag_max_ms,
        }
    }
}

/// See [`Link::counting`].
pub struct Counting<R> {
    inner: R,
    link: Arc<Link>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.link.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_lag_above_the_quickest_tick() {
        let l = Link::new("adb x".into(), BTreeMap::new());
        let mut r = l.counting(&b"0123456789"[..]);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(l.report().bytes, 10);
        // A tick stamped far in the future is the quickest ever: lag 0.
        l.tick(1_000_000_000_000);
        assert_eq!(l.report().lag_ms, 0.0);
        // One stamped 5 s earlier arrives (at least) 5 s late.
        l.tick(995_000_000_000);
        let rep = l.report();
        assert!(rep.lag_ms >= 5000.0, "{rep:?}");
        assert_eq!(rep.lag_max_ms, rep.lag_ms);
        assert!(rep.line().starts_with("via adb x: "), "{}", rep.line());
    }
}
