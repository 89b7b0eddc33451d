//! The multi-call personalities of the binary, run by commands on the fake
//! device: `getprop`, `su` (a setuid-root copy) and the sync helper
//! (`rmw-adbd-sync`, which speaks the file sync protocol on stdin/stdout
//! with the identity of the shell user).
use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    io::{self, BufReader, BufWriter, Read, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use crate::util::SHELL_UID;

/// Reads a `key=value` property file (blank lines and `#` comments skipped).
pub fn read_props(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let text = fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// `getprop [KEY [DEFAULT]]`, reading `props` next to the binary's directory.
pub fn getprop(args: &[OsString]) -> ExitCode {
    let props = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("props")))
        .map_or_else(|| Ok(BTreeMap::new()), |p| read_props(&p));
    let props = match props {
        Ok(p) => p,
        Err(e) => {
            eprintln!("getprop: cannot read properties: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args {
        [] => {
            for (k, v) in &props {
                println!("[{k}]: [{v}]");
            }
        }
        [key, rest @ ..] => {
            let key = key.to_string_lossy();
            let default = rest.first().map(|d| d.to_string_lossy().into_owned());
            println!(
                "{}",
                props
                    .get(key.as_ref())
                    .cloned()
                    .or(default)
                    .unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}

/// `su [-] [UID|root|shell] [-c CMD...] [COMMAND...]`: becomes UID (root by
/// default) and runs CMD with `/bin/sh -c`, COMMAND directly, or `/bin/sh`.
pub fn su(args: &[OsString]) -> ExitCode {
    let mut uid: libc::uid_t = 0;
    let mut shell = OsString::from("/bin/sh");
    let mut command: Option<OsString> = None;
    let mut direct: Vec<OsString> = Vec::new();
    let mut seen_user = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_string_lossy().as_ref() {
            "-c" | "--command" => {
                let rest: Vec<&[u8]> = it.by_ref().map(|s| s.as_bytes()).collect();
                command = Some(std::os::unix::ffi::OsStringExt::from_vec(rest.join(&b' ')));
            }
            "-s" | "--shell" => {
                if let Some(s) = it.next() {
                    shell.clone_from(s);
                }
            }
            "-"
            | "-l"
            | "--login"
            | "-p"
            | "--preserve-environment"
            | "-mm"
            | "-M"
            | "--mount-master" => {}
            "root" if !seen_user => (uid, seen_user) = (0, true),
            "shell" if !seen_user => (uid, seen_user) = (SHELL_UID, true),
            s if !seen_user && s.parse::<libc::uid_t>().is_ok() => {
                uid = s.parse().unwrap_or(0);
                seen_user = true;
            }
            _ => {
                direct.push(a.clone());
                direct.extend(it.by_ref().cloned());
            }
        }
    }
    // SAFETY: plain system calls on integers.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    if !ok {
        eprintln!(
            "su: cannot become uid {uid}: {}",
            io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    let err = match (command, direct.split_first()) {
        (Some(c), _) => Command::new(&shell).arg("-c").arg(c).exec(),
        (None, Some((prog, rest))) => Command::new(prog).args(rest).exec(),
        (None, None) => Command::new(&shell).exec(),
    };
    eprintln!("su: exec failed: {err}");
    ExitCode::from(127)
}

/// Sync protocol ids.
const fn id(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}
/// Largest DATA chunk.
const SYNC_DATA_MAX: usize = 64 * 1024;

/// An error message without Rust's " (os error N)" suffix.
fn reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Reads a little-endian u32.
fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Writes a sequence of little-endian u32s.
fn put(w: &mut impl Write, words: &[u32]) -> io::Result<()> {
    for x in words {
        w.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// Writes FAIL with a message.
fn fail(w: &mut impl Write, msg: &str) -> io::Result<()> {
    put(w, &[id(b"FAIL"), msg.len() as u32])?;
    w.write_all(msg.as_bytes())?;
    w.flush()
}

/// Mode, size and mtime of `path` (lstat), zeros if it cannot be read.
fn stat_v1(path: &Path) -> [u32; 3] {
    fs::symlink_metadata(path)
        .map(|m| [m.mode(), m.size() as u32, m.mtime() as u32])
        .unwrap_or([0; 3])
}

/// The sync helper: serves the file sync protocol (v1) on stdin/stdout.
pub fn sync_helper() -> ExitCode {
    let mut r = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut w = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    match sync_loop(&mut r, &mut w) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmw-adbd: sync: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Request loop of the sync helper.
fn sync_loop(r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    loop {
        let mut head = [0u8; 4];
        match r.read(&mut head[..1])? {
            0 => return Ok(()),
            _ => r.read_exact(&mut head[1..])?,
        }
        let req = u32::from_le_bytes(head);
        let len = read_u32(r)? as usize;
        if req == id(b"QUIT") {
            return Ok(());
        }
        if len > 1024 {
            return fail(w, "path too long");
        }
        let mut name = vec![0u8; len];
        r.read_exact(&mut name)?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
        match &head {
            b"STAT" => {
                let [mode, size, mtime] = stat_v1(&path);
                put(w, &[id(b"STAT"), mode, size, mtime])?;
                w.flush()?;
            }
            b"LIST" => {
                if let Ok(dir) = fs::read_dir(&path) {
                    for e in dir.flatten() {
                        let n = e.file_name();
                        let [mode, size, mtime] = stat_v1(&e.path());
                        put(w, &[id(b"DENT"), mode, size, mtime, n.len() as u32])?;
                        w.write_all(n.as_bytes())?;
                    }
                }
                put(w, &[id(b"DONE"), 0, 0, 0, 0])?;
                w.flush()?;
            }
            b"SEND" => {
                let Some(comma) = name.iter().rposition(|&b| b == b',') else {
                    return fail(w, "missing , in ID_SEND_V1");
                };
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(&name[..comma]));
                let Some(mode) = std::str::from_utf8(&name[comma + 1..])
                    .ok()
                    .and_then(|m| m.parse::<u32>().ok())
                else {
                    return fail(w, "bad mode");
                };
                if !send(r, w, &path, mode)? {
                    return Ok(());
                }
            }
            b"RECV" => recv(w, &path)?,
            _ => return fail(w, &format!("unknown command {req:08x}")),
        }
    }
}

/// Receives one file (DATA... DONE) into `path`; Ok(false) after a FAIL.
fn send(r: &mut impl Read, w: &mut impl Write, path: &Path, mode: u32) -> io::Result<bool> {
    let link = mode & libc::S_IFMT == libc::S_IFLNK;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let base = path
        .file_name()
        .map_or_else(|| "x".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{base}.rmw-adbd-{}", std::process::id()));
    let mut err: Option<String> = None;
    let mut file = None;
    let mut target = Vec::new();
    if !link {
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
        };
        let f = open().or_else(|e| {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o775)
                .create(dir)?;
            open()
        });
        match f {
            Ok(f) => file = Some(f),
            Err(e) => err = Some(format!("couldn't create file: {}", reason(&e))),
        }
    }
    let mut buf = vec![0u8; SYNC_DATA_MAX];
    let mtime = loop {
        let mut h = [0u8; 4];
        r.read_exact(&mut h)?;
        let n = read_u32(r)?;
        match &h {
            b"DONE" => break n,
            b"DATA" if n as usize <= 4 * SYNC_DATA_MAX => {
                let n = n as usize;
                if buf.len() < n {
                    buf.resize(n, 0);
                }
                r.read_exact(&mut buf[..n])?;
                if link {
                    target.extend_from_slice(&buf[..n]);
                } else if let (Some(f), None) = (file.as_mut(), &err)
                    && let Err(e) = f.write_all(&buf[..n])
                {
                    err = Some(format!("write failed: {}", reason(&e)));
                }
            }
            _ => {
                let _ = fs::remove_file(&tmp);
                fail(w, "invalid data message")?;
                return Ok(false);
            }
        }
    };
    if err.is_none() {
        let done = if link {
            let _ = fs::remove_file(path);
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), path)
                .map_err(|e| format!("symlink failed: {}", reason(&e)))
        } else {
            finish(file.take(), &tmp, path, mode, mtime)
        };
        err = done.err();
    }
    drop(file);
    match err {
        None => {
            put(w, &[id(b"OKAY"), 0])?;
            w.flush()?;
            Ok(true)
        }
        Some(msg) => {
            let _ = fs::remove_file(&tmp);
            fail(w, &msg)?;
            Ok(false)
        }
    }
}

/// Sets a received file's mode and mtime and renames it into place.
fn finish(
    file: Option<fs::File>,
    tmp: &Path,
    path: &Path,
    mode: u32,
    mtime: u32,
) -> Result<(), String> {
    let f = file.ok_or("no file")?;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| format!("chmod failed: {}", reason(&e)))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(mtime));
    let _ = f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t));
    drop(f);
    if path.is_dir() {
        return Err(format!(
            "couldn't create file: {} is a directory",
            path.display()
        ));
    }
    fs::rename(tmp, path).map_err(|e| format!("couldn't create file: {}", reason(&e)))
}

/// Sends one file (DATA... DONE) or FAIL.
fn recv(w: &mut impl Write, path: &Path) -> io::Result<()> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(w, &format!("open failed: {}", reason(&e))),
    };
    let mut buf = vec![0u8; SYNC_DATA_MAX];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(w, &format!("read failed: {}", reason(&e))),
        };
        put(w, &[id(b"DATA"), n as u32])?;
        w.write_all(&buf[..n])?;
    }
    put(w, &[id(b"DONE"), 0])?;
    w.flush()
}
