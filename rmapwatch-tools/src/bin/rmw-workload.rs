//! rmw-workload: a controlled anon_vma / AVC workload for rmapwatch's tests
//! and benchmarks.
//!
//! 1. maps K private anonymous regions (one page each, between PROT_NONE guards so
//!    that no two VMAs merge or share an anon_vma) and writes to each: K
//!    first faults, K `__anon_vma_prepare`;
//! 2. makes noise in the slab cache that AVCs share (`fs_struct` through
//!    `unshare(CLONE_FS)`, epoll watches through `epoll_ctl`), which must not
//!    be counted as AVCs;
//! 3. forks F children that write to every region (copy-on-write) and wait
//!    (`--cow-pages C`: to the first C pages of each only, the others staying
//!    shared with the parent);
//! 4. prints `regions <start> <end>` and `ready <parent> <child>...`, waits
//!    for a line on stdin if `--hold`, releases the children and reaps them.
//!
//! `--storm N` instead times N fork + exit of a process holding the regions
//! (named `rmw-storm`, so that tests tell it from the workload).
//! `--siblings S --storm N`: the process (`rmw-contend`) maps and writes
//! the regions, forks S siblings (`rmw-sibling`) that each run N fork +
//! exit at once, concurrently: every sibling's fork clones the shared
//! parent's anon_vmas under their root's rwsem, so the siblings contend on
//! it. With `--private` the parent maps nothing: each sibling maps and
//! writes regions of its own, so no anon_vma is shared. It prints
//! `siblings <pid>...` once they run, then `contend <S> siblings <N> forks
//! <seconds> s`.
//!
//! Optional: `--split` mprotects half of each region after the fault (a VMA
//! split), `--wipe` sets MADV_WIPEONFORK and `--dontfork` MADV_DONTFORK on
//! every region before forking. `--name NAME` names the process (and its
//! children) NAME with `PR_SET_NAME`, any bytes but NUL (a hostile name);
//! `--file PATH` also maps PATH (created, one page) private and writes to
//! it, so that a file mapping with a copy-on-write page (an anon_vma) shows
//! PATH in `inspect`. `--vm-child` also starts, before the children, a
//! `CLONE_VM` child (as `posix_spawn`'s before its exec) with a lower pid
//! than the parent's (root: chosen through `/proc/sys/kernel/ns_last_pid`),
//! which waits with the others; `ready` then ends with `vm <pid>`.
//! `--zombie-leader`: once the children are ready, a second thread takes
//! over and the main thread exits alone (the `exit` system call, as
//! `pthread_exit` from `main`): the process lives on in that thread with
//! all its VMAs, its leader a zombie without an mm. Once the leader is a
//! zombie, that thread says `ready`, holds, releases and reaps the children
//! (now its own), and exits the process. `--zombie-leader-on-line`: the
//! same, but the leader says `ready` (as without `--zombie-leader`) and
//! exits when a line arrives on stdin; its thread then says `zombie`, holds
//! (a second line, with `--hold`), releases and reaps the children.
//! `--spread-cpus`: the parent runs on its first allowed CPU and each child
//! on another (round robin over the rest; checked with `sched_getcpu`, a
//! child that cannot move is not ready), so that what the parent allocates
//! for a child at fork, the child frees on another CPU.
//!
//! `--vfork-hold` instead says `vfork` and clones a child with
//! `CLONE_VFORK` that says `in`, waits for a line (or the end) on stdin and
//! exits: the parent stays inside its fork system call (a fork window held
//! open) until then; it then says `done`.
//!
//! `--zygote` instead builds an Android-like tree whose numbers are known by
//! construction (the other options are ignored, but `--hold`). The process,
//! renamed `rmw-zygote`, "preloads libraries": L files (`--libs L`, default
//! 4) of 4 pages, in a directory of the temp dir that it removes at the end,
//! each mapped private read/write between PROT_NONE guards, page 0 of each
//! written (a copy-on-write page: the VMA gets an anon_vma, and its vm_pgoff
//! is the file offset, so under the COW context design it is a remap entry).
//! It maps H anonymous regions of 2 pages (`--heap H`, default 8, between
//! guards) and writes every page. It forks N apps (`--apps N`, default 6)
//! without exec. App i renames itself `rmw-app<i>`, points its stdout at
//! /dev/null (the zygote alone writes there), maps 2 regions of 2 pages of
//! its own and writes every page, writes page 0 of inherited heap region
//! i % H, and then:
//! - i == 0 moves its first own region, once written, with
//!   `mremap(MREMAP_MAYMOVE|MREMAP_FIXED)` between two new guards (its
//!   vm_pgoff stays the old address's page, by the kernel's rule for
//!   anonymous pages; /proc/PID/maps shows 0 as every anonymous VMA's
//!   offset, so not this);
//! - i % 3 == 1 forks a helper `rmw-helper<i>` without exec, which writes
//!   page 0 of the app's last own region;
//! - i % 3 == 2 instead, before it maps or writes anything, re-executes
//!   `/proc/self/exe --zygote-exec-child I READY RELEASE` (internal: READY
//!   and RELEASE are inherited pipe ends), which renames itself `rmw-app<i>`,
//!   maps 3 regions of 2 pages and writes every page: a fresh mm.
//!
//! Every process tells the zygote it is ready through a pipe; the zygote then
//! prints, in this order: `proc <pid> <ppid> <role> <exec> <name>` for itself
//! and each app and helper (role `zygote`, `app`, `helper`, or `exec` for an
//! exec'd app, with exec 1); `libs <start> <end>` and `heap <start> <end>`
//! (from the first region's start to the last one's end; the same addresses
//! in every process forked without exec); `own <pid> <start> <end>` for each
//! app's own regions (the moved one's old place is a hole);
//! `moved <pid> <from> <to> <len>`; `zygote <pid> apps <N> helpers <n> execs
//! <n> files <L> heap <H>` (apps counts the exec'd ones); then `ready <zygote>
//! <pid>...` (every other pid). The apps and helpers hold until their release
//! pipe reads end of file: the zygote closes it after `--hold`'s line on
//! stdin (or at once, or when it dies), reaps the apps (each app reaps its
//! helper), removes the directory and says `done` (a zygote killed by
//! SIGKILL leaves the directory; its apps and helpers still exit).
//!
//! `--zygote-exit`: after `ready` the zygote removes the directory (the
//! mappings stay, `(deleted)`) and exits; the apps live on, re-parented (to
//! init, or to a `PR_SET_CHILD_SUBREAPER` ancestor, which then reaps them;
//! none uses `PR_SET_PDEATHSIG`). Its stdout reaches end of file at its exit.
//! The apps and helpers then hold on the zygote's stdin instead: they are
//! released when it reads end of file (close the pipe that feeds it; a line
//! written there releases nobody). If stdin is a terminal they wait for a
//! signal instead (SIGTERM to the printed pids).
//!
//! What each holds, by construction, in the printed ranges (with N = 6: apps
//! 0 and 3 plain, 1 and 4 with a helper, 2 and 5 exec'd):
//! - live processes with their own mm: the zygote (not after
//!   `--zygote-exit`), N apps, one helper per i % 3 == 1 (N = 6: 1 + 6 + 2);
//!   the exec'd apps' contexts are roots; with `--zygote-exit` the zygote's
//!   is a dead ancestor pinned by the apps not exec'd (N = 6: 4 apps, 2
//!   helpers), so the COW contexts stay 9;
//! - private file mappings with a copy-on-write page: L in the zygote, in
//!   each app not exec'd and in each helper (1 page `Anonymous:` each, the
//!   zygote's page, shared); 0 in an exec'd app;
//! - anonymous VMAs moved by mremap: 1 in app 0, none elsewhere;
//! - anonymous VMAs with pages: H in the zygote; H + 2 in each app not
//!   exec'd and each helper; 3 in an exec'd app;
//! - VMAs mapping an anonymous page that another process maps too (every
//!   write touches page 0 only, so page 1 of an inherited region stays
//!   shared): L + H in the zygote, in each app not exec'd and in each
//!   helper, + 2 in an app with a helper and in its helper; 0 in an exec'd
//!   app. The L + H need another process not exec'd (zygote, app or helper)
//!   alive: with `--zygote-exit` and N = 1, app 0 has 0.
//!
//! Each process has its own VMAs besides (binary and libc data, stack,
//! malloc): count inside the printed ranges. Measured on 6.18 (x86_64, 4
//! KiB pages), defaults: as above, 28 library VMAs with `Anonymous: 4 kB`
//! (24 with `--zygote-exit`), 1 moved VMA, 92 VMAs with a shared anonymous
//! page (pagemap bit 56 clear; 80 with `--zygote-exit`).
use std::{
    io::{BufRead as _, Write as _},
    process::ExitCode,
};

struct Opts {
    regions: usize,
    pages: usize,
    cow_pages: Option<usize>,
    children: usize,
    noise: usize,
    hold: bool,
    split: bool,
    advice: Option<libc::c_int>,
    storm: usize,
    siblings: usize,
    private: bool,
    name: Option<std::ffi::OsString>,
    file: Option<std::path::PathBuf>,
    vm_child: bool,
    zombie_leader: bool,
    /// `--zombie-leader-on-line`: the leader exits when a line arrives.
    leader_on_line: bool,
    zygote: Option<Zygote>,
    exec_child: Option<ExecChild>,
    /// `--spread-cpus`: the parent on its first allowed CPU, each child on
    /// another, so that what the parent allocates for a child at fork is
    /// freed on another CPU when the child exits.
    spread_cpus: bool,
}

/// `--zygote`'s sizes and its `--zygote-exit`.
#[derive(Clone, Copy)]
struct Zygote {
    apps: usize,
    libs: usize,
    heap: usize,
    exit: bool,
}

/// `--zygote-exec-child I READY RELEASE`: an exec'd app of `--zygote`.
struct ExecChild {
    index: usize,
    ready: libc::c_int,
    release: libc::c_int,
}

const USAGE: &str = "usage: rmw-workload [--regions K] [--pages P] [--cow-pages C] [--children F] \
                     [--noise N] [--hold] [--split] [--wipe|--dontfork] [--storm N \
                     [--siblings S [--private]]] \
                     [--name NAME] [--file PATH] [--vm-child] [--zombie-leader[-on-line]] \
                     [--spread-cpus] \
                     | --zygote [--apps N] [--libs L] [--heap H] [--zygote-exit] [--hold] \
                     | --vfork-hold";

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        regions: 100,
        pages: 1,
        cow_pages: None,
        children: 4,
        noise: 100,
        hold: false,
        split: false,
        advice: None,
        storm: 0,
        siblings: 0,
        private: false,
        name: None,
        file: None,
        vm_child: false,
        zombie_leader: false,
        leader_on_line: false,
        zygote: None,
        exec_child: None,
        spread_cpus: false,
    };
    let mut zygote = false;
    let mut z = Zygote {
        apps: 6,
        libs: 4,
        heap: 8,
        exit: false,
    };
    let mut zygote_only = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--name" || a == "--file" {
            let v = args
                .next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
            if a == "--name" {
                o.name = Some(v);
            } else {
                o.file = Some(v.into());
            }
            continue;
        }
        let mut num = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.to_str().and_then(|v| v.parse().ok()))
                .ok_or_else(|| format!("{name} needs a whole number\n{USAGE}"))
        };
        match a.as_str() {
            "--regions" => o.regions = num("--regions")?,
            "--pages" => o.pages = num("--pages")?.max(1),
            "--cow-pages" => o.cow_pages = Some(num("--cow-pages")?),
            "--children" => o.children = num("--children")?,
            "--noise" => o.noise = num("--noise")?,
            "--hold" => o.hold = true,
            "--storm" => o.storm = num("--storm")?,
            "--siblings" => o.siblings = num("--siblings")?,
            "--private" => o.private = true,
            "--split" => o.split = true,
            "--wipe" => o.advice = Some(libc::MADV_WIPEONFORK),
            "--dontfork" => o.advice = Some(libc::MADV_DONTFORK),
            "--vm-child" => o.vm_child = true,
            "--spread-cpus" => o.spread_cpus = true,
            "--zombie-leader" => o.zombie_leader = true,
            "--zombie-leader-on-line" => {
                o.zombie_leader = true;
                o.leader_on_line = true;
            }
            "--zygote" => zygote = true,
            "--apps" => (z.apps, zygote_only) = (num("--apps")?, Some("--apps")),
            "--libs" => (z.libs, zygote_only) = (num("--libs")?, Some("--libs")),
            "--heap" => (z.heap, zygote_only) = (num("--heap")?, Some("--heap")),
            "--zygote-exit" => (z.exit, zygote_only) = (true, Some("--zygote-exit")),
            "--zygote-exec-child" => {
                let index = num("--zygote-exec-child")?;
                let mut fd = || {
                    num("--zygote-exec-child").and_then(|v| {
                        libc::c_int::try_from(v)
                            .map_err(|_| format!("--zygote-exec-child: no fd {v}\n{USAGE}"))
                    })
                };
                let (ready, release) = (fd()?, fd()?);
                o.exec_child = Some(ExecChild {
                    index,
                    ready,
                    release,
                });
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.split && o.pages < 2 {
        o.pages = 2;
    }
    if zygote {
        o.zygote = Some(z);
    } else if let Some(flag) = zygote_only {
        return Err(format!("{flag} needs --zygote\n{USAGE}"));
    }
    Ok(o)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn check(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// K read-write regions of P pages, carved out of a PROT_NONE reservation so
/// that each is its own VMA between PROT_NONE guards. A plain mapping would
/// merge with a neighbouring anonymous VMA that already has an anon_vma, and
/// the regions would then share it (seen in testing: 200 regions, one
/// anon_vma, AVCs from splits instead of first faults).
fn map_regions(count: usize, pages: usize) -> Result<Vec<*mut u8>, String> {
    let ps = page_size();
    let len = pages * ps;
    if count == 0 {
        return Ok(Vec::new());
    }
    let base = reserve((2 * count + 1) * len)?;
    let mut regions = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: within the reservation made above.
        let region = unsafe { base.add((2 * i + 1) * len) };
        // SAFETY: our own reservation.
        check(
            unsafe { libc::mprotect(region.cast(), len, libc::PROT_READ | libc::PROT_WRITE) },
            "mprotect",
        )?;
        // Keep THP out of the picture: every fault is one small page.
        // SAFETY: advice on our own region.
        unsafe { libc::madvise(region.cast(), len, libc::MADV_NOHUGEPAGE) };
        regions.push(region);
    }
    Ok(regions)
}

/// `len` bytes of PROT_NONE anonymous memory, to carve VMAs out of between
/// guards.
fn reserve(len: usize) -> Result<*mut u8, String> {
    // SAFETY: anonymous private mapping, no file.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    Ok(base.cast())
}

fn touch(regions: &[*mut u8], pages: usize, value: u8) {
    let ps = page_size();
    for &r in regions {
        for p in 0..pages {
            // SAFETY: each region is `pages` pages of our own writable memory.
            unsafe { r.add(p * ps).write_volatile(value) };
        }
    }
}

/// Allocations from the cache that AVCs share, none of them AVCs.
fn noise(n: usize) -> Result<(), String> {
    for _ in 0..n {
        // A fresh fs_struct each time (freed by the next call).
        // SAFETY: affects only this task.
        check(
            unsafe { libc::unshare(libc::CLONE_FS) },
            "unshare(CLONE_FS)",
        )?;
    }
    let mut fds = [0; 2];
    // SAFETY: valid out-pointer.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) }, "pipe")?;
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(0) };
    check(ep, "epoll_create1")?;
    let mut watched = Vec::new();
    for _ in 0..n {
        // SAFETY: dup of our own pipe end.
        let fd = unsafe { libc::dup(fds[0]) };
        check(fd, "dup")?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // Each watch allocates an eppoll_entry from the merged 64-byte cache.
        // SAFETY: valid fds and event.
        check(
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &raw mut ev) },
            "epoll_ctl",
        )?;
        watched.push(fd);
    }
    for fd in watched.into_iter().chain([ep, fds[0], fds[1]]) {
        // SAFETY: closing fds we opened.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// N times fork + `_exit` + wait.
fn fork_loop(n: usize) -> Result<(), String> {
    for _ in 0..n {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        check(pid, "fork")?;
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &raw mut st, 0) };
    }
    Ok(())
}

/// `--siblings S --storm N`: S siblings forking N times each, at once,
/// from the parent's regions (or, `--private`, from their own).
fn contend(o: &Opts) -> Result<(), String> {
    // SAFETY: PR_SET_NAME with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rmw-contend".as_ptr()) };
    if !o.private {
        let regions = map_regions(o.regions, o.pages)?;
        touch(&regions, o.pages, 1);
    }
    // The siblings start together: each waits for the pipe to close.
    let mut go = [0; 2];
    // SAFETY: a two-int array.
    check(unsafe { libc::pipe(go.as_mut_ptr()) }, "pipe")?;
    let mut pids = Vec::new();
    for _ in 0..o.siblings {
        // SAFETY: the child runs its loop and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: PR_SET_NAME with a NUL-terminated name; our pipe.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, c"rmw-sibling".as_ptr());
                libc::close(go[1]);
            }
            let r = (|| {
                if o.private {
                    let regions = map_regions(o.regions, o.pages)?;
                    touch(&regions, o.pages, 2);
                }
                let mut b = [0u8; 1];
                // SAFETY: reads into a one-byte buffer.
                unsafe { libc::read(go[0], b.as_mut_ptr().cast(), 1) };
                fork_loop(o.storm)
            })();
            // SAFETY: async-signal-safe.
            unsafe { libc::_exit(i32::from(r.is_err())) };
        }
        check(pid, "fork")?;
        pids.push(pid);
    }
    let list: Vec<String> = pids.iter().map(ToString::to_string).collect();
    let _ = writeln!(std::io::stdout(), "siblings {}", list.join(" "));
    let _ = std::io::stdout().flush();
    let t = std::time::Instant::now();
    // SAFETY: our pipe's ends.
    unsafe {
        libc::close(go[0]);
        libc::close(go[1]);
    }
    let mut failed = 0;
    for pid in pids {
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &raw mut st, 0) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            failed += 1;
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "contend {} siblings {} forks {:.3} s",
        o.siblings,
        o.storm,
        t.elapsed().as_secs_f64()
    );
    if failed > 0 {
        return Err(format!("{failed} siblings failed"));
    }
    Ok(())
}

/// `--storm N`: as `rmw-storm`, N times fork + `_exit` + wait with the
/// regions touched; prints `storm <N> forks <seconds> s`.
fn storm(o: &Opts) -> Result<(), String> {
    if o.siblings > 0 {
        return contend(o);
    }
    // SAFETY: PR_SET_NAME with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rmw-storm".as_ptr()) };
    let regions = map_regions(o.regions, o.pages)?;
    touch(&regions, o.pages, 1);
    let t = std::time::Instant::now();
    fork_loop(o.storm)?;
    let _ = writeln!(
        std::io::stdout(),
        "storm {} forks {:.3} s",
        o.storm,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `PR_SET_NAME`: the first 15 bytes of `name`, whatever they are.
fn set_name(name: &std::ffi::OsStr) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut buf = [0u8; 16];
    for (b, &c) in buf.iter_mut().zip(name.as_bytes().iter().take(15)) {
        *b = c;
    }
    // SAFETY: a NUL-terminated buffer of 16 bytes.
    check(
        unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) },
        "prctl(PR_SET_NAME)",
    )
}

/// `--file PATH`: one page of PATH (created) mapped private and written
/// to: a copy-on-write page, so the VMA gets an anon_vma.
fn map_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::fd::AsRawFd as _;
    let ps = page_size();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(ps as u64)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: a private mapping of our own file; the fd may close after.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: one page of our own writable mapping.
    unsafe { p.cast::<u8>().write_volatile(1) };
    Ok(())
}

/// The `CLONE_VM` child: closes its copy of the release pipe's write end,
/// waits for the pipe to close, then exits. It shares our memory, so it
/// makes raw system calls only. `arg`: read end | write end << 16.
extern "C" fn vm_child_main(arg: *mut libc::c_void) -> libc::c_int {
    let fds = arg as usize;
    let mut b = [0u8; 1];
    // SAFETY: plain system calls on our own fds and stack buffer.
    unsafe {
        libc::close((fds >> 16) as libc::c_int);
        libc::read((fds & 0xffff) as libc::c_int, b.as_mut_ptr().cast(), 1);
    }
    0
}

/// `--vm-child`: a `CLONE_VM` child whose pid is lower than ours, waiting
/// on `release` (the release pipe) to close.
fn vm_child(release: [libc::c_int; 2]) -> Result<libc::pid_t, String> {
    let arg = usize::try_from(release[0]).map_err(|_| "bad fd")?
        | usize::try_from(release[1]).map_err(|_| "bad fd")? << 16;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // The stack it runs on: ours to give (it shares our memory), kept for
    // its whole life.
    let stack: &'static mut [u8] = Vec::leak(vec![0u8; 256 * 1024]);
    for _ in 0..20 {
        // A free pid below ours: the next one the kernel gives out.
        let free = (300..me)
            .rev()
            .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .ok_or("no free pid below ours")?;
        std::fs::write("/proc/sys/kernel/ns_last_pid", (free - 1).to_string())
            .map_err(|e| format!("/proc/sys/kernel/ns_last_pid (needs root): {e}"))?;
        // SAFETY: the child runs vm_child_main on its own stack (the top of
        // `stack`, 16-byte aligned) and makes raw system calls only.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len() & !15);
            libc::clone(
                vm_child_main,
                top.cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                arg as *mut libc::c_void,
            )
        };
        check(pid, "clone(CLONE_VM)")?;
        if pid < me {
            return Ok(pid);
        }
        // Someone else forked in between: try again (this one waits too).
    }
    Err("could not start a CLONE_VM child below our pid".into())
}

fn run(o: &Opts) -> Result<(), String> {
    if let Some(name) = &o.name {
        set_name(name)?;
    }
    if o.storm > 0 {
        return storm(o);
    }
    if let Some(x) = &o.exec_child {
        return exec_child(x);
    }
    if let Some(z) = o.zygote {
        return zygote(z, o.hold);
    }
    if let Some(path) = &o.file {
        map_file(path)?;
    }
    let cpus = if o.spread_cpus {
        let cpus = allowed_cpus()?;
        if cpus.len() < 2 {
            return Err(format!(
                "--spread-cpus needs two CPUs, this process may use {cpus:?}"
            ));
        }
        pin(cpus[0])?;
        cpus
    } else {
        Vec::new()
    };
    let regions = map_regions(o.regions, o.pages)?;
    if let (Some(first), Some(last)) = (regions.first(), regions.last()) {
        // Where the regions are, for tests that look at exactly them.
        let end = *last as usize + o.pages * page_size();
        let _ = writeln!(
            std::io::stdout(),
            "regions {:#x} {:#x}",
            *first as usize,
            end
        );
    }
    touch(&regions, o.pages, 1);
    if o.split {
        let ps = page_size();
        for &r in &regions {
            // Changing protection of the second half splits the VMA:
            // anon_vma_clone copies the chain to the new VMA.
            // SAFETY: our own region.
            check(
                unsafe { libc::mprotect(r.add(ps).cast(), ps, libc::PROT_READ) },
                "mprotect",
            )?;
        }
    }
    if let Some(advice) = o.advice {
        for &r in &regions {
            // SAFETY: our own region.
            check(
                unsafe { libc::madvise(r.cast(), o.pages * page_size(), advice) },
                "madvise",
            )?;
        }
    }
    noise(o.noise)?;

    let mut ready = [0; 2];
    let mut release = [0; 2];
    // SAFETY: valid out-pointers.
    check(unsafe { libc::pipe(ready.as_mut_ptr()) }, "pipe")?;
    // SAFETY: as above.
    check(unsafe { libc::pipe(release.as_mut_ptr()) }, "pipe")?;
    let mut children = Vec::new();
    let vm = if o.vm_child {
        Some(vm_child(release)?)
    } else {
        None
    };
    for i in 0..o.children {
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        let pid = unsafe { libc::fork() };
        check(pid, "fork")?;
        if pid == 0 {
            if !cpus.is_empty() && pin(cpus[1 + i % (cpus.len() - 1)]).is_err() {
                // Not ready: the parent says a child died.
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(3) };
            }
            // With MADV_DONTFORK the child has no regions to touch.
            if o.advice != Some(libc::MADV_DONTFORK) {
                let pages = if o.split { 1 } else { o.pages };
                touch(&regions, o.cow_pages.map_or(pages, |c| c.min(pages)), 2);
            }
            let mut b = [0u8; 1];
            // SAFETY: plain syscalls on our pipes; then _exit.
            unsafe {
                libc::close(release[1]);
                libc::write(ready[1], b.as_ptr().cast(), 1);
                libc::read(release[0], b.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        children.push(pid);
    }
    // SAFETY: closing our copies of the ends the children use.
    unsafe {
        libc::close(ready[1]);
        libc::close(release[0]);
    }
    let mut b = [0u8; 1];
    for _ in 0..o.children {
        // SAFETY: reading one byte into a valid buffer.
        if unsafe { libc::read(ready[0], b.as_mut_ptr().cast(), 1) } != 1 {
            return Err("a child died before it was ready".into());
        }
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let hold = Hold {
        me,
        children,
        vm,
        release: release[1],
        hold: o.hold,
    };
    if !o.zombie_leader {
        return hold.run();
    }
    let on_line = o.leader_on_line;
    if on_line {
        hold.say_ready();
    }
    std::thread::spawn(move || {
        let waited = hold.wait_zombie_leader(if on_line { 60_000 } else { 1000 });
        let code = match waited.and_then(|()| {
            if on_line {
                let _ = writeln!(std::io::stdout(), "zombie");
                hold.release_and_reap()
            } else {
                hold.run()
            }
        }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("rmw-workload: {e}");
                2
            }
        };
        std::process::exit(code);
    });
    if on_line {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    // SAFETY: the raw exit system call ends this thread only (not the
    // process, as exit_group would); nothing of ours is held by it, and no
    // Rust frame is unwound (pthread_exit would force-unwind them).
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("the exit system call returned")
}

/// The end of a run: `ready`, the hold, the children released and reaped,
/// `done`.
struct Hold {
    me: libc::pid_t,
    children: Vec<libc::pid_t>,
    vm: Option<libc::pid_t>,
    release: libc::c_int,
    hold: bool,
}

impl Hold {
    /// `--zombie-leader`: waits (at most `tries` x 10 ms) until the main
    /// thread has exited, which leaves the leader a zombie (`Z` in its
    /// task's stat).
    fn wait_zombie_leader(&self, tries: u32) -> Result<(), String> {
        let stat = format!("/proc/{0}/task/{0}/stat", self.me);
        for _ in 0..tries {
            let s = std::fs::read_to_string(&stat).map_err(|e| format!("{stat}: {e}"))?;
            // "pid (comm) S ...": the state follows the last ')'.
            let state = s.rsplit_once(')').map(|(_, r)| r.trim_start());
            if state.is_some_and(|r| r.starts_with('Z')) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err("the main thread did not exit".into())
    }

    fn say_ready(&self) {
        let pids: Vec<String> = self.children.iter().map(ToString::to_string).collect();
        let mut out = std::io::stdout().lock();
        let vm_said = self.vm.map_or_else(String::new, |p| format!(" vm {p}"));
        let _ = writeln!(out, "ready {} {}{vm_said}", self.me, pids.join(" "));
        let _ = out.flush();
    }

    fn run(self) -> Result<(), String> {
        self.say_ready();
        self.release_and_reap()
    }

    /// The hold (`--hold`: a line on stdin), then the children released
    /// and reaped, `done`.
    fn release_and_reap(self) -> Result<(), String> {
        if self.hold {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        }
        // SAFETY: closing the release pipe lets every child's read return.
        unsafe { libc::close(self.release) };
        for pid in self.children.into_iter().chain(self.vm) {
            let mut status = 0;
            // SAFETY: reaping our own child (the process's, once the main
            // thread that forked it has exited).
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
        }
        // The reader may be gone (a benchmark that only needed "ready").
        let _ = writeln!(std::io::stdout(), "done");
        Ok(())
    }
}

/// `--zygote`: pages of each "library" file, pages of each anonymous region,
/// and the regions an app and an exec'd app map of their own.
const LIB_PAGES: usize = 4;
const REGION_PAGES: usize = 2;
const APP_REGIONS: usize = 2;
const EXEC_REGIONS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    App = 1,
    Helper = 2,
    Exec = 3,
}

impl Role {
    fn of(i: usize) -> Self {
        if i % 3 == 2 { Self::Exec } else { Self::App }
    }

    fn name(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Helper => "helper",
            Self::Exec => "exec",
        }
    }
}

/// What a process of `--zygote` tells the zygote once it is ready: one
/// 64-byte write to the ready pipe (atomic, under `PIPE_BUF`).
struct Ready {
    pid: libc::pid_t,
    ppid: libc::pid_t,
    role: Role,
    index: usize,
    /// Its own regions (start, end), (0, 0) for none.
    own: (usize, usize),
    /// The region it moved (from, to), (0, 0) for none.
    moved: (usize, usize),
}

impl Ready {
    const LEN: usize = 64;

    /// Ours, in role `role` as app or helper `index`.
    fn me(role: Role, index: usize) -> Self {
        // SAFETY: getpid and getppid have no preconditions.
        let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        Self {
            pid,
            ppid,
            role,
            index,
            own: (0, 0),
            moved: (0, 0),
        }
    }

    fn encode(&self) -> [u8; Self::LEN] {
        let words = [
            self.pid as u64,
            self.ppid as u64,
            self.role as u64,
            self.index as u64,
            self.own.0 as u64,
            self.own.1 as u64,
            self.moved.0 as u64,
            self.moved.1 as u64,
        ];
        let mut b = [0u8; Self::LEN];
        for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    fn decode(b: &[u8; Self::LEN]) -> Result<Self, String> {
        let mut w = b
            .chunks_exact(8)
            .map(|c| c.try_into().map_or(0, u64::from_ne_bytes));
        let mut next = || w.next().unwrap_or(0);
        let bad = |what: &str| format!("a garbled ready record ({what})");
        let pid = libc::pid_t::try_from(next()).map_err(|_| bad("pid"))?;
        let ppid = libc::pid_t::try_from(next()).map_err(|_| bad("ppid"))?;
        let role = match next() {
            1 => Role::App,
            2 => Role::Helper,
            3 => Role::Exec,
            _ => return Err(bad("role")),
        };
        let mut addr = || usize::try_from(next()).map_err(|_| bad("address"));
        let index = addr()?;
        Ok(Self {
            pid,
            ppid,
            role,
            index,
            own: (addr()?, addr()?),
            moved: (addr()?, addr()?),
        })
    }

    /// Sends it on `fd`, then closes `fd`: once every process has, the
    /// zygote's read sees end of file if one died before it was ready.
    fn send(&self, fd: libc::c_int) -> Result<(), String> {
        let b = self.encode();
        // SAFETY: writing our buffer to our fd, then closing it.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        if usize::try_from(n) == Ok(b.len()) {
            Ok(())
        } else {
            Err(format!("ready pipe: {}", std::io::Error::last_os_error()))
        }
    }
}

/// Where a list of regions of `pages` pages starts and ends.
fn span(regions: &[*mut u8], pages: usize) -> (usize, usize) {
    match (regions.first(), regions.last()) {
        (Some(&a), Some(&b)) => (a as usize, b as usize + pages * page_size()),
        _ => (0, 0),
    }
}

/// `--zygote`'s directory of "libraries", removed on drop by the process
/// that made it (not by a forked copy).
struct LibDir {
    path: std::path::PathBuf,
    owner: libc::pid_t,
}

impl Drop for LibDir {
    fn drop(&mut self) {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } == self.owner {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The "libraries": `libs` files of `LIB_PAGES` pages in `dir`, each mapped
/// private read/write between PROT_NONE guards, page 0 of each written (a
/// copy-on-write page). Returns the first one's start and the last one's end.
fn map_libs(dir: &std::path::Path, libs: usize) -> Result<(usize, usize), String> {
    use std::os::fd::AsRawFd as _;
    if libs == 0 {
        return Ok((0, 0));
    }
    let len = LIB_PAGES * page_size();
    let base = reserve((2 * libs + 1) * len)?;
    let mut maps = Vec::with_capacity(libs);
    for i in 0..libs {
        let path = dir.join(format!("lib{i}.so"));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_len(len as u64)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a private mapping of our own file over our own
        // reservation (MAP_FIXED within it); the fd may close after.
        let p = unsafe {
            libc::mmap(
                base.add((2 * i + 1) * len).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        maps.push(p.cast::<u8>());
    }
    touch(&maps, 1, 1);
    Ok(span(&maps, LIB_PAGES))
}

/// Moves the written region at `from` (`len` bytes) between two new guards
/// with `mremap(MREMAP_MAYMOVE|MREMAP_FIXED)`; returns where to.
fn move_region(from: *mut u8, len: usize) -> Result<*mut u8, String> {
    // SAFETY: the middle of our own new reservation.
    let to = unsafe { reserve(3 * len)?.add(len) };
    // SAFETY: moving our own region onto our own reservation.
    let p = unsafe {
        libc::mremap(
            from.cast(),
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.cast::<libc::c_void>(),
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mremap: {}", std::io::Error::last_os_error()));
    }
    Ok(p.cast())
}

/// A held process of `--zygote`: waits until `fd` reads end of file (its
/// last writer closed it); if `fd` is a terminal, until a signal ends us.
fn hold_on(fd: libc::c_int) {
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(fd) } == 1 {
        loop {
            // SAFETY: waits for a signal.
            unsafe { libc::pause() };
        }
    }
    let mut b = [0u8; 64];
    loop {
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
        if n == 0
            || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

/// The zygote's pipes, as its children see them.
#[derive(Clone, Copy)]
struct Pipes {
    ready: [libc::c_int; 2],
    /// None with `--zygote-exit`: the apps hold on stdin.
    release: Option<[libc::c_int; 2]>,
}

impl Pipes {
    /// What a child holds on.
    fn hold_fd(self) -> libc::c_int {
        self.release.map_or(0, |r| r[0])
    }
}

/// The body of a forked child: runs `f` and `_exit`s, never returns.
fn child(f: impl FnOnce() -> Result<(), String>) -> ! {
    let code = match f() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rmw-workload: {e}");
            3
        }
    };
    // SAFETY: ends this forked process without running the zygote's
    // destructors (its directory and family are not ours).
    unsafe { libc::_exit(code) }
}

/// App `i`, in the zygote's forked child.
fn app(i: usize, heap: &[*mut u8], pipes: Pipes) -> Result<(), String> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: closing our copies of the zygote's ends.
    unsafe {
        libc::close(pipes.ready[0]);
        if let Some(r) = pipes.release {
            libc::close(r[1]);
        }
    }
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: replaces our stdout, on which nothing is buffered.
    check(unsafe { libc::dup2(null.as_raw_fd(), 1) }, "dup2")?;
    drop(null);
    set_name(format!("rmw-app{i}").as_ref())?;
    if Role::of(i) == Role::Exec {
        return exec_self(i, pipes.ready[1], pipes.hold_fd());
    }
    let own = map_regions(APP_REGIONS, REGION_PAGES)?;
    touch(&own, REGION_PAGES, 2);
    let mut me = Ready::me(Role::App, i);
    me.own = span(&own, REGION_PAGES);
    if !heap.is_empty() {
        // Page 0 of an inherited region: copy-on-write.
        touch(&[heap[i % heap.len()]], 1, 2);
    }
    if i == 0 {
        let to = move_region(own[0], REGION_PAGES * page_size())?;
        me.moved = (own[0] as usize, to as usize);
    }
    let helper = if i % 3 == 1 {
        let last = own[APP_REGIONS - 1];
        // SAFETY: we are single-threaded; the child ends in _exit.
        let pid = unsafe { libc::fork() };
        check(pid, "fork")?;
        if pid == 0 {
            child(|| {
                set_name(format!("rmw-helper{i}").as_ref())?;
                touch(&[last], 1, 3);
                Ready::me(Role::Helper, i).send(pipes.ready[1])?;
                hold_on(pipes.hold_fd());
                Ok(())
            });
        }
        Some(pid)
    } else {
        None
    };
    me.send(pipes.ready[1])?;
    hold_on(pipes.hold_fd());
    if let Some(pid) = helper {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
    }
    Ok(())
}

/// An exec'd app: re-executes this binary as `--zygote-exec-child`, with
/// the inherited pipe ends `ready` and `release`. Returns only on failure.
fn exec_self(i: usize, ready: libc::c_int, release: libc::c_int) -> Result<(), String> {
    let args = [
        "rmw-workload".to_owned(),
        "--zygote-exec-child".to_owned(),
        i.to_string(),
        ready.to_string(),
        release.to_string(),
    ];
    let args = args
        .into_iter()
        .map(std::ffi::CString::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: NUL-terminated strings in a NULL-terminated array, alive
    // for the call.
    unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
    Err(format!(
        "exec /proc/self/exe: {}",
        std::io::Error::last_os_error()
    ))
}

/// `--zygote-exec-child`: an exec'd app of `--zygote`, a fresh mm.
fn exec_child(x: &ExecChild) -> Result<(), String> {
    set_name(format!("rmw-app{}", x.index).as_ref())?;
    let own = map_regions(EXEC_REGIONS, REGION_PAGES)?;
    touch(&own, REGION_PAGES, 3);
    let mut me = Ready::me(Role::Exec, x.index);
    me.own = span(&own, REGION_PAGES);
    me.send(x.ready)?;
    hold_on(x.release);
    Ok(())
}

/// The zygote's apps and their helpers until they are released: killed
/// (SIGKILL) on drop if the zygote fails half-way, the apps reaped.
struct Family {
    owner: libc::pid_t,
    apps: Vec<libc::pid_t>,
    helpers: Vec<libc::pid_t>,
    armed: bool,
}

impl Drop for Family {
    fn drop(&mut self) {
        // SAFETY: getpid has no preconditions.
        if !self.armed || unsafe { libc::getpid() } != self.owner {
            return;
        }
        for &pid in self.apps.iter().chain(&self.helpers) {
            // SAFETY: our own descendants.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.apps {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
        }
    }
}

/// `--zygote`: see the module's doc.
fn zygote(z: Zygote, hold: bool) -> Result<(), String> {
    use std::{io::Read as _, os::fd::FromRawFd as _};
    set_name("rmw-zygote".as_ref())?;
    // SAFETY: getpid and getppid have no preconditions.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    let dir = LibDir {
        path: std::env::temp_dir().join(format!("rmw-zygote-{me}")),
        owner: me,
    };
    std::fs::create_dir(&dir.path).map_err(|e| format!("{}: {e}", dir.path.display()))?;
    let libs = map_libs(&dir.path, z.libs)?;
    let heap = map_regions(z.heap, REGION_PAGES)?;
    touch(&heap, REGION_PAGES, 1);

    let mut ready = [0; 2];
    // SAFETY: valid out-pointer.
    check(unsafe { libc::pipe(ready.as_mut_ptr()) }, "pipe")?;
    let release = if z.exit {
        None
    } else {
        let mut r = [0; 2];
        // SAFETY: as above.
        check(unsafe { libc::pipe(r.as_mut_ptr()) }, "pipe")?;
        Some(r)
    };
    let pipes = Pipes { ready, release };
    let mut family = Family {
        owner: me,
        apps: Vec::with_capacity(z.apps),
        helpers: Vec::new(),
        armed: true,
    };
    for i in 0..z.apps {
        // SAFETY: we are single-threaded; the child ends in _exit.
        let pid = unsafe { libc::fork() };
        check(pid, "fork")?;
        if pid == 0 {
            child(|| app(i, &heap, pipes));
        }
        family.apps.push(pid);
    }
    // SAFETY: closing our copies of the ends the children use; the ready
    // read end is ours alone from here.
    let mut from_kids = unsafe {
        libc::close(ready[1]);
        if let Some(r) = release {
            libc::close(r[0]);
        }
        std::fs::File::from_raw_fd(ready[0])
    };
    let helpers = (0..z.apps).filter(|i| i % 3 == 1).count();
    let mut kids = Vec::with_capacity(z.apps + helpers);
    for _ in 0..z.apps + helpers {
        let mut b = [0u8; Ready::LEN];
        from_kids
            .read_exact(&mut b)
            .map_err(|_| "an app or helper died before it was ready")?;
        let r = Ready::decode(&b)?;
        if r.role == Role::Helper {
            family.helpers.push(r.pid);
        }
        kids.push(r);
    }
    kids.sort_by_key(|r| (r.index, r.role == Role::Helper));

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "proc {me} {parent} zygote 0 rmw-zygote");
    for r in &kids {
        let name = if r.role == Role::Helper {
            "rmw-helper"
        } else {
            "rmw-app"
        };
        let exec = u8::from(r.role == Role::Exec);
        let role = r.role.name();
        let _ = writeln!(
            out,
            "proc {} {} {role} {exec} {name}{}",
            r.pid, r.ppid, r.index
        );
    }
    let heap = span(&heap, REGION_PAGES);
    let _ = writeln!(out, "libs {:#x} {:#x}", libs.0, libs.1);
    let _ = writeln!(out, "heap {:#x} {:#x}", heap.0, heap.1);
    for r in kids.iter().filter(|r| r.own != (0, 0)) {
        let _ = writeln!(out, "own {} {:#x} {:#x}", r.pid, r.own.0, r.own.1);
    }
    for r in kids.iter().filter(|r| r.moved != (0, 0)) {
        let (from, to) = r.moved;
        let len = REGION_PAGES * page_size();
        let _ = writeln!(out, "moved {} {from:#x} {to:#x} {len:#x}", r.pid);
    }
    let execs = kids.iter().filter(|r| r.role == Role::Exec).count();
    let _ = writeln!(
        out,
        "zygote {me} apps {} helpers {helpers} execs {execs} files {} heap {}",
        z.apps, z.libs, z.heap
    );
    let pids: Vec<String> = kids.iter().map(|r| r.pid.to_string()).collect();
    let _ = writeln!(out, "ready {me} {}", pids.join(" "));
    let _ = out.flush();
    drop(out);

    family.armed = false;
    let Some(release) = release else {
        // --zygote-exit: the apps hold on our stdin and outlive us.
        return Ok(());
    };
    if hold {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    // SAFETY: closing the release pipe lets every app's and helper's read
    // return.
    unsafe { libc::close(release[1]) };
    for &pid in &family.apps {
        let mut status = 0;
        // SAFETY: reaping our own child (each app reaps its helper).
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
    }
    drop(dir);
    let _ = writeln!(std::io::stdout(), "done");
    Ok(())
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer of the given size.
    check(
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) },
        "sched_getaffinity",
    )?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: reading a bit of a valid set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins this process to `cpu` and checks that it runs there now (the
/// kernel moves it before the call returns). Async-signal-safe: the
/// children call it between fork and _exit.
fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (it came from a set).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the given size.
    check(
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) },
        "sched_setaffinity",
    )?;
    // SAFETY: no preconditions.
    let now = unsafe { libc::sched_getcpu() };
    if usize::try_from(now).ok() == Some(cpu) {
        Ok(())
    } else {
        Err(format!("pinned to CPU {cpu} but running on {now}"))
    }
}

/// `--vfork-hold` ([module docs](self)): `clone(CLONE_VFORK)`, the child on
/// a stack of its own in a copy of our memory (no `vfork` sharing it).
fn vfork_hold() -> Result<(), String> {
    extern "C" fn waiter(_: *mut libc::c_void) -> libc::c_int {
        // The parent is inside its system call (its entry's programs ran):
        // said without a buffer (this is a copy of the parent's memory).
        // SAFETY: 3 bytes from a static string, to fd 1.
        unsafe { libc::write(1, b"in\n".as_ptr().cast(), 3) };
        // Until a line or the end of stdin.
        let mut b = 0u8;
        // SAFETY: one byte into `b`, from fd 0.
        while unsafe { libc::read(0, (&raw mut b).cast(), 1) } == 1 && b != b'\n' {}
        0
    }
    println!("vfork");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut stack = vec![0u128; 4096];
    // SAFETY: the top of our 64 KiB stack buffer (16-byte aligned); the
    // child runs `waiter` on it, in its own copy of our memory, and exits.
    let pid = unsafe {
        libc::clone(
            waiter,
            stack.as_mut_ptr().add(stack.len()).cast(),
            libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: our child; status is ours.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    println!("done");
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--vfork-hold") {
        return match vfork_hold() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rmw-workload: {e}");
                ExitCode::from(2)
            }
        };
    }
    match parse().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmw-workload: {e}");
            ExitCode::from(2)
        }
    }
}
