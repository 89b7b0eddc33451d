//! The designs' costs (`rmw-bench designs|pagemap|designs-render`): the
//! designs fed a walk beside today's walk + model, the ideal's pagemap
//! reads per GiB of anonymous memory, and the dashboard's frame with the
//! designs present.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use ratatui::{Terminal, backend::TestBackend};
use rmapwatch_engine::{
    design::{Designs, Options as DesignOptions},
    model::Options,
    snapshot::{AnonPages, PagemapRead, Vma, WalkCounts},
    walk::Digest,
};
use rmapwatch_live::pagemap::Reader;
use rmapwatch_tui::state::{Action, App, Update};

use crate::{
    stats::{line, ratio, stats},
    synth::{facts, seeded, synthetic},
};

/// `VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE`.
const RW: u64 = 0x1 | 0x2 | 0x10 | 0x20;
const PAGE_SHIFT: u32 = 12;

/// A system of fork families as a walk sees it, `total` VMAs or a few
/// more: per family a root process, 3 children forked from it without
/// exec and 2 grandchildren of its first child (shared anon_vma roots,
/// chains of 1-3 AVCs); per process 50 VMAs: 30 private anonymous (25
/// faulted, with anon_pages: 3/4 exclusive in a child), 12 private file
/// mappings at a file offset (4 of them with COW'd pages, so an
/// anon_vma), 6 read-only file mappings, a shared mapping and a stack.
pub fn fork_families(total: u64) -> Vec<Vma> {
    const PER: u64 = 50;
    const PROCS: u64 = 6;
    let families = total.div_ceil(PER * PROCS);
    let mut out = Vec::with_capacity((families * PER * PROCS) as usize);
    let mut next = 0x1000u64;
    let mut id = || {
        next += 0x40;
        0xffff_8880_0000_0000 + next
    };
    let mut tgid = 1000u32;
    for _ in 0..families {
        // Per process: its anon_vma per VMA index (0: none), the chain.
        let mut avs: Vec<Vec<u64>> = Vec::new();
        let mut chains: Vec<Vec<Vec<u64>>> = Vec::new();
        let mut tgids = Vec::new();
        // (parent's index in this family or none, depth).
        let shape: [(Option<usize>, u32); PROCS as usize] = [
            (None, 0),
            (Some(0), 1),
            (Some(0), 1),
            (Some(0), 1),
            (Some(1), 2),
            (Some(1), 2),
        ];
        for (k, &(parent, _)) in shape.iter().enumerate() {
            tgid += 1;
            tgids.push(tgid);
            let ppid = parent.map_or(1, |p| tgids[p]);
            let mut mine = Vec::new();
            let mut my_chains = Vec::new();
            for i in 0..PER {
                let start = 0x5555_0000_0000 + i * 0x10_0000;
                let (file, flags, faulted, pgoff) = match i {
                    0..30 => (false, RW, i < 25, start >> PAGE_SHIFT),
                    30..42 => (true, RW, i < 34, (i - 30) * 0x40),
                    42..48 => (true, 0x1 | 0x10, false, (i - 42) * 0x40),
                    48 => (true, RW | 0x8 | 0x80, false, 0),
                    // The stack: growsdown, its pgoff moved by exec.
                    _ => (false, RW | 0x100, true, (start >> PAGE_SHIFT) - 0x100),
                };
                let (av, chain) = if faulted {
                    let av = id();
                    let mut chain =
                        parent.map_or_else(Vec::new, |p: usize| chains[p][i as usize].clone());
                    chain.push(av);
                    (av, chain)
                } else {
                    (0, Vec::new())
                };
                let parent_av = parent.map_or(av, |p| avs[p][i as usize]);
                let root = chain.first().copied().unwrap_or(0);
                mine.push(av);
                my_chains.push(chain.clone());
                let pages = 16;
                out.push(Vma {
                    tgid,
                    mm: u64::from(tgid) << 12,
                    addr: id(),
                    start,
                    end: start + (pages << PAGE_SHIFT),
                    flags,
                    file,
                    anon_vma: av,
                    av_root: root,
                    av_parent: if av == 0 { 0 } else { parent_av },
                    av_num_children: u64::from(av != 0) * if k == 0 { 4 } else { 1 },
                    av_refcount: u32::from(av != 0),
                    chain: chain.iter().map(|&a| (id(), a)).collect(),
                    chain_truncated: false,
                    ppid,
                    pgoff: Some(pgoff),
                    anon_pages: (av != 0).then(|| {
                        let present = if file { 4 } else { pages };
                        AnonPages {
                            present,
                            shared: if k == 0 { present / 2 } else { present / 4 },
                        }
                    }),
                });
            }
            avs.push(mine);
            chains.push(my_chains);
        }
    }
    out
}

/// Today's walk + model over `vmas` (the engine's path without the
/// designs), or that and the designs, as `Engine::walk_vmas` and
/// `walk_ended` run them.
fn one_walk(vmas: &[Vma], with_designs: Option<&mut Designs>) -> usize {
    let facts = facts();
    let mut digest = Digest::new(Options::default(), 0, None);
    let comm = |t: u32| format!("proc-{t}");
    let mut owners = 0u64;
    let mut count = |_: u64, _: u32, _: u32| owners += 1;
    let n = match with_designs {
        None => {
            for v in vmas {
                digest.vma(v, || comm(v.tgid), &mut count);
            }
            let (w, ()) = digest.finish_with(WalkCounts::default(), &mut count, |_, _| ());
            w.procs.len()
        }
        Some(designs) => {
            designs.begin(&facts);
            let mut parents = Vec::new();
            for v in vmas {
                designs.vma(v);
                digest.vma(v, || comm(v.tgid), &mut count);
                if v.ppid != 0 {
                    parents.push((v.tgid, v.ppid));
                }
            }
            let parents: BTreeMap<u32, u32> = parents.into_iter().collect();
            // The walk's VMAs as the source counts them (LAZY's growth rule).
            let counts = WalkCounts {
                vmas: vmas.len() as u64,
                ..WalkCounts::default()
            };
            let (w, out) = digest.finish_with(counts, &mut count, |walked, owner| {
                designs.end_walk(walked, owner, &facts, &parents, false)
            });
            w.procs.len() + out.len()
        }
    };
    std::hint::black_box(owners);
    n
}

/// The designs' cost per walk of `total` VMAs: today's walk + model
/// (baseline) against the same with the four designs, `rounds` each,
/// alternating.
pub fn walk_cost(total: u64, rounds: usize) {
    let vmas = fork_families(total);
    let mut designs = Designs::new(DesignOptions::default());
    // LAZY's sticky upgrades (one lookup per shared anon_vma per walk)
    // apart: the same designs without them.
    let mut unsticky = Designs::new(DesignOptions {
        lazy_sticky: false,
        ..DesignOptions::default()
    });
    // A first walk of each, discarded (the designs keep state across
    // walks, as in the engine: every measured walk is a refresh).
    one_walk(&vmas, None);
    one_walk(&vmas, Some(&mut designs));
    one_walk(&vmas, Some(&mut unsticky));
    let (mut base, mut with, mut without_sticky) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        for k in 0..3 {
            let t = Instant::now();
            match (r + k) % 3 {
                0 => {
                    std::hint::black_box(one_walk(&vmas, None));
                    base.push(t.elapsed().as_secs_f64() * 1e3);
                }
                1 => {
                    std::hint::black_box(one_walk(&vmas, Some(&mut designs)));
                    with.push(t.elapsed().as_secs_f64() * 1e3);
                }
                _ => {
                    std::hint::black_box(one_walk(&vmas, Some(&mut unsticky)));
                    without_sticky.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    let anon = vmas.iter().filter(|v| v.anon_vma != 0).count();
    let procs = vmas.last().map_or(0, |v| v.tgid - 1000);
    println!(
        "designs: {} VMAs in {procs} processes (fork families of 6), {anon} with an anon_vma",
        vmas.len()
    );
    let (b, w, u) = (stats(base), stats(with), stats(without_sticky));
    line("designs: walk + model (baseline)", "ms", b);
    line("designs: walk + model + 4 designs", "ms", w);
    line("designs: the same, LAZY not sticky", "ms", u);
    ratio("designs: with designs vs without", w.0, b.0);
    ratio(
        "designs: with designs, LAZY not sticky, vs without",
        u.0,
        b.0,
    );
}

/// Writes `buf` whole to `fd` (the child's side: no allocation).
fn write_all(fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: a valid slice and an open fd.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

/// A child that maps `bytes` of private anonymous memory, writes every
/// page, and splits it into `pieces` VMAs (every other one read-only);
/// it holds until `release` closes. Returns (pid, start, release fd).
fn anon_child(bytes: u64, pieces: u64) -> anyhow::Result<(i32, u64, i32)> {
    let (mut ready, mut release) = ([0i32; 2], [0i32; 2]);
    // SAFETY: two arrays of two fds.
    if unsafe { libc::pipe(ready.as_mut_ptr()) } != 0
        || unsafe { libc::pipe(release.as_mut_ptr()) } != 0
    {
        anyhow::bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: this process is single-threaded here; the child only makes
    // system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        anyhow::bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child's own memory, mapped here.
        unsafe {
            libc::close(ready[0]);
            libc::close(release[1]);
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(1);
            }
            std::ptr::write_bytes(p.cast::<u8>(), 1, bytes as usize);
            let piece = bytes / pieces;
            for i in (1..pieces).step_by(2) {
                libc::mprotect(
                    p.cast::<u8>().add((i * piece) as usize).cast(),
                    piece as usize,
                    libc::PROT_READ,
                );
            }
            write_all(ready[1], &(p as u64).to_ne_bytes());
            let mut b = [0u8; 1];
            libc::read(release[0], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: fds of the pipes above.
    unsafe {
        libc::close(ready[1]);
        libc::close(release[0]);
    }
    let mut f = std::fs::File::from(unsafe {
        // SAFETY: the read end, ours alone.
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ready[0])
    });
    let mut start = [0u8; 8];
    f.read_exact(&mut start)?;
    Ok((pid, u64::from_ne_bytes(start), release[1]))
}

/// The ideal's pagemap read per GiB of anonymous memory: a child writes
/// `gib` GiB in one VMA and in `pieces` VMAs; `pagemap::Reader` fills
/// them, against reading the same pagemap bytes plainly and against
/// `/proc/PID/smaps_rollup`, `rounds` each.
pub fn pagemap_cost(gib: u64, pieces: u64, rounds: usize) -> anyhow::Result<()> {
    rmapwatch_live::kernel::check_privileges()?;
    let bytes = gib << 30;
    for split in [1, pieces] {
        let (pid, start, release) = anon_child(bytes, split)?;
        let tgid = u32::try_from(pid)?;
        let piece = bytes / split;
        let vmas: Vec<Vma> = (0..split)
            .map(|i| Vma {
                tgid,
                start: start + i * piece,
                end: start + (i + 1) * piece,
                anon_vma: 1,
                ..Vma::default()
            })
            .collect();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        let seen = maps
            .lines()
            .filter(|l| {
                u64::from_str_radix(l.split('-').next().unwrap_or(""), 16)
                    .is_ok_and(|a| a >= start && a < start + bytes)
            })
            .count();
        let (mut reader, mut plain, mut rollup) = (Vec::new(), Vec::new(), Vec::new());
        let mut present = 0;
        let per_gib = |t: Instant| t.elapsed().as_secs_f64() * 1e3 / gib as f64;
        for _ in 0..rounds {
            let mut v = vmas.clone();
            let t = Instant::now();
            let mut r = Reader::new(PagemapRead::Whole);
            r.fill(&mut v);
            reader.push(per_gib(t));
            present = v
                .iter()
                .filter_map(|v| v.anon_pages)
                .map(|a| a.present)
                .sum();

            let t = Instant::now();
            let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
            let mut buf = vec![0u8; rmapwatch_live::pagemap::CHUNK];
            let mut sum = 0u64;
            for v in &vmas {
                let mut at = (v.start >> PAGE_SHIFT) * 8;
                let end = (v.end >> PAGE_SHIFT) * 8;
                while at < end {
                    let want = ((end - at) as usize).min(buf.len());
                    let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..want], at)?;
                    anyhow::ensure!(n > 0, "pagemap ended");
                    sum = sum.wrapping_add(u64::from(buf[n - 1]));
                    at += n as u64;
                }
            }
            std::hint::black_box(sum);
            plain.push(per_gib(t));

            let t = Instant::now();
            let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
            std::hint::black_box(s);
            rollup.push(per_gib(t));
        }
        // SAFETY: our pipe's write end; the child exits when it closes.
        unsafe { libc::close(release) };
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        let what = format!("{gib} GiB in {seen} VMA(s)");
        println!("pagemap: {what}: {present} present pages read");
        let (r, p, s) = (stats(reader), stats(plain), stats(rollup));
        line(
            &format!("pagemap, {split} VMA(s): smaps_rollup (baseline)"),
            "ms/GiB",
            s,
        );
        line(
            &format!("pagemap, {split} VMA(s): plain pread (baseline)"),
            "ms/GiB",
            p,
        );
        line(
            &format!("pagemap, {split} VMA(s): Reader::fill"),
            "ms/GiB",
            r,
        );
        ratio(
            &format!("pagemap, {split} VMA(s): Reader vs plain"),
            r.0,
            p.0,
        );
        ratio(
            &format!("pagemap, {split} VMA(s): Reader vs rollup"),
            r.0,
            s.0,
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// The dashboard's frame with the four designs' outcomes (the process
/// table's design column, the header, the chart) against the same frame
/// with none (as before the first walk's designs).
pub fn render_cost(procs: u32, repeat: usize, rounds: usize) {
    let snap = synthetic(procs, 4);
    let mut with = App::new(Duration::from_secs(1), None);
    let mut without = App::new(Duration::from_secs(1), None);
    for t in 0..3 {
        let frame = seeded(&snap, t).frame();
        let mut bare = frame.clone();
        if let Some(w) = &mut bare.walk {
            w.designs = Arc::new(Vec::new());
        }
        with.update(Action::Update(Update::Frame(Box::new(frame))));
        without.update(Action::Update(Update::Frame(Box::new(bare))));
    }
    let mut term = Terminal::new(TestBackend::new(160, 48)).expect("test backend");
    let mut time = |a: &App| {
        let v = (0..repeat)
            .map(|_| {
                let t = Instant::now();
                let _ = term.draw(|f| f.render_widget(a, f.area()));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect::<Vec<f64>>();
        stats(v).0
    };
    let (mut base, mut full) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(time(&without));
        full.push(time(&with));
    }
    let (b, f) = (stats(base), stats(full));
    line(
        &format!("designs-render: {procs} processes, no designs (baseline)"),
        "ms",
        b,
    );
    line(
        &format!("designs-render: {procs} processes, 4 designs"),
        "ms",
        f,
    );
    ratio("designs-render: with designs vs without", f.0, b.0);
}
