//! `rmapwatch serve` against the real Prometheus server (Debian's
//! `prometheus` package) and `promtool check metrics`, on the running
//! kernel (root: `cargo xtask test` runs these).
mod common;

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

fn promtool_check(text: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\non\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real Prometheus server, scraping `targets` every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rmw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Self {
        let dir = TempDir::new("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: rmapwatch\n    static_configs:\n      - targets: \
             [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();
        let status = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config_path)
            .status()
            .unwrap();
        assert!(status.success(), "promtool check config:\n{config}");
        // The port is free when read, not reserved: another process can
        // bind it before Prometheus does (it then exits, "address already
        // in use"), and a new port is tried, up to three.
        let mut dir = Some(dir);
        for attempt in 1..=3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let d = dir.take().unwrap();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    d.0.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.0.join("log")).unwrap())
                .spawn()
                .expect("prometheus (Debian's package; cargo xtask setup installs it)");
            let mut p = Self {
                child,
                addr,
                _dir: d,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            // Ready, not only listening: until its database is open the
            // query API answers 503.
            let mut taken = false;
            while !ready(addr) {
                if p.child.try_wait().unwrap().is_some() {
                    let log = p.log();
                    assert!(
                        log.contains("address already in use") && attempt < 3,
                        "prometheus exited: {log}"
                    );
                    taken = true;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus did not start: {}",
                    p.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            if !taken {
                return p;
            }
            eprintln!("prometheus: {addr} was taken before it bound it; another port");
            // Its directory goes to the next attempt (not dropped with it).
            dir = Some(TempDir(std::mem::take(&mut p._dir.0)));
        }
        unreachable!("the third attempt returns or panics")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("log")).unwrap_or_default()
    }

    /// An instant query (at `at`, Unix seconds, or now): the result vector.
    fn query(&self, expr: &str, at: Option<f64>) -> Vec<Value> {
        let mut q = format!("/api/v1/query?query={}", urlencode(expr));
        if let Some(t) = at {
            q.push_str(&format!("&time={t:.3}"));
        }
        let (_, body) = get(self.addr, &q, None);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value of a query (panics unless exactly one series).
    fn value(&self, expr: &str, at: Option<f64>) -> f64 {
        let r = self.query(expr, at);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }

    /// Waits until `expr` has a result.
    fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr, None);
            if !r.is_empty() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {expr} within {timeout:?}; prometheus said {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /-/ready` answers 200.
fn ready(addr: SocketAddr) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET /-/ready HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.lines().next().is_some_and(|l| l.contains(" 200 "))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn live_series(r: &Report) -> [(&'static str, u64); 2] {
    [
        ("anon_vma", r.live.anon_vma.objects),
        ("anon_vma_chain", r.live.anon_vma_chain.objects),
    ]
}

/// The workload's processes counted exactly alike; system-wide live
/// objects equal at one moment (retried: other processes of the machine
/// come and go between the two readings); allocation rates within one
/// scrape interval.
#[test]
#[ignore = "root: loads eBPF programs; run by cargo xtask test"]
fn prometheus_sees_what_a_report_taken_at_the_same_moment_says() {
    require_root();
    ensure_tracefs();
    let w = Workload::start(&["--regions", "100", "--children", "3"]);
    let serve = Serve::start(&["--listen", "127.0.0.1:0", "--interval", "0.5"]);
    let prom = Prometheus::start(&[serve.addr]);
    let mut rep = Rmapwatch::start(&["--interval", "0.5"]);
    prom.wait_for("rmapwatch_source_up == 1", Duration::from_secs(60));
    // The Prometheus server asks for OpenMetrics and parses it (its own
    // `up` says so); promtool (2.42) lints the Prometheus text format.
    let (ctype, om) = serve.scrape(Some("application/openmetrics-text; version=1.0.0"));
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"));
    let (ctype, text) = serve.scrape(None);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    promtool_check(&text);
    assert_eq!(prom.value("up{job=\"rmapwatch\"}", None), 1.0);
    assert!(prom.value("scrape_samples_scraped{job=\"rmapwatch\"}", None) > 50.0);

    // The workload, per process: exact.
    let pids: Vec<u32> = std::iter::once(w.parent)
        .chain(w.children.iter().copied())
        .collect();
    let r = report(&rep.stdout.fresh("\"schema\"", Duration::from_secs(30)));
    // Its walk has seen the workload (it ran before both started).
    for &pid in &pids {
        let p = process(&r, pid);
        for (t, n) in [
            ("anon_vma", p.live.anon_vma.objects),
            ("anon_vma_chain", p.live.anon_vma_chain.objects),
        ] {
            let expr =
                format!("rmapwatch_process_objects{{pid=\"{pid}\",type=\"{t}\",basis=\"live\"}}");
            prom.wait_for(&expr, Duration::from_secs(10));
            assert_eq!(prom.value(&expr, None), n as f64, "{expr}");
            let lazy = p.lazy.expect("a walk behind the report");
            let lazy = if t == "anon_vma" {
                lazy.anon_vma.objects
            } else {
                lazy.anon_vma_chain.objects
            };
            let expr = expr.replace("\"live\"", "\"lazy\"");
            assert_eq!(prom.value(&expr, None), lazy as f64, "{expr}");
        }
    }

    // System-wide live objects at one moment: a report line and the
    // Prometheus value at its arrival (the latest scrape before it).
    let mut tries = Vec::new();
    let equal = (0..20).any(|_| {
        let r = report(&rep.stdout.fresh("\"schema\"", Duration::from_secs(30)));
        let at = now_s();
        // The scrape that covers this moment lands within a second.
        std::thread::sleep(Duration::from_millis(1200));
        let got: Vec<(u64, f64)> = live_series(&r)
            .iter()
            .map(|&(t, n)| {
                let v = prom.value(
                    &format!("rmapwatch_objects{{type=\"{t}\",basis=\"live\"}}"),
                    Some(at + 1.0),
                );
                (n, v)
            })
            .collect();
        tries.push(got.clone());
        got.iter().all(|&(n, v)| n as f64 == v)
    });
    assert!(
        equal,
        "never equal in 20 tries (report, prometheus): {tries:?}"
    );

    // Rates: a fork storm at a steady pace for 12 s; the increase of the
    // allocations over 10 s, from Prometheus's samples and from the report.
    let storm = std::thread::spawn(|| {
        let end = Instant::now() + Duration::from_secs(12);
        while Instant::now() < end {
            let ok = Command::new(&*WORKLOAD)
                .args(["--regions", "20", "--storm", "40"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let allocs = |r: &Report| r.objects["anon_vma"].allocs;
    let r1 = report(&rep.stdout.fresh("\"schema\"", Duration::from_secs(30)));
    let t1 = now_s();
    std::thread::sleep(Duration::from_secs(10));
    let r2 = report(&rep.stdout.fresh("\"schema\"", Duration::from_secs(30)));
    let t2 = now_s();
    storm.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let expr = "sum(rmapwatch_allocations_total{type=\"anon_vma\"})";
    let d_prom = prom.value(expr, Some(t2)) - prom.value(expr, Some(t1));
    let d_rep = (allocs(&r2) - allocs(&r1)) as f64;
    let span = t2 - t1;
    let rate = d_rep / span;
    // One scrape interval (1 s) plus one report interval (0.5 s) of events.
    let slack = rate * 1.5;
    assert!(
        rate > 100.0,
        "the storm made {rate:.0} anon_vma/s: too few to compare"
    );
    assert!(
        (d_prom - d_rep).abs() <= slack,
        "increase over {span:.1} s: prometheus {d_prom} vs report {d_rep} (slack {slack:.0})"
    );
    // And Prometheus's own rate() agrees within the same slack.
    let prom_rate = prom.value(
        "sum(rate(rmapwatch_allocations_total{type=\"anon_vma\"}[10s]))",
        Some(t2),
    );
    assert!(
        (prom_rate - rate).abs() * span <= slack * 2.0,
        "rate(): prometheus {prom_rate:.0}/s vs report {rate:.0}/s"
    );

    // Nothing lost, the info series says how it is hooked.
    // Lost events are counted (a storm with two tracers may lose some).
    assert_eq!(prom.query("rmapwatch_dropped_events_total", None).len(), 1);
    let info = prom.query("rmapwatch_build_info", None);
    assert_eq!(info.len(), 1);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info[0]["metric"]["kernel"], release.trim());
    assert!(
        info[0]["metric"]["hooks"]
            .as_str()
            .unwrap()
            .contains("tracepoint"),
        "{info:?}"
    );

    w.finish();
    rep.stop_all();
    let (status, err) = serve.stop();
    assert!(status.success(), "{err:#?}");
    assert_eq!(wait_gone(Duration::from_secs(10)), Vec::<String>::new());
}

/// Every query of the Grafana dashboard, run against the real
/// Prometheus: valid, and with data (a dashboard panel that shows
/// nothing is a bug too).
#[test]
#[ignore = "root: loads eBPF programs; run by cargo xtask test"]
fn every_dashboard_query_returns_data_from_the_real_prometheus() {
    require_root();
    ensure_tracefs();
    let w = Workload::start(&["--regions", "50", "--children", "2"]);
    let serve = Serve::start(&["--listen", "127.0.0.1:0", "--interval", "0.5"]);
    let prom = Prometheus::start(&[serve.addr]);
    prom.wait_for("rmapwatch_source_up == 1", Duration::from_secs(60));
    // Traffic for the rates, then enough samples for a 5 s window.
    for _ in 0..3 {
        let ok = Command::new(&*WORKLOAD)
            .args(["--regions", "10", "--storm", "20"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::thread::sleep(Duration::from_secs(2));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/rmapwatch.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // Grafana's variables as a dashboard user with "All" selected has them.
    let mut vars = vec![("$__rate_interval".to_owned(), "5s".to_owned())];
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let name = format!("${}", v["name"].as_str().unwrap());
            vars.push((name.clone(), ".+".to_owned()));
            // The variable's own query lists values.
            let def = v["definition"].as_str().unwrap();
            let (metric, label) = def
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(", "))
                .unwrap();
            let metric = metric.replace("$job", ".+");
            let r = prom.query(&metric, None);
            assert!(
                r.iter().any(|s| s["metric"][label].is_string()),
                "variable {name}: {def} lists nothing"
            );
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    for (title, expr) in &exprs {
        let mut q = expr.clone();
        for (k, v) in &vars {
            q = q.replace(k, v);
        }
        let r = prom.query(&q, None);
        assert!(!r.is_empty(), "panel {title:?}: {q} returned no data");
    }
    w.finish();
    let (status, err) = serve.stop();
    assert!(status.success(), "{err:#?}");
}

/// A scrape while the live counts are re-seeded (events lost in a tiny
/// ring buffer under a fork storm): every scrape whole and valid, the
/// re-seed counted, and the counts equal a fresh walk after it.
#[test]
#[ignore = "root: loads eBPF programs; run by cargo xtask test"]
fn a_scrape_during_a_reseed_sees_a_whole_state() {
    require_root();
    ensure_tracefs();
    let serve = Serve::start(&[
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "0.2",
        "--ring-buffer-kb",
        "4",
    ]);
    // Its first report (the seeding walk done).
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(&serve.scrape(None).1, "rmapwatch_source_up") != Some(1.0) {
        assert!(Instant::now() < deadline, "no report within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let storm = std::thread::spawn(|| {
        for _ in 0..4 {
            let ok = Command::new(&*WORKLOAD)
                .args(["--regions", "50", "--storm", "300"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    });
    let mut scrapes = 0;
    let mut max_reseeds = 0.0f64;
    let mut texts = Vec::new();
    while !storm.is_finished() || scrapes < 20 {
        let (_, text) = serve.scrape(None);
        for name in [
            "rmapwatch_objects{type=\"anon_vma\",basis=\"live\"}",
            "rmapwatch_objects{type=\"anon_vma_chain\",basis=\"live\"}",
            "rmapwatch_reseeds_total",
            "rmapwatch_source_up",
        ] {
            assert!(
                sample(&text, name).is_some(),
                "no {name} in scrape {scrapes}:\n{text}"
            );
        }
        max_reseeds = max_reseeds.max(sample(&text, "rmapwatch_reseeds_total").unwrap());
        scrapes += 1;
        if scrapes % 10 == 0 {
            texts.push(text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    storm.join().unwrap();
    for t in &texts {
        promtool_check(t);
    }
    assert!(
        max_reseeds >= 1.0,
        "no re-seed in {scrapes} scrapes: the storm lost no events with a 4 KiB ring"
    );
    // After the storm: the next re-seeded state is exact (drift 0 against
    // the walk it was seeded from), not degraded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = serve.scrape(None);
        let degraded = sample(&text, "rmapwatch_degraded");
        let drift = sample(&text, "rmapwatch_drift_objects{type=\"anon_vma\"}");
        if degraded == Some(0.0) && drift == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still degraded {degraded:?} / drift {drift:?} 30 s after the storm:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, err) = serve.stop();
    assert!(status.success(), "{err:#?}");
}

/// A port in use: one line naming the address and the remedy, exit 2,
/// nothing loaded.
#[test]
#[ignore = "root: loads eBPF programs; run by cargo xtask test"]
fn a_port_in_use_is_said_with_its_remedy() {
    require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(RMAPWATCH)
        .args(["serve", "--listen", &addr.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{addr} is in use")), "{err}");
    assert!(err.contains("--listen"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(wait_gone(Duration::from_secs(10)), Vec::<String>::new());
}

/// Another address than loopback works, and is said at start.
#[test]
#[ignore = "root: loads eBPF programs; run by cargo xtask test"]
fn a_non_loopback_listen_is_served_and_said() {
    require_root();
    ensure_tracefs();
    let port = free_port();
    let serve = Serve::start(&["--listen", &format!("0.0.0.0:{port}")]);
    assert!(
        serve
            .stderr
            .seen
            .iter()
            .any(|l| l.contains("not loopback") && l.contains("no authentication")),
        "{:#?}",
        serve.stderr.seen
    );
    let (_, text) = get(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "/metrics",
        None,
    );
    assert!(text.contains("rmapwatch_source_up"), "{text}");
    let (status, err) = serve.stop();
    assert!(status.success(), "{err:#?}");
}
