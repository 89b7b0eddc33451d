//! Services behind OPEN: `shell[,v2][,raw|,pty]:CMD`, `exec:CMD`, `sync:`,
//! `root:` and `unroot:`.
use std::{
    io::{Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, atomic::Ordering, mpsc::sync_channel},
};

use crate::{
    conn::{Hangup, Inbound, Outbound, Runner},
    daemon::Daemon,
    util::{SHELL_UID, log},
};

/// Shell protocol v2 packet ids.
const SH_STDIN: u8 = 0;
/// Command's standard output.
const SH_STDOUT: u8 = 1;
/// Command's standard error.
const SH_STDERR: u8 = 2;
/// Command's exit status (one byte).
const SH_EXIT: u8 = 3;
/// The host closed its standard input.
const SH_CLOSE_STDIN: u8 = 4;

/// A parsed service request.
enum Service {
    /// A command; `v2` selects the shell protocol, `pty` notes a requested
    /// terminal (served raw), `cmd` empty means an interactive `sh`.
    Shell {
        /// Shell protocol v2 framing.
        v2: bool,
        /// A terminal was requested (not provided).
        pty: bool,
        /// The command line.
        cmd: String,
    },
    /// The file sync protocol.
    Sync,
    /// `root:` (true) or `unroot:` (false).
    Root(bool),
}

/// The services, for the transport ([`crate::conn::Services`]): parses
/// `name` and returns what runs it on its stream; `None` for services this
/// stand-in lacks.
pub fn dispatch(name: &str) -> Option<Runner> {
    let svc = parse(name)?;
    Some(Box::new(move |inb, out, hangup| run(svc, inb, out, hangup)))
}

/// Parses a service name; `None` for services this stand-in lacks.
fn parse(name: &str) -> Option<Service> {
    if let Some(cmd) = name.strip_prefix("exec:") {
        return Some(Service::Shell {
            v2: false,
            pty: false,
            cmd: cmd.to_owned(),
        });
    }
    if name.starts_with("shell:") || name.starts_with("shell,") {
        let (head, cmd) = name.split_once(':')?;
        let mut v2 = false;
        let mut pty = None;
        for opt in head.split(',').skip(1) {
            match opt {
                "v2" => v2 = true,
                "raw" => pty = Some(false),
                "pty" => pty = Some(true),
                _ => {}
            }
        }
        return Some(Service::Shell {
            v2,
            pty: pty.unwrap_or(cmd.is_empty()),
            cmd: cmd.to_owned(),
        });
    }
    match name {
        "sync:" => Some(Service::Sync),
        "root:" => Some(Service::Root(true)),
        "unroot:" => Some(Service::Root(false)),
        _ => None,
    }
}

/// Runs a service on its stream (in its own thread).
fn run(svc: Service, inb: Inbound, out: Outbound, hangup: Arc<Hangup>) {
    match svc {
        Service::Root(want) => root(&out, want),
        Service::Sync => {
            let d = &out.conn.daemon;
            let mut c = Command::new(&d.helper);
            c.arg0("rmw-adbd-sync");
            run_command(c, Output::Raw, inb, &out, &hangup, "sync");
        }
        Service::Shell { v2, pty, cmd } => {
            if pty {
                log(format_args!(
                    "stream {}: pty requested, serving raw",
                    out.id()
                ));
            }
            let mut c = Command::new("/bin/sh");
            if !cmd.is_empty() {
                c.arg("-c").arg(&cmd);
            }
            let mode = if v2 { Output::V2 } else { Output::Merged };
            run_command(c, mode, inb, &out, &hangup, &cmd);
        }
    }
}

/// `root:` / `unroot:`: answers, closes, and restarts (drops every
/// connection) when the identity changes.
fn root(out: &Outbound, want_root: bool) {
    let d = Arc::clone(&out.conn.daemon);
    let is_root = d.uid.load(Ordering::Relaxed) == 0;
    let (msg, restart) = match (want_root, is_root) {
        (true, true) => ("adbd is already running as root\n", false),
        (true, false) if d.prop("ro.debuggable", "0") != "1" => {
            ("adbd cannot run as root in production builds\n", false)
        }
        (true, false) => ("restarting adbd as root\n", true),
        (false, false) => ("adbd not running as root\n", false),
        (false, true) => ("restarting adbd as non root\n", true),
    };
    log(format_args!("stream {}: {}", out.id(), msg.trim_end()));
    let _ = out.write(msg.as_bytes());
    out.close();
    if restart {
        d.uid
            .store(if want_root { 0 } else { SHELL_UID }, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(100));
        d.drop_all("adbd restart");
    }
}

/// How a command's output reaches the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Shell protocol v2: stdout, stderr and exit status framed.
    V2,
    /// Raw bytes, stderr merged into stdout (shell v1, exec).
    Merged,
    /// Raw stdout, stderr to our log (the sync helper).
    Raw,
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fresh descriptors, owned here.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Spawns `c` with the daemon's identity, environment and process group.
fn spawn(c: &mut Command, d: &Daemon) -> std::io::Result<Child> {
    let uid = d.uid.load(Ordering::Relaxed);
    let switch = d.root_host && uid != 0;
    c.env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", d.bin_dir.display()),
        )
        .env("HOME", "/")
        .env("TMPDIR", "/data/local/tmp")
        .current_dir("/");
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        c.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if switch
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn()
}

/// Runs a command on a stream: relays input, output and (v2) the exit status,
/// then reaps it.
fn run_command(
    mut c: Command,
    mode: Output,
    inb: Inbound,
    out: &Outbound,
    hangup: &Arc<Hangup>,
    what: &str,
) {
    let d = Arc::clone(&out.conn.daemon);
    let chunk = out.max_payload().saturating_sub(5).clamp(1024, 64 * 1024);
    let mut readers: Vec<(u8, std::fs::File)> = Vec::new();
    let setup = (|| -> std::io::Result<Child> {
        let (r_out, w_out) = pipe()?;
        readers.push((SH_STDOUT, r_out));
        match mode {
            Output::V2 => {
                let (r_err, w_err) = pipe()?;
                readers.push((SH_STDERR, r_err));
                c.stderr(Stdio::from(w_err));
            }
            Output::Merged => {
                c.stderr(Stdio::from(w_out.try_clone()?));
            }
            Output::Raw => {
                c.stderr(Stdio::inherit());
            }
        }
        c.stdin(Stdio::piped()).stdout(Stdio::from(w_out));
        spawn(&mut c, &d)
    })();
    drop(c);
    let mut child = match setup {
        Ok(ch) => ch,
        Err(e) => {
            log(format_args!(
                "stream {}: cannot run {what:?}: {e}",
                out.id()
            ));
            if mode == Output::V2 {
                let msg = format!("rmw-adbd: cannot run command: {e}\n");
                let _ = out.write(&frame(SH_STDERR, msg.as_bytes()));
                let _ = out.write(&frame(SH_EXIT, &[127]));
            }
            out.close();
            return;
        }
    };
    let pid = child.id() as i32;
    hangup.arm(pid);
    d.track(pid, true);
    log(format_args!(
        "stream {}: pid {pid} uid {} running {what:?}",
        out.id(),
        d.uid.load(Ordering::Relaxed)
    ));
    let stdin = child.stdin.take();
    std::thread::scope(|s| {
        s.spawn(move || feed(&inb, stdin, mode == Output::V2));
        let (tx, rx) = sync_channel::<(u8, Vec<u8>)>(4);
        for (id, mut f) in readers.drain(..) {
            let tx = tx.clone();
            s.spawn(move || {
                let mut buf = vec![0u8; chunk];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send((id, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut alive = true;
        let limit = out.max_payload();
        while let Ok(first) = rx.recv() {
            if !alive {
                continue;
            }
            let mut msg = Vec::with_capacity(limit);
            let mut next = Some(first);
            while let Some((id, data)) = next.take() {
                if mode == Output::V2 {
                    msg.extend_from_slice(&frame(id, &data));
                } else {
                    msg.extend_from_slice(&data);
                }
                if msg.len() + chunk + 5 <= limit {
                    next = rx.try_recv().ok();
                }
            }
            if out.write(&msg).is_err() {
                alive = false;
            }
        }
        hangup.disarm();
        let status = child.wait();
        d.track(pid, false);
        let code = match &status {
            Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
            Err(_) => 255,
        };
        log(format_args!(
            "stream {}: pid {pid} exited with status {code}",
            out.id()
        ));
        if alive && mode == Output::V2 {
            let _ = out.write(&frame(SH_EXIT, &[(code & 0xff) as u8]));
        }
        out.close();
    });
}

/// One shell protocol v2 packet.
fn frame(id: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.push(id);
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// Copies the host's input to the command's stdin until the stream closes.
fn feed(inb: &Inbound, mut stdin: Option<ChildStdin>, v2: bool) {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(data) = inb.recv() {
        if !v2 {
            if let Some(w) = stdin.as_mut()
                && w.write_all(&data).is_err()
            {
                stdin = None;
            }
            inb.okay();
            continue;
        }
        pending.extend_from_slice(&data);
        while pending.len() >= 5 {
            let len = u32::from_le_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if pending.len() < 5 + len {
                break;
            }
            let body = &pending[5..5 + len];
            match pending[0] {
                SH_STDIN => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(body).is_err()
                    {
                        stdin = None;
                    }
                }
                SH_CLOSE_STDIN => stdin = None,
                _ => {} // window size changes and the like
            }
            pending.drain(..5 + len);
        }
        inb.okay();
    }
}
