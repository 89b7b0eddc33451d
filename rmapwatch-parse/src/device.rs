//! What a device answers over adb: `adb devices -l`, the probe (`uname`,
//! `getprop`, `id`, `getenforce`, in one shell call) and the agent's
//! stderr. A device (or whatever answers as one) may send anything: the
//! parsers keep every field on one line, and what is said on the host's
//! terminal is made printable.
use std::{borrow::Cow, collections::BTreeMap};

use rmapwatch_engine::text::printable;

/// One line of `adb devices -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The serial.
    pub serial: String,
    /// `device`, `unauthorized`, `offline`, `no permissions`, ...
    pub state: String,
}

/// Parses `adb devices -l`.
#[must_use]
pub fn parse_devices(text: &str) -> Vec<Listed> {
    const STATES: [&str; 12] = [
        "device",
        "unauthorized",
        "offline",
        "recovery",
        "sideload",
        "bootloader",
        "rescue",
        "no permissions",
        "authorizing",
        "connecting",
        "host",
        "unknown",
    ];
    text.lines()
        .skip_while(|l| !l.starts_with("List of devices"))
        .skip(1)
        .filter_map(|l| {
            let (serial, rest) = l.split_once(char::is_whitespace)?;
            let rest = rest.trim_start();
            let state = STATES.iter().find(|s| rest.starts_with(**s)).map_or_else(
                || rest.split_whitespace().next().unwrap_or("").to_owned(),
                |s| (*s).to_owned(),
            );
            (!serial.is_empty()).then(|| Listed {
                serial: serial.to_owned(),
                state,
            })
        })
        .collect()
}

/// The device, as the probe saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    /// `uname -m`.
    pub arch: String,
    /// `uname -r`.
    pub release: String,
    /// `ro.build.type`: user, userdebug, eng.
    pub build_type: String,
    /// `ro.debuggable`.
    pub debuggable: bool,
    /// `ro.build.version.sdk`.
    pub sdk: String,
    /// `ro.product.model`.
    pub model: String,
    /// `id -u` of adb's shell.
    pub uid: String,
    /// `su`'s path, if there is one.
    pub su: Option<String>,
    /// Whether `/sys/kernel/btf/vmlinux` is readable.
    pub btf: bool,
    /// `getenforce`.
    pub selinux: String,
}

/// The probe: one shell call, `key=value` lines.
pub const PROBE: &str = "echo arch=$(uname -m); echo release=$(uname -r); \
echo type=$(getprop ro.build.type); echo debuggable=$(getprop ro.debuggable); \
echo sdk=$(getprop ro.build.version.sdk); echo model=$(getprop ro.product.model); \
echo uid=$(id -u); echo su=$(command -v su); \
if [ -r /sys/kernel/btf/vmlinux ]; then echo btf=1; else echo btf=0; fi; \
echo selinux=$(getenforce 2>/dev/null); echo end=1";

/// Parses the probe's output.
///
/// # Errors
/// The output is not the probe's (the shell did not run it).
pub fn parse_probe(text: &str) -> Result<Device, String> {
    let kv: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once('='))
        .collect();
    if kv.get("end") != Some(&"1") || kv.get("arch").is_none_or(|a| a.trim().is_empty()) {
        return Err(format!("unexpected output: {:?}", text.trim()));
    }
    let get = |k: &str| kv.get(k).map_or_else(String::new, |v| v.trim().to_owned());
    Ok(Device {
        arch: get("arch"),
        release: get("release"),
        build_type: get("type"),
        debuggable: get("debuggable") == "1",
        sdk: get("sdk"),
        model: get("model"),
        uid: get("uid"),
        su: Some(get("su")).filter(|s| !s.is_empty()),
        btf: get("btf") == "1",
        selinux: get("selinux"),
    })
}

/// What the host says for one line of the agent's stderr (after the
/// agent's prefix): its `rmapwatch: ` dropped, every control character as
/// `?` (one line stays one line on the host's terminal and in its log).
#[must_use]
pub fn agent_note(line: &str) -> Cow<'_, str> {
    printable(line.strip_prefix("rmapwatch: ").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output() {
        let d = parse_probe(
            "arch=aarch64\nrelease=6.1.75-android14\ntype=userdebug\ndebuggable=1\nsdk=34\n\
             model=Pixel 8\nuid=2000\nsu=\nbtf=1\nselinux=Enforcing\nend=1\n",
        )
        .unwrap();
        assert_eq!(d.arch, "aarch64");
        assert_eq!(d.model, "Pixel 8");
        assert!(d.debuggable && d.btf && d.su.is_none());
        assert!(parse_probe("/system/bin/sh: syntax error").is_err());
        // An architecture of blanks is none (it read as "", then as an
        // unknown architecture named "").
        assert!(parse_probe("arch= \r\nend=1\n").is_err());
    }

    #[test]
    fn an_agent_s_stderr_line_is_one_printable_line() {
        assert_eq!(agent_note("rmapwatch: attached"), "attached");
        assert_eq!(agent_note("a\x1b]0;x\x07\rb"), "a?]0;x??b");
    }
}
