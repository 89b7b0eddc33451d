//! `--adb [SERIAL]`: an Android device as the source. The host finds adb,
//! picks the device, probes it in one shell call, gets root (already, `adb
//! root` on debuggable builds, else `su -c`), pushes the static agent for
//! the device's architecture under a content-hashed name, and runs it
//! through `adb shell -T` (shell protocol v2: no pty, binary-safe stdio,
//! the exit status). What was pushed is removed at the end, by the agent
//! itself (`--cleanup`, on every exit path it has, including a dropped
//! link) and by the host; `adb unroot` undoes an `adb root` of ours.
//!
//! Every string that reaches the device's shell is quoted here
//! ([`quote`]): serials, paths and names are data, never shell code.
use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rmapwatch_engine::text::printable_lines;
use rmapwatch_parse::device::{Device, Listed, PROBE, parse_devices, parse_probe};

use super::{remote, running::Source};
use crate::{link::Link, log};

/// Where the agent and a pushed BTF go on the device.
pub const DEVICE_DIR: &str = "/data/local/tmp";
/// The sysctl that hides kernel addresses.
const KPTR_RESTRICT: &str = "/proc/sys/kernel/kptr_restrict";

/// What `--adb` and its companions asked.
#[derive(Clone, Debug, Default)]
pub struct AdbArgs {
    /// The serial (`None`: `ANDROID_SERIAL`, else the only device).
    pub serial: Option<String>,
    /// The agent binary to push (`--agent`).
    pub agent: Option<PathBuf>,
    /// Leave the agent on the device (`--keep-agent`).
    pub keep_agent: bool,
    /// A BTF file to push (`--btf` given on the command line).
    pub btf: Option<PathBuf>,
}

/// Why the device cannot be used (exit code 3): one line, with the remedy.
#[derive(Debug, thiserror::Error)]
pub enum AdbError {
    /// No adb client.
    #[error(
        "adb not found (looked at $ADB, PATH and $ANDROID_HOME/platform-tools): install it \
         (Debian: apt install adb; or Android's platform-tools) or set ADB=/path/to/adb"
    )]
    Missing,
    /// `$ADB` names something that is not a program.
    #[error("ADB={0} is not an executable file")]
    BadAdbVar(String),
    /// adb itself failed.
    #[error("adb {what} failed: {why}")]
    Adb {
        /// The adb command.
        what: String,
        /// Its output.
        why: String,
    },
    /// Nothing attached.
    #[error(
        "no Android device: plug one in with USB debugging on (Settings > Developer options), \
         or `adb connect HOST:PORT` for a device over the network"
    )]
    NoDevice,
    /// Several attached and none chosen.
    #[error("several devices ({0}): pick one with --adb SERIAL (or ANDROID_SERIAL=SERIAL)")]
    Several(String),
    /// The chosen serial is not attached.
    #[error("device '{serial}' not found (adb lists: {listed})")]
    NotFound {
        /// The serial asked for.
        serial: String,
        /// What adb lists.
        listed: String,
    },
    /// The device is in a state that cannot run commands.
    #[error("device {serial} is {state}: {remedy}")]
    State {
        /// The device.
        serial: String,
        /// Its adb state.
        state: String,
        /// What to do.
        remedy: &'static str,
    },
    /// The probe shell call did not answer as expected.
    #[error("probing {serial} failed: {why}")]
    Probe {
        /// The device.
        serial: String,
        /// What came back.
        why: String,
    },
    /// A kernel architecture with no agent build.
    #[error(
        "device {serial} runs a {arch} kernel: rmapwatch's agent is built for aarch64 and \
         x86_64 kernels only"
    )]
    Arch {
        /// The device.
        serial: String,
        /// `uname -m`.
        arch: String,
    },
    /// No root.
    #[error(
        "rmapwatch needs root on the device: a userdebug/eng build (adb root) or a rooted \
         device (Magisk, KernelSU); {serial} is a '{build}' build and {su}"
    )]
    NoRoot {
        /// The device.
        serial: String,
        /// `ro.build.type`.
        build: String,
        /// What su did.
        su: String,
    },
    /// No agent binary.
    #[error(
        "no static rmapwatch agent for the device's {arch}: build it with `cargo xtask build \
         --target {triple}` (it is then found in the build tree), or pass --agent PATH"
    )]
    NoAgent {
        /// `uname -m`.
        arch: String,
        /// The Rust target.
        triple: &'static str,
    },
    /// The agent binary given is unusable.
    #[error("--agent {path}: {why}")]
    BadAgent {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// No kernel BTF on the device.
    #[error(
        "device {serial} has no /sys/kernel/btf/vmlinux (a kernel built without \
         CONFIG_DEBUG_INFO_BTF): pass --btf FILE, the BTF of the device's kernel"
    )]
    NoBtf {
        /// The device.
        serial: String,
    },
}

/// A command ran on the device and exited with `code` (its own output was
/// passed through): the host exits with the same code.
#[derive(Debug, thiserror::Error)]
#[error("on {serial}: `rmapwatch {what}` exited with code {code}")]
pub struct DeviceExit {
    /// The device.
    pub serial: String,
    /// The command.
    pub what: String,
    /// Its exit code.
    pub code: i32,
}

/// Quotes `s` for a POSIX shell (the device's `sh`, and `su -c`'s).
#[must_use]
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=,+-@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Finds adb: `$ADB`, else `adb` on `PATH`, else the SDK's platform-tools.
///
/// # Errors
/// [`AdbError::Missing`], [`AdbError::BadAdbVar`].
pub fn find_adb() -> Result<PathBuf, AdbError> {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(v) = std::env::var_os("ADB").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&v);
        return if exe(&p) {
            Ok(p)
        } else {
            Err(AdbError::BadAdbVar(p.display().to_string()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sdk = ["ANDROID_HOME", "ANDROID_SDK_ROOT"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|d| PathBuf::from(d).join("platform-tools"));
    std::env::split_paths(&path)
        .chain(sdk)
        .map(|d| d.join("adb"))
        .find(|p| exe(p))
        .ok_or(AdbError::Missing)
}

/// Runs `cmd`, collecting its output, killed after `limit`.
fn run(mut cmd: Command, limit: Duration, what: &str) -> anyhow::Result<Output> {
    use std::os::unix::process::CommandExt as _;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let _starting = super::start::Starting::new(child.id());
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(AdbError::Adb {
                what: what.to_owned(),
                why: format!("no answer in {} s", limit.as_secs()),
            });
        }
        if let Err(c) = super::start::check() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(c.into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    })
}

/// The remedy for a device state other than `device`.
#[must_use]
pub fn remedy(state: &str) -> &'static str {
    match state {
        "unauthorized" => {
            "accept the 'Allow USB debugging?' prompt on the device (or revoke the USB \
             debugging authorizations there and replug), then retry"
        }
        "offline" => {
            "adb sees it but it does not answer: replug the cable, or run `adb kill-server`, \
             or reboot the device"
        }
        "recovery" | "sideload" | "rescue" | "bootloader" => {
            "it is not running Android: reboot it to Android (adb reboot) and retry"
        }
        "no permissions" => {
            "this user may not open the USB device: add a udev rule for it (Debian: apt install \
             android-sdk-platform-tools-common, then replug), or start the adb server as root"
        }
        "authorizing" | "connecting" => "it is still connecting: retry in a moment",
        _ => "adb cannot run commands on it in this state",
    }
}

/// Picks the device: `wanted`, else `env_serial`, else the only one.
///
/// # Errors
/// No device, several, not found, or not in the `device` state.
pub fn pick(
    listed: &[Listed],
    wanted: Option<&str>,
    env_serial: Option<&str>,
) -> Result<String, AdbError> {
    let names = || {
        listed
            .iter()
            .map(|l| format!("{} ({})", l.serial, l.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = wanted
        .filter(|w| !w.is_empty())
        .or(env_serial.filter(|w| !w.is_empty()));
    let dev = match want {
        Some(w) => listed
            .iter()
            .find(|l| l.serial == w)
            .ok_or_else(|| AdbError::NotFound {
                serial: w.to_owned(),
                listed: if listed.is_empty() {
                    "nothing".to_owned()
                } else {
                    names()
                },
            })?,
        None => match listed {
            [] => return Err(AdbError::NoDevice),
            [one] => one,
            _ => return Err(AdbError::Several(names())),
        },
    };
    if dev.state == "device" {
        Ok(dev.serial.clone())
    } else {
        Err(AdbError::State {
            serial: dev.serial.clone(),
            state: dev.state.clone(),
            remedy: remedy(&dev.state),
        })
    }
}

/// How root is had on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// adbd already runs as root.
    Already,
    /// `adb root` (a debuggable build); `true` if rmapwatch did it (and
    /// undoes it with `adb unroot`).
    Adb(bool),
    /// `su -c` (Magisk, KernelSU).
    Su,
}

impl Root {
    /// Said in the header and the report.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Already => "adbd runs as root",
            Self::Adb(_) => "adb root",
            Self::Su => "su -c",
        }
    }

    /// `cmd` as root.
    #[must_use]
    pub fn wrap(self, cmd: &str) -> String {
        match self {
            Self::Su => format!("su -c {}", quote(cmd)),
            _ => cmd.to_owned(),
        }
    }
}

/// The Rust target of the agent for a kernel architecture.
#[must_use]
pub fn triple(arch: &str) -> Option<&'static str> {
    match arch {
        "aarch64" | "arm64" => Some("aarch64-unknown-linux-gnu"),
        "x86_64" => Some("x86_64-unknown-linux-gnu"),
        _ => None,
    }
}

/// Checks that `bytes` is a static ELF executable for `arch`.
///
/// # Errors
/// Not ELF, another machine, or dynamically linked.
pub fn check_elf(bytes: &[u8], arch: &str) -> Result<(), String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let machine = u16_at(18).ok_or("truncated ELF header")?;
    let want = match arch {
        "x86_64" => 62,
        _ => 183,
    };
    if machine != want {
        return Err(format!(
            "built for ELF machine {machine}, the device needs {want} ({arch})"
        ));
    }
    let phoff = usize::try_from(u64_at(32).ok_or("truncated ELF header")?)
        .map_err(|_| "bad program header offset")?;
    let phentsize = usize::from(u16_at(54).ok_or("truncated ELF header")?);
    let phnum = usize::from(u16_at(56).ok_or("truncated ELF header")?);
    for i in 0..phnum {
        let ty = u32_at(phoff + i * phentsize).ok_or("truncated program headers")?;
        if ty == 3 {
            return Err(
                "dynamically linked (Android has no glibc): build the static agent with \
                 `cargo xtask build --target ...`"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Finds the agent for `arch`: `--agent`, else `rmapwatch-ARCH` next to
/// this binary, else the build tree's `TRIPLE/release/rmapwatch` (above
/// this binary, or under `$CARGO_TARGET_DIR`), else this binary itself if
/// it is a static build for that architecture.
///
/// # Errors
/// [`AdbError::NoAgent`], [`AdbError::BadAgent`].
pub fn find_agent(given: Option<&Path>, arch: &str) -> Result<(PathBuf, Vec<u8>), AdbError> {
    let triple = triple(arch).ok_or_else(|| AdbError::NoAgent {
        arch: arch.to_owned(),
        triple: "?",
    })?;
    if let Some(p) = given {
        let bytes = std::fs::read(p).map_err(|e| AdbError::BadAgent {
            path: p.display().to_string(),
            why: e.to_string(),
        })?;
        check_elf(&bytes, arch).map_err(|why| AdbError::BadAgent {
            path: p.display().to_string(),
            why,
        })?;
        return Ok((p.to_owned(), bytes));
    }
    let exe = std::env::current_exe().ok();
    let mut candidates = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join(format!("rmapwatch-{arch}")));
        for a in dir.ancestors() {
            candidates.push(a.join(triple).join("release/rmapwatch"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join(triple).join("release/rmapwatch"));
    }
    candidates.extend(exe);
    candidates
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .find(|(_, b)| check_elf(b, arch).is_ok())
        .ok_or_else(|| AdbError::NoAgent {
            arch: arch.to_owned(),
            triple,
        })
}

/// FNV-1a, 64 bits: the content hash in the pushed file's name.
#[must_use]
pub fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A device in use: what was done to it, undone on drop.
pub struct Session {
    adb: PathBuf,
    /// The device's serial.
    pub serial: String,
    /// What the probe saw.
    pub device: Device,
    /// How root is had.
    pub root: Root,
    /// The agent's path on the device.
    pub agent: String,
    /// A BTF pushed for the agent, on the device.
    pub btf: Option<String>,
    /// Files rmapwatch pushed (removed at the end unless kept).
    pushed: Vec<String>,
    keep: bool,
    /// The device's `kptr_restrict` before the agent ran: the agent lowers
    /// it for a moment where it hides kernel addresses from root, and
    /// restores it, unless it is killed in between; then this does.
    kptr_restrict: Option<String>,
}

impl Session {
    /// Finds adb and the device, probes it, gets root and pushes the agent.
    ///
    /// # Errors
    /// Any [`AdbError`].
    pub fn open(a: &AdbArgs) -> anyhow::Result<Self> {
        let adb = find_adb()?;
        let out = run(
            {
                let mut c = Command::new(&adb);
                c.args(["devices", "-l"]);
                c
            },
            Duration::from_secs(30),
            "devices",
        )?;
        if !out.status.success() {
            return Err(AdbError::Adb {
                what: "devices".into(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }
            .into());
        }
        let listed = parse_devices(&String::from_utf8_lossy(&out.stdout));
        let env = std::env::var("ANDROID_SERIAL").ok();
        let serial = pick(&listed, a.serial.as_deref(), env.as_deref())?;
        let mut s = Self {
            adb,
            serial,
            device: Device::default(),
            root: Root::Already,
            agent: String::new(),
            btf: None,
            pushed: Vec::new(),
            keep: a.keep_agent,
            kptr_restrict: None,
        };
        s.device = s.probe()?;
        log::info(&format!(
            "adb {}: {} (Android SDK {}, {} build), kernel {} {}, SELinux {}",
            s.serial,
            if s.device.model.is_empty() {
                "?"
            } else {
                &s.device.model
            },
            s.device.sdk,
            s.device.build_type,
            s.device.release,
            s.device.arch,
            s.device.selinux
        ));
        if triple(&s.device.arch).is_none() {
            return Err(AdbError::Arch {
                serial: s.serial.clone(),
                arch: s.device.arch.clone(),
            }
            .into());
        }
        if a.btf.is_none() && !s.device.btf {
            return Err(AdbError::NoBtf {
                serial: s.serial.clone(),
            }
            .into());
        }
        let (path, bytes) = find_agent(a.agent.as_deref(), &s.device.arch)?;
        s.root = s.gain_root()?;
        log::info(&format!("root on {}: {}", s.serial, s.root.as_str()));
        s.kptr_restrict = s.kptr_restrict();
        s.agent = s.push(&path, &bytes, "")?;
        if let Some(btf) = &a.btf {
            let b = std::fs::read(btf).with_context(|| format!("reading {}", btf.display()))?;
            s.btf = Some(s.push(btf, &b, ".btf")?);
        }
        Ok(s)
    }

    fn adb(&self) -> Command {
        let mut c = Command::new(&self.adb);
        c.arg("-s").arg(&self.serial);
        c
    }

    /// `adb shell -T SCRIPT`, collected.
    fn shell(&self, script: &str, limit: Duration) -> anyhow::Result<Output> {
        let mut c = self.adb();
        c.args(["shell", "-T", script]);
        run(c, limit, "shell")
    }

    fn probe(&self) -> anyhow::Result<Device> {
        let out = self.shell(PROBE, Duration::from_secs(30))?;
        parse_probe(&String::from_utf8_lossy(&out.stdout)).map_err(|why| {
            AdbError::Probe {
                serial: self.serial.clone(),
                why: format!(
                    "{why}{}",
                    Some(String::from_utf8_lossy(&out.stderr).trim().to_owned())
                        .filter(|e| !e.is_empty())
                        .map_or_else(String::new, |e| format!(" (stderr: {e})"))
                ),
            }
            .into()
        })
    }

    fn gain_root(&self) -> anyhow::Result<Root> {
        if self.device.uid == "0" {
            return Ok(Root::Already);
        }
        let mut said = Vec::new();
        if self.device.debuggable {
            log::info(&format!("adb root on {} (a debuggable build)", self.serial));
            let mut c = self.adb();
            c.arg("root");
            let out = run(c, Duration::from_secs(30), "root")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !text.contains("cannot run as root") {
                let mut c = self.adb();
                c.arg("wait-for-device");
                run(c, Duration::from_secs(60), "wait-for-device")?;
                // A TCP device may list itself before adbd answers again.
                for _ in 0..50 {
                    if let Ok(d) = self.probe()
                        && d.uid == "0"
                    {
                        return Ok(Root::Adb(!text.contains("already running as root")));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            said.push(format!("adb root said {:?}", text.trim()));
        }
        let su = match &self.device.su {
            Some(_) => {
                let out = self.shell("su -c 'id -u'", Duration::from_secs(60))?;
                let o = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if o == "0" {
                    return Ok(Root::Su);
                }
                format!(
                    "su refused ({}{}; Magisk: allow root for Shell)",
                    o,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            }
            None => "there is no su".to_owned(),
        };
        said.push(su);
        Err(AdbError::NoRoot {
            serial: self.serial.clone(),
            build: self.device.build_type.clone(),
            su: said.join("; "),
        }
        .into())
    }

    /// The device's `kptr_restrict`, as root.
    fn kptr_restrict(&self) -> Option<String> {
        let out = self
            .shell(
                &self.root.wrap(&format!("cat {KPTR_RESTRICT}")),
                Duration::from_secs(15),
            )
            .ok()?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then_some(v)
    }

    /// Puts `kptr_restrict` back where the run found it, if the agent left
    /// it changed (killed while it read the kernel's symbols).
    fn restore_kptr_restrict(&self) {
        let Some(was) = &self.kptr_restrict else {
            return;
        };
        let Some(now) = self.kptr_restrict() else {
            log::warn(&format!(
                "could not check kptr_restrict on {} (it was {was})",
                self.serial
            ));
            return;
        };
        if &now == was {
            return;
        }
        let set = self.shell(
            &self
                .root
                .wrap(&format!("echo {} > {KPTR_RESTRICT}", quote(was))),
            Duration::from_secs(15),
        );
        match set {
            Ok(o) if o.status.success() && self.kptr_restrict().as_ref() == Some(was) => {
                log::warn(&format!(
                    "kptr_restrict on {} was left at {now} (the agent ended while it read the \
                     kernel's symbols): set back to {was}",
                    self.serial
                ));
            }
            _ => log::warn(&format!(
                "kptr_restrict on {} is {now}, was {was}, and setting it back FAILED",
                self.serial
            )),
        }
    }

    /// Pushes `bytes` (read from `path`) under a content-hashed name,
    /// unless that file is already there. A file already there that this
    /// run does not keep is removed at the end as if pushed: an earlier
    /// run that was killed left it.
    fn push(&mut self, path: &Path, bytes: &[u8], suffix: &str) -> anyhow::Result<String> {
        let remote = format!(
            "{DEVICE_DIR}/rmapwatch-{:016x}{suffix}",
            content_hash(bytes)
        );
        let q = quote(&remote);
        let out = self.shell(
            &format!("[ -f {q} ] && wc -c < {q}"),
            Duration::from_secs(30),
        )?;
        if String::from_utf8_lossy(&out.stdout).trim() == bytes.len().to_string() {
            log::info(&format!("{remote} is already on {}", self.serial));
            self.pushed.push(remote.clone());
            return Ok(remote);
        }
        let part = format!("{remote}.part");
        log::info(&format!(
            "pushing {} ({} KB) to {}:{remote}",
            path.display(),
            bytes.len() / 1024,
            self.serial
        ));
        let mut c = self.adb();
        c.arg("push").arg(path).arg(&part);
        let out = run(c, Duration::from_secs(600), "push")?;
        if !out.status.success() {
            return Err(AdbError::Adb {
                what: format!("push {}", path.display()),
                why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }
            .into());
        }
        let qp = quote(&part);
        let out = self.shell(
            &format!("chmod 755 {qp} && mv -f {qp} {q}"),
            Duration::from_secs(30),
        )?;
        if !out.status.success() {
            return Err(AdbError::Adb {
                what: format!("shell chmod/mv {remote}"),
                why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }
            .into());
        }
        self.pushed.push(remote.clone());
        Ok(remote)
    }

    /// The agent's command line for `args` (quoted), as root, asking the
    /// agent to remove what was pushed when it exits.
    #[must_use]
    pub fn command(&self, args: &[String]) -> String {
        let mut words = vec![self.agent.clone()];
        words.extend(args.iter().cloned());
        if let Some(b) = &self.btf {
            words.extend(["--btf".to_owned(), b.clone()]);
        }
        if !self.keep {
            for p in &self.pushed {
                words.extend(["--cleanup".to_owned(), p.clone()]);
            }
        }
        let line: Vec<String> = words.iter().map(|w| quote(w)).collect();
        self.root.wrap(&format!("exec {}", line.join(" ")))
    }

    /// `adb shell -T` running `args` on the device.
    #[must_use]
    pub fn agent_command(&self, args: &[String]) -> Command {
        let mut c = self.adb();
        c.args(["shell", "-T"]).arg(self.command(args));
        c
    }

    /// The device's description for the link and the report.
    #[must_use]
    pub fn describe(&self) -> BTreeMap<String, String> {
        let d = &self.device;
        [
            ("serial", self.serial.clone()),
            ("model", d.model.clone()),
            ("sdk", d.sdk.clone()),
            ("build_type", d.build_type.clone()),
            ("selinux", d.selinux.clone()),
            ("root", self.root.as_str().to_owned()),
            ("agent", self.agent.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.restore_kptr_restrict();
        if !self.keep && !self.pushed.is_empty() {
            let files: Vec<String> = self.pushed.iter().map(|p| quote(p)).collect();
            let files = files.join(" ");
            // The agent removed them if it ran; this covers the rest. A
            // link that is gone cannot be asked: the agent's own cleanup
            // ran when it saw its stdin close.
            match self.shell(&format!("rm -f {files}"), Duration::from_secs(15)) {
                Ok(o) if o.status.success() => {
                    log::info(&format!("removed {files} from {}", self.serial));
                }
                _ => log::warn(&format!(
                    "could not check that {files} is gone from {}",
                    self.serial
                )),
            }
        }
        if let Root::Adb(true) = self.root {
            let mut c = self.adb();
            c.arg("unroot");
            match run(c, Duration::from_secs(30), "unroot") {
                Ok(o) if o.status.success() => {
                    log::info(&format!(
                        "adb unroot on {} (rmapwatch rooted it)",
                        self.serial
                    ));
                }
                _ => log::warn(&format!("adb unroot on {} failed", self.serial)),
            }
        }
    }
}

/// The agent on the device as a source.
///
/// # Errors
/// See [`Session::open`] and [`remote::agent`].
pub fn source(a: &AdbArgs, agent_args: &[String]) -> anyhow::Result<Source> {
    let s = Session::open(a)?;
    let link = Link::new(format!("adb {}", s.serial), s.describe());
    let mut src = remote::agent(
        s.agent_command(agent_args),
        &format!("the agent on {}", s.serial),
        "device: ",
        link,
    )?;
    src.guard = Some(Box::new(s));
    Ok(src)
}

/// Runs `rmapwatch ARGS` on the device to its end, its stdout and stderr
/// passed through (`inspect`), line by line without control characters:
/// a phone may be hostile, and this is printed to the user's terminal.
///
/// # Errors
/// See [`Session::open`]; the command's own failure ([`DeviceExit`]).
pub fn run_to_end(a: &AdbArgs, what: &str, args: &[String]) -> anyhow::Result<()> {
    let s = Session::open(a)?;
    let mut child = s
        .agent_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running adb shell")?;
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(move || pass_through(e, &mut std::io::stderr())));
    if let Some(out) = child.stdout.take() {
        pass_through(out, &mut std::io::stdout())?;
    }
    if let Some(t) = err {
        let _ = t.join();
    }
    let status = child.wait().context("running adb shell")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(DeviceExit {
            serial: s.serial.clone(),
            what: what.to_owned(),
            code,
        }
        .into()),
        None => anyhow::bail!("adb shell was killed ({status})"),
    }
}

/// Copies `from` to `to` line by line, each without control characters
/// (`text::printable_lines`).
fn pass_through(from: impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<()> {
    use std::io::BufRead as _;
    let mut r = std::io::BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return to.flush();
        }
        let text = String::from_utf8_lossy(&line);
        to.write_all(printable_lines(&text).as_bytes())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_s_output_reaches_the_terminal_without_control_characters() {
        let mut out = Vec::new();
        pass_through(&b"pid 1 (\x1b]0;owned\x07x)\r\n{\"a\":1}\n"[..], &mut out).unwrap();
        assert_eq!(out, b"pid 1 (?]0;owned?x)?\n{\"a\":1}\n");
    }

    #[test]
    fn quoting_keeps_hostile_strings_data() {
        assert_eq!(quote("/data/local/tmp/x"), "/data/local/tmp/x");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(reboot);`x`"), "'$(reboot);`x`'");
        // Through sh, then su -c's sh: still one word, unchanged.
        let inner = format!("printf %s {}", quote("a'b $(c); d"));
        let outer = Root::Su.wrap(&inner);
        let out = Command::new("sh")
            .args(["-c", &outer.replacen("su -c ", "sh -c ", 1)])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a'b $(c); d");
    }

    #[test]
    fn devices_and_their_states() {
        let text = "* daemon started successfully\nList of devices attached\n\
            127.0.0.1:5555         device product:p model:Pixel_8 device:d transport_id:1\n\
            emulator-5554          unauthorized transport_id:2\n\
            0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html]\n\
            X offline\n\n";
        let l = parse_devices(text);
        let states: Vec<&str> = l.iter().map(|d| d.state.as_str()).collect();
        assert_eq!(
            states,
            ["device", "unauthorized", "no permissions", "offline"]
        );
        assert!(matches!(pick(&l, None, None), Err(AdbError::Several(_))));
        assert_eq!(
            pick(&l, Some("127.0.0.1:5555"), None).unwrap(),
            "127.0.0.1:5555"
        );
        assert_eq!(
            pick(&l, None, Some("127.0.0.1:5555")).unwrap(),
            "127.0.0.1:5555"
        );
        let e = pick(&l, Some("0123456789ABCDEF"), None).unwrap_err();
        assert!(e.to_string().contains("udev"), "{e}");
        let e = pick(&l, Some("emulator-5554"), None).unwrap_err();
        assert!(e.to_string().contains("prompt"), "{e}");
        assert!(matches!(
            pick(&l, Some("nope"), None),
            Err(AdbError::NotFound { .. })
        ));
        assert!(matches!(
            pick(&parse_devices("List of devices attached\n\n"), None, None),
            Err(AdbError::NoDevice)
        ));
    }

    #[test]
    fn elf_checks() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is dynamic (or another machine's for aarch64).
        assert!(check_elf(&me, "aarch64").is_err());
        assert!(check_elf(b"#!/bin/sh\n", "x86_64").is_err());
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }
}
