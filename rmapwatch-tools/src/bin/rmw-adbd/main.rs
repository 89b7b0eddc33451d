//! rmw-adbd: an ADB-protocol device stand-in for rmapwatch's tests (Debian
//! has no adbd).
//!
//! It listens on TCP (`adb connect 127.0.0.1:PORT`) and serves the adb
//! server's connections: the CNXN/AUTH handshake (or a deliberately
//! unauthorized, offline, recovery or sideload device), shell protocol v1 and
//! v2 commands (run on this host with `/bin/sh -c`, really as uid 2000
//! unless rooted), the file sync protocol v1 (push/pull), and `root:` /
//! `unroot:` (which drop the connection, as adbd's restart does).
//!
//! Commands find a `getprop` (the `--props` file) and, with `--su`, a
//! setuid-root `su` first on their PATH; both are copies of this binary,
//! which dispatches on its name. SIGUSR1 drops every connection (the adb
//! server reconnects within a second, like after a reboot); SIGUSR2 toggles
//! "unplugged" (drop, and refuse connections until the next SIGUSR2);
//! SIGTERM/SIGINT exit cleanly, removing what it created.
//!
//! The modules form layers, each using only those before it (no import
//! cycle, which `cargo xtask cycles` checks): `util` (shared helpers),
//! `tools` (the multi-call personalities), `daemon` (options, state, the
//! connection registry, signals), `conn` (the transport, which holds the
//! daemon), `service` (what runs on conn's streams). This file only wires
//! them together; in particular it hands `conn` the service dispatcher, so
//! that the transport need not name the services built on top of it.
mod conn;
mod daemon;
mod service;
mod tools;
mod util;

use std::{
    ffi::OsString,
    io::Write as _,
    net::TcpListener,
    path::Path,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use util::log;

/// The daemon proper: listens, then serves each connection in a thread of
/// its own with the services of [`service::dispatch`].
fn run_daemon(args: &[OsString]) -> ExitCode {
    let opts = match daemon::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let set = daemon::block_signals();
    let listener = match TcpListener::bind(opts.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rmw-adbd: cannot listen on {}: {e}", opts.listen);
            return ExitCode::FAILURE;
        }
    };
    let d = match daemon::setup(opts) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("rmw-adbd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    log(format_args!(
        "mode {:?}, uid {}, state {}, su {:?}",
        d.opts.mode,
        d.opts.uid,
        d.state_dir.display(),
        d.opts.su
    ));
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    let ds = Arc::clone(&d);
    std::thread::spawn(move || daemon::signal_loop(&ds, set));
    let next = AtomicU64::new(1);
    for sock in listener.incoming() {
        match sock {
            Ok(s) if d.unplugged() => drop(s),
            Ok(s) => {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let d = Arc::clone(&d);
                std::thread::spawn(move || conn::serve(d, id, s, service::dispatch));
            }
            Err(e) => log(format_args!("accept failed: {e}")),
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    // SAFETY: getuid/geteuid cannot fail.
    let setuid = unsafe { libc::geteuid() == 0 && libc::getuid() != 0 };
    match name.as_deref() {
        _ if setuid => tools::su(&rest),
        Some("su") => tools::su(&rest),
        Some("getprop") => tools::getprop(&rest),
        Some("rmw-adbd-sync") => tools::sync_helper(),
        _ => run_daemon(&rest),
    }
}
