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
//! (now its own), and exits the process.
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
    name: Option<std::ffi::OsString>,
    file: Option<std::path::PathBuf>,
    vm_child: bool,
    zombie_leader: bool,
}

const USAGE: &str = "usage: rmw-workload [--regions K] [--pages P] [--cow-pages C] [--children F] \
                     [--noise N] [--hold] [--split] [--wipe|--dontfork] [--storm N] \
                     [--name NAME] [--file PATH] [--vm-child] [--zombie-leader]";

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
        name: None,
        file: None,
        vm_child: false,
        zombie_leader: false,
    };
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
            "--split" => o.split = true,
            "--wipe" => o.advice = Some(libc::MADV_WIPEONFORK),
            "--dontfork" => o.advice = Some(libc::MADV_DONTFORK),
            "--vm-child" => o.vm_child = true,
            "--zombie-leader" => o.zombie_leader = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.split && o.pages < 2 {
        o.pages = 2;
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
fn map_regions(o: &Opts) -> Result<Vec<*mut u8>, String> {
    let ps = page_size();
    let len = o.pages * ps;
    let total = (2 * o.regions + 1) * len;
    if o.regions == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: anonymous private mapping, no file.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let base = base.cast::<u8>();
    let mut regions = Vec::with_capacity(o.regions);
    for i in 0..o.regions {
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

/// `--storm N`: as `rmw-storm`, N times fork + `_exit` + wait with the
/// regions touched; prints `storm <N> forks <seconds> s`.
fn storm(o: &Opts) -> Result<(), String> {
    // SAFETY: PR_SET_NAME with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rmw-storm".as_ptr()) };
    let regions = map_regions(o)?;
    touch(&regions, o.pages, 1);
    let t = std::time::Instant::now();
    for _ in 0..o.storm {
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
    if let Some(path) = &o.file {
        map_file(path)?;
    }
    let regions = map_regions(o)?;
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
    for _ in 0..o.children {
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        let pid = unsafe { libc::fork() };
        check(pid, "fork")?;
        if pid == 0 {
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
    std::thread::spawn(move || {
        let code = match hold.wait_zombie_leader().and_then(|()| hold.run()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("rmw-workload: {e}");
                2
            }
        };
        std::process::exit(code);
    });
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
    /// `--zombie-leader`: waits (at most 10 s) until the main thread has
    /// exited, which leaves the leader a zombie (`Z` in its task's stat).
    fn wait_zombie_leader(&self) -> Result<(), String> {
        let stat = format!("/proc/{0}/task/{0}/stat", self.me);
        for _ in 0..1000 {
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

    fn run(self) -> Result<(), String> {
        let pids: Vec<String> = self.children.iter().map(ToString::to_string).collect();
        let mut out = std::io::stdout().lock();
        let vm_said = self.vm.map_or_else(String::new, |p| format!(" vm {p}"));
        let _ = writeln!(out, "ready {} {}{vm_said}", self.me, pids.join(" "));
        let _ = out.flush();
        drop(out);
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

fn main() -> ExitCode {
    match parse().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmw-workload: {e}");
            ExitCode::from(2)
        }
    }
}
