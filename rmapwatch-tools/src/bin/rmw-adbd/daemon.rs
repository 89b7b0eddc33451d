//! The daemon's state and setup: the command line, the state directory (the
//! fake `getprop` and `su` on commands' PATH), the connection registry and
//! the control signals. It knows connections only as [`Link`]s, so that the
//! transport (`conn`) can hold the daemon without the daemon holding `conn`.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fs,
    net::SocketAddr,
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use crate::{
    tools,
    util::{SHELL_UID, lock, log, random},
};

/// The device's temp directory (the host's own path).
const DATA_TMP: &str = "/data/local/tmp";

const USAGE: &str = "usage: rmw-adbd [--listen IP:PORT] [--props FILE] [--state DIR] \
                     [--mode device|unauthorized|offline|recovery|sideload] [--uid 0|2000] \
                     [--su|--su-deny] [--exit-on-drop]";

/// What kind of device to pretend to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A normal, authorized device.
    Device,
    /// Answers CNXN with AUTH tokens and never accepts a key.
    Unauthorized,
    /// Accepts TCP and never answers.
    Offline,
    /// A device in recovery.
    Recovery,
    /// A device in sideload mode.
    Sideload,
}

/// Which `su` commands find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Su {
    /// None.
    Absent,
    /// A working setuid-root su.
    Allow,
    /// One that refuses with "Permission denied".
    Deny,
}

/// Command-line options.
pub struct Opts {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Property file.
    props: Option<PathBuf>,
    /// Parent of the state directory.
    state: Option<PathBuf>,
    /// Device kind.
    pub mode: Mode,
    /// Starting uid of commands.
    pub uid: u32,
    /// su flavour.
    pub su: Su,
    /// Exit after a SIGUSR1 drop.
    exit_on_drop: bool,
}

/// Parses the command line.
pub fn parse(args: &[OsString]) -> Result<Opts, String> {
    let mut o = Opts {
        listen: SocketAddr::from(([127, 0, 0, 1], 5555)),
        props: None,
        state: None,
        mode: Mode::Device,
        uid: SHELL_UID,
        su: Su::Absent,
        exit_on_drop: false,
    };
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--listen" => {
                let v = val("--listen")?;
                o.listen = v
                    .parse()
                    .map_err(|_| format!("--listen wants IP:PORT, not {v:?}"))?;
            }
            "--props" => o.props = Some(PathBuf::from(val("--props")?)),
            "--state" => o.state = Some(PathBuf::from(val("--state")?)),
            "--mode" => {
                o.mode = match val("--mode")?.as_str() {
                    "device" => Mode::Device,
                    "unauthorized" => Mode::Unauthorized,
                    "offline" => Mode::Offline,
                    "recovery" => Mode::Recovery,
                    "sideload" => Mode::Sideload,
                    m => return Err(format!("unknown --mode {m:?}\n{USAGE}")),
                }
            }
            "--uid" => {
                o.uid = match val("--uid")?.as_str() {
                    "0" => 0,
                    "2000" => SHELL_UID,
                    u => return Err(format!("--uid is 0 or 2000, not {u:?}")),
                }
            }
            "--su" => o.su = Su::Allow,
            "--su-deny" => o.su = Su::Deny,
            "--exit-on-drop" => o.exit_on_drop = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// A live connection, as the registry sees it: something that can be cut
/// (SIGUSR1, SIGUSR2, `root:`/`unroot:`). The transport's connection
/// implements it; a trait rather than that type, because the transport
/// holds the daemon and this module must not import it back.
pub trait Link: Send + Sync {
    /// Cuts the connection at once; its own thread then sees the end and
    /// unregisters it.
    fn drop_now(&self);
}

/// Daemon-wide state.
pub struct Daemon {
    /// Options.
    pub opts: Opts,
    /// The fake properties.
    props: BTreeMap<String, String>,
    /// Current uid of commands (changed by root:/unroot:).
    pub uid: AtomicU32,
    /// Running as root on the host (identity switching possible).
    pub root_host: bool,
    /// Directory put first on commands' PATH.
    pub bin_dir: PathBuf,
    /// The binary copy that serves sync as the current identity.
    pub helper: PathBuf,
    /// Our state directory (removed on exit).
    pub state_dir: PathBuf,
    /// Also remove the state directory's parent (a temp dir we made).
    remove_parent: bool,
    /// Directories of /data/local/tmp we created, deepest last.
    created_data: Vec<PathBuf>,
    /// Live connections.
    conns: Mutex<HashMap<u64, Arc<dyn Link>>>,
    /// Process groups of running commands.
    children: Mutex<HashSet<i32>>,
    /// Unplugged (SIGUSR2): new connections are closed at once.
    unplugged: AtomicBool,
}

impl Daemon {
    /// A property, or `default`.
    pub fn prop<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.props.get(key).map_or(default, String::as_str)
    }

    /// Adds a connection to the registry under `id`.
    pub fn register(&self, id: u64, c: Arc<dyn Link>) {
        lock(&self.conns).insert(id, c);
    }

    /// Removes a connection from the registry.
    pub fn unregister(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Whether we are "unplugged" (SIGUSR2): new connections are closed at
    /// once.
    pub fn unplugged(&self) -> bool {
        self.unplugged.load(Ordering::SeqCst)
    }

    /// Records a running (or finished) command's process group.
    pub fn track(&self, pgid: i32, running: bool) {
        let mut c = lock(&self.children);
        if running {
            c.insert(pgid);
        } else {
            c.remove(&pgid);
        }
    }

    /// Drops every connection.
    pub fn drop_all(&self, why: &str) {
        let conns: Vec<_> = lock(&self.conns).values().cloned().collect();
        log(format_args!(
            "dropping {} connection(s): {why}",
            conns.len()
        ));
        for c in conns {
            c.drop_now();
        }
    }

    /// Hangs up running commands and removes what we created.
    fn cleanup(&self) {
        for &pgid in lock(&self.children).iter() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, libc::SIGHUP) };
        }
        let _ = fs::remove_dir_all(&self.state_dir);
        if self.remove_parent
            && let Some(p) = self.state_dir.parent()
        {
            let _ = fs::remove_dir(p);
        }
        for d in self.created_data.iter().rev() {
            if fs::remove_dir(d).is_err() {
                log(format_args!("left {} in place (not empty)", d.display()));
                break;
            }
        }
    }
}

/// Whether the filesystem holding `p` is mounted nosuid.
fn nosuid(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return true;
    };
    // SAFETY: c is NUL-terminated and st is a plain out-parameter.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_NOSUID != 0
    }
}

/// Creates the state directory; returns it and whether its parent is ours.
fn make_state(opts: &Opts) -> Result<(PathBuf, bool), String> {
    let tag = format!("rmw-adbd.{}", std::process::id());
    if let Some(base) = &opts.state {
        fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        if opts.su == Su::Allow && nosuid(base) {
            return Err(format!(
                "--state {} is on a nosuid filesystem: su could not be setuid; choose another --state",
                base.display()
            ));
        }
        let dir = base.join(tag);
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        return Ok((dir, false));
    }
    let mut bases = vec![
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/run"),
    ];
    bases.dedup();
    for base in bases {
        if opts.su == Su::Allow && nosuid(&base) {
            continue;
        }
        let mut rnd = [0u8; 6];
        random(&mut rnd);
        let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let parent = base.join(format!("{tag}.{suffix}"));
        if fs::create_dir(&parent).is_ok() {
            let _ = fs::set_permissions(&parent, fs::Permissions::from_mode(0o755));
            let dir = parent.join("state");
            fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            return Ok((dir, true));
        }
    }
    Err("no temp directory without nosuid to hold the state (use --state)".to_owned())
}

/// Sets up the state directory, the fake bin directory and /data/local/tmp.
pub fn setup(opts: Opts) -> Result<Daemon, String> {
    // SAFETY: geteuid cannot fail.
    let root_host = unsafe { libc::geteuid() } == 0;
    if !root_host && (opts.uid != 0 || opts.su == Su::Allow) {
        log(format_args!(
            "not root: commands run as ourselves, su cannot be setuid"
        ));
    }
    let props = match &opts.props {
        Some(p) => tools::read_props(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => [
            ("ro.build.type", "userdebug"),
            ("ro.debuggable", "1"),
            ("ro.build.version.sdk", "30"),
            ("ro.product.name", "rmw"),
            ("ro.product.model", "rmw-adbd"),
            ("ro.product.device", "rmw"),
            (
                "ro.product.cpu.abi",
                if cfg!(target_arch = "aarch64") {
                    "arm64-v8a"
                } else {
                    "x86_64"
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let (state_dir, remove_parent) = make_state(&opts)?;
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let _ = fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o755));
    let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(state_dir.join("props"), text).map_err(|e| fail("cannot write props", e))?;
    let exe = std::env::current_exe().map_err(|e| fail("cannot find own binary", e))?;
    let (lib, bin) = (state_dir.join("lib"), state_dir.join("bin"));
    for d in [&lib, &bin] {
        fs::create_dir(d).map_err(|e| fail("cannot create state", e))?;
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
    }
    let helper = lib.join("rmw-adbd");
    fs::copy(&exe, &helper).map_err(|e| fail("cannot copy binary", e))?;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755))
        .map_err(|e| fail("chmod", e))?;
    std::os::unix::fs::symlink("../lib/rmw-adbd", bin.join("getprop"))
        .map_err(|e| fail("cannot link getprop", e))?;
    match opts.su {
        Su::Absent => {}
        Su::Allow => {
            let su = bin.join("su");
            fs::copy(&exe, &su).map_err(|e| fail("cannot copy su", e))?;
            if root_host {
                chown(&su, Some(0), Some(0)).map_err(|e| fail("chown su", e))?;
            }
            fs::set_permissions(&su, fs::Permissions::from_mode(0o4755))
                .map_err(|e| fail("chmod su", e))?;
        }
        Su::Deny => {
            let su = bin.join("su");
            fs::write(&su, "#!/bin/sh\necho 'Permission denied' >&2\nexit 1\n")
                .map_err(|e| fail("cannot write su", e))?;
            fs::set_permissions(&su, fs::Permissions::from_mode(0o755))
                .map_err(|e| fail("chmod su", e))?;
        }
    }
    let mut ancestor = state_dir.clone();
    while let Some(p) = ancestor.parent().map(Path::to_path_buf) {
        if let Ok(m) = fs::metadata(&p)
            && m.permissions().mode() & 0o001 == 0
        {
            log(format_args!(
                "warning: {} is not searchable by uid 2000",
                p.display()
            ));
        }
        ancestor = p;
    }
    let mut created_data = Vec::new();
    for d in ["/data", "/data/local", DATA_TMP] {
        let p = PathBuf::from(d);
        if !p.exists() {
            if let Err(e) = fs::create_dir(&p) {
                log(format_args!("warning: cannot create {d}: {e}"));
                break;
            }
            let mode = if d == DATA_TMP { 0o771 } else { 0o755 };
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
            if d == DATA_TMP && root_host {
                let _ = chown(&p, Some(SHELL_UID), Some(SHELL_UID));
            }
            created_data.push(p);
        }
    }
    Ok(Daemon {
        uid: AtomicU32::new(opts.uid),
        opts,
        props,
        root_host,
        bin_dir: bin,
        helper,
        state_dir,
        remove_parent,
        created_data,
        conns: Mutex::new(HashMap::new()),
        children: Mutex::new(HashSet::new()),
        unplugged: AtomicBool::new(false),
    })
}

/// Blocks the control signals in every thread; returns their set.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-set manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for control signals: SIGUSR1 drops connections, SIGUSR2 toggles
/// "unplugged" (drops them and refuses new ones until the next SIGUSR2),
/// others exit.
pub fn signal_loop(d: &Daemon, set: libc::sigset_t) -> ! {
    loop {
        let mut sig = 0;
        // SAFETY: set is initialised, sig is an out-parameter.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig == libc::SIGUSR1 {
            d.drop_all("SIGUSR1");
            if d.opts.exit_on_drop {
                break;
            }
        } else if sig == libc::SIGUSR2 {
            let now = !d.unplugged.fetch_xor(true, Ordering::SeqCst);
            log(format_args!(
                "SIGUSR2: {}",
                if now { "unplugged" } else { "plugged in" }
            ));
            if now {
                d.drop_all("SIGUSR2 (unplugged)");
            }
        } else {
            log(format_args!("signal {sig}: exiting"));
            break;
        }
    }
    d.cleanup();
    std::process::exit(0)
}
