//! Recordings: replay throughput against the live pipeline (no root), and
//! during a real fork storm the recording's size per event and the
//! recorder's CPU against `report` alone (root), in alternated rounds.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rmapwatch_engine::{
    engine::{Engine, Options},
    event::{decode, encode},
    input::Input,
    report::Report,
    stream::{Kind, Reader, Writer},
};

use crate::{
    stats::{line, ratio, stats},
    synth::{facts, fork_storm_events, synthetic, walk_inputs},
};

/// Events per batch, as the live source drains them.
const BATCH: usize = 1024;

/// A fork storm's events after a seeding walk, as inputs.
fn storm_inputs(n: usize) -> Vec<Input> {
    let snap = synthetic(200, 20);
    let mut inputs = vec![Input::Facts(Box::new(facts()))];
    inputs.extend(walk_inputs(snap.vmas.iter().cloned(), 1_000_000));
    let mut t = 10_000_000;
    for chunk in fork_storm_events(n).chunks(BATCH) {
        t += 20_000_000;
        inputs.push(Input::Events {
            t,
            events: chunk.to_vec(),
        });
    }
    inputs.push(Input::End {
        t: t + 1,
        reason: "bench".into(),
    });
    inputs
}

/// Replay (stream decoding + engine) against the live pipeline (ring
/// records decoded + engine), events per second on one core.
pub fn replay(n: usize, repeat: usize) -> anyhow::Result<()> {
    let inputs = storm_inputs(n);
    let Input::Facts(f) = &inputs[0] else {
        bail!("facts first");
    };
    let mut w = Writer::new(Vec::new(), Kind::Inputs, "bench", Some(f))?;
    for i in &inputs[1..] {
        w.input(i)?;
    }
    w.flush()?;
    let bytes = w.into_inner();
    // The live pipeline's input: the same events as the ring's records.
    let records: Vec<(u64, Vec<Vec<u8>>)> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Events { t, events } => Some((*t, events.iter().map(encode).collect())),
            _ => None,
        })
        .collect();
    let prelude: Vec<Input> = inputs
        .iter()
        .take_while(|i| !matches!(i, Input::Events { .. }))
        .cloned()
        .collect();
    let mut live = Vec::new();
    let mut replay = Vec::new();
    let mut decode_only = Vec::new();
    for _ in 0..repeat {
        let t0 = Instant::now();
        let mut r = Reader::open(&bytes[..], Kind::Inputs)?;
        let mut k = 0usize;
        while let Some(i) = r.next_input()? {
            if let Input::Events { events, .. } = i {
                k += events.len();
            }
        }
        decode_only.push(n as f64 / t0.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(k);
        let mut e = Engine::new(Options::default());
        for i in prelude.clone() {
            e.apply(i)?;
        }
        let t0 = Instant::now();
        for (t, batch) in &records {
            let events = batch.iter().filter_map(|r| decode(r).ok()).collect();
            e.apply(Input::Events { t: *t, events })?;
        }
        live.push(n as f64 / t0.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(e.accounting().events);
        let t0 = Instant::now();
        let mut r = Reader::open(&bytes[..], Kind::Inputs)?;
        let mut e = Engine::new(Options {
            source_answers: false,
            ..Options::default()
        });
        while let Some(i) = r.next_input()? {
            e.apply(i)?;
        }
        replay.push(n as f64 / t0.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(e.accounting().events);
    }
    let (l, r) = (stats(live), stats(replay));
    line(
        "replay: stream decoding alone",
        "M events/s",
        stats(decode_only),
    );
    line(
        "replay: live pipeline (ring records + engine)",
        "M events/s",
        l,
    );
    line(
        "replay: recording (stream decode + engine)",
        "M events/s",
        r,
    );
    ratio("replay: recording vs live pipeline", r.0, l.0);
    println!(
        "{:<44}        {:>10.2} bytes/event ({} events, {} KiB, with a 4,000-VMA walk)",
        "replay: synthetic fork storm recorded",
        bytes.len() as f64 / n as f64,
        n,
        bytes.len() / 1024
    );
    Ok(())
}

/// CPU seconds (user + system) of a child, reaped here.
fn wait_cpu(pid: u32) -> anyhow::Result<(f64, i32)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a status and an rusage.
    let rc = unsafe { libc::wait4(i32::try_from(pid)?, &raw mut status, 0, &raw mut ru) };
    if rc < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((secs(ru.ru_utime) + secs(ru.ru_stime), status))
}

/// One round: `rmapwatch ARGS` attached while a fork storm of `forks`
/// runs; its CPU, its final report, and how long the storm took.
fn round(bin: &Path, args: &[&str], forks: usize) -> anyhow::Result<(f64, Report, f64)> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut err = BufReader::new(child.stderr.take().context("stderr")?).lines();
    loop {
        match err.next() {
            Some(Ok(l)) if l.contains("attached") => break,
            Some(Ok(_)) => {}
            _ => bail!("rmapwatch {args:?} ended before attaching"),
        }
    }
    std::thread::spawn(move || for _ in err {});
    std::thread::sleep(Duration::from_secs(2));
    // From here on: the start-up (BTF, loading) is the same for both and
    // left out.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = crate::storm::cpu_ticks(child.id())? as f64 / hz;
    let t0 = Instant::now();
    crate::storm::fork_storm(forks)?;
    let storm_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id())?, libc::SIGINT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut out)?;
    let (cpu, status) = wait_cpu(child.id())?;
    if status != 0 {
        bail!("rmapwatch {args:?} exited with status {status}");
    }
    let r: Report = serde_json::from_str(out.lines().last().context("no report")?)?;
    Ok((cpu - before, r, storm_s))
}

/// The recorder against `report` during fork storms: `report` alone (it
/// walks only at the end), `report --interval 1` (it walks every second,
/// as the recorder does), and `record`, in alternated rounds.
pub fn record(rounds: usize, forks: usize) -> anyhow::Result<()> {
    rmapwatch_live::kernel::check_privileges()?;
    let bin = std::env::current_exe()?.with_file_name("rmapwatch");
    let file = std::env::temp_dir().join("rmw-bench-record.rmw");
    let path = file.to_str().context("temp path")?.to_owned();
    let variants: [(&str, Vec<&str>); 3] = [
        ("report", vec!["report", "--json"]),
        (
            "report --interval 1",
            vec!["report", "--json", "--interval", "1"],
        ),
        ("record", vec!["record", "-o", &path, "--json"]),
    ];
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    let mut kernel_ns: [Vec<f64>; 3] = Default::default();
    let mut per_event = Vec::new();
    for _ in 0..rounds {
        let mut this = [0.0; 3];
        for (i, (_, args)) in variants.iter().enumerate() {
            let _ = std::fs::remove_file(&file);
            let (c, r, _) = round(&bin, args, forks)?;
            if r.dropped_events != Some(0) {
                println!("record: {args:?} dropped {:?} events", r.dropped_events);
            }
            this[i] = c;
            cpu[i].push(c / r.events.max(1) as f64 * 1e9);
            kernel_ns[i].push(
                r.cost
                    .as_ref()
                    .and_then(|c| c.ns_per_event)
                    .unwrap_or(f64::NAN),
            );
            if i == 2 {
                per_event.push(std::fs::metadata(&file)?.len() as f64 / r.events.max(1) as f64);
            }
        }
        ratios[0].push(this[2] / this[1]);
        ratios[1].push(this[2] / this[0]);
    }
    let _ = std::fs::remove_file(&file);
    for (i, (name, _)) in variants.iter().enumerate() {
        line(
            &format!("record: {name}, CPU per event"),
            "ns",
            stats(cpu[i].clone()),
        );
    }
    for (r, against) in ratios
        .iter()
        .zip(["report --interval 1 (the same walks)", "report alone"])
    {
        let r = stats(r.clone());
        println!(
            "{:<44} ratio  {:>10.3}x (min {:.3}, max {:.3}) of {against}",
            "record: recorder CPU", r.0, r.1, r.2
        );
    }
    line(
        &format!("record: file size during a {forks}-fork storm"),
        "bytes/event",
        stats(per_event),
    );
    // The programs are the same either way (events carry a batch time,
    // stamped where the ring is drained): the kernel's cost per event.
    for (i, (name, _)) in variants.iter().enumerate() {
        line(
            &format!("record: kernel ns/event under {name}"),
            "ns",
            stats(kernel_ns[i].clone()),
        );
    }
    Ok(())
}
