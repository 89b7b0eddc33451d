//! Runs the real adb client (Debian's 29.x) against `rmw-adbd`.
//!
//! Every test has its own adb server (`adb -P PORT`) and HOME (so its own adb
//! key), killed and removed at the end. Tests that need the host's root (uid
//! switching, the setuid su) are `#[ignore]`d; the project runs them as root
//! with `--ignored`.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A running stand-in with its private adb server.
struct Fixture {
    /// The rmw-adbd process.
    daemon: Child,
    /// Its log (stderr), shown when a test fails.
    log: Arc<Mutex<Vec<u8>>>,
    /// `127.0.0.1:PORT`.
    serial: String,
    /// Port of this test's adb server.
    adb_port: u16,
    /// Temp directory: HOME of the adb server and scratch files (mode 0777).
    dir: PathBuf,
}

/// Fails clearly when the adb client is missing.
fn require_adb() {
    let ok = Command::new("adb")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the adb client is not installed (apt-get install adb); these tests need it"
    );
}

/// Whether we run as root on the host.
fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Text of a byte buffer.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Random bytes from /dev/urandom.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("read /dev/urandom");
    v
}

impl Fixture {
    /// Starts rmw-adbd with `args` and an adb server on `adb_port`; does not
    /// connect yet.
    fn start(name: &str, adb_port: u16, args: &[&str]) -> Self {
        require_adb();
        let dir = std::env::temp_dir().join(format!("rmw-adbd-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).expect("create test dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut daemon = Command::new(env!("CARGO_BIN_EXE_rmw-adbd"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rmw-adbd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut err = daemon.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        });
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read port");
        let serial = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "rmw-adbd did not start: {line:?}\n{}",
                    text(
                        &log.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                    )
                )
            });
        let f = Self {
            daemon,
            log,
            serial: serial.to_owned(),
            adb_port,
            dir,
        };
        let _ = f.adb(&["kill-server"]);
        let out = f.adb(&["start-server"]);
        assert!(
            out.status.success(),
            "adb start-server failed: {}",
            text(&out.stderr)
        );
        f
    }

    /// Starts, connects and waits until the device is online.
    fn online(name: &str, adb_port: u16, args: &[&str]) -> Self {
        let f = Self::start(name, adb_port, args);
        let out = f.adb(&["connect", &f.serial]);
        assert!(
            text(&out.stdout).contains("connected to"),
            "connect: {out:?}"
        );
        f.wait_for_device();
        f
    }

    /// The adb command for this test's server.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("adb");
        c.arg("-P")
            .arg(self.adb_port.to_string())
            .args(args)
            .env("HOME", self.dir.join("home"))
            .env_remove("ANDROID_SERIAL")
            .env_remove("ADB_VENDOR_KEYS")
            .stdin(Stdio::null());
        c
    }

    /// Runs adb with `args`.
    fn adb(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run adb")
    }

    /// Runs `adb -s SERIAL args...`.
    fn on(&self, args: &[&str]) -> Output {
        let mut all = vec!["-s", self.serial.as_str()];
        all.extend_from_slice(args);
        self.adb(&all)
    }

    /// `adb -s SERIAL shell -T CMD`.
    fn sh(&self, cmd: &str) -> Output {
        self.on(&["shell", "-T", cmd])
    }

    /// `adb wait-for-device`, at most 20 s.
    fn wait_for_device(&self) {
        let mut c = self
            .cmd(&["-s", &self.serial, "wait-for-device"])
            .spawn()
            .expect("spawn adb");
        let t = Instant::now();
        while c.try_wait().expect("wait").is_none() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("wait-for-device timed out; devices: {}", self.devices());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Output of `adb devices -l`.
    fn devices(&self) -> String {
        text(&self.adb(&["devices", "-l"]).stdout)
    }

    /// Our line of `adb devices -l`, if listed.
    fn device_line(&self) -> Option<String> {
        self.devices()
            .lines()
            .find(|l| {
                l.starts_with(&format!("{} ", self.serial))
                    || l.starts_with(&format!("{}\t", self.serial))
            })
            .map(str::to_owned)
    }

    /// Polls `adb devices -l` until our line satisfies `ok`, at most `secs`.
    fn wait_line(&self, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let line = self.device_line().unwrap_or_default();
            if ok(&line) {
                return line;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "timed out; last line {line:?}\n{}",
                self.devices()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal to the daemon.
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.daemon.id() as i32, sig) };
    }

    /// A scratch path (in a directory anyone may write).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.adb(&["kill-server"]);
        self.signal(libc::SIGTERM);
        let _ = self.daemon.wait();
        if std::thread::panicking() {
            let log = self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            eprintln!("---- rmw-adbd log ----\n{}", text(&log));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts a successful command and returns its stdout.
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {o:?}\nstderr: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Writes a props file into the fixture's directory.
fn props(dir: &Path, body: &str) -> String {
    let p = dir.join("props.txt");
    std::fs::write(&p, body).expect("write props");
    p.display().to_string()
}

#[test]
fn shell_status_and_streams() {
    let f = Fixture::online("status", 15037, &[]);
    let o = f.sh("echo out; echo err >&2; exit 7");
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    assert_eq!(f.sh("true").status.code(), Some(0));
    assert_eq!(f.sh("kill -9 $$").status.code(), Some(137));
    assert_eq!(
        ok(&f.sh("getprop ro.debuggable; echo $PATH"))
            .lines()
            .next(),
        Some("1")
    );
    assert!(ok(&f.sh("getprop")).contains("[ro.build.type]: [userdebug]"));
    assert_eq!(ok(&f.on(&["exec-out", "echo exec"])), "exec\n");
    assert_eq!(ok(&f.on(&["get-state"])), "device\n");
    let line = f.device_line().expect("listed");
    assert!(
        line.contains("device product:rmw model:rmw_adbd device:rmw"),
        "{line}"
    );
}

#[test]
fn shell_binary_exact() {
    let f = Fixture::online("binary", 15038, &[]);
    let data = random_bytes(1_000_000);
    let src = f.path("random.bin");
    std::fs::write(&src, &data).expect("write");
    let o = f.sh(&format!("cat {}", src.display()));
    assert!(o.status.success());
    assert!(o.stdout == data, "stdout differs: {} bytes", o.stdout.len());
    let mut c = f.cmd(&["-s", &f.serial, "shell", "-T", "cat"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let o = child.wait_with_output().expect("wait");
    writer.join().expect("join").expect("write stdin");
    assert!(
        o.stdout == data,
        "stdin round trip differs: {} bytes",
        o.stdout.len()
    );
}

#[test]
fn push_pull_round_trip() {
    let f = Fixture::online("sync", 15039, &[]);
    for (name, size) in [
        ("small.bin", 1000),
        ("empty.bin", 0),
        ("big.bin", 20_000_000),
    ] {
        let data = random_bytes(size);
        let src = f.path(name);
        std::fs::write(&src, &data).expect("write");
        let remote = f.path(&format!("dev/sub/{name}"));
        ok(&f.on(&[
            "push",
            &src.display().to_string(),
            &remote.display().to_string(),
        ]));
        let back = f.path(&format!("{name}.back"));
        ok(&f.on(&[
            "pull",
            &remote.display().to_string(),
            &back.display().to_string(),
        ]));
        assert!(
            std::fs::read(&back).expect("read back") == data,
            "{name} differs"
        );
    }
    let o = f.on(&["pull", "/nonexistent/x", &f.path("x").display().to_string()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stdout).contains("adb: error: remote object '/nonexistent/x' does not exist"),
        "sync errors go to stdout in adb 29: {o:?}"
    );
}

#[test]
#[ignore = "needs root: commands run as uid 2000"]
fn identity_uid_2000_and_root() {
    assert!(
        is_root(),
        "this test needs the host's root (run the --ignored tests as root)"
    );
    let dir = std::env::temp_dir();
    let p = props(&dir, "ro.debuggable=1\nro.build.type=userdebug\n");
    let f = Fixture::online("root", 15040, &["--props", &p]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(ok(&f.sh("id -u; id -g; id -G")), "2000\n2000\n2000\n");
    assert!(!f.sh("echo 1 > /proc/sys/vm/drop_caches").status.success());
    let src = f.path("owned.bin");
    std::fs::write(&src, b"x").expect("write");
    ok(&f.on(&[
        "push",
        &src.display().to_string(),
        "/data/local/tmp/rmw-adbd-owned.bin",
    ]));
    let m = std::fs::metadata("/data/local/tmp/rmw-adbd-owned.bin").expect("pushed");
    assert_eq!((m.uid(), m.gid()), (2000, 2000));
    let _ = std::fs::remove_file("/data/local/tmp/rmw-adbd-owned.bin");
    let o = f.on(&["push", &src.display().to_string(), "/root/rmw-adbd-denied"]);
    assert!(
        text(&o.stdout).contains("remote couldn't create file: Permission denied"),
        "{o:?}"
    );

    assert_eq!(ok(&f.on(&["root"])), "restarting adbd as root\n");
    f.wait_for_device();
    assert_eq!(ok(&f.sh("id -u")), "0\n");
    assert_eq!(ok(&f.on(&["root"])), "adbd is already running as root\n");
    assert_eq!(ok(&f.on(&["unroot"])), "restarting adbd as non root\n");
    f.wait_for_device();
    assert_eq!(ok(&f.sh("id -u")), "2000\n");
    assert_eq!(ok(&f.on(&["unroot"])), "adbd not running as root\n");
}

#[test]
fn root_refused_on_user_build() {
    let dir = std::env::temp_dir();
    let p = props(&dir, "ro.debuggable=0\nro.build.type=user\n");
    let f = Fixture::online("user", 15041, &["--props", &p]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(
        ok(&f.on(&["root"])),
        "adbd cannot run as root in production builds\n"
    );
    assert_eq!(ok(&f.sh("getprop ro.build.type")), "user\n");
    assert_eq!(f.device_line().map(|l| l.contains(" device ")), Some(true));
}

#[test]
#[ignore = "needs root: setuid su"]
fn su_regains_root() {
    assert!(
        is_root(),
        "this test needs the host's root (run the --ignored tests as root)"
    );
    let f = Fixture::online("su", 15042, &["--su"]);
    assert_eq!(
        ok(&f.sh("id -u; su -c 'id -u'; su 0 -c 'id -u'; su root id -u")),
        "2000\n0\n0\n0\n"
    );
    drop(f);
    let f = Fixture::online("sudeny", 15043, &["--su-deny"]);
    let o = f.sh("su -c 'id -u'");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "Permission denied\n");
}

#[test]
fn device_states() {
    for (i, (mode, state, shell_err)) in [
        (
            "unauthorized",
            "unauthorized",
            "error: device unauthorized.",
        ),
        ("offline", "offline", "error: device offline"),
        ("recovery", "recovery", ""),
        ("sideload", "sideload", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let f = Fixture::start(mode, 15044 + i as u16, &["--mode", mode]);
        let o = f.adb(&["connect", &f.serial]);
        eprintln!("{mode}: connect: {}", text(&o.stdout).trim());
        let line = f.wait_line(10, |l| {
            l.contains(&format!(" {state}")) || l.ends_with(&format!("\t{state}"))
        });
        eprintln!("{mode}: devices -l: {line}");
        let o = f.sh("true");
        eprintln!(
            "{mode}: shell -T true: rc {:?} stderr {:?}",
            o.status.code(),
            text(&o.stderr)
        );
        if shell_err.is_empty() {
            assert!(o.status.success());
            assert_eq!(ok(&f.on(&["get-state"])), format!("{state}\n"));
        } else {
            assert_eq!(o.status.code(), Some(1));
            assert!(
                text(&o.stderr).starts_with(shell_err),
                "{}",
                text(&o.stderr)
            );
        }
    }
}

#[test]
fn serial_errors() {
    let f = Fixture::start("serials", 15048, &[]);
    let o = f.adb(&["shell", "-T", "true"]);
    eprintln!("no device: {:?}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "error: no devices/emulators found\n");
    let o = f.adb(&["connect", &f.serial]);
    assert!(text(&o.stdout).contains("connected to"));
    f.wait_for_device();
    let g = Fixture::start("serials2", 15049, &[]);
    let o = f.adb(&["connect", &g.serial]);
    assert!(text(&o.stdout).contains("connected to"));
    let o = f.adb(&["shell", "-T", "true"]);
    eprintln!("several: {:?}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "error: more than one device/emulator\n");
    let o = f.adb(&["-s", "127.0.0.1:1", "shell", "-T", "true"]);
    eprintln!("unknown: {:?}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "error: device '127.0.0.1:1' not found\n");
}

#[test]
fn host_kill_hangs_up_command() {
    let f = Fixture::online("hangup", 15050, &[]);
    let pidfile = f.path("sleep.pid");
    let mut c = f.cmd(&[
        "-s",
        &f.serial,
        "shell",
        "-T",
        &format!("echo $$ > {}; exec sleep 987", pidfile.display()),
    ]);
    let mut client = c.spawn().expect("spawn adb shell");
    let t = Instant::now();
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "command did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    client.kill().expect("kill adb client");
    let _ = client.wait();
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "pid {pid} still alive after the host side died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        text(
            &f.log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        )
        .contains("SIGHUP")
    );
}

#[test]
fn signals_drop_and_unplug() {
    let f = Fixture::online("drop", 15051, &[]);
    f.signal(libc::SIGUSR1);
    f.wait_line(5, |l| !l.contains(" device "));
    f.wait_for_device();
    assert_eq!(ok(&f.sh("echo back")), "back\n");
    f.signal(libc::SIGUSR2);
    f.wait_line(5, |l| !l.contains(" device "));
    std::thread::sleep(Duration::from_secs(3));
    let line = f.device_line().unwrap_or_default();
    assert!(
        !line.contains(" device "),
        "came back while unplugged: {line}"
    );
    f.signal(libc::SIGUSR2);
    f.wait_for_device();
    assert_eq!(ok(&f.sh("echo again")), "again\n");
}

#[test]
fn concurrent_streams() {
    let f = Fixture::online("concurrent", 15052, &[]);
    let long = f
        .cmd(&["-s", &f.serial, "shell", "-T", "sleep 2; echo long done"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn long shell");
    let data = random_bytes(5_000_000);
    let src = f.path("c.bin");
    std::fs::write(&src, &data).expect("write");
    let remote = f.path("c.remote");
    let push = f
        .cmd(&[
            "-s",
            &f.serial,
            "push",
            &src.display().to_string(),
            &remote.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn push");
    assert_eq!(ok(&f.sh("echo quick")), "quick\n");
    ok(&push.wait_with_output().expect("push"));
    assert!(std::fs::read(&remote).expect("pushed") == data);
    assert_eq!(ok(&long.wait_with_output().expect("long")), "long done\n");
}
