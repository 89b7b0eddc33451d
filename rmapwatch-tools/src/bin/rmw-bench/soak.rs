//! The exporter's soak (root): `rmapwatch serve` for N minutes next to a
//! process holding ~1M VMAs, under fork/mmap churn (stress-ng), scraped
//! the whole time. It fails on an RSS growth trend, a scrape slower than
//! 100 ms, or end counts that differ from a fresh walk's.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::child::lines_of;

/// What the soak was asked.
pub struct Opts {
    /// How long to churn.
    pub minutes: f64,
    /// VMAs the holder maps (half of them with an anon_vma: each region
    /// sits between guard pages).
    pub vmas: usize,
    /// Through the adb stand-in (`rmw-adbd`, this host as the "phone"):
    /// `rmapwatch --adb SERIAL serve`, the agent's RSS and the link's lag
    /// watched too.
    pub adb: bool,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text; \
         version=1.0.0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let took = t.elapsed();
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scrape: {head}");
    }
    Ok((took, body.to_owned()))
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Least-squares slope of `(x, y)`.
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
    let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// `min-max` of samples.
fn band(pts: &[(f64, f64)]) -> String {
    let lo = pts.iter().map(|p| p.1).fold(f64::NAN, f64::min);
    format!("{lo:.1}-{:.1}", high(pts))
}

/// The highest of samples.
fn high(pts: &[(f64, f64)]) -> f64 {
    pts.iter().map(|p| p.1).fold(f64::NAN, f64::max)
}

/// Whether RSS samples `(s, MiB)` are flat: the second half stays in the
/// band the first half set. Its high-water mark may exceed the first
/// half's by a tenth (at least 1 MiB), no more.
///
/// Not the slope of the samples: a source's backlog (up to
/// `BACKLOG_ITEMS`) and a walk's tables come and go, so a 12 MiB `serve`
/// swings by 2-5 MiB within seconds while its heap stays flat (a heap
/// profile over a 10-minute soak: 2.6-2.8 MB live throughout). Over ten
/// minutes the slope of such samples is the swings' timing (it read
/// -20..+30 MiB/h on runs of one build), where growth pushes the
/// high-water mark up run after run.
fn flat(pts: &[(f64, f64)]) -> Result<(), String> {
    if pts.len() < 4 {
        return Err(format!("has {} samples, too few to tell", pts.len()));
    }
    let half = pts.len() / 2;
    let (first, second) = (high(&pts[..half]), high(&pts[half..]));
    let allowed = first + (first * 0.1).max(1.0);
    if second > allowed {
        return Err(format!(
            "rose past the first half's band: {second:.1} MiB in the second half, \
             {first:.1} MiB in the first (at most {allowed:.1})"
        ));
    }
    Ok(())
}

fn live_of(text: &str) -> Option<(f64, f64)> {
    Some((
        sample(text, "rmapwatch_objects{type=\"anon_vma\",basis=\"live\"}")?,
        sample(
            text,
            "rmapwatch_objects{type=\"anon_vma_chain\",basis=\"live\"}",
        )?,
    ))
}

/// A fresh `rmapwatch report` (its own seeding walk): live objects, but
/// for those of the report's own process (gone by the exporter's next
/// report).
fn fresh_walk(bin: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    let child = Command::new(bin)
        .args(["report", "--json", "--duration", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = u64::from(child.id());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("rmapwatch report failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let own = v["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"].as_u64() == Some(pid)))
        .map(|p| p["live"].clone());
    let n = |b: &serde_json::Value, t: &str| b[t]["objects"].as_f64().unwrap_or(0.0);
    let mine = |t: &str| own.as_ref().map_or(0.0, |b| n(b, t));
    Ok((
        n(&v["live"], "anon_vma") - mine("anon_vma"),
        n(&v["live"], "anon_vma_chain") - mine("anon_vma_chain"),
    ))
}

#[allow(clippy::too_many_lines)] // one sequence of steps
pub fn run(o: &Opts) -> anyhow::Result<()> {
    let bin = crate::storm::rmapwatch_bin()?;
    let workload = bin.with_file_name("rmw-workload");
    let regions = o.vmas / 2;
    // Each region and its guard are two VMAs.
    let max_map = std::fs::read_to_string("/proc/sys/vm/max_map_count")?;
    let need = o.vmas + 65_536;
    if max_map.trim().parse::<usize>().unwrap_or(0) < need {
        std::fs::write("/proc/sys/vm/max_map_count", need.to_string())?;
    }
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write("/proc/sys/vm/max_map_count", self.0.trim());
        }
    }
    let _restore = Restore(max_map);
    println!(
        "soak: {} min of fork/mmap churn (stress-ng) next to a process holding {} VMAs ({regions} \
         with an anon_vma), rmapwatch serve scraped every 2 s",
        o.minutes, o.vmas
    );
    let t0 = Instant::now();
    let mut holder = Command::new(&workload)
        .args([
            "--regions",
            &regions.to_string(),
            "--children",
            "0",
            "--hold",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting rmw-workload")?;
    let rx = lines_of(holder.stdout.take().context("no stdout")?);
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(300))
            .context("the holder never said ready")?;
        if l.starts_with("ready") {
            break;
        }
    }
    let holder = Killed(holder);
    println!("holder ready in {:.1} s", t0.elapsed().as_secs_f64());
    let stand_in = if o.adb {
        let adbd = bin.with_file_name("rmw-adbd");
        let s = crate::adb::StandIn::start(&adbd)?;
        println!(
            "through adb: the stand-in {} (this host as the phone), its own adb server",
            s.serial
        );
        Some(s)
    } else {
        None
    };
    let mut serve = Command::new(&bin);
    if let Some(s) = &stand_in {
        serve
            .args(["--adb", &s.serial])
            .envs(s.env.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let mut serve = serve
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rmapwatch serve")?;
    let err = lines_of(serve.stderr.take().context("no stderr")?);
    let pid = serve.id();
    let serve = Killed(serve);
    let addr: SocketAddr = loop {
        let l = err
            .recv_timeout(Duration::from_secs(300))
            .context("rmapwatch serve never said where it serves")?;
        eprintln!("{l}");
        if let Some(a) = l.split("http://").nth(1).and_then(|r| r.split('/').next()) {
            break a.parse()?;
        }
    };
    // The first report: the seeding walk of every VMA.
    let t1 = Instant::now();
    loop {
        let (_, text) = get(addr)?;
        if sample(&text, "rmapwatch_source_up") == Some(1.0) {
            println!(
                "first report after {:.1} s; the walk saw {} VMAs",
                t1.elapsed().as_secs_f64(),
                sample(&text, "rmapwatch_walk_vmas").unwrap_or(0.0)
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent on the "phone" (adb): its RSS too.
    let agent = if o.adb {
        Some(crate::adb::agent_pid().context("no agent process found")?)
    } else {
        None
    };
    let mut agent_rss: Vec<(f64, f64)> = Vec::new();
    let mut lag_ms: Vec<f64> = Vec::new();
    let secs = (o.minutes * 60.0).round() as u64;
    let stress = Command::new("stress-ng")
        .args([
            "--fork",
            "1",
            "--mmap",
            "1",
            "--mmap-bytes",
            "16M",
            "--timeout",
            &format!("{secs}s"),
            "--quiet",
        ])
        .spawn()
        .context("starting stress-ng (Debian's package; cargo xtask setup installs it)")?;
    let stress = Killed(stress);
    let start = Instant::now();
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut last = String::new();
    let mut next_print = 0.0;
    while start.elapsed().as_secs() < secs {
        let (took, text) = get(addr)?;
        latencies.push(took.as_secs_f64() * 1000.0);
        let t = start.elapsed().as_secs_f64();
        if let Some(kib) = rss_kib(pid) {
            rss.push((t, kib as f64 / 1024.0));
        }
        if let Some(kib) = agent.and_then(rss_kib) {
            agent_rss.push((t, kib as f64 / 1024.0));
        }
        if let Some(l) = sample(&text, "rmapwatch_link_lag_seconds") {
            lag_ms.push(l * 1000.0);
        }
        if t >= next_print {
            let agent_now = agent_rss
                .last()
                .map_or(String::new(), |r| format!("  agent rss {:>5.1} MiB", r.1));
            println!(
                "{:>6.0} s  rss {:>7.1} MiB{agent_now}  scrape {:>6.2} ms  processes {:>6}  \
                 forks seen {:>9}  dropped {}",
                t,
                rss.last().map_or(0.0, |r| r.1),
                took.as_secs_f64() * 1000.0,
                sample(&text, "rmapwatch_processes").unwrap_or(0.0),
                sample(
                    &text,
                    "rmapwatch_allocations_total{type=\"anon_vma\",site=\"anon_vma_fork\"}"
                )
                .unwrap_or(0.0),
                sample(&text, "rmapwatch_dropped_events_total").unwrap_or(0.0),
            );
            next_print += 30.0;
        }
        last = text;
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(stress);
    let _ = std::io::stdout().flush();
    // The churn's processes are gone: the exporter's live counts against
    // a fresh walk, taken while nothing else changes (retried).
    std::thread::sleep(Duration::from_secs(3));
    let mut matched = None;
    for _ in 0..10 {
        let fresh = fresh_walk(&bin)?;
        std::thread::sleep(Duration::from_millis(1500));
        let (_, text) = get(addr)?;
        let ours = live_of(&text).context("no live series")?;
        if ours == fresh {
            matched = Some(fresh);
            last = text;
            break;
        }
        println!(
            "exporter {ours:?} (drift against its own walk: {:?}) vs fresh walk {fresh:?}: again",
            sample(&text, "rmapwatch_drift_objects{type=\"anon_vma\"}")
        );
    }
    let half = rss.len() / 2;
    let second = &rss[half..];
    let growth_mib_per_h = slope(second) * 3600.0;
    let mean = second.iter().map(|p| p.1).sum::<f64>() / second.len().max(1) as f64;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    println!(
        "RSS: {:.1} MiB at start, {:.1} MiB at the end, {} MiB over the first half, {} over the \
         second (mean {mean:.1}, trend {growth_mib_per_h:+.2} MiB/h)",
        rss.first().map_or(0.0, |r| r.1),
        rss.last().map_or(0.0, |r| r.1),
        band(&rss[..half]),
        band(second),
    );
    println!(
        "scrape latency over {} scrapes: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    println!(
        "state: {} VMAs walked, {} processes in the report, {} dropped events, {} re-seeds",
        sample(&last, "rmapwatch_walk_vmas").unwrap_or(0.0),
        sample(&last, "rmapwatch_processes").unwrap_or(0.0),
        sample(&last, "rmapwatch_dropped_events_total").unwrap_or(0.0),
        sample(&last, "rmapwatch_reseeds_total").unwrap_or(0.0),
    );
    drop(serve);
    drop(holder);
    let mut failed = Vec::new();
    if let Err(e) = flat(&rss) {
        failed.push(format!("RSS {e}"));
    }
    if let Some(s) = stand_in {
        let second = &agent_rss[agent_rss.len() / 2..];
        let growth = slope(second) * 3600.0;
        let mean = second.iter().map(|p| p.1).sum::<f64>() / second.len().max(1) as f64;
        lag_ms.sort_by(f64::total_cmp);
        let lag = |q: f64| {
            lag_ms
                .get(((lag_ms.len().max(1) - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "agent RSS: {:.1} MiB at start, {:.1} MiB at the end, {} MiB over the first half, {} \
             over the second (mean {mean:.1}, trend {growth:+.2} MiB/h)",
            agent_rss.first().map_or(0.0, |r| r.1),
            agent_rss.last().map_or(0.0, |r| r.1),
            band(&agent_rss[..agent_rss.len() / 2]),
            band(second),
        );
        println!(
            "link lag over {} scrapes: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lag_ms.len(),
            lag(0.5),
            lag(0.99),
            lag(1.0)
        );
        if let Err(e) = flat(&agent_rss) {
            failed.push(format!("the agent's RSS {e}"));
        }
        // Bounded: the link keeps up (a tick late by more than the
        // refresh interval would mean a backlog).
        if lag_ms.is_empty() || lag(1.0) >= 1000.0 {
            failed.push(format!(
                "the link's lag reached {:.0} ms (limit 1000)",
                lag(1.0)
            ));
        }
        if let Err(e) = s.stop() {
            failed.push(format!("{e:#}"));
        }
    }
    if p(1.0) >= 100.0 {
        failed.push(format!("a scrape took {:.1} ms (limit 100)", p(1.0)));
    }
    match matched {
        Some(m) => println!(
            "end counts equal a fresh walk: anon_vma {}, AVC {}",
            m.0, m.1
        ),
        None => failed.push("the end counts never equalled a fresh walk's".into()),
    }
    if failed.is_empty() {
        println!("soak passed");
        Ok(())
    } else {
        bail!("soak failed: {}", failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|x| (f64::from(x), 3.0 * f64::from(x) + 1.0))
            .collect();
        assert!((super::slope(&pts) - 3.0).abs() < 1e-9);
        assert_eq!(super::slope(&[(1.0, 1.0)]), 0.0);
    }

    fn series(v: &[f64]) -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, &y)| (i as f64 * 2.0, y))
            .collect()
    }

    #[test]
    fn swings_within_the_first_half_s_band_are_flat() {
        // soak 5's serve, every 30 s: a swing to 17.9 early, back to 12.7.
        let s = series(&[
            7.5, 10.8, 12.5, 12.5, 12.5, 14.9, 14.5, 12.9, 17.9, 16.1, 14.0, 12.7, 12.7, 12.8,
            13.8, 12.7, 12.7, 14.4, 14.4, 14.4,
        ]);
        assert!(super::flat(&s).is_ok());
        assert!(super::slope(&s[10..]) > 0.0, "where the slope reads growth");
    }

    #[test]
    fn growth_past_the_first_half_s_band_is_not_flat() {
        let leak: Vec<f64> = (0..20).map(|i| 10.0 + 0.2 * f64::from(i)).collect();
        let e = super::flat(&series(&leak)).unwrap_err();
        assert!(e.contains("rose past"), "{e}");
        assert!(
            super::flat(&series(&[1.0, 1.0])).is_err(),
            "too few samples"
        );
    }
}
